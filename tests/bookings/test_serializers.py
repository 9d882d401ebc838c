"""The booking output, written out for speed, stays what DRF renders from its declared fields."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from bookings.api.serializers import BookingOutputSerializer
from bookings.states import BookingState
from tests.factories import BookingFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("state", list(BookingState))
def test_the_written_out_booking_output_equals_drfs_rendering_of_the_declared_fields(state, settings):
    settings.TIME_ZONE = "Europe/Berlin"  # a zone with an offset: the same conversion both ways
    booking = BookingFactory(status=state)
    serializer = BookingOutputSerializer(booking, context={"request": RequestFactory().get("/")})

    fast = serializer.to_representation(booking)
    generic = serializers.Serializer.to_representation(serializer, booking)

    assert json.loads(JSONRenderer().render(fast)) == json.loads(JSONRenderer().render(generic))
    assert list(fast) == list(serializer.fields)
