"""The API's docs page (`/api/docs/`) in a real browser (headless Debian Chromium driven by
Playwright) against the live server: Swagger UI renders the customer API's operations from our
own origin alone, no request leaving it (its files are the sidecar's, served as our static files)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_the_docs_render_the_operations_with_no_request_leaving_our_origin(open_page, live_server):
    page = open_page(viewport={"width": 1280, "height": 900})
    ours = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []
    # Every request the page makes is seen here, and one to anywhere else is refused before it leaves.
    page.on("request", lambda request: _note_foreign(request.url, ours, elsewhere))
    page.route(lambda url: _foreign(url, ours), lambda route: route.abort())

    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_load_state("networkidle")

    assert elsewhere == []
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/v1/bookings", "/api/v1/bookings/{reference}", "/api/v1/quotes"} <= {
        path.replace("\u200b", "") for path in paths
    }


def _foreign(url: str, ours: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != ours


def _note_foreign(url: str, ours: str, elsewhere: list[str]) -> None:
    if _foreign(url, ours):
        elsewhere.append(url)
