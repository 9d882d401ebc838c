"""A test's timeout (pytest-timeout: the `timeout` ini value, `pytest.mark.timeout`) bounds that
test, its own fixtures and its body; not the set-ups it merely happens to be the first to need.

A fixture of a wider scope than the function (the test database's creation and migrations, the
live server, the sandbox partners' processes) is set up once, for many tests, inside the protocol
of whichever test needs it first on a worker, so pytest-timeout charges all of it to that one
test. On a busy 2-core machine those set-ups alone outlast a test's minute: a payments test's
set-up was cut at 60 s (`Failed: Timeout`, an error at setup) while its worker created the test
database and started three sandbox processes. So while such a fixture is set up the test's timer
is paused, and the set-up runs under a budget of its own (the `shared_setup_timeout` ini value),
which still ends one that hangs; then the test's timer starts again, in full.

Only pytest-timeout's own hooks are used (`pytest_timeout_set_timer`, `pytest_timeout_cancel_timer`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

SHARED_SETUP_TIMEOUT_S = 300.0

_own_timer = pytest.StashKey[Any]()  # the test's pytest-timeout settings, when its timer runs in setup
_running: pytest.Item | None = None
_shared_depth = 0  # set-ups of wide fixtures in progress (one may ask for another)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "shared_setup_timeout",
        "Seconds a fixture wider than a test (session, package, module, class) has to be set up; "
        "the test's own timeout is paused meanwhile (tests/timeouts.py).",
        default=str(SHARED_SETUP_TIMEOUT_S),
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


@pytest.hookimpl(wrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> Generator[None, object, object]:
    if _shared_depth == 0:  # the test's own timer, not a shared set-up's
        item.stash[_own_timer] = settings
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    global _shared_depth
    item = _running
    settings = item.stash.get(_own_timer, None) if item is not None else None
    if fixturedef.scope == "function" or settings is None or _shared_depth > 0:
        return (yield)
    hook = item.config.pluginmanager.hook
    budget = float(item.config.getini("shared_setup_timeout"))
    hook.pytest_timeout_cancel_timer(item=item)
    _shared_depth += 1
    try:
        hook.pytest_timeout_set_timer(item=item, settings=settings._replace(timeout=budget))
        return (yield)
    finally:
        hook.pytest_timeout_cancel_timer(item=item)
        _shared_depth -= 1
        hook.pytest_timeout_set_timer(item=item, settings=settings)
