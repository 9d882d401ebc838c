"""The support console: pages, filters, and every action (permission, confirm, double submit, effect)."""

from __future__ import annotations

import io
import json
import re
from datetime import date, timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bookings.states import BookingState
from partners.models import InboundState
from reconciliation.admin import SupportActionForm
from reconciliation.orphan_admin import OrphanActionForm
from reconciliation.payment_admin import PaymentActionForm
from reconciliation.services import support
from reconciliation.services.support import payments as money
from tests.factories import InboundEventFactory, PartnerAttemptFactory, PartnerReservationFactory, UserFactory
from tests.reconciliation.conftest import actor_names, calls

S = BookingState
pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:bookings_booking_changelist")


def _change(booking) -> str:
    return reverse("admin:bookings_booking_change", args=[booking.pk])


def _action(booking, name: str) -> str:
    return reverse("admin:bookings_booking_support_action", args=[booking.pk, name])


def _token(response) -> str:
    return re.search(r'name="token" value="([0-9a-f]+)"', response.content.decode()).group(1)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- list, filters, search ----------------------------------------------------------------
def test_booking_list_filters_by_state_customer_status_partner_reason_and_age(make_booking, support_client):
    stuck = make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    fine = make_booking(status=S.CONFIRMED)
    old = make_booking(status=S.PENDING_PARTNER)
    type(old).objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))

    def listed(query: str) -> set[str]:
        response = support_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200
        return {
            ref
            for ref in (stuck.reference, fine.reference, old.reference)
            if ref in response.content.decode()
        }

    assert listed("status__exact=needs_attention") == {stuck.reference}
    assert listed("customer_status=pending") == {stuck.reference, old.reference}
    assert listed("customer_status=confirmed") == {fine.reference}
    assert listed(f"partner__id__exact={stuck.partner_id}") == {
        stuck.reference,
        fine.reference,
        old.reference,
    }
    assert listed("attention_reason=compensation_failed") == {stuck.reference}
    assert listed("age=gt1d") == {old.reference}
    assert listed("age=lt5m") == {stuck.reference, fine.reference}


@pytest.mark.parametrize(
    "url",
    [
        f"{CHANGELIST}?status=%00",
        f"{CHANGELIST}?attention_reason__exact=%00",
        reverse("admin:bookings_booking_needs_attention") + "?partner=%00",
        reverse("admin:bookings_booking_needs_attention") + "?reason=%00",
        reverse("admin:partners_orphancase_changelist") + "?partner=%00",
        reverse("admin:partners_inboundevent_changelist") + "?state=%00",
        reverse("admin:reconciliation_refundproposal_changelist") + "?currency=%00",
        f"{CHANGELIST}?%00=1",
    ],
)
def test_a_nul_in_a_console_filter_is_the_400_page_not_a_server_error(make_booking, superuser_client, url):
    # PostgreSQL's text cannot hold a NUL: compared with a column by a list filter or the queue's
    # own filters, it was a DataError (the 500 page, an error logged), from any staff link.
    make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    superuser_client.raise_request_exception = False

    response = superuser_client.get(url)

    assert response.status_code == 400
    assert "Sorry, we could not understand this request" in response.content.decode()


def test_a_nul_posted_to_a_console_action_is_the_400_page_and_does_nothing(
    make_booking, support_client, partner_queue, broker
):
    # A bulk action reads its token itself, not through a form field (which refuses a NUL).
    booking = make_booking(status=S.PENDING_PARTNER)
    support_client.raise_request_exception = False
    selection = {"action": "force_sync_selected", "_selected_action": [str(booking.pk)], "confirm": "yes"}

    rows = booking.events.count()

    response = support_client.post(CHANGELIST, {**selection, "token": "t\x00"})

    assert response.status_code == 400
    assert calls(broker, partner_queue) == [] and booking.events.count() == rows


def test_booking_list_searches_reference_partner_reservation_id_and_customer_email(
    make_booking, support_client
):
    booking = make_booking(status=S.CONFIRMED)
    other = make_booking(status=S.CONFIRMED)
    PartnerReservationFactory(booking=booking, partner_ref="R-needle-77")

    for query in (booking.reference, "R-needle-77", booking.customer.email):
        content = support_client.get(CHANGELIST, {"q": query}).content.decode()
        assert booking.reference in content, query
        assert other.reference not in content, query


def test_booking_page_shows_the_timeline_reservations_and_the_actions_the_user_may_take(
    make_booking, support_client, ops_client
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    PartnerReservationFactory(booking=booking, partner_ref="R-page-1", status="cancelled", version=4)
    from bookings.timeline import record_event

    record_event(booking, "booking.requested", actor="customer", summary="Requested hotel-42-dbl")

    page = support_client.get(_change(booking)).content.decode()

    assert "Requested hotel-42-dbl" in page and 'id="timeline"' in page
    assert "R-page-1" in page and "cancelled" in page
    assert f'href="{_action(booking, "sync")}"' in page
    assert f'href="{_action(booking, "compensate")}"' not in page  # shown disabled for support
    assert 'name="_save"' not in page  # nothing is edited here
    assert f'href="{_action(booking, "compensate")}"' in ops_client.get(_change(booking)).content.decode()


def test_the_page_of_an_ended_booking_support_has_says_which_actions_apply_and_why_not_the_others(
    make_booking, ops_client, django_capture_on_commit_callbacks
):
    # a rejected booking whose stray the partner would not cancel, since let go at the partner
    booking = make_booking(
        status=S.NEEDS_ATTENTION, attention_from=S.REJECTED, attention_reason="compensation_failed"
    )
    PartnerReservationFactory(booking=booking, status="cancelled")
    shown = (booking.customer_status, booking.customer_message, booking.status_version)

    page = ops_client.get(_change(booking)).content.decode()

    assert 'id="ended-with-support"' in page
    refusals = page[page.index('id="support-refusals"') :]
    refusals = refusals[: refusals.index("</ul>")]
    assert re.findall(r'data-action="(\w+)"', refusals) == ["retry", "cancel"]
    assert "The customer&#x27;s booking had ended (rejected)" in refusals
    for allowed in ("sync", "compensate", "resolve"):
        assert f'data-action="{allowed}">' in page  # offered, not marked refused
    # its resolve offers only its end; another outcome posted is refused, nothing done
    response = ops_client.get(_action(booking, "resolve"))
    form = response.content.decode()
    assert re.search(r'value="rejected"[^>]*id="id_outcome_0">\s*Rejected</label>', form)  # first, allowed
    assert "Failed — not possible: The customer&#x27;s booking had ended (rejected)" in form
    ops_client.post(
        _action(booking, "resolve"), {"token": _token(response), "outcome": "failed", "note": "x"}
    )
    assert type(booking).objects.get(pk=booking.pk).status == S.NEEDS_ATTENTION

    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(
            _action(booking, "resolve"),
            {
                "token": _token(ops_client.get(_action(booking, "resolve"))),
                "outcome": "rejected",
                "note": "ok",
            },
        )

    booking.refresh_from_db()
    assert booking.status == S.REJECTED
    assert (booking.customer_status, booking.customer_message, booking.status_version) == shown


def test_booking_page_tells_a_day_offers_dates_as_the_customer_reads_them(
    make_booking, offer, support_client
):
    """Support reads a one-day tour as the customer does, beside the end date sent to the partner."""
    offer.price_unit = "day"
    offer.save(update_fields=["price_unit"])
    booking = make_booking(start_date=date(2027, 4, 1), end_date=date(2027, 4, 2))

    page = support_client.get(_change(booking)).content.decode()

    assert "dates (as the customer reads them)" in page.lower()
    assert '<div class="readonly">1 April 2027 (1 day)</div>' in page
    assert "April 2, 2027" in page or "2027-04-02" in page  # the stored end date, as sent


def test_timeline_json_for_support_tooling(make_booking, support_client):
    booking = make_booking(status=S.CONFIRMED)
    from bookings.timeline import record_event

    record_event(booking, "booking.confirmed", actor="worker", summary="ok")

    body = support_client.get(reverse("admin:bookings_booking_timeline", args=[booking.pk])).json()

    assert body["reference"] == booking.reference
    assert [row["kind"] for row in body["timeline"]] == ["booking.confirmed"]


def test_console_needs_a_staff_login(make_booking):
    booking = make_booking(status=S.CONFIRMED)
    response = Client().get(_action(booking, "sync"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- the confirm page ----------------------------------------------------------------
def test_confirm_page_shows_our_state_beside_the_partners(make_booking, support_client):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    PartnerReservationFactory(booking=booking, partner_ref="R-side-1", status="confirmed", version=2)

    response = support_client.get(_action(booking, "sync"))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="ours"' in page and 'id="theirs"' in page
    assert "needs_attention" in page and "R-side-1" in page
    assert "Live lookup failed" in page and "Showing the last known state" in page  # closed port
    assert "Queue a partner sync" in page
    assert 'name="csrfmiddlewaretoken"' in page and _token(response)


@pytest.mark.parametrize("action", ["compensate", "cancel", "resolve"])
def test_support_is_denied_the_ops_actions_on_get_and_post(
    action, make_booking, support_client, partner_queue, broker
):
    booking = make_booking(status=S.NEEDS_ATTENTION)

    assert support_client.get(_action(booking, action)).status_code == 403
    response = support_client.post(
        _action(booking, action), {"token": "t" * 32, "note": "x", "outcome": "failed"}
    )

    booking.refresh_from_db()
    assert response.status_code == 403
    assert booking.status == S.NEEDS_ATTENTION and not booking.events.exists()
    assert calls(broker, partner_queue) == []


def test_unknown_action_is_not_found(make_booking, ops_client):
    assert ops_client.get(_action(make_booking(), "explode")).status_code == 404


def test_post_without_csrf_token_is_refused(make_booking, support_user, partner_queue, broker):
    booking = make_booking(status=S.PENDING_PARTNER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(support_user)

    response = client.post(_action(booking, "sync"), {"token": "a" * 32})

    assert response.status_code == 403
    assert not booking.events.exists()


# --- performing, twice ----------------------------------------------------------------
def test_force_sync_from_the_console_queues_the_sync_once_per_confirmation(
    make_booking, support_client, support_user, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    token = _token(support_client.get(_action(booking, "sync")))

    with django_capture_on_commit_callbacks(execute=True):
        first = support_client.post(
            _action(booking, "sync"), {"token": token, "note": "checking"}, follow=True
        )
        second = support_client.post(
            _action(booking, "sync"), {"token": token, "note": "checking"}, follow=True
        )

    assert first.redirect_chain == [(_change(booking), 302)]
    assert any("Force a partner sync" in m and "Sync queued." in m for m in _messages(first))
    assert any("nothing more was done" in m for m in _messages(second))
    assert list(booking.events.values_list("kind", "actor_label")) == [
        ("support.sync_requested", support_user.username)
    ]
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_compensate_from_the_console_fails_and_cancels_at_the_partner(
    make_booking, ops_client, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    live = PartnerReservationFactory(booking=booking, partner_ref="R-cmp-1", status="confirmed")
    page = ops_client.get(_action(booking, "compensate"))
    assert "Cancel R-cmp-1 (confirmed) at the partner" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(
            _action(booking, "compensate"), {"token": _token(page), "note": "dup"}, follow=True
        )
        ops_client.post(_action(booking, "compensate"), {"token": _token(page), "note": "dup"})

    booking.refresh_from_db()
    assert booking.status == S.FAILED
    assert any("needs_attention → failed" in m for m in _messages(response))
    assert calls(broker, partner_queue) == [("compensate_reservation", [live.pk])]
    assert booking.events.filter(kind="support.compensated").count() == 1


@pytest.mark.parametrize("sent", ["", "x" * 65])
def test_a_missing_or_overlong_token_is_said_on_the_form(make_booking, ops_client, sent):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="cancelled")

    response = ops_client.post(_action(booking, "resolve"), {"token": sent, "outcome": "failed", "note": "x"})

    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'id="token-errors".*?<li>[^<]+</li>', page, re.S)
    assert re.fullmatch(r"[0-9a-f]{32}", _token(response))  # a fresh one to confirm with
    booking.refresh_from_db()
    assert booking.status == S.NEEDS_ATTENTION and not booking.events.exists()


def test_a_token_used_on_another_booking_is_refused_on_the_form(
    make_booking, support_client, partner_queue, broker, django_capture_on_commit_callbacks
):
    first, second = make_booking(status=S.PENDING_PARTNER), make_booking(status=S.PENDING_PARTNER)
    token = _token(support_client.get(_action(first, "sync")))
    with django_capture_on_commit_callbacks(execute=True):
        support_client.post(_action(first, "sync"), {"token": token, "note": ""})
        response = support_client.post(_action(second, "sync"), {"token": token, "note": ""})

    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(
        rf'id="token-errors".*?already used for sync of {first.reference}.*?'
        rf"cannot also be used for sync of {second.reference}",
        page,
        re.S,
    )
    assert _token(response) != token
    assert not second.events.exists()
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_resolve_without_a_note_shows_the_form_again_and_changes_nothing(make_booking, ops_client):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="cancelled")
    page = ops_client.get(_action(booking, "resolve"))
    assert 'name="outcome"' in page.content.decode()

    response = ops_client.post(
        _action(booking, "resolve"), {"token": _token(page), "outcome": "failed", "note": ""}
    )

    booking.refresh_from_db()
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert booking.status == S.NEEDS_ATTENTION


def test_resolve_with_a_note_settles_the_booking(
    make_booking, ops_client, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="cancelled")
    token = _token(ops_client.get(_action(booking, "resolve")))

    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(
            _action(booking, "resolve"), {"token": token, "outcome": "cancelled", "note": "partner call"}
        )

    booking.refresh_from_db()
    assert booking.status == S.CANCELLED
    assert booking.events.get().data["note"] == "partner call"


def test_resolve_with_a_note_over_2000_characters_shows_the_form_again_and_changes_nothing(
    make_booking, ops_client
):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="cancelled")
    page = ops_client.get(_action(booking, "resolve"))

    response = ops_client.post(
        _action(booking, "resolve"), {"token": _token(page), "outcome": "failed", "note": "x" * 100_000}
    )

    booking.refresh_from_db()
    assert response.status_code == 200
    assert "A note may be at most 2,000 characters; this one has 100,000." in response.content.decode()
    assert booking.status == S.NEEDS_ATTENTION
    assert not booking.events.exists()


@pytest.mark.parametrize(
    "form",
    [
        lambda data: SupportActionForm(data, action=support.SYNC),
        lambda data: OrphanActionForm(data, needs_note=True),
        lambda data: PaymentActionForm(data, action=money.VOID),
    ],
    ids=["booking", "orphan", "payment"],
)
def test_every_console_action_form_bounds_its_note_at_2000_characters(form):
    longest = form({"token": "t", "note": "x" * 2000})
    too_long = form({"token": "t", "note": "x" * 2001})

    assert longest.is_valid(), longest.errors
    assert not too_long.is_valid()
    assert too_long.errors == {
        "note": [
            "A note may be at most 2,000 characters; this one has 2,001. "
            "Say why in short; link to anything longer."
        ]
    }


@pytest.mark.parametrize(
    "form",
    [
        lambda data: SupportActionForm(data, action=support.SYNC),
        lambda data: OrphanActionForm(data, needs_note=True),
        lambda data: PaymentActionForm(data, action=money.VOID),
    ],
    ids=["booking", "orphan", "payment"],
)
def test_every_console_action_form_refuses_control_characters_in_its_note_but_lines_and_tabs(form):
    lines = form({"token": "t", "note": "partner called:\r\n\tconfirmed by phone"})
    controlled = form({"token": "t", "note": "a\x01b\x1b[31m"})

    assert lines.is_valid(), lines.errors
    assert controlled.errors == {
        "note": ["A note holds text, lines and tabs: not control characters such as '\\x01'."]
    }


def test_a_refused_action_is_reported_and_changes_nothing(make_booking, ops_client, partner_queue, broker):
    booking = make_booking(status=S.CONFIRMED)
    page = ops_client.get(_action(booking, "compensate")).content.decode()
    assert 'id="refusal"' in page and 'id="confirm-form"' not in page

    response = ops_client.post(_action(booking, "compensate"), {"token": "b" * 32}, follow=True)

    assert any("cannot be failed" in m for m in _messages(response))
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


def test_cancel_and_retry_from_the_console(
    make_booking, ops_client, support_client, partner_queue, broker, django_capture_on_commit_callbacks
):
    confirmed = make_booking(status=S.CONFIRMED)
    stuck = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    cancel_page = ops_client.get(_action(confirmed, "cancel"))
    # The cancel's form carries the fee its preview showed (none owed here: no payment).
    assert 'name="expected_fee" value="0.00"' in cancel_page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(_action(confirmed, "cancel"), {"token": _token(cancel_page), "expected_fee": "0.00"})
        support_client.post(
            _action(stuck, "retry"), {"token": _token(support_client.get(_action(stuck, "retry")))}
        )

    confirmed.refresh_from_db()
    stuck.refresh_from_db()
    assert (confirmed.status, stuck.status) == (S.CANCEL_REQUESTED, S.REQUESTED)
    assert sorted(actor_names(broker, partner_queue)) == ["cancel_booking", "submit_booking"]


def test_the_cancel_page_and_cancel_booking_dry_run_say_what_happens_to_the_money(ops_client, make_booking):
    from tests.reconciliation.test_support import _money_case

    held, unpaid = _money_case("held"), make_booking(status=S.CONFIRMED)
    release = "Money: Once the cancellation is done, we release the 360.00 EUR we are holding on your card"

    page = ops_client.get(_action(held, "cancel")).content.decode()
    unpaid_page = ops_client.get(_action(unpaid, "cancel")).content.decode()
    out = io.StringIO()
    call_command("cancel_booking", held.reference, "--dry-run", "--no-live", stdout=out)
    dry = io.StringIO()
    call_command("cancel_booking", held.reference, "--dry-run", "--no-live", "--json", stdout=dry)

    assert release in page and 'id="confirm-form"' in page
    assert "Money: This booking takes no payment: cancelling costs nothing" in unpaid_page
    assert release in " ".join(out.getvalue().split())  # rich wraps the long line
    assert json.loads(dry.getvalue())["previews"][0]["money"]["outcome"] == "release"
    held.refresh_from_db()
    assert held.status == S.PENDING_PARTNER


# --- bulk sync ----------------------------------------------------------------
def test_bulk_force_sync_asks_then_queues_once(
    make_booking, support_client, partner_queue, broker, django_capture_on_commit_callbacks
):
    bookings = [make_booking(status=S.PENDING_PARTNER) for _ in range(3)]
    selection = {"action": "force_sync_selected", "_selected_action": [str(b.pk) for b in bookings]}

    confirm_page = support_client.post(CHANGELIST, selection)
    assert confirm_page.status_code == 200 and "Queue the syncs" in confirm_page.content.decode()
    assert calls(broker, partner_queue) == []
    token = _token(confirm_page)
    with django_capture_on_commit_callbacks(execute=True):
        support_client.post(CHANGELIST, {**selection, "confirm": "yes", "token": token})
        again = support_client.post(CHANGELIST, {**selection, "confirm": "yes", "token": token}, follow=True)

    assert actor_names(broker, partner_queue) == ["sync_booking"] * 3
    assert any("nothing more was done" in m for m in _messages(again))


@pytest.mark.parametrize("confirming", [False, True], ids=["preview", "confirm"])
def test_bulk_force_sync_above_its_limit_is_refused_whole_not_cut_short(
    make_booking, support_client, partner_queue, broker, monkeypatch, confirming
):
    monkeypatch.setattr("reconciliation.admin.BULK_SYNC_MOST", 2, raising=False)
    bookings = [make_booking(status=S.PENDING_PARTNER) for _ in range(3)]
    selection = {"action": "force_sync_selected", "_selected_action": [str(b.pk) for b in bookings]}
    if confirming:
        selection |= {"confirm": "yes", "token": support.new_token()}

    page = support_client.post(CHANGELIST, selection, follow=True)

    assert "Queue the syncs" not in page.content.decode()
    assert _messages(page) == [
        "3 bookings selected: a bulk sync takes at most 2 at a time, so nothing was done. Narrow the "
        "selection (a filter, or one page of the list) and sync again."
    ]
    assert calls(broker, partner_queue) == []
    assert not any(b.events.filter(kind="support.sync_requested").exists() for b in bookings)


def test_bulk_sync_is_not_offered_without_the_permission(make_booking, groups):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*groups["support"].permissions.filter(codename="view_booking"))
    client = Client()
    client.force_login(user)
    assert "force_sync_selected" not in client.get(CHANGELIST).content.decode()


# --- pages ----------------------------------------------------------------
def test_needs_attention_queue_lists_reason_age_and_partner(make_booking, support_client):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    type(booking).objects.filter(pk=booking.pk).update(status_changed_at=timezone.now() - timedelta(hours=3))
    make_booking(status=S.CONFIRMED)

    page = support_client.get(reverse("admin:bookings_booking_needs_attention")).content.decode()

    assert booking.reference in page and "compensation_failed" in page and "3\xa0hours" in page
    assert booking.partner.code in page
    filtered = support_client.get(reverse("admin:bookings_booking_needs_attention"), {"reason": "other"})
    assert booking.reference not in filtered.content.decode()


def test_state_machine_page_draws_every_transition(support_client):
    page = support_client.get(reverse("admin:bookings_booking_state_machine")).content.decode()
    assert "<svg" in page
    for name in ("start_submission", "confirm", "flag_for_attention", "requeue_submission", "mark_cancelled"):
        assert name in page


def test_partner_health_page(partner, support_client, make_booking, broker, partner_queue):
    booking = make_booking()
    for latency, outcome in ((100, "ok"), (200, "ok"), (900, "transient")):
        PartnerAttemptFactory(booking=booking, operation="get", outcome=outcome, latency_ms=latency)

    page = support_client.get(reverse("admin:partners_partner_health")).content.decode()

    row = page[page.index(f'data-partner="{partner.code}"') :]
    assert re.search(r"<td class=\"num\">3</td>", row)
    assert "33.3% (1)" in row and "closed" in row


def test_partner_admin_never_shows_secrets(partner, superuser_client):
    partner.api_key = "sk-very-secret-value"
    partner.save()

    change = superuser_client.get(
        reverse("admin:partners_partner_change", args=[partner.pk])
    ).content.decode()
    listing = superuser_client.get(reverse("admin:partners_partner_changelist")).content.decode()

    for page in (change, listing):
        assert "sk-very-secret-value" not in page
        assert partner.webhook_secret not in page
    assert 'name="api_key"' not in change and 'name="webhook_secret"' not in change
    assert ">set<" in change


def test_timeline_rows_are_read_only(make_booking, superuser_client):
    from bookings.timeline import record_event

    event = record_event(make_booking(), "booking.requested", actor="customer")
    assert superuser_client.get(reverse("admin:bookings_bookingevent_add")).status_code == 403
    page = superuser_client.get(
        reverse("admin:bookings_bookingevent_change", args=[event.pk])
    ).content.decode()
    assert 'name="_save"' not in page
    assert (
        superuser_client.get(reverse("admin:bookings_bookingevent_delete", args=[event.pk])).status_code
        == 403
    )


# --- stored webhooks ----------------------------------------------------------------
def _signed_inbound(partner, booking_ref: str = "BK-NONE00", *, body: str | None = None):
    """A delivery the partner signed, stored as set aside (`body`: another than a reservation's)."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    if body is None:
        body = json.dumps(
            {
                "type": "reservation.updated",
                "timestamp": "2027-02-01T10:15:32+00:00",
                "data": {
                    "id": "R-hook-1",
                    "client_reference": booking_ref,
                    "status": "confirmed",
                    "version": 2,
                },
            }
        )
    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": "msg_replay",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(partner.webhook_secret).sign("msg_replay", now, body),
    }
    return InboundEventFactory(
        partner=partner,
        raw_body=body.encode(),
        event_id="msg_replay",
        state=InboundState.FAILED,
        headers=headers,
    )


def test_replay_is_for_ops_and_runs_once_per_confirmation(partner, ops_client, support_client, make_booking):
    booking = make_booking(status=S.PENDING_PARTNER)
    event = _signed_inbound(partner, booking.reference)
    url = reverse("admin:partners_inboundevent_changelist")
    selection = {"action": "replay_selected", "_selected_action": [str(event.pk)]}

    assert "replay_selected" not in support_client.get(url).content.decode()
    confirm_page = ops_client.post(url, selection)
    assert "verifies" in confirm_page.content.decode()
    token = _token(confirm_page)
    done = ops_client.post(url, {**selection, "confirm": "yes", "token": token}, follow=True)
    again = ops_client.post(url, {**selection, "confirm": "yes", "token": token}, follow=True)

    event.refresh_from_db()
    assert event.state == InboundState.PROCESSED and event.booking_id == booking.pk
    assert any("Replayed" in m for m in _messages(done))
    assert any("Already replayed" in m for m in _messages(again))
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    [replayed] = booking.events.filter(kind="support.webhook_replayed")
    # the state the replay found, then the one it left: not the state after it, twice
    assert (replayed.from_state, replayed.to_state) == (S.PENDING_PARTNER, S.CONFIRMED)


@pytest.mark.parametrize("confirming", [False, True], ids=["preview", "confirm"])
def test_a_replay_above_its_limit_is_refused_whole_not_cut_short(
    partner, ops_client, monkeypatch, confirming
):
    monkeypatch.setattr("reconciliation.admin.REPLAY_MOST", 2)
    events = [InboundEventFactory(partner=partner, state=InboundState.FAILED) for _ in range(3)]
    url = reverse("admin:partners_inboundevent_changelist")
    selection = {"action": "replay_selected", "_selected_action": [str(e.pk) for e in events]}
    if confirming:
        selection |= {"confirm": "yes", "token": support.new_token()}

    page = ops_client.post(url, selection, follow=True)

    assert "Replay stored webhooks" not in page.content.decode()
    assert _messages(page) == [
        "3 webhooks selected: a replay takes at most 2 at a time, so nothing was done. Narrow the "
        "selection (a filter, or one page of the list) and replay again."
    ]
    assert [type(e).objects.get(pk=e.pk).state for e in events] == [InboundState.FAILED] * 3


def test_a_reverify_above_its_limit_is_refused_whole_not_cut_short(partner, ops_client, monkeypatch):
    monkeypatch.setattr("reconciliation.admin.REVERIFY_MOST", 2)
    events = [_signed_inbound(partner)] + [InboundEventFactory(partner=partner) for _ in range(2)]
    url = reverse("admin:partners_inboundevent_changelist")

    page = ops_client.post(
        url, {"action": "reverify_selected", "_selected_action": [str(e.pk) for e in events]}, follow=True
    )

    assert _messages(page) == [
        "3 webhooks selected: re-verifying takes at most 2 at a time, so nothing was done. Narrow the "
        "selection (a filter, or one page of the list) and re-verify again."
    ]
    within = ops_client.post(
        url, {"action": "reverify_selected", "_selected_action": [str(events[0].pk)]}, follow=True
    )
    assert [m.endswith("signature verifies.") for m in _messages(within)] == [True]


def test_the_replay_page_says_which_delivery_its_replay_would_refuse_and_why(partner, ops_client):
    """The page said "verifies" of an authentic delivery whose body cannot be applied, which its
    replay then refused: it asks the replay's own question (`replay_refusal`)."""
    unreadable = _signed_inbound(partner, body="not json")
    url = reverse("admin:partners_inboundevent_changelist")

    page = ops_client.post(url, {"action": "replay_selected", "_selected_action": [str(unreadable.pk)]})

    body = page.content.decode()
    assert "would be refused: The stored body cannot be applied: body is not JSON" in body


def test_reverify_reports_a_tampered_delivery(partner, ops_client):
    event = _signed_inbound(partner)
    type(event).objects.filter(pk=event.pk).update(raw_body=b'{"tampered": true}')

    response = ops_client.post(
        reverse("admin:partners_inboundevent_changelist"),
        {"action": "reverify_selected", "_selected_action": [str(event.pk)]},
        follow=True,
    )

    assert any("does NOT verify" in m for m in _messages(response))


def test_the_customer_links_to_their_account_only_for_those_who_may_open_it(
    make_booking, support_client, superuser_client
):
    """Exploratory use: the booking's page linked support to the customer's account page, a 403."""
    booking = make_booking(status=BookingState.CONFIRMED)
    account = reverse("admin:auth_user_change", args=[booking.customer.pk])

    for_support = support_client.get(_change(booking)).content.decode()
    for_admin = superuser_client.get(_change(booking)).content.decode()

    assert support_client.get(account).status_code == 403
    assert account not in for_support and booking.customer.username in for_support
    assert f'<a href="{account}">' in for_admin
