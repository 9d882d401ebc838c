from django.urls import path

from payments.views import PaymentWebhookView

app_name = "payments"
urlpatterns = [
    path("webhooks/", PaymentWebhookView.as_view(), name="webhook"),
]
