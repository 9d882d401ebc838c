"""Who is on the other end of a request: one answer for the API rate limit and the login lockout."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The client's address: the connection's, or behind `TRUSTED_PROXY_COUNT` proxies the
    address the outermost of them saw (its entry in X-Forwarded-For). Entries left of it were
    written by the client and prove nothing."""
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        addresses = [address.strip() for address in forwarded.split(",")]
        return addresses[-min(proxies, len(addresses))]
    return request.META.get("REMOTE_ADDR", "")
