"""Partner-facing endpoints: the signed webhook receiver."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import error_body
from config.metrics import events as metrics
from config.negotiation import IgnoreAccept
from config.network import client_ip
from partners.selectors import webhook_partner
from partners.services.webhooks import body_too_large, inbound_event_receive


def _content_length(request: Request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class RawBodyParser(BaseParser):
    """Leave the body as bytes: the signature covers the exact raw bytes."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


_ack = inline_serializer(
    "WebhookAck", {"status": serializers.CharField(), "message": serializers.CharField()}
)


class PartnerWebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    parser_classes = [RawBodyParser]
    content_negotiation_class = IgnoreAccept  # an authentic delivery is never refused for its Accept

    @extend_schema(
        operation_id="partner_webhook",
        summary="Receive a signed partner webhook (Standard Webhooks)",
        tags=["partners"],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter("webhook-id", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("webhook-timestamp", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("webhook-signature", str, OpenApiParameter.HEADER, required=True),
        ],
        responses={
            200: OpenApiResponse(
                _ack,
                description="A delivery we already hold, or an event type we do not handle: "
                "acknowledged, not applied.",
            ),
            202: OpenApiResponse(_ack, description="Stored; processed asynchronously."),
            400: OpenApiResponse(
                description="Signed, but its content cannot be read or is out of range "
                "(`malformed_body`): quarantined as invalid, not applied."
            ),
            401: OpenApiResponse(
                description="Bad or missing signature (`invalid_signature`), or a valid one signed "
                "outside the time tolerance (`timestamp_out_of_tolerance`: the reservation is "
                "synced from the partner instead). Not applied."
            ),
            404: OpenApiResponse(description="Unknown partner."),
            413: OpenApiResponse(description="Body too large (not applied)."),
        },
    )
    def post(self, request: Request, code: str) -> Response:
        partner = webhook_partner(code)
        if partner is None:
            metrics.webhook_delivery(partner="(unknown)", result="unknown_partner")
            return Response(error_body("not_found", f"No partner {code}."), status=404)
        headers, source = dict(request.headers), client_ip(request)
        try:
            raw = request.body  # the raw bytes, before anything touches request.data
        except RequestDataTooBig:
            # Bigger than Django reads at all: refused like any other oversized body, its first
            # bytes kept as evidence.
            first_bytes = request.read(settings.WEBHOOK_EVIDENCE_BYTES)
            receipt = body_too_large(
                partner, first_bytes, headers, size=_content_length(request), source=source
            )
        else:
            receipt = inbound_event_receive(partner=partner, raw=raw, headers=headers, source=source)
        metrics.webhook_delivery(partner=partner.code, result=receipt.code)
        if receipt.status >= 400:
            return Response(error_body(receipt.code, receipt.message), status=receipt.status)
        return Response({"status": receipt.code, "message": receipt.message}, status=receipt.status)
