"""Provider-facing endpoint: the signed payment webhook receiver (served by the webhook process)."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import error_body
from config.metrics import events as metrics
from config.negotiation import IgnoreAccept
from payments.services.webhooks import payment_event_receive


class RawBodyParser(BaseParser):
    """Leave the body as bytes: the signature covers the exact raw bytes."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


_ack = inline_serializer(
    "PaymentWebhookAck", {"status": serializers.CharField(), "message": serializers.CharField()}
)


class PaymentWebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    parser_classes = [RawBodyParser]
    content_negotiation_class = IgnoreAccept  # an authentic delivery is never refused for its Accept

    @extend_schema(
        operation_id="payment_webhook",
        summary="Receive a signed event of the payment provider (Stripe-Signature)",
        tags=["payments"],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("Stripe-Signature", str, OpenApiParameter.HEADER, required=True)],
        responses={
            200: OpenApiResponse(
                _ack, description="An event we already hold, or one about nothing of ours: acknowledged."
            ),
            202: OpenApiResponse(_ack, description="Stored; applied asynchronously."),
            400: OpenApiResponse(
                description="The signature does not verify (`invalid_signature`); or it verifies but "
                "was made more than the tolerance (300 s) before or after our clock "
                "(`timestamp_out_of_tolerance`); or it verifies, but the body is no event: not a "
                "JSON object, or an `id` or `type` that is not short text (`malformed_body`). "
                "Nothing is stored."
            ),
            413: OpenApiResponse(description="Body too large (not applied)."),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            raw = request.body  # the raw bytes, before anything touches request.data
        except RequestDataTooBig:
            metrics.payment_webhook_delivery(result="payload_too_large")
            return Response(error_body("payload_too_large", "The body is too large."), status=413)
        receipt = payment_event_receive(raw=raw, signature=request.headers.get("Stripe-Signature", ""))
        # Every answer counted by its code: a wrong STRIPE_WEBHOOK_SECRET is `invalid_signature`
        # on every delivery, a clock apart `timestamp_out_of_tolerance`.
        metrics.payment_webhook_delivery(result=receipt.code)
        if receipt.status >= 400:
            return Response(error_body(receipt.code, receipt.message), status=receipt.status)
        return Response({"status": receipt.code, "message": receipt.message}, status=receipt.status)
