from django.urls import re_path

from partners.views import PartnerWebhookView

app_name = "partners"
urlpatterns = [
    # With or without the trailing slash: senders POST to the URL exactly as configured and never
    # follow a redirect, so the slash Django would append must not be needed (docs/design.md,
    # invariant 11). The code is a slug, as `<slug:code>` read it.
    re_path(r"^(?P<code>[-a-zA-Z0-9_]+)/webhooks/?$", PartnerWebhookView.as_view(), name="webhook"),
]
