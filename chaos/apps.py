from django.apps import AppConfig


class ChaosAppConfig(AppConfig):
    """The proving harness: `manage.py chaos` and `manage.py run_sandbox_partner`. No models."""

    name = "chaos"
    verbose_name = "Chaos run and sandbox partners"
