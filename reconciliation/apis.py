"""Support-only API: the same reconciled timeline the console and `booking_timeline` show."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bookings.api.serializers import ErrorSerializer
from bookings.models import Booking
from config.errors import NotFound
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.selectors.timeline_display import rows_for


class CanViewBookings(permissions.BasePermission):
    """Staff with the booking view permission (the support and ops groups); customers never."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.is_staff and user.has_perm("bookings.view_booking")
        )


class TimelineRowSerializer(serializers.Serializer):
    """One row of the timeline (`reconciliation.selectors.timeline.TimelineRow`)."""

    at = serializers.DateTimeField()
    kind = serializers.CharField()
    actor = serializers.CharField()
    actor_label = serializers.CharField()
    summary = serializers.CharField()
    from_state = serializers.CharField()
    to_state = serializers.CharField()
    source = serializers.CharField()
    source_id = serializers.IntegerField()
    partner_time = serializers.DateTimeField(allow_null=True)
    skew_ms = serializers.IntegerField(allow_null=True)
    mark = serializers.CharField()
    data = serializers.JSONField()


class BookingTimelineSerializer(serializers.Serializer):
    reference = serializers.CharField()
    state = serializers.CharField()
    timeline = TimelineRowSerializer(many=True)


def booking_timeline_json(booking: Booking, viewer: Any = None) -> dict[str, Any]:
    """The timeline's one JSON shape: this API's and the console's `timeline.json`, as `viewer`
    may see it (the provider's ids only with `payments.view_provider_truth`; None: all of it)."""
    rows = rows_for(booking_timeline(booking), viewer)
    payload = {"reference": booking.reference, "state": booking.status, "timeline": rows}
    return BookingTimelineSerializer(payload).data


class BookingTimelineApi(APIView):
    permission_classes = [CanViewBookings]

    @extend_schema(
        operation_id="support_booking_timeline",
        summary="A booking's reconciled timeline (support staff only)",
        tags=["support"],
        responses={
            200: BookingTimelineSerializer,
            401: OpenApiResponse(ErrorSerializer, description="Not authenticated."),
            403: OpenApiResponse(ErrorSerializer, description="Not support staff."),
            404: OpenApiResponse(ErrorSerializer, description="No such booking."),
            429: OpenApiResponse(
                ErrorSerializer,
                description="Too many requests from this user or address; retry after `Retry-After` seconds.",
            ),
        },
    )
    def get(self, request: Request, reference: str) -> Response:
        booking = Booking.objects.select_related("partner", "offer").with_reference(reference).first()
        if booking is None:
            raise NotFound(f"No booking {reference}.")
        return Response(booking_timeline_json(booking, request.user))
