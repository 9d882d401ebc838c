"""Customer API routes under `/api/v1/`. Each route answers with and without a trailing slash;
the slash is an optional non-capturing group so that links and the OpenAPI paths use the
canonical form without it.

The reference segment matches anything but a slash so that an unknown reference reaches the
view and gets the API's JSON 404, not Django's HTML one.
"""

from django.urls import re_path

from bookings.api import views

app_name = "bookings-api"
urlpatterns = [
    re_path(r"^bookings(?:/)?$", views.BookingCollectionView.as_view(), name="booking-list"),
    re_path(
        r"^bookings/(?P<reference>[^/]+)(?:/)?$",
        views.BookingDetailView.as_view(),
        name="booking-detail",
    ),
    re_path(
        r"^bookings/(?P<reference>[^/]+)/cancel(?:/)?$",
        views.BookingCancelView.as_view(),
        name="booking-cancel",
    ),
    re_path(r"^offers(?:/)?$", views.OfferListView.as_view(), name="offer-list"),
    re_path(r"^quotes(?:/)?$", views.QuoteCreateView.as_view(), name="quote-create"),
]
