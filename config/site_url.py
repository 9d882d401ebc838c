"""The customer site's public address, `SITE_URL`: every absolute link we send by mail (a
booking's page, a password reset) is built here, never from a request's Host header.

A request's Host is whatever name it came by: any of ALLOWED_HOSTS (an internal name, an
instance's address), so a link built from it could point a customer at an address that is not
the site's, and mail a worker sends has no request at all.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings


def absolute(path: str) -> str:
    """`/bookings/BK-X/` -> `https://shop.example/bookings/BK-X/`."""
    return settings.SITE_URL.rstrip("/") + path


def scheme_and_domain() -> tuple[str, str]:
    """What Django's templates put before a path (`{{ protocol }}://{{ domain }}`): the same
    address as `absolute`, a path under which the site is served included."""
    parts = urlsplit(settings.SITE_URL)
    return parts.scheme, parts.netloc + parts.path.rstrip("/")
