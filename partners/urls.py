from django.urls import path

from partners.views import PartnerWebhookView

app_name = "partners"
urlpatterns = [
    path("<slug:code>/webhooks/", PartnerWebhookView.as_view(), name="webhook"),
]
