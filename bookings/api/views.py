"""The customer API: thin views that parse, call a selector or service, and present.

Authentication is the project default (DRF token, `Authorization: Token <key>`); rate limits
apply before the views (`config.throttling`). A customer only ever reaches their own bookings:
every lookup goes through the customer-scoped selectors, so another customer's booking is a 404
like a missing one.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bookings import customer_view, selectors, services
from bookings.api.pagination import PageNumberPagination
from bookings.api.serializers import (
    BookingCancelInputSerializer,
    BookingCreateInputSerializer,
    BookingFilterSerializer,
    BookingOutputSerializer,
    ErrorSerializer,
    OfferOutputSerializer,
    QuoteCreateInputSerializer,
    QuoteOutputSerializer,
)
from bookings.models import Actor, Booking
from bookings.services import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from config.errors import ValidationFailed

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY_FORMAT = re.compile(IDEMPOTENCY_KEY_PATTERN)

# --- OpenAPI pieces shared by the views -------------------------------------------------------
_TAG = "bookings"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


_UNAUTHENTICATED = _error("Missing or invalid token (`Authorization: Token <key>`).")
_THROTTLED = _error("Too many requests from this customer or address; retry after `Retry-After` seconds.")
_UNSUPPORTED_MEDIA = _error(
    "`unsupported_media_type`: the body must be JSON (`Content-Type: application/json`), sent as it "
    "is: one declared in a content coding (`Content-Encoding: gzip`, `br`, ...) is refused, with "
    "`Accept-Encoding: identity`."
)
_TOO_LARGE = _error("`payload_too_large`: the body is larger than the server takes (1 MiB by default).")
_BAD_PAGE = _error("`page` is not a whole number from 1 in the digits 0-9 alone, or is given more than once.")
_PAGE_NOT_FOUND = _error("No such page (past the last one).")
_NOT_FOUND = _error("No such booking for this customer (another customer's booking included).")
_REFERENCE = OpenApiParameter(
    "reference",
    {"type": "string", "minLength": 1, "maxLength": Booking._meta.get_field("reference").max_length},
    OpenApiParameter.PATH,
    description="The booking reference, e.g. `BK-7KQ2MX`, in any case (`bk-7kq2mx` names the same booking).",
)
_IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
    OpenApiParameter.HEADER,
    required=True,
    description=(
        f"Required. A key of your choosing (1-{IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII "
        "characters), unique per booking you mean to make. Repeating a request with the same "
        "key and body returns the same booking; the same key with another body is refused "
        "with 422. A quote is booked once: booking it again, under any key, returns its booking."
    ),
)
_ETAG_DESCRIPTION = (
    '`W/"<status_version>"`: send it back in `If-None-Match` to be answered 304 while what the '
    "customer is shown is unchanged: `status`, `message` and `money` (news of the money alone, a "
    "charge or a refund, is a new version too; fields the customer does not follow, such as "
    "`updated_at`, may have moved meanwhile)."
)
_POLL_HEADERS = [
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[202],
        description="Seconds to wait before polling the booking again.",
    ),
    OpenApiParameter(
        "Location",
        OpenApiTypes.URI,
        OpenApiParameter.HEADER,
        response=[202],
        description="The booking's URL: poll it (with `If-None-Match`) while news is awaited.",
    ),
    OpenApiParameter(
        "ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[202], description=_ETAG_DESCRIPTION
    ),
]
_CONDITIONAL_HEADERS = [
    OpenApiParameter(
        "If-None-Match",
        {"type": "string", "maxLength": 1024},
        OpenApiParameter.HEADER,
        description="The `ETag` of the booking as you show it: 304 (no body) while it is unchanged.",
    ),
    OpenApiParameter(
        "ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304], description=_ETAG_DESCRIPTION
    ),
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description=(
            "Present while news is awaited (`pending`, `cancelling`, `disrupted` until its outcome "
            "is settled, any booking whose money is still being authorized, held or charged, and "
            "one whose refund is still to come, cancelled or not going ahead): seconds to wait "
            "before polling again."
        ),
    ),
]


# --- helpers --------------------------------------------------------------------------------
class CustomerAPIView(APIView):
    """Default authentication and permissions; JSON bodies only (the project's parser).

    Every answer is one customer's (their bookings, with an `ETag`), chosen by the credential:
    a shared cache may not keep it (`private`), the client's own revalidates it each time
    (`no-cache`, with `If-None-Match` where there is an `ETag`), and a cache that keys answers
    keys them by the credential (`Vary: Authorization, Cookie`)."""

    pagination_class = PageNumberPagination

    def finalize_response(self, request: Request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "private, no-cache"
        patch_vary_headers(response, ("Authorization", "Cookie"))
        return response

    def paginated(self, request: Request, queryset, serializer_class) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        data = serializer_class(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise ValidationFailed(
            f"The {IDEMPOTENCY_HEADER} header is required to create a booking.",
            code="idempotency_key_required",
            fields={IDEMPOTENCY_HEADER: ["This header is required."]},
        )
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not _IDEMPOTENCY_KEY_FORMAT.fullmatch(key):
        raise ValidationFailed(
            f"The {IDEMPOTENCY_HEADER} header is invalid.",
            code="idempotency_key_invalid",
            fields={
                IDEMPOTENCY_HEADER: [f"Use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."]
            },
        )
    return key


def _etag(booking: Booking) -> str:
    """Weak: it stands for what the customer is shown, numbered by `status_version`."""
    return f'W/"{booking.status_version}"'


def _not_modified(request: Request, etag: str) -> bool:
    """`If-None-Match` by the weak comparison (RFC 9110 13.1.2)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = parse_etags(header)
    return tags == ["*"] or etag.removeprefix("W/") in {tag.removeprefix("W/") for tag in tags}


def _booking_response(request: Request, booking: Booking, *, status_code: int) -> Response:
    """A booking accepted for processing: 202, where to poll it (its `self` link), and when."""
    data = BookingOutputSerializer(booking, context={"request": request}).data
    return Response(
        data,
        status=status_code,
        headers={
            "Location": data["links"]["self"],
            "Retry-After": str(settings.BOOKING_POLL_AFTER_S),
            "ETag": _etag(booking),
        },
    )


# --- views ----------------------------------------------------------------------------------
class BookingCollectionView(CustomerAPIView):
    """My bookings, newest first; booking requests."""

    @extend_schema(
        operation_id="bookings_list",
        summary="List my bookings",
        description=(
            "My bookings, newest first, paginated; `status` filters by the status I see "
            "(`pending`, `confirmed`, `failed`, `cancelling`, `cancelled`, `disrupted`), "
            "repeated for any of several: `?status=confirmed&status=cancelled`."
        ),
        tags=[_TAG],
        parameters=[BookingFilterSerializer],
        responses={
            200: BookingOutputSerializer(many=True),
            400: _error(
                "An empty or unknown `status`, or a `page` that is not a whole number from 1 (in the "
                "digits 0-9 alone) or is given more than once."
            ),
            401: _UNAUTHENTICATED,
            404: _PAGE_NOT_FOUND,
            429: _THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        # Every value of a repeated `status` (`.dict()` kept only the last), in a plain dict: from
        # the QueryDict itself DRF would read a missing `status` as an empty selection.
        query = request.query_params
        given = {"status": query.getlist("status")} if "status" in query else {}
        filters = BookingFilterSerializer(data=given)
        filters.is_valid(raise_exception=True)
        bookings = selectors.customer_bookings(
            customer=request.user, statuses=filters.validated_data.get("status", ())
        )
        return self.paginated(request, bookings, BookingOutputSerializer)

    @extend_schema(
        operation_id="bookings_create",
        summary="Request a booking",
        description=(
            "Validates and prices the stay, stores the booking and answers 202 at once: the "
            "partner is asked asynchronously, so the booking is `pending` until its answer is "
            "known. Poll the `Location` after `Retry-After` seconds. The price is computed by "
            "us (or taken from a matching, unexpired quote of yours), never from the client.\n\n"
            "With a `payment_method` the booking pays: the price is held on the card first "
            "(`money.code` `authorizing`, then `held`), and the partner is asked only once it "
            "is held; a declined card ends the booking `failed` without the partner hearing of "
            "it. The money is charged when the partner confirms, released if the booking does "
            "not go ahead, and refunded as the offer's cancellation policy says when a confirmed "
            "booking is cancelled (in full if the partner takes it back)."
        ),
        tags=[_TAG],
        parameters=[_IDEMPOTENCY_KEY, *_POLL_HEADERS],
        request=BookingCreateInputSerializer,
        responses={
            202: OpenApiResponse(
                BookingOutputSerializer,
                description="Accepted (also for a replay of the same key and body).",
            ),
            400: _error(
                "Invalid body or stay (`validation_error`, with the fields, and `Unknown field.` for "
                "one the operation does not take; `parse_error` for a body that is not JSON "
                "(read as UTF-8, whatever charset it names), names a field twice in one object or "
                "is nested too deeply), a missing or invalid Idempotency-Key "
                "(`idempotency_key_required`, `idempotency_key_invalid`), or a `payment_method` for "
                "a price no card payment can be (`not_payable`, its `payment_method` field saying "
                "why: below the least a card payment may be in its currency, such as 0.50 EUR or "
                "50 JPY, or not a whole number of the currency's smallest unit); nothing is stored."
            ),
            401: _UNAUTHENTICATED,
            413: _TOO_LARGE,
            415: _UNSUPPORTED_MEDIA,
            422: _error(
                "`idempotency_key_reused`: this key was used with a different body; "
                "`quote_booked_otherwise`: the quote was booked already, under another key and "
                "with another payment method (said even once the quote has expired since); "
                "`quote_booking_did_not_go_ahead`: the same, and that booking did not go ahead "
                "(its `status` `failed`, or `disrupted` with `message_code` `disrupted_ended`): "
                "a quote is booked once, so get a new quote for the same stay and book that."
            ),
            429: _THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        idempotency_key = _idempotency_key(request)
        payload = BookingCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = services.booking_create(
            customer=request.user,
            request=services.BookingRequest(
                offer_id=data["offer"],
                start_date=data["start_date"],
                end_date=data["end_date"],
                guests=data["guests"],
                quote_id=data["quote"],
                payment_method=data.get("payment_method", ""),
            ),
            idempotency_key=idempotency_key,
        )
        return _booking_response(request, result.booking, status_code=status.HTTP_202_ACCEPTED)


class BookingDetailView(CustomerAPIView):
    """One of my bookings, as I should see it now (poll it while it is `pending`)."""

    @extend_schema(
        operation_id="bookings_retrieve",
        summary="Get one of my bookings",
        description=(
            "The booking as I should see it now. Poll it while `Retry-After` is present, sending "
            "the `ETag` back in `If-None-Match`: it answers 304 until `status_version` moves."
        ),
        tags=[_TAG],
        parameters=[_REFERENCE, *_CONDITIONAL_HEADERS],
        responses={
            200: BookingOutputSerializer,
            304: OpenApiResponse(description="Not modified: the `If-None-Match` version is current."),
            401: _UNAUTHENTICATED,
            404: _NOT_FOUND,
            429: _THROTTLED,
        },
    )
    def get(self, request: Request, reference: str) -> Response:
        booking = selectors.customer_booking(customer=request.user, reference=reference)
        etag = _etag(booking)
        headers = {"ETag": etag}
        if customer_view.awaiting_news(booking):
            headers["Retry-After"] = str(settings.BOOKING_POLL_AFTER_S)
        if _not_modified(request, etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        data = BookingOutputSerializer(booking, context={"request": request}).data
        return Response(data, headers=headers)


class BookingCancelView(CustomerAPIView):
    """Cancelling one of my bookings."""

    @extend_schema(
        operation_id="bookings_cancel",
        summary="Cancel one of my bookings",
        description=(
            "Asks for the cancellation; the partner is told asynchronously, so the booking is "
            "`cancelling` until it is `cancelled`. Idempotent: asking again returns the same "
            "booking with 202, and so does asking while a cancel that did not complete is with our "
            "support team (`cancel_with_support`, `disrupted_cancel_not_done`): it is the same "
            "cancel. The body is optional and takes one field, `expected_fee`: the "
            "`if_cancelled.fee` the customer was shown, so that a cancel that would now cost more "
            "(the partner confirmed, the cut-off passed meanwhile) is refused with 409 instead of "
            "charged. Without it, the fee is the one that stands when the cancel is asked. Any "
            "other field (a `reason`) is refused with 400, not ignored."
        ),
        tags=[_TAG],
        parameters=[_REFERENCE, *_POLL_HEADERS],
        request=BookingCancelInputSerializer,
        responses={
            202: OpenApiResponse(BookingOutputSerializer, description="Cancellation accepted."),
            400: _error(
                "`validation_error`: the body has a field other than `expected_fee`, or that is "
                "not an amount."
            ),
            401: _UNAUTHENTICATED,
            404: _NOT_FOUND,
            409: _error(
                "`not_cancellable`: the booking has already failed or ended. "
                "`cancellation_fee_changed`: cancelling now would take more than `expected_fee`; "
                "nothing was cancelled: read the booking's `if_cancelled` again."
            ),
            415: _UNSUPPORTED_MEDIA,
            429: _THROTTLED,
        },
    )
    def post(self, request: Request, reference: str) -> Response:
        payload = BookingCancelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        booking = selectors.customer_booking(customer=request.user, reference=reference)
        booking = services.booking_request_cancel(
            booking_id=booking.pk,
            actor=Actor.CUSTOMER,
            actor_label=request.user.get_username(),
            expected_fee=payload.validated_data.get("expected_fee"),
        )
        return _booking_response(request, booking, status_code=status.HTTP_202_ACCEPTED)


class OfferListView(CustomerAPIView):
    """What can be booked."""

    @extend_schema(
        operation_id="offers_list",
        summary="List bookable offers",
        description="Active offers of partners that take bookings right now.",
        tags=["offers"],
        responses={
            200: OfferOutputSerializer(many=True),
            400: _BAD_PAGE,
            401: _UNAUTHENTICATED,
            404: _PAGE_NOT_FOUND,
            429: _THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        return self.paginated(request, selectors.bookable_offers(), OfferOutputSerializer)


class QuoteCreateView(CustomerAPIView):
    """Price quotes."""

    @extend_schema(
        operation_id="quotes_create",
        summary="Get a price quote for a stay",
        description=(
            "Validates and prices the stay and locks the price for you until `expires_at`; "
            "pass its `id` as `quote` when booking the same stay."
        ),
        tags=["quotes"],
        request=QuoteCreateInputSerializer,
        responses={
            201: QuoteOutputSerializer,
            400: _error(
                "Invalid body or stay (`validation_error`, with the fields, and `Unknown field.` for "
                "one the operation does not take; `parse_error` for a body that is not JSON "
                "(read as UTF-8, whatever charset it names), names a field twice in one object or "
                "is nested too deeply)."
            ),
            401: _UNAUTHENTICATED,
            413: _TOO_LARGE,
            415: _UNSUPPORTED_MEDIA,
            429: _THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        payload = QuoteCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        quote = services.quote_create(
            customer=request.user,
            offer_id=data["offer"],
            start_date=data["start_date"],
            end_date=data["end_date"],
            guests=data["guests"],
        )
        return Response(QuoteOutputSerializer(quote).data, status=status.HTTP_201_CREATED)
