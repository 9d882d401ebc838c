"""One test per partner fault, for each profile where the fault applies: a real sandbox partner
process, a real Dramatiq worker on Redis, webhooks through a live server. After each the partner's
ground truth holds at most one live reservation per booking, the booking reached the right state,
the timeline tells how, and nothing regressed (`assert_at_rest`)."""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bookings.models import Actor
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from partners.models import (
    Capability,
    InboundEvent,
    Operation,
    Outcome,
    Partner,
    PartnerAttempt,
    PartnerObservation,
)
from partners.services.compensation import booking_cancel_run
from partners.services.submission import submission_run
from partners.services.sync import booking_sync, landed_by
from partners.services.webhooks import inbound_event_process
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.partners.conftest import (
    assert_at_rest,
    book,
    partner_status,
    status_of,
    timeline,
    transitions,
    wait_for_status,
)

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
BOTH = pytest.mark.parametrize("profile", ["reference", "legacy"])


def creates(booking) -> list[str]:
    return list(
        PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE)
        .order_by("started_at", "id")
        .values_list("outcome", flat=True)
    )


def first_create_finished(booking) -> bool:
    return (
        PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE)
        .exclude(outcome=Outcome.IN_FLIGHT)
        .exists()
    )


def seed_for(*, after_commit: bool) -> int:
    """A sandbox seed whose first 5xx falls before (or after) the partner commits: the sandbox
    rolls once for the 5xx and then tosses a coin for before/after commit."""
    for seed in range(1000):
        rng = random.Random(seed)
        rng.random()
        if (rng.random() < 0.5) == after_commit:
            return seed
    raise AssertionError("no seed")


# --- timeout after commit --------------------------------------------------------------------
@BOTH
def test_timeout_after_commit_is_resolved_by_lookup_without_a_second_create(harness, partner_worker, profile):
    h = harness(profile)
    # the create commits, then the partner hangs past our read timeout; its webhook comes late
    h.faults(timeout_after_commit_rate=1, webhook_delay_s=[3, 3])
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.CONFIRMED)
    wait_until(lambda: "sync.completed" in timeline(booking), what="the sync to finish")
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.AMBIGUOUS]  # never a blind second create
    assert len(h.truth(booking)) == 1
    kinds = timeline(booking)
    assert kinds[:4] == [
        "booking.requested",
        "booking.submitting",
        "partner.attempt.ambiguous",
        "booking.unknown",
    ]
    search = "partner.attempt.ok"  # the lookup (reference) or the change listing (legacy)
    assert kinds[4] == search and kinds[-3:-1] == ["partner.observation.applied", "booking.confirmed"]
    assert kinds[-1] == "sync.completed"
    operation = (
        PartnerAttempt.objects.filter(booking=booking).exclude(operation=Operation.CREATE).first().operation
    )
    assert operation == (Operation.LOOKUP if profile == "reference" else Operation.LIST)
    if profile == "reference":  # the first call's late callback arrives and changes nothing
        wait_until(lambda: "partner.observation.duplicate" in timeline(booking), what="late webhook")
        assert_at_rest(h, booking, S.CONFIRMED)


# --- 5xx ----------------------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("after_commit", [True, False], ids=["after-commit", "before-commit"])
def test_5xx_on_create_is_ambiguous_and_resolved_by_what_the_partner_holds(
    harness, partner_worker, profile, after_commit
):
    h = harness(profile)
    h.faults(error_5xx_rate=1, seed=seed_for(after_commit=after_commit))
    partner_worker(h.partner)

    booking = book(h)
    wait_until(lambda: first_create_finished(booking), what="the first create")
    h.faults(error_5xx_rate=0)

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert len(h.truth(booking)) == 1
    if after_commit:
        assert creates(booking) == [Outcome.AMBIGUOUS]  # found at the partner: no second create
    else:
        # the partner provably held nothing, so (and only so) it was created again
        assert creates(booking) == [Outcome.AMBIGUOUS, Outcome.OK]
        assert "booking.requested" in timeline(booking)[3:]
        sync = booking.events.filter(kind="sync.completed", data__holds_nothing=True).get()
        assert sync.summary == "Partner holds nothing for this booking"


# --- rate limiting ---------------------------------------------------------------------------
@BOTH
def test_rate_limited_create_is_retried_after_retry_after(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(rate_limit_rate=1, time_scale=30)  # Retry-After 1..30 s, scaled down to 1 s
    partner_worker(h.partner)

    booking = book(h)
    wait_until(lambda: first_create_finished(booking), what="the first create")
    h.faults(rate_limit_rate=0)

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert len(h.truth(booking)) == 1
    first = PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).earliest("started_at")
    if profile == "reference":
        # 429: the partner did nothing; release and retry after Retry-After
        assert creates(booking) == [Outcome.TRANSIENT, Outcome.OK]
        assert first.http_status == 429
        deferred = booking.events.get(kind="booking.submission_deferred")
        assert deferred.data["retry_in_s"] >= 1.0
    else:
        # the legacy partner throttles with a 503 (+ Retry-After): on a create that is ambiguous,
        # so the change listing must show nothing before it is created again
        assert creates(booking) == [Outcome.AMBIGUOUS, Outcome.OK]
        assert first.http_status == 503


# --- rejection --------------------------------------------------------------------------------
@BOTH
def test_rejected_by_the_partner(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(reject_rate=1)
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.REJECTED)
    assert_at_rest(h, booking, S.REJECTED)
    assert [partner_status(h, r) for r in h.truth(booking)] == ["rejected"]
    assert creates(booking) == [Outcome.REJECTED]
    assert booking.customer_status == "failed"


def test_asynchronous_rejection_arrives_by_webhook(harness, partner_worker):
    h = harness("reference")
    h.faults(reject_rate=1, async_confirm_delay_s=0.5)
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.REJECTED)
    assert_at_rest(h, booking, S.REJECTED)
    assert ("pending_partner", "rejected") in [(e.from_state, e.to_state) for e in booking.events.all()]


# --- asynchronous confirmation -----------------------------------------------------------------
@BOTH
def test_asynchronous_confirmation(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(async_confirm_delay_s=1.0)
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.PENDING_PARTNER)
    assert booking.customer_status == "pending"
    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    applied = list(
        PartnerObservation.objects.filter(booking=booking, result="applied").values_list("source", "status")
    )
    if profile == "reference":
        assert applied == [("response", "pending"), ("webhook", "confirmed")]
    else:  # no webhooks: polled until it settles
        assert applied == [("response", "pending"), ("lookup", "confirmed")]


def test_a_pending_booking_polled_at_a_partner_without_webhooks_is_checked_by_its_deadline(harness):
    # given a partner without webhooks that answers our create `pending`, for a booking whose
    # deadline comes before the poll and its grace
    h = harness("legacy")
    h.faults(async_confirm_delay_s=30)
    deadline = timezone.now() + timedelta(seconds=20)
    booking = h.booking(status=S.REQUESTED, deadline=deadline)

    # when the answer is recorded (no worker runs the poll it queues)
    submission_run(booking.pk)

    # then the sweeper's check is due at its deadline, which expires it whatever the poll's fate
    booking.refresh_from_db()
    assert (booking.status, booking.next_check_at) == (S.PENDING_PARTNER, deadline)


# --- a partner that ignores idempotency keys -----------------------------------------------------
def test_timeout_at_a_partner_ignoring_keys_is_still_resolved_by_lookup(harness, partner_worker):
    h = harness("reference")
    h.faults(timeout_after_commit_rate=1, honour_idempotency_keys=False, webhook_delay_s=[3, 3])
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.AMBIGUOUS]
    assert len(h.truth(booking)) == 1
    assert status_of(booking) == S.CONFIRMED


def test_a_lookup_before_a_timed_out_create_could_land_proves_nothing_yet(harness):
    # Given a partner that ignores keys and commits a create only after our read timeout (1 s)
    h = harness("reference")
    h.faults(latency_ms=[1600, 1600], honour_idempotency_keys=False)
    booking = book(h)
    submission_run(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.UNKNOWN
    h.faults(latency_ms=[0, 0])
    fence = PartnerAttempt.objects.fencing().get(booking=booking)

    # When its sync looks it up at once, while the create is still on its way
    before = timezone.now()
    follow_up = booking_sync(booking.pk)
    after = timezone.now()

    # Then the empty answer proves nothing yet: still fenced, read again once it could have landed
    # (the wait is bracketed by the clock around the sync, so a slow machine does not skew it)
    booking.refresh_from_db()
    assert booking.status == S.UNKNOWN
    assert PartnerAttempt.objects.fencing().filter(pk=fence.pk).exists()
    at_most = (landed_by(fence) - before).total_seconds()
    at_least = (landed_by(fence) - after).total_seconds()
    assert follow_up.sync_after_s is not None and at_least - 0.5 < follow_up.sync_after_s <= at_most + 0.1

    # and the read after that finds what the late create made: one reservation, never a second create
    wait_until(lambda: timezone.now() >= landed_by(fence), what="the create's landing time")
    booking_sync(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert creates(booking) == [Outcome.AMBIGUOUS]
    assert len(h.truth(booking)) == 1


# --- no fault at all ---------------------------------------------------------------------------
@BOTH
def test_perfect_partner_confirms_at_once(harness, partner_worker, profile):
    h = harness(profile)
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.OK]
    if profile == "reference":  # its webhook and the create's answer: one applies, one is known
        wait_until(lambda: "partner.observation.duplicate" in timeline(booking), what="the webhook")
    rows = timeline(booking)
    assert rows[:2] == ["booking.requested", "booking.submitting"]
    # The partner's webhook may overtake its own answer (it is sent as the reservation commits):
    # whichever comes first confirms, once, right after it is applied.
    applied = rows.index("partner.observation.applied")
    assert rows[applied + 1] == "booking.confirmed"
    assert (rows.count("booking.confirmed"), rows.count("partner.attempt.ok")) == (1, 1)
    assert rows.count("partner.observation.duplicate") == (1 if profile == "reference" else 0)


# --- clock skew ----------------------------------------------------------------------------------
@BOTH
def test_partner_clock_skew_is_measured_and_the_listing_window_follows_it(
    harness, partner_worker, profile, settings
):
    # the first sync comes after the listing has settled: an empty answer would be final
    settings.PARTNER_LISTING_SETTLE_S = 0
    settings.PARTNER_SYNC_DELAY_S = 1.0
    h = harness(profile)
    # the partner's clock is 10 minutes behind ours (its listing times too), and its create
    # times out after committing, before we ever heard its clock
    h.faults(clock_skew_s=-600, timeout_after_commit_rate=1, webhook_delay_s=[3, 3])
    assert h.partner.clock_skew_ms is None
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.AMBIGUOUS]  # the listing found it: no second create
    h.partner.refresh_from_db()
    assert -602_000 < h.partner.clock_skew_ms < -598_000
    confirmed = booking.events.get(kind="booking.confirmed")
    observed = booking.events.filter(kind="partner.observation.applied").last()
    assert observed.skew_ms == h.partner.clock_skew_ms
    assert observed.partner_time < confirmed.occurred_at - timedelta(minutes=9)  # its clock, not ours
    if profile == "legacy":  # the first listing was read on no estimate: read again, not concluded
        syncs = list(booking.events.filter(kind="sync.completed").values_list("data__complete", flat=True))
        assert syncs[0] is False


@BOTH
def test_a_partner_clock_a_month_off_is_no_skew_and_loses_no_answer(harness, partner_worker, profile):
    # given a partner whose clock is 30 days behind (its Date header and every time it writes):
    # no clock drifts that far, and the estimate's column holds ±24.8 days of milliseconds
    h = harness(profile)
    h.faults(clock_skew_s=-30 * 86400)
    partner_worker(h.partner)

    booking = book(h)

    # then its answers are used as any: the create's answer confirms the booking, once
    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.OK]
    # and its Date, kept on the attempt as its word, was taken for no clock reading
    attempt = PartnerAttempt.objects.get(booking=booking, operation=Operation.CREATE)
    assert attempt.partner_time < attempt.started_at - timedelta(days=29)
    h.partner.refresh_from_db()
    assert h.partner.clock_skew_ms is None


@pytest.mark.parametrize(
    ("profile", "skew_s"),
    [("reference", 0), ("legacy", 0), ("reference", -5)],
    ids=["ref", "legacy", "ref-behind"],
)
def test_a_slow_partner_is_not_taken_for_a_skewed_clock(harness, partner_worker, groups, profile, skew_s):
    # given a partner that takes 1.2-1.8 s to answer (its Date is written as it answers), with a
    # clock that is right or 5 s behind, and a read timeout it fits in
    h = harness(profile)
    Partner.objects.filter(pk=h.partner.pk).update(read_timeout_s=4.0)
    h.partner.refresh_from_db()
    h.faults(latency_ms=[1200, 1800], clock_skew_s=skew_s)
    partner_worker(h.partner)

    # when a booking goes through and is read back twice
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED, timeout_s=30)
    for _ in range(2):
        booking_sync(booking.pk)

    # then the calls were slow, and the skew is said only beyond its uncertainty: a right clock
    # shows none, where half the round trip used to be reported as one
    calls = PartnerAttempt.objects.filter(partner=h.partner).exclude(latency_ms=None)
    latencies = list(calls.values_list("latency_ms", flat=True))
    assert len(latencies) >= 3 and min(latencies) >= 1200
    row = json.loads(_command("partner_health", "--json", "--partner", h.partner.code))["partners"][0]
    if skew_s == 0:
        assert row["clock_skew_beyond_doubt_ms"] == 0, row
    estimate, bound = row["clock_skew_ms"], row["clock_skew_uncertainty_ms"]
    # half a 1.2-1.8 s round trip and half a second (the Date's), or a webhook's second: judged
    # against the slowest call this run saw, which a busy machine makes longer than the partner's
    assert 500 <= bound <= max(max(latencies), 1800) / 2 + 600
    assert abs(estimate - skew_s * 1000) <= bound
    if skew_s == 0:
        said = f"clock within ±{bound / 1000:.1f} s"
    else:
        said = f"behind by {abs(estimate) / 1000:.1f} s (±{bound / 1000:.1f})"
        assert row["clock_skew_beyond_doubt_ms"] == estimate
    assert row["clock_skew"] == said
    assert said in _command("partner_health", "--partner", h.partner.code)
    page = _console(groups).get(reverse("admin:partners_partner_health")).content.decode()
    assert said in page[page.index(f'data-partner="{h.partner.code}"') :]


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _console(groups) -> Client:
    user = UserFactory(username=f"support-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups["support"]])
    client = Client()
    client.force_login(user)
    return client


# --- a partner that offers no way to find out ------------------------------------------------------
def test_ambiguous_create_at_a_partner_without_lookup_keys_or_listing_goes_to_support(
    harness, partner_worker
):
    h = harness("reference", capabilities=[Capability.WEBHOOKS])
    h.faults(timeout_after_commit_rate=1, webhook_delay_s=[30, 30])
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.NEEDS_ATTENTION)
    booking.refresh_from_db()
    assert booking.attention_reason == "outcome_unknown_no_lookup"
    assert creates(booking) == [Outcome.AMBIGUOUS]  # and nothing was created again
    assert len(h.truth(booking)) == 1
    assert transitions(booking)[-1] == ("unknown", "needs_attention")
    assert PartnerAttempt.objects.fencing().filter(booking=booking).exists()  # still fenced


def test_a_cancel_at_a_partner_we_cannot_ask_goes_to_support_instead_of_looping(harness, partner_worker):
    # Given a booking with support because its create's outcome is unknown at a partner that
    # offers no lookup, no keys and no listing (its webhook would come too late to help)
    h = harness("reference", capabilities=[Capability.WEBHOOKS])
    h.faults(timeout_after_commit_rate=1, webhook_delay_s=[30, 30])
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.NEEDS_ATTENTION)

    # When its customer cancels it (allowed: support has it for something else than a cancel)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)

    # Then, its cancel unable to go on while the fence holds, support gets it back as their cancel
    # with support, told so, instead of a sync asked again every few seconds for ever
    wait_until(
        lambda: ("cancel_requested", "needs_attention") in transitions(booking),
        what="the cancel to be handed to support",
    )
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "outcome_unknown_no_lookup")
    assert booking.cancel_with_support
    assert (booking.customer_status, booking.customer_message) == ("cancelling", "cancel_with_support")
    assert PartnerAttempt.objects.fencing().filter(booking=booking).exists()  # nothing created again
    assert creates(booking) == [Outcome.AMBIGUOUS]
    syncs = booking.events.filter(kind__startswith="sync.").count()
    time.sleep(2)  # many times the sync delay (0.3 s)
    assert booking.events.filter(kind__startswith="sync.").count() == syncs  # at rest
    assert status_of(booking) == S.NEEDS_ATTENTION


def webhook_about(booking, *, since) -> InboundEvent | None:
    """The partner's webhook about the booking received since then (stored, not processed)."""
    events = InboundEvent.objects.filter(partner=booking.partner, received_at__gte=since).order_by("id")
    return next((e for e in events if booking.reference.encode() in bytes(e.raw_body)), None)


def test_a_webhook_showing_the_reservation_lifts_the_fence_of_a_booking_being_cancelled(
    harness, partner_worker
):
    # Given a booking at a partner we cannot ask whose create timed out after the partner made it,
    # and whose customer cancelled meanwhile
    h = harness("reference", capabilities=[Capability.WEBHOOKS])
    h.faults(timeout_after_commit_rate=1, webhook_delay_s=[2, 2])
    booking = h.booking()
    started = timezone.now()
    submission_run(booking.pk)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    assert status_of(booking) == S.CANCEL_REQUESTED
    assert PartnerAttempt.objects.fencing().filter(booking=booking).exists()

    # When the partner's webhook shows the reservation
    event = wait_until(lambda: webhook_about(booking, since=started), what="the partner's webhook")
    inbound_event_process(event.pk)

    # Then it answers the create: the fence lifts, and the cancel goes on to the end
    assert not PartnerAttempt.objects.fencing().filter(booking=booking).exists()
    assert status_of(booking) == S.CANCEL_REQUESTED
    partner_worker(h.partner)
    booking_cancel_run(booking.pk)
    wait_for_status(booking, S.CANCELLED)
    assert h.live(booking) == []
    assert creates(booking) == [Outcome.AMBIGUOUS]


def test_a_cancellation_written_by_a_partner_clock_gone_back_is_not_lost(harness):
    # Given a legacy partner's confirmed booking, read with the partner's modified time
    h = harness("legacy")
    h.faults(async_confirm_delay_s=0.2)
    booking = h.booking()
    submission_run(booking.pk)
    assert status_of(booking) == S.PENDING_PARTNER
    wait_until(lambda: h.truth(booking)[0]["state"] == "OK", what="the partner to confirm")
    booking_sync(booking.pk)
    assert status_of(booking) == S.CONFIRMED
    reservation = booking.partner_reservations.get()
    assert reservation.partner_modified_at is not None

    # When the partner's clock goes back an hour (the repeated autumn hour, a clock stepped back)
    # and the partner then cancels the booking on its side
    h.faults(clock_skew_s=-3600)
    response = h.sandbox.request("DELETE", f"/api/bookings/{reservation.partner_ref}")
    assert response.status_code == 200, response.text

    # Then our next read applies the cancellation, though its `modified` reads earlier
    booking_sync(booking.pk)
    reservation.refresh_from_db()
    assert reservation.status == "cancelled"
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
