"""Every route of the API answers with and without its trailing slash (docs/design.md, invariant
11): a client that adds the slash reaches the same view, not Django's HTML 404."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver


def _api_routes(patterns=None, prefix: str = "") -> list[str]:
    routes: list[str] = []
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(entry.pattern).lstrip("^")
        if isinstance(entry, URLResolver):
            routes += _api_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/v1/"):
            routes.append(route)
    return routes


def test_every_api_route_takes_an_optional_trailing_slash():
    routes = _api_routes()

    assert "api/v1/support/bookings/(?P<reference>[^/]+)/timeline(?:/)?$" in routes
    assert [route for route in routes if not route.endswith("(?:/)?$")] == []
