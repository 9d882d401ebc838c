"""The browser tests' browser: Debian's Chromium, headless, driven by Playwright; one per test
module, and a fresh context (its own cookies and storage) per page. Registered for every test by
tests/conftest.py (`pytest_plugins`).

Tests install nothing: without Chromium at /usr/bin/chromium a browser test fails, unless
SKIP_BROWSER_TESTS=1 says that this machine runs no browser tests (CI installs it).

Also the customer site's page helpers: logging in, opening a fresh quote, recording every status
a booking's page shows (`record_shown`, `shown`), and `shot`, which checks a page state with axe
and keeps its screenshot for docs/customer.md.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
# A mail's HTML part is a message, not a page of the site: axe's page-structure best practices
# (landmarks, a first-level heading) do not apply to it; WCAG does.
AXE_WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


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


def open_quote(page, site, user, offer) -> str:
    """Log in and open a fresh quote for three nights in 40 days (the quote service's own)."""
    from bookings import services

    start = datetime.now(UTC).date() + timedelta(days=40)
    quote = services.quote_create(
        customer=user, offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
    )
    log_in(page, site, user)
    page.goto(f"{site.url}/quotes/{quote.pk}/")
    return page.url


def name_for_customers(partner) -> None:
    """A partner and its offer, named as a shop would show them."""
    partner.name = "Seaside Hotels"
    partner.save(update_fields=["name"])
    partner.offers.update(name="Double room, sea view")


def status_text(page) -> str:
    """The booking page's live status region, as it reads now."""
    return page.inner_text("#booking-status")


# Installed before any script of the page (`record_shown`): from the first parse on, each state of
# a booking page's live status region is recorded with the page's clock, in the microtask after the
# change, so before it is painted. What the customer could have seen, and from when. A state counts
# once the parser has passed the region (the progress part follows it) or a swap has filled it.
SHOWN_RECORDER = """
(() => {
  const shown = (window.__shown = []);
  let last = "";
  function look() {
    const region = document.getElementById("booking-status");
    const tag = region && region.querySelector("[data-status-version] .tag");
    const message = region && region.querySelector(".status-panel__message");
    if (!tag || !message || !document.getElementById("booking-progress")) {
      return;
    }
    const status = Array.from(tag.classList).find((name) => name.startsWith("tag--")).slice(5);
    const version = Number(tag.closest("[data-status-version]").dataset.statusVersion);
    const text = message.textContent.trim();
    const key = JSON.stringify([status, version, text]);
    if (key !== last) {
      last = key;
      shown.push({at: Date.now(), status: status, version: version, message: text});
    }
  }
  new MutationObserver(look).observe(document, {
    childList: true, subtree: true, characterData: true, attributes: true,
  });
})();
"""


@dataclass(frozen=True)
class Shown:
    """One state of a booking page's status region: from when (the page's clock, to the
    millisecond), the customer status, its status_version and its message."""

    at: datetime
    status: str
    version: int
    message: str


def record_shown(page) -> None:
    """Record every state of the booking page's status region, in each document `page` loads."""
    page.add_init_script(SHOWN_RECORDER)


def shown(page) -> list[Shown]:
    """What the page's status region has shown since its document loaded, in order."""
    return [
        Shown(
            at=datetime.fromtimestamp(row["at"] / 1000, UTC),
            status=row["status"],
            version=row["version"],
            message=row["message"],
        )
        for row in page.evaluate("window.__shown || []")
    ]


def shot(
    page, name: str, *, ours: bool = True, rules: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> None:
    """Check the page state with axe (WCAG 2.1 A and AA, and axe's best practices, unless `rules`
    names other rule sets), then keep a full-page screenshot as `customer-<name>.png`, a small
    PNG (a 64-colour palette is plenty for these pages). `ours=False`: a page of the browser's
    own, which axe does not judge; `exclude`: CSS selectors of parts that are not ours (the
    admin's own chrome on a console page)."""
    from PIL import Image

    # a click that navigates returns once the new document is committed, before it is parsed:
    # its <head> may not exist yet to take axe's script tag
    page.wait_for_load_state("load")
    if ours:
        page.add_script_tag(content=AXE.read_text())
        violations = page.evaluate(
            "async ([rules, exclude]) => (await axe.run("
            "exclude.length ? {include: [['html']], exclude: exclude.map(s => [s])} : document,"
            " {runOnly: rules})).violations.map(v => [v.id, v.nodes.map(n => n.html)])",
            [rules or AXE_RULESETS, list(exclude)],
        )
        assert violations == [], f"{name}: {violations}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(page.screenshot(full_page=True)))
    image.convert("RGB").quantize(colors=64).save(SCREENSHOTS / f"customer-{name}.png", optimize=True)
