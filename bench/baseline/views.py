"""The baseline: DRF's generic create with the project's default authentication, permission and
throttling, so that the only difference from `POST /api/v1/bookings` is the booking's own work."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.generics import CreateAPIView

from bench.baseline.models import BaselineItem


class BaselineItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaselineItem
        fields = ["id", "name", "quantity", "created_at"]


class BaselineItemCreateView(CreateAPIView):
    serializer_class = BaselineItemSerializer
    queryset = BaselineItem.objects.all()
