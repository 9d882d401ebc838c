"""The browser tests' browser: Debian's Chromium, headless, driven by Playwright; one per test
module, and a fresh context (its own cookies and storage) per page. Registered for every test by
tests/conftest.py (`pytest_plugins`).

Tests install nothing: without Chromium at /usr/bin/chromium a browser test fails, unless
SKIP_BROWSER_TESTS=1 says that this machine runs no browser tests (CI installs it).

Also the customer site's page helpers: logging in, and `shot`, which checks a page state with axe
and keeps its screenshot for docs/customer.md.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
DEFAULT_TIMEOUT_MS = 15_000

# Customer pages' screenshots: artifacts/screenshots/, or where CUSTOMER_SCREENSHOTS_DIR says
# (docs/img/ for docs/customer.md).
SCREENSHOTS = Path(os.environ.get("CUSTOMER_SCREENSHOTS_DIR") or ROOT / "artifacts" / "screenshots")
AXE = ROOT / "tests" / "bookings" / "web" / "vendor" / "axe-4.14.1.min.js"
AXE_RULESETS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip(f"SKIP_BROWSER_TESTS=1 and no Chromium at {CHROMIUM}")
    pytest.fail(
        f"Debian's Chromium is missing at {CHROMIUM}: install it (apt-get install -y chromium), "
        "or set SKIP_BROWSER_TESTS=1 to skip the browser tests on this machine",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    _require_chromium()
    # Playwright's sync API runs an event loop in this thread: the ORM (the test's and the
    # database teardown's) refuses to run beside it unless told.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """`open_page(**context_options)`: a page in a fresh browser context, closed after the test."""
    contexts = []

    def open_(**options):
        context = browser.new_context(**options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    """A page at phone width: the customer site's first audience."""
    return open_page(**PHONE)


# --- the customer site ----------------------------------------------------------------------------
def log_in(page, site, user) -> None:
    """Log in through the site's form (`site`: anything with a `url`); lands on my bookings."""
    from tests.factories import PASSWORD

    page.goto(f"{site.url}/account/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{site.url}/bookings/")


def status_text(page) -> str:
    """The booking page's live status region, as it reads now."""
    return page.inner_text("#booking-status")


def shot(page, name: str, *, ours: bool = True) -> None:
    """Check the page state with axe (WCAG 2.1 A and AA, and axe's best practices), then keep a
    full-page screenshot as `customer-<name>.png`, a small PNG (a 64-colour palette is plenty for
    these pages). `ours=False`: a page of the browser's own, which axe does not judge."""
    from PIL import Image

    if ours:
        page.add_script_tag(content=AXE.read_text())
        violations = page.evaluate(
            "async (rules) => (await axe.run(document, {runOnly: rules})).violations"
            ".map(v => [v.id, v.nodes.map(n => n.html)])",
            AXE_RULESETS,
        )
        assert violations == [], f"{name}: {violations}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(page.screenshot(full_page=True)))
    image.convert("RGB").quantize(colors=64).save(SCREENSHOTS / f"customer-{name}.png", optimize=True)
