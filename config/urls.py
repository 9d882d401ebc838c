from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularSwaggerSplitView

from config.health import healthz, livez, readyz
from config.schema import SchemaView
from reconciliation.apis import BookingTimelineApi
from reconciliation.metrics.views import metrics

urlpatterns = [
    path("livez", livez, name="livez"),
    path("readyz", readyz, name="readyz"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    # Its script served apart (`?script`), not inline: the page runs no script but files of ours.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # The live status streams (served by the events process) before the API they follow.
    path("api/v1/", include("bookings.streams.urls")),
    path("api/v1/", include("bookings.api.urls")),
    # With or without its trailing slash, as every route of the API (bookings/api/urls.py).
    re_path(
        r"^api/v1/support/bookings/(?P<reference>[^/]+)/timeline(?:/)?$",
        BookingTimelineApi.as_view(),
        name="support-booking-timeline",
    ),
    path("partners/", include("partners.urls")),
    path("payments/", include("payments.urls")),
    # The customer web client, at the root: after every other prefix.
    path("", include("bookings.web.urls")),
]

# Django renders these outside any view: a database out of reach is its 503 there too.
handler404 = "config.error_pages.page_not_found"
