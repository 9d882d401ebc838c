from django.urls import re_path

from payments.views import PaymentWebhookView

app_name = "payments"
urlpatterns = [
    # With or without the trailing slash: the provider POSTs to the URL exactly as configured and
    # never follows a redirect (docs/design.md, invariant 11).
    re_path(r"^webhooks/?$", PaymentWebhookView.as_view(), name="webhook"),
]
