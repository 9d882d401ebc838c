"""Support actions on orphan cases against a real sandbox partner process and a real worker: each
previews our record beside the partner's live answer, checks its permission, runs once per
token, and leaves its row in the case's history (and on the booking's timeline for a link)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.urls import reverse

from bookings.models import Actor, Booking
from bookings.states import BookingState
from config.errors import InvalidTransition, ValidationFailed
from partners.connectors import connector_for
from partners.models import OrphanCase, PartnerReservation, Source
from partners.services.observations import observation_apply
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services import support
from reconciliation.services.support.permissions import os_user
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, PartnerReservationFactory
from tests.helpers import unique_code, wait_until
from tests.reconciliation.conftest import CLOSED_PORT_URL
from tests.sandbox.conftest import API_KEY, reference_body
from tests.sandbox_process import SandboxProcess

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("orphan-sandbox") / "reference.sqlite3"
    partner = SandboxProcess("reference", store, API_KEY, ["--hang-s", "0"]).start()
    yield partner
    partner.kill()


@pytest.fixture
def partner(sandbox, broker, settings):
    """The sandbox as a partner of ours, orphans left to support unless a test says otherwise."""
    settings.PARTNER_COMPENSATE_ORPHANS = False
    settings.PARTNER_RETRY_MIN_S, settings.PARTNER_RETRY_BASE_S, settings.PARTNER_RETRY_MAX_S = 0.1, 0.2, 1.0
    sandbox.reset()
    partner = PartnerFactory(code=unique_code("orph"), base_url=sandbox.base_url, api_key=API_KEY)
    OfferFactory(partner=partner, product_id="hotel-42-dbl")
    broker.declare_queue(partner.queue_name)
    yield partner
    sandbox.reset()


@pytest.fixture
def as_ops(ops_user):
    return support.Operator.for_user(ops_user)


@pytest.fixture
def as_support(support_user):
    return support.Operator.for_user(support_user)


def stray(sandbox, partner, client_reference: str) -> dict:
    """A reservation made at the partner that no booking of ours wants, found by a lookup."""
    made = sandbox.request("POST", "/v1/reservations", json=reference_body(client_reference)).json()
    learn(partner, made["id"])
    return made


def booking_for(partner) -> Booking:
    """A booking waiting for the partner, on the terms `reference_body` books."""
    return BookingFactory(
        offer=partner.offers.get(),
        partner=partner,
        status=S.PENDING_PARTNER,
        start_date=date(2027, 3, 1),
        end_date=date(2027, 3, 4),
        guests=2,
        total_price=Decimal("360.00"),
        currency="EUR",
    )


def learn(partner, partner_ref: str, *, booking: Booking | None = None) -> None:
    """What the partner holds under `partner_ref`, through the one door."""
    result = connector_for(partner).get(partner_ref)
    observation_apply(
        partner=partner,
        snapshot=result.reservation,
        source=Source.LOOKUP,
        actor=Actor.WORKER,
        booking_id=booking.pk if booking else None,
    )


def case_of(partner_ref: str) -> OrphanCase:
    return OrphanCase.objects.select_related("reservation__partner").get(reservation__partner_ref=partner_ref)


def history(case: OrphanCase) -> list[str]:
    return list(case.events.order_by("occurred_at", "id").values_list("kind", flat=True))


def status_at_partner(sandbox, client_reference: str) -> list[str]:
    return [r["status"] for r in sandbox.truth(client_reference)]


# --- cancel at the partner ----------------------------------------------------------------------
def test_ops_cancel_an_orphan_at_the_partner_and_the_verified_cancel_closes_its_case(
    sandbox, partner, worker, as_ops, ops_user
):
    made = stray(sandbox, partner, "BK-ORPH01")
    case = case_of(made["id"])
    assert case.automation == "left_to_support"

    shown = support.orphan_preview(support.ORPHAN_CANCEL, case, operator=as_ops)

    assert shown.allowed and shown.partner.live
    assert [(p.partner_ref, p.ours, p.theirs) for p in shown.pairs] == [
        (made["id"], "confirmed", "confirmed")
    ]
    assert shown.effects[0] == (
        f"Cancel {made['id']} (confirmed) at the partner on {partner.queue_name}, then verify by a lookup."
    )

    result = support.support_orphan_action_run(
        support.ORPHAN_CANCEL, case_id=case.pk, operator=as_ops, token=shown.token, note="not ours"
    )

    assert (result.performed, result.message) == (True, "Cancel queued.")
    wait_until(lambda: case_of(made["id"]).state == "closed", what="the verified cancel to close the case")
    case = case_of(made["id"])
    assert status_at_partner(sandbox, "BK-ORPH01") == ["cancelled"]
    assert (case.closed_because, case.automation) == ("cancel_verified", "cancel_verified")
    assert history(case) == ["orphan.opened", "support.orphan_cancel_requested", "orphan.cancel_verified"]
    requested = case.events.get(kind="support.orphan_cancel_requested")
    assert (requested.actor, requested.actor_label) == (Actor.SUPPORT, ops_user.username)
    assert requested.data == {
        "action_token": shown.token,
        "note": "not ours",
        "reservation": made["id"],
        "again": False,
    }

    again = support.support_orphan_action_run(
        support.ORPHAN_CANCEL, case_id=case.pk, operator=as_ops, token=shown.token
    )
    assert again.performed is False and again.message.startswith(f"Already done by {ops_user.username}")
    assert history(case_of(made["id"])) == history(case)


def test_support_may_not_cancel_an_orphan(sandbox, partner, as_support, broker):
    made = stray(sandbox, partner, "BK-ORPH02")
    case = case_of(made["id"])

    with pytest.raises(support.SupportActionDenied):
        support.support_orphan_action_run(
            support.ORPHAN_CANCEL, case_id=case.pk, operator=as_support, token="t"
        )

    assert history(case_of(made["id"])) == ["orphan.opened"]
    assert PartnerReservation.objects.get(partner_ref=made["id"]).compensation_requested_at is None
    assert status_at_partner(sandbox, "BK-ORPH02") == ["confirmed"]


def test_a_cancel_automation_gave_up_on_is_driven_again_with_fresh_tries(
    request, sandbox, partner, as_ops, settings
):
    settings.PARTNER_COMPENSATE_ORPHANS = True
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    made = stray(sandbox, partner, "BK-ORPH03")  # its case opens and its cancel is queued
    sandbox.set_faults(error_5xx_rate=1.0)  # every call fails from now on
    request.getfixturevalue("worker")  # only now does a worker take the cancel
    wait_until(lambda: case_of(made["id"]).flagged, what="automation to give up")
    sandbox.set_faults(error_5xx_rate=0.0)

    shown = support.orphan_preview(support.ORPHAN_CANCEL, case_of(made["id"]), operator=as_ops)
    assert shown.effects[0].startswith(
        f"Cancel {made['id']} at the partner again, with a fresh budget of 2 tries"
    )
    support.support_orphan_action_run(
        support.ORPHAN_CANCEL, case_id=shown.case.pk, operator=as_ops, token="t1"
    )

    wait_until(lambda: case_of(made["id"]).state == "closed", what="the cancel to be verified")
    assert status_at_partner(sandbox, "BK-ORPH03") == ["cancelled"]
    assert history(case_of(made["id"])) == [
        "orphan.opened",
        "orphan.cancel_failed",
        "support.orphan_cancel_requested",
        "orphan.cancel_verified",
    ]
    assert case_of(made["id"]).events.get(kind="support.orphan_cancel_requested").data["again"] is True


# --- link to a booking ----------------------------------------------------------------------------
def test_ops_link_an_orphan_to_the_booking_it_was_for_and_the_one_door_confirms_it(
    sandbox, partner, as_ops, ops_user
):
    booking = booking_for(partner)
    made = stray(sandbox, partner, "BK-PHONE1")  # made on the phone, under another reference
    case = case_of(made["id"])

    shown = support.orphan_preview(
        support.ORPHAN_LINK, case, operator=as_ops, booking_reference=booking.reference.lower()
    )

    assert shown.allowed and shown.needs_note and shown.booking == booking and shown.booking_live == []
    assert shown.effects[1:] == [
        f"Its client reference names BK-PHONE1: a note saying why it is {booking.reference}'s is required.",
        "pending_partner → confirmed (partner_confirmed).",
    ]
    with pytest.raises(InvalidTransition, match="say in the note why"):
        support.support_orphan_action_run(
            support.ORPHAN_LINK,
            case_id=case.pk,
            operator=as_ops,
            token="t",
            booking_reference=booking.reference,
        )

    result = support.support_orphan_action_run(
        support.ORPHAN_LINK,
        case_id=case.pk,
        operator=as_ops,
        token=shown.token,
        note="the customer booked on the phone",
        booking_reference=booking.reference,
    )

    booking.refresh_from_db()
    assert (result.performed, result.to_state, booking.status) == (True, "closed", S.CONFIRMED)
    assert result.message == f"Linked to {booking.reference} (pending_partner → confirmed)."
    reservation = PartnerReservation.objects.get(partner_ref=made["id"])
    assert (reservation.booking, reservation.role) == (booking, "primary")
    case = case_of(made["id"])
    assert (case.closed_because, case.booking, case.closed_note) == (
        "linked",
        booking,
        "the customer booked on the phone",
    )
    # the link and the case's history are on the booking's timeline, each once
    rows = [(row.source, row.kind) for row in booking_timeline(booking)]
    assert ("orphan_case", "orphan.opened") in rows
    assert rows.count(("event", "support.orphan_linked")) == 1
    assert ("orphan_case", "support.orphan_linked") not in rows
    linked = booking.events.get(kind="support.orphan_linked")
    assert (linked.actor_label, linked.data["orphan_case"]) == (ops_user.username, case.pk)


def test_a_link_is_refused_to_a_booking_of_another_partner(sandbox, partner, as_ops):
    elsewhere = BookingFactory(status=S.PENDING_PARTNER)
    made = stray(sandbox, partner, "BK-ORPH04")

    shown = support.orphan_preview(
        support.ORPHAN_LINK, case_of(made["id"]), operator=as_ops, booking_reference=elsewhere.reference
    )

    assert not shown.allowed
    assert shown.refusal == (
        f"{elsewhere.reference} is a booking at {elsewhere.partner.code}, not at {partner.code}."
    )
    with pytest.raises(InvalidTransition):
        support.support_orphan_action_run(
            support.ORPHAN_LINK,
            case_id=shown.case.pk,
            operator=as_ops,
            token="t",
            note="sure",
            booking_reference=elsewhere.reference,
        )
    assert case_of(made["id"]).state == "open"


def test_a_second_live_reservation_is_linked_only_when_the_preview_said_so_and_is_then_cancelled(
    sandbox, partner, worker, as_ops
):
    booking = booking_for(partner)
    own = sandbox.request("POST", "/v1/reservations", json=reference_body(booking.reference)).json()
    learn(partner, own["id"], booking=booking)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    made = stray(sandbox, partner, "BK-ORPH05")
    case = case_of(made["id"])

    shown = support.orphan_preview(
        support.ORPHAN_LINK, case, operator=as_ops, booking_reference=booking.reference
    )

    assert shown.booking_live == [own["id"]]
    assert (
        f"{booking.reference} already holds {own['id']} live: it would hold two live reservations, and the "
        "one door keeps one of them (the confirmed one, else the oldest)."
    ) in shown.effects
    assert f"Cancel {made['id']} at the partner (duplicate), then verify by a lookup." in shown.effects
    link = {
        "case_id": case.pk,
        "operator": as_ops,
        "note": "a second hold for the same stay",
        "booking_reference": booking.reference,
    }
    with pytest.raises(InvalidTransition, match="would get a second live reservation"):
        support.support_orphan_action_run(support.ORPHAN_LINK, token="blind", **link)
    assert case_of(made["id"]).state == "open"

    support.support_orphan_action_run(
        support.ORPHAN_LINK, token=shown.token, expected_live=shown.booking_live, **link
    )

    wait_until(
        lambda: PartnerReservation.objects.filter(
            partner_ref=made["id"], compensated_at__isnull=False
        ).exists(),
        what="the duplicate's cancel to be verified",
    )
    assert status_at_partner(sandbox, "BK-ORPH05") == ["cancelled"]
    assert status_at_partner(sandbox, booking.reference) == ["confirmed"]
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert PartnerReservation.objects.get(partner_ref=made["id"]).role == "duplicate"


# --- close with a note ---------------------------------------------------------------------------
def test_a_live_orphan_is_closed_only_with_the_permission_and_a_note(
    sandbox, partner, as_support, as_ops, ops_user
):
    made = stray(sandbox, partner, "BK-ORPH06")
    case = case_of(made["id"])

    for_support = support.orphan_preview(support.ORPHAN_CLOSE, case, operator=as_support)
    assert not for_support.allowed
    assert "needs the permission partners.close_live_orphan" in for_support.refusal
    with pytest.raises(InvalidTransition):
        support.support_orphan_action_run(
            support.ORPHAN_CLOSE, case_id=case.pk, operator=as_support, token="t", note="let it be"
        )
    with pytest.raises(ValidationFailed):
        support.support_orphan_action_run(support.ORPHAN_CLOSE, case_id=case.pk, operator=as_ops, token="t")

    result = support.support_orphan_action_run(
        support.ORPHAN_CLOSE, case_id=case.pk, operator=as_ops, token="t2", note="the partner's own test hold"
    )

    assert (result.from_state, result.to_state) == ("open", "closed")
    case = case_of(made["id"])
    assert (case.closed_because, case.closed_by, case.closed_note) == (
        "support",
        ops_user.username,
        "the partner's own test hold",
    )
    assert history(case) == ["orphan.opened", "support.orphan_closed"]
    assert status_at_partner(sandbox, "BK-ORPH06") == ["confirmed"]  # nothing was asked of it


def test_support_closes_an_orphan_the_partner_no_longer_holds(sandbox, partner, as_support, settings):
    settings.PARTNER_COMPENSATE_ORPHANS = True  # automation decides to cancel it (no worker runs it)
    made = stray(sandbox, partner, "BK-ORPH07")
    sandbox.request("POST", f"/v1/reservations/{made['id']}/cancel")  # the partner lets it go itself
    learn(partner, made["id"])
    case = case_of(made["id"])
    assert case.state == "open"  # our cancel was never verified

    shown = support.orphan_preview(support.ORPHAN_CLOSE, case, operator=as_support)
    assert shown.allowed
    assert [(p.ours, p.theirs) for p in shown.pairs] == [("cancelled", "cancelled")]
    support.support_orphan_action_run(
        support.ORPHAN_CLOSE, case_id=case.pk, operator=as_support, token="t", note="gone at the partner"
    )

    assert case_of(made["id"]).state == "closed"


def test_a_case_is_not_closed_while_its_cancel_is_under_way(sandbox, partner, as_ops, settings):
    settings.PARTNER_COMPENSATE_ORPHANS = True  # automation starts cancelling (no worker runs it)
    made = stray(sandbox, partner, "BK-ORPH08")

    shown = support.orphan_preview(support.ORPHAN_CLOSE, case_of(made["id"]), operator=as_ops)

    assert shown.refusal == (
        f"A cancel of {made['id']} is under way: the case closes itself once the partner says it is no "
        "longer live."
    )


def test_the_preview_shows_the_last_known_state_when_the_partner_cannot_be_asked(sandbox, partner, as_ops):
    made = stray(sandbox, partner, "BK-ORPH09")
    type(partner).objects.filter(pk=partner.pk).update(base_url=CLOSED_PORT_URL)

    shown = support.orphan_preview(support.ORPHAN_CANCEL, case_of(made["id"]), operator=as_ops)

    assert not shown.partner.live
    assert shown.partner.note.startswith("Live lookup failed")
    assert [(p.ours, p.theirs) for p in shown.pairs] == [("confirmed", "confirmed")]


# --- the console -----------------------------------------------------------------------------------
def test_the_queue_lists_open_cases_flagged_first_with_what_the_partner_holds(
    sandbox, partner, support_client
):
    older = stray(sandbox, partner, "BK-ORPH10")
    flagged = stray(sandbox, partner, "BK-ORPH11")
    closed = stray(sandbox, partner, "BK-ORPH12")
    OrphanCase.objects.filter(reservation__partner_ref=flagged["id"]).update(automation="cancel_failed")
    OrphanCase.objects.filter(reservation__partner_ref=closed["id"]).update(state="closed")

    page = support_client.get(reverse("admin:partners_orphancase_changelist")).content.decode()

    table = page[page.index('id="orphans"') :]
    assert table.index(flagged["id"]) < table.index(older["id"])
    assert closed["id"] not in table
    row = table[table.index(f'data-case="{case_of(older["id"]).pk}"') :]
    for shown in (partner.code, older["id"], "BK-ORPH10", "confirmed", "by lookup", "Left to support"):
        assert shown in row[: row.index("</tr>")]
    everything = support_client.get(reverse("admin:partners_orphancase_changelist"), {"all": "1"})
    assert closed["id"] in everything.content.decode()
    other = support_client.get(reverse("admin:partners_orphancase_changelist"), {"partner": "nobody"})
    assert older["id"] not in other.content.decode()


def test_ops_cancel_from_the_case_page_once_per_confirmation(sandbox, partner, ops_client, worker):
    made = stray(sandbox, partner, "BK-ORPH13")
    case = case_of(made["id"])
    page = ops_client.get(reverse("admin:partners_orphancase_change", args=[case.pk])).content.decode()
    assert 'data-action="orphan_cancel"' in page and "orphan.opened" in page
    url = reverse("admin:partners_orphancase_action", args=[case.pk, "orphan_cancel"])

    preview = ops_client.get(url)
    form = preview.context["form"]
    assert "Asked live" in preview.content.decode() and preview.context["preview"].allowed

    posted = {"token": form.initial["token"], "note": "a stray hold", "booking": "", "expected_live": ""}
    first = ops_client.post(url, posted, follow=True)
    second = ops_client.post(url, posted, follow=True)

    assert "Cancel queued." in first.content.decode()
    assert "nothing more was done" in second.content.decode()
    wait_until(lambda: case_of(made["id"]).state == "closed", what="the verified cancel")
    assert history(case_of(made["id"])).count("support.orphan_cancel_requested") == 1


@pytest.mark.parametrize("sent", ["", "x" * 65])
def test_a_missing_or_overlong_token_is_said_on_the_case_action_form(sandbox, partner, ops_client, sent):
    case = case_of(stray(sandbox, partner, "BK-ORPH15")["id"])
    url = reverse("admin:partners_orphancase_action", args=[case.pk, "orphan_cancel"])

    response = ops_client.post(
        url, {"token": sent, "note": "a stray hold", "booking": "", "expected_live": ""}
    )

    assert response.status_code == 200
    assert re.search(r'id="token-errors".*?<li>[^<]+</li>', response.content.decode(), re.S)
    # a fresh one to confirm with, not the one refused
    assert re.fullmatch(r"[0-9a-f]{32}", response.context["form"]["token"].value())
    assert history(case_of(case.reservation.partner_ref)) == ["orphan.opened"]


def test_a_token_used_on_another_case_is_refused_on_the_form(sandbox, partner, ops_client):
    first = case_of(stray(sandbox, partner, "BK-ORPH16")["id"])
    second = case_of(stray(sandbox, partner, "BK-ORPH17")["id"])
    url = reverse("admin:partners_orphancase_action", args=[first.pk, "orphan_cancel"])
    posted = {"token": ops_client.get(url).context["form"].initial["token"], "note": "", "expected_live": ""}
    ops_client.post(url, {**posted, "booking": ""})

    reused = ops_client.post(
        reverse("admin:partners_orphancase_action", args=[second.pk, "orphan_cancel"]),
        {**posted, "booking": ""},
    )

    assert reused.status_code == 200
    assert re.search(
        rf'id="token-errors".*?already used for orphan_cancel of #{first.pk}.*?'
        rf"cannot also be used for orphan_cancel of #{second.pk}",
        reused.content.decode(),
        re.S,
    )
    assert reused.context["form"]["token"].value() != posted["token"]
    assert history(case_of(first.reservation.partner_ref)).count("support.orphan_cancel_requested") == 1
    assert history(case_of(second.reservation.partner_ref)) == ["orphan.opened"]


@pytest.mark.parametrize(
    ("action", "field", "sent", "said"),
    [
        ("orphan_cancel", "booking", "BK-" + "X" * 20, "at most 12 characters (it has 23)"),
        ("orphan_link", "booking", "BK-" + "X" * 20, "at most 12 characters (it has 23)"),
        ("orphan_link", "expected_live", "R-1," * 300, "at most 1000 characters (it has 1200)"),
        # carried as a JSON list of the partner's ids: anything else is a tampered page
        ("orphan_link", "expected_live", "R-1,R-2", "as this page previewed them."),
        ("orphan_link", "expected_live", '{"R-1": true}', "as this page previewed them."),
        ("orphan_link", "expected_live", '["R-1", 2]', "as this page previewed them."),
    ],
)
def test_a_refused_hidden_field_is_said_on_the_case_action_form_and_nothing_is_done(
    sandbox, partner, ops_client, action, field, sent, said
):
    booking = booking_for(partner)
    case = case_of(stray(sandbox, partner, "BK-ORPH18")["id"])
    url = reverse("admin:partners_orphancase_action", args=[case.pk, action])
    preview = ops_client.get(url, {"booking": booking.reference} if action == "orphan_link" else {})
    form = preview.context["form"]
    posted = {
        "token": form.initial["token"],
        "booking": form.initial["booking"],
        "expected_live": form.initial["expected_live"],
        "note": "a stray hold",
    }

    response = ops_client.post(url, {**posted, field: sent})

    assert response.status_code == 200
    page = response.content.decode()
    # said as the token's refusal is, in the page's one notice of a refused hidden field
    assert re.search(
        rf'<div class="notice bad" id="{field}-errors">.*?<li>[^<]*{re.escape(said)}[^<]*</li>', page, re.S
    )
    assert 'id="token-errors"' not in page
    if response.context["preview"].allowed:  # confirming again asks what this page shows
        assert "This preview's is set: confirm again." in page
        assert response.context["form"][field].value() == posted[field]
    assert history(case_of(case.reservation.partner_ref)) == ["orphan.opened"]
    assert PartnerReservation.objects.get(pk=case.reservation.pk).booking_id is None
    assert status_at_partner(sandbox, "BK-ORPH18") == ["confirmed"]


def test_support_sees_the_case_but_not_the_actions_it_may_not_run(sandbox, partner, support_client):
    case = case_of(stray(sandbox, partner, "BK-ORPH14")["id"])

    page = support_client.get(reverse("admin:partners_orphancase_change", args=[case.pk])).content.decode()

    assert 'data-action="orphan_close"' in page
    assert 'data-action="orphan_cancel"' not in page and "Cancel at the partner" in page
    forbidden = support_client.get(
        reverse("admin:partners_orphancase_action", args=[case.pk, "orphan_cancel"])
    )
    assert forbidden.status_code == 403


def test_ops_link_from_the_console_with_the_preview_naming_the_booking(sandbox, partner, ops_client):
    booking = booking_for(partner)
    case = case_of(stray(sandbox, partner, "BK-PHONE2")["id"])
    url = reverse("admin:partners_orphancase_action", args=[case.pk, "orphan_link"])

    preview = ops_client.get(url, {"booking": booking.reference})
    assert "pending_partner → confirmed (partner_confirmed)." in preview.content.decode()
    form = preview.context["form"]
    assert form.initial["booking"] == booking.reference and form.fields["note"].required

    done = ops_client.post(
        url,
        {"token": form.initial["token"], "booking": booking.reference, "expected_live": "", "note": "phone"},
        follow=True,
    )

    assert f"Linked to {booking.reference} (pending_partner → confirmed)." in done.content.decode()
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


def test_a_link_from_the_console_carries_a_live_reference_with_a_comma_whole(sandbox, partner, ops_client):
    booking = booking_for(partner)
    own = PartnerReservationFactory(booking=booking, partner=partner, partner_ref="R-7,8", status="confirmed")
    case = case_of(stray(sandbox, partner, "BK-PHONE3")["id"])
    url = reverse("admin:partners_orphancase_action", args=[case.pk, "orphan_link"])
    form = ops_client.get(url, {"booking": booking.reference}).context["form"]
    assert json.loads(form.initial["expected_live"]) == ["R-7,8"]

    done = ops_client.post(
        url,
        {
            "token": form.initial["token"],
            "booking": booking.reference,
            "expected_live": form.initial["expected_live"],
            "note": "the same stay, booked twice",
        },
        follow=True,
    )

    page = done.content.decode()
    assert "would get a second live reservation" not in page and f"Linked to {booking.reference}" in page
    linked = PartnerReservation.objects.get(pk=case.reservation.pk)
    assert (linked.booking_id, case_of(linked.partner_ref).state) == (booking.pk, "closed")
    assert PartnerReservation.objects.get(pk=own.pk).booking_id == booking.pk


# --- ops commands ------------------------------------------------------------------------------------
def ops(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.parametrize("command", ["orphans", "orphan_cancel", "orphan_link", "orphan_close"])
def test_every_orphan_command_has_help_and_json(command):
    parser = load_command_class("reconciliation", command).create_parser("manage.py", command)
    assert "--json" in parser.format_help()


def test_orphans_lists_the_open_cases_as_the_console_does(sandbox, partner):
    listed = stray(sandbox, partner, "BK-ORPH20")
    closed = stray(sandbox, partner, "BK-ORPH21")
    OrphanCase.objects.filter(reservation__partner_ref=closed["id"]).update(state="closed")

    rows = json.loads(ops("orphans", "--json", "--partner", partner.code))["cases"]
    everything = json.loads(ops("orphans", "--json", "--all", "--partner", partner.code))["cases"]
    text = ops("orphans", "--partner", partner.code)

    assert [(r["partner_ref"], r["client_reference"], r["status"], r["automation"]) for r in rows] == [
        (listed["id"], "BK-ORPH20", "confirmed", "left_to_support")
    ]
    assert rows[0]["last_step"].startswith(f"{listed['id']} (confirmed, from the lookup)")
    assert sorted(r["partner_ref"] for r in everything) == sorted([listed["id"], closed["id"]])
    assert listed["id"] in text and closed["id"] not in text
    with pytest.raises(CommandError, match="No partner"):
        ops("orphans", "--partner", "nobody")


def test_orphan_cancel_previews_asks_and_acts_as_the_console(
    sandbox, partner, worker, ops_user, support_user
):
    made = stray(sandbox, partner, "BK-ORPH22")
    case = case_of(made["id"])

    dry = json.loads(ops("orphan_cancel", str(case.pk), "--dry-run", "--json"))["previews"][0]
    assert (dry["allowed"], dry["partner"]["live"], dry["reservations"][0]["theirs"]) == (
        True,
        True,
        "confirmed",
    )
    with pytest.raises(CommandError, match="Not confirmed"):
        ops("orphan_cancel", str(case.pk))  # no terminal, no --yes
    with pytest.raises(CommandError, match=r"lacks the permission partners\.cancel_orphan"):
        ops("orphan_cancel", str(case.pk), "--yes", "--as", support_user.username)
    assert history(case_of(made["id"])) == ["orphan.opened"]

    done = json.loads(
        ops("orphan_cancel", str(case.pk), "--yes", "--json", "--as", ops_user.username, "--token", "ops-1")
    )
    again = json.loads(
        ops("orphan_cancel", str(case.pk), "--yes", "--json", "--as", ops_user.username, "--token", "ops-1")
    )

    assert done["results"][0]["result"]["performed"] is True
    assert again["results"][0]["result"]["performed"] is False
    wait_until(lambda: case_of(made["id"]).state == "closed", what="the verified cancel")
    assert status_at_partner(sandbox, "BK-ORPH22") == ["cancelled"]
    with pytest.raises(CommandError, match="No orphan case"):
        ops("orphan_cancel", "999999", "--dry-run")


def test_orphan_link_and_close_from_the_shell(sandbox, partner, ops_user):
    booking = booking_for(partner)
    to_link = case_of(stray(sandbox, partner, "BK-PHONE3")["id"])
    to_close = case_of(stray(sandbox, partner, "BK-ORPH23")["id"])

    out = io.StringIO()
    with pytest.raises(CommandError, match=r"nothing was done \(1 refused\)"):
        call_command("orphan_link", str(to_link.pk), "--booking", booking.reference, "--yes", stdout=out)
    assert "say in the note why" in out.getvalue()
    # its dry run says so too, by the note the run would be given (none, or a blank one): a script
    # checking first read "possible" for the link the run refused
    for note in ((), ("--note", "  ")):
        dry = io.StringIO()
        with pytest.raises(CommandError, match=r"nothing would be done \(1 refused\)"):
            call_command(
                "orphan_link", str(to_link.pk), "--booking", booking.reference, *note, "--dry-run", "--json",
                stdout=dry,
            )  # fmt: skip
        [preview] = json.loads(dry.getvalue())["previews"]
        assert preview["allowed"] is False and "say in the note why" in preview["refusal"]
    ops("orphan_link", str(to_link.pk), "--booking", booking.reference, "--note", "phone", "--dry-run")
    linked = json.loads(
        ops(
            "orphan_link",
            str(to_link.pk),
            "--booking",
            booking.reference,
            "--note",
            "phone",
            "--yes",
            "--json",
        )
    )
    with pytest.raises(CommandError, match="orphan_close needs --note"):
        ops("orphan_close", str(to_close.pk), "--yes")
    closed = ops("orphan_close", str(to_close.pk), "--note", "the partner's test hold", "--yes")

    assert linked["results"][0]["result"]["booking"] == booking.reference
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert f"orphan case #{to_close.pk}" in closed and "Case closed." in closed
    assert (
        case_of(to_close.reservation.partner_ref).state,
        case_of(to_close.reservation.partner_ref).closed_by,
    ) == (
        "closed",
        f"ops:{os_user()}",
    )
