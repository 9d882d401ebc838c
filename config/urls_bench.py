"""URLs of the benchmark settings: the project's URLs plus the baseline endpoint."""

from django.urls import include, path

from config.urls import handler404 as project_handler404
from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("bench/", include("bench.baseline.urls")),
]
handler404 = project_handler404
