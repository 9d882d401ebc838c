from django.urls import path

from bench.baseline.views import BaselineItemCreateView

urlpatterns = [
    path("baseline/items", BaselineItemCreateView.as_view(), name="bench-baseline-create"),
]
