"""Who is on the other end of a request: one answer for the API rate limit, the login lockout
and the access log (config/access_log.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    return client_address(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        settings.TRUSTED_PROXY_COUNT,
    )


def client_address(remote_addr: str, forwarded_for: str, proxies: int) -> str:
    """The client's address: the connection's, or behind `proxies` proxies (TRUSTED_PROXY_COUNT)
    the address the outermost of them saw (its entry in X-Forwarded-For). Entries left of it were
    written by the client and prove nothing."""
    if proxies and forwarded_for:
        addresses = [address.strip() for address in forwarded_for.split(",")]
        return addresses[-min(proxies, len(addresses))]
    return remote_addr
