from django.apps import AppConfig


class BookingsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "bookings"

    def ready(self) -> None:
        from bookings import catalogue
        from config import (
            checks,  # noqa: F401 - registers the deployment checks (bookings.W0xx)
            integer_bounds,
        )

        catalogue.connect_signals()
        integer_bounds.connect()
