"""Brute force on the admin login (django-axes): repeated failures lock a username out from that
address, even with the right password; the lockout is logged, cools off, and an admin can lift it."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.factories import UserFactory

PASSWORD = "the-right-password-7"
LOCKED = (
    "After 5 wrong passwords in a row, logging in to this account from here is paused for 15 minutes, "
    "even with the right password."
)


@pytest.fixture
def staff(db):
    user = UserFactory(username="support-lockout", is_staff=True)
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def log_in(
    username: str,
    password: str,
    *,
    address: str = "203.0.113.7",
    page: str = "/admin/login/",
    user_agent: str | None = None,
):
    """Through a real login form (the admin's, or the customer pages'): fetch it, then post it
    back with its CSRF token."""
    headers = {} if user_agent is None else {"HTTP_USER_AGENT": user_agent}
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address, **headers)
    form = client.get(f"{page}?next=/admin/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    return client.post(
        f"{page}?next=/admin/",
        {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
    )


def fail(times: int, username: str, **kwargs) -> list[int]:
    return [log_in(username, "wrong-password", **kwargs).status_code for _ in range(times)]


def test_the_fifth_failure_locks_the_username_out_from_that_address_and_is_logged(staff, caplog):
    with caplog.at_level(logging.WARNING, logger="axes"):
        statuses = fail(5, staff.username)
    lockouts = [r.getMessage() for r in caplog.records if "Locking out" in r.getMessage()]
    failures = AccessAttempt.objects.get(username=staff.username).failures_since_start
    right_password = log_in(staff.username, PASSWORD)

    assert statuses == [200, 200, 200, 200, 429]
    assert failures == 5
    assert right_password.status_code == 429
    page = right_password.content.decode()
    assert '<h1 class="heading-l">Too many attempts to log in</h1>' in page and LOCKED in page
    assert 'href="/account/password-reset/"' in page
    # The log names no one (username and address are masked); the admin's attempts list does.
    assert lockouts == [
        'AXES: Locking out {username: "********************", ip_address: "********************", '
        'user_agent: "<unknown>", path_info: "/admin/login/"} after repeated login failures.'
    ]


def test_the_lockout_is_per_username_and_address(staff):
    fail(5, staff.username)

    from_elsewhere = log_in(staff.username, PASSWORD, address="198.51.100.20")

    assert from_elsewhere.status_code == 302
    assert from_elsewhere["Location"] == "/admin/"


def test_the_lockout_cools_off_after_fifteen_minutes(staff):
    fail(5, staff.username)

    with time_machine.travel(timezone.now() + timedelta(minutes=14)):
        still_locked = log_in(staff.username, PASSWORD)
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        cooled_off = log_in(staff.username, PASSWORD)

    assert still_locked.status_code == 429
    assert cooled_off.status_code == 302


def test_the_lockout_page_says_when_to_retry_and_the_lockout_ends_then(staff):
    # As the API's 429 does: the seconds until the lockout ends, the first whole second after its
    # 15 minutes (axes still refuses a login at 15:00.000). A try in it starts it over.
    page = "/account/login/"
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        statuses = fail(4, staff.username, page=page)
        locked = log_in(staff.username, "wrong-password", page=page)
    restarted = started + timedelta(minutes=14)
    with time_machine.travel(restarted, tick=False):
        again = log_in(staff.username, PASSWORD, page=page)
    retry_after = int(again["Retry-After"])
    with time_machine.travel(restarted + timedelta(seconds=retry_after - 1), tick=False):
        too_soon = log_in(staff.username, PASSWORD, page=page)
    with time_machine.travel(restarted + timedelta(seconds=retry_after), tick=False):
        in_time = log_in(staff.username, PASSWORD, page=page)

    assert statuses == [400] * 4  # the customer page's form, refused
    assert (locked.status_code, locked["Retry-After"]) == (429, str(15 * 60 + 1))
    assert "Too many attempts to log in" in locked.content.decode()
    assert (again.status_code, retry_after) == (429, 15 * 60 + 1)
    assert too_soon.status_code != 302 and "_auth_user_id" not in too_soon.client.session
    assert in_time.status_code == 302


def test_retry_after_counts_the_failures_as_the_lockout_does(staff):
    # Failures from two browsers at one address count together: the lockout ends once the first
    # browser's three leave the cool-off, 10 minutes after the last two (not 15).
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        first = fail(3, staff.username, user_agent="browser-one")
    with time_machine.travel(started + timedelta(minutes=5), tick=False):
        second = fail(2, staff.username, user_agent="browser-two")
        locked = log_in(staff.username, PASSWORD, user_agent="browser-two")
    with time_machine.travel(started + timedelta(minutes=15, seconds=1), tick=False):
        after = log_in(staff.username, PASSWORD, user_agent="browser-two")

    assert first + second == [200, 200, 200, 200, 429]
    # The right password in the lockout is one more failure: three of each browser's now.
    assert (locked.status_code, locked["Retry-After"]) == (429, str(10 * 60 + 1))
    assert after.status_code == 302


def test_an_admin_lifts_a_lockout_with_axes_reset_username(staff):
    fail(5, staff.username)

    call_command("axes_reset_username", staff.username)
    after_reset = log_in(staff.username, PASSWORD)

    assert after_reset.status_code == 302
    assert AccessAttempt.objects.filter(username=staff.username).count() == 0


def test_the_failure_limit_is_configurable(staff, settings):
    settings.AXES_FAILURE_LIMIT = 2

    assert fail(2, staff.username) == [200, 429]


def test_who_is_locked_out_and_from_where_is_listed_for_ops(staff, capsys):
    # The log masks them; the command the README names gives them, to lift the right lockout.
    fail(5, staff.username)

    call_command("axes_list_attempts")

    listed = capsys.readouterr().out
    assert staff.username in listed and "203.0.113.7" in listed


@pytest.mark.parametrize(("page", "refused"), [("/admin/login/", 200), ("/account/login/", 400)])
def test_a_username_longer_than_the_attempts_record_is_a_failed_login_not_a_server_error(
    db, page, refused, settings
):
    # Django's login forms pass a username of any length on to authenticate; its failure was
    # recorded as typed, and AccessAttempt.username holds 255 characters: a DataError, a 500 for
    # anyone. It is counted under its first 255 characters, and locks out as any other name.
    settings.AXES_FAILURE_LIMIT = 2
    typed = "u" * 256 + "x" * 10_000

    statuses = [log_in(typed, "wrong-password", page=page).status_code for _ in range(2)]

    assert statuses == [refused, 429]
    assert AccessAttempt.objects.get().username == typed[:255]


# --- the username from every address ---------------------------------------------------------------
LOCKED_EVERYWHERE = (
    "After 8 wrong passwords for this account, from wherever they came, logging in to it is paused "
    "for 15 minutes, from everywhere and even with the right password."
)


def test_failures_from_rotating_addresses_lock_the_username_out_everywhere(staff, settings):
    # Four guesses from each address stay under the per-address limit (5); together they reach
    # the username's own (8 here), and the right password from a third address is refused too.
    settings.LOGIN_USERNAME_FAILURE_LIMIT = 8
    page = "/account/login/"
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        first = fail(4, staff.username, page=page, address="203.0.113.1")
        second = fail(4, staff.username, page=page, address="203.0.113.2")
    with time_machine.travel(started + timedelta(minutes=1), tick=False):
        elsewhere = log_in(staff.username, PASSWORD, page=page, address="198.51.100.3")
        other_account = log_in("someone-else", "wrong-password", page=page, address="203.0.113.1")

    assert first == [400] * 4
    assert second == [400] * 3 + [429]  # the failure that reaches the limit is answered as a lockout
    assert elsewhere.status_code == 429
    assert "_auth_user_id" not in elsewhere.client.session
    assert LOCKED_EVERYWHERE in elsewhere.content.decode()
    # Until the eight guesses leave the cool-off, a minute after they came (the refused right
    # password is one more failure, but one alone stays under the limit).
    assert elsewhere["Retry-After"] == str(14 * 60 + 1)
    assert other_account.status_code == 400  # a wrong password, not a lockout: the rule is per name


def test_below_the_username_limit_other_addresses_log_in(staff, settings):
    settings.LOGIN_USERNAME_FAILURE_LIMIT = 8
    fail(4, staff.username, address="203.0.113.1")
    fail(3, staff.username, address="203.0.113.2")

    from_elsewhere = log_in(staff.username, PASSWORD, address="198.51.100.3")

    assert from_elsewhere.status_code == 302


def test_the_username_lockout_cools_off(staff, settings):
    settings.LOGIN_USERNAME_FAILURE_LIMIT = 8
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        for n in range(4):
            fail(2, staff.username, address=f"203.0.113.{n + 1}")
    with time_machine.travel(started + timedelta(minutes=15, seconds=1), tick=False):
        cooled_off = log_in(staff.username, PASSWORD, address="198.51.100.3")

    assert cooled_off.status_code == 302
