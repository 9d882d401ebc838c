"""Live status routes under `/api/v1/`, before the API's own (a reference never reads `events`).
Proxies send exactly these paths to the events process: `bookings.streams.routing.STREAM_PATH`."""

from django.urls import re_path

from bookings.streams import views

app_name = "streams"
urlpatterns = [
    re_path(r"^bookings/events(?:/)?$", views.customer_events, name="customer-events"),
    re_path(r"^bookings/(?P<reference>[^/]+)/events(?:/)?$", views.booking_events, name="booking-events"),
]
