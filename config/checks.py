"""Deployment checks (`manage.py check --deploy`): development defaults a server probably should
not keep, as warnings. What is unsafe, or wrong as soon as there are two machines, production
does not warn of but refuses outright (config/settings/production.py); these are the softer
ones, which a deployment may keep on purpose (SILENCED_SYSTEM_CHECKS, by id, then says so).

Registered by the core app (bookings/apps.py), hence their ids.
"""

from __future__ import annotations

import ipaddress
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning

STRIPE_API_BASE = "https://api.stripe.com"


def is_loopback_host(host: str) -> bool:
    """localhost, a loopback address (127.0.0.0/8, ::1) or the unspecified one (0.0.0.0, ::):
    a name each machine resolves to itself."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # an unclosed [ of an IPv6 address
        return None


@register(Tags.security, deploy=True)
def check_payment_provider(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    base = settings.STRIPE_API_BASE.rstrip("/")
    if base == STRIPE_API_BASE:
        return []
    return [
        CheckWarning(
            f"STRIPE_API_BASE is {base}, not Stripe's API: payments go to that server.",
            hint=f"Set STRIPE_API_BASE={STRIPE_API_BASE} (the default is the `make run` sandbox's).",
            id="bookings.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_site_url(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """The links in booking mails: over HTTPS, to a host this site answers for."""
    url = settings.SITE_URL
    host = _host(url)
    problems: list[CheckMessage] = []
    if url.startswith("http://"):
        problems.append(
            CheckWarning(
                f"SITE_URL is {url}: the links in booking mails are plain HTTP.",
                hint="Set SITE_URL to the customer site's https:// address.",
                id="bookings.W002",
            )
        )
    if host and not _host_allowed(host):
        problems.append(
            CheckWarning(
                f"SITE_URL's host {host} is not in ALLOWED_HOSTS: the links in booking mails would "
                "be answered 400.",
                hint=f"Add {host} to ALLOWED_HOSTS, or set SITE_URL to a host in it.",
                id="bookings.W005",
            )
        )
    return problems


def _host_allowed(host: str) -> bool:
    from django.http.request import validate_host

    return validate_host(host, settings.ALLOWED_HOSTS)


@register(Tags.security, deploy=True)
def check_mail(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    smtp = settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
    if smtp and is_loopback_host(settings.EMAIL_HOST):
        problems.append(
            CheckWarning(
                f"EMAIL_URL sends mail to {settings.EMAIL_HOST}:{settings.EMAIL_PORT}, this machine "
                "(the default is the `make run` mail sink's): every machine that sends mail (the "
                "workers') needs a relay there.",
                hint="Set EMAIL_URL to your mail relay (smtp+tls://USER:PASSWORD@HOST:587), or add "
                "bookings.W003 to SILENCED_SYSTEM_CHECKS if every such machine has a local one.",
                id="bookings.W003",
            )
        )
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2].lower()
    if "." not in domain or is_loopback_host(domain):
        problems.append(
            CheckWarning(
                f"DEFAULT_FROM_EMAIL is {settings.DEFAULT_FROM_EMAIL}: booking mails come from a "
                "domain nobody can answer or verify (mail servers reject or bin them).",
                hint="Set DEFAULT_FROM_EMAIL to an address of your domain, "
                "e.g. Bookings <bookings@example.com>.",
                id="bookings.W004",
            )
        )
    return problems


@register(Tags.security, deploy=True)
def check_trusted_proxies(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """Behind the TLS proxy production is deployed behind, 0 makes every client the proxy."""
    if settings.TRUSTED_PROXY_COUNT:
        return []
    return [
        CheckWarning(
            "TRUSTED_PROXY_COUNT is 0: X-Forwarded-For is ignored, so behind a proxy every request "
            "counts as the proxy's address: one rate limit for the whole site, and "
            f"{settings.AXES_FAILURE_LIMIT} wrong passwords lock a username out for everyone.",
            hint="Set TRUSTED_PROXY_COUNT to the number of proxies that append to X-Forwarded-For "
            "(1 behind the one TLS proxy), or add bookings.W006 to SILENCED_SYSTEM_CHECKS if the "
            "web server faces the clients directly.",
            id="bookings.W006",
        )
    ]
