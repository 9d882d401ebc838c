"""The ops commands: the same support services, text and --json output, clear errors."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from bookings.states import BookingState
from bookings.timeline import record_event
from partners.models import InboundState
from tests.factories import InboundEventFactory, PartnerAttemptFactory, PartnerReservationFactory
from tests.reconciliation.conftest import actor_names, calls

S = BookingState
pytestmark = pytest.mark.django_db


def run(*args, capture=None) -> str:
    out = io.StringIO()
    if capture is None:
        call_command(*args, stdout=out, stderr=io.StringIO())
    else:
        with capture(execute=True):
            call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.parametrize(
    "command",
    [
        "booking_timeline",
        "sync_booking",
        "retry_booking",
        "compensate_booking",
        "replay_inbound_event",
        "partner_health",
        "reconcile",
    ],
)
def test_every_command_has_help_and_json(command):
    from django.core.management import load_command_class

    parser = load_command_class("reconciliation", command).create_parser("manage.py", command)
    text = parser.format_help()
    assert "--json" in text


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("booking_timeline", ["BK-NOPE99"]),
        ("sync_booking", ["BK-NOPE99"]),
        ("retry_booking", ["BK-NOPE99"]),
        ("compensate_booking", ["BK-NOPE99", "--yes"]),
    ],
)
def test_a_bad_reference_is_a_clear_error(command, args):
    with pytest.raises(CommandError, match="No booking 'BK-NOPE99'"):
        run(command, *args)


def test_booking_timeline_prints_the_timeline(make_booking):
    booking = make_booking(status=S.PENDING_PARTNER)
    record_event(booking, "booking.requested", actor="customer", actor_label="ann", summary="Requested it")
    PartnerAttemptFactory(booking=booking, operation="get", outcome="ok", http_status=200, latency_ms=12)

    text = run("booking_timeline", booking.reference.lower())
    data = json.loads(run("booking_timeline", booking.reference, "--json"))

    assert booking.reference in text and "Requested it" in text and "partner.attempt.ok" in text
    assert data["booking"] == booking.reference and data["partner_key"] == booking.partner_key
    assert [row["kind"] for row in data["timeline"]] == ["booking.requested", "partner.attempt.ok"]
    assert data["timeline"][1]["data"]["latency_ms"] == 12


def test_sync_booking_queues_a_sync_as_the_os_user(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("reconciliation.services.support.permissions.os_user", lambda: "opsbot")
    booking = make_booking(status=S.UNKNOWN)

    data = json.loads(
        run("sync_booking", booking.reference, "--json", "--yes", capture=django_capture_on_commit_callbacks)
    )

    assert data["results"][0]["result"]["performed"] is True
    assert data["results"][0]["preview"]["partner"]["live"] is False  # closed port: last known
    assert actor_names(broker, partner_queue) == ["sync_booking"]
    assert booking.events.get().actor_label == "ops:opsbot"


def test_sync_booking_with_the_same_token_twice_does_nothing_extra(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.UNKNOWN)
    run(
        "sync_booking",
        booking.reference,
        "--token",
        "ops-1",
        "--yes",
        capture=django_capture_on_commit_callbacks,
    )

    text = run(
        "sync_booking",
        booking.reference,
        "--token",
        "ops-1",
        "--yes",
        capture=django_capture_on_commit_callbacks,
    )

    assert "nothing more was done" in text
    assert actor_names(broker, partner_queue) == ["sync_booking"]


@pytest.mark.parametrize("token", ["", "  ", "t" * 65], ids=["empty", "blank", "too-long"])
def test_a_token_that_is_none_is_refused_before_anything_not_taken_for_no_token(
    token, make_booking, partner_queue, broker, partner
):
    """A script building --token from an empty variable silently lost its idempotency: "" was
    taken as no token (a new one each run). Refused, as a token too long is, before any target."""
    from tests.reconciliation.test_admin import _signed_inbound

    booking = make_booking(status=S.UNKNOWN)
    event = _signed_inbound(partner, booking.reference)
    said = "A support action needs an action token (up to 64 characters)."

    with pytest.raises(CommandError, match=re.escape(said)):
        run("sync_booking", booking.reference, "--token", token, "--yes")
    with pytest.raises(CommandError, match=re.escape(said)):
        run("replay_inbound_event", str(event.pk), "--token", token)

    assert not booking.events.exists()
    assert calls(broker, partner_queue) == []
    event.refresh_from_db()
    assert event.state == InboundState.FAILED  # not replayed


@pytest.mark.parametrize("command", ["sync_booking", "retry_booking"])
def test_sync_and_retry_ask_for_confirmation_as_the_console_does(
    command, make_booking, partner_queue, broker
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")

    with pytest.raises(CommandError, match="Not confirmed: review the preview"):
        run(command, booking.reference, "--no-live")

    assert not booking.events.exists()
    assert calls(broker, partner_queue) == []


def test_sync_booking_dry_run_only_previews(make_booking, partner_queue, broker):
    booking = make_booking(status=S.UNKNOWN)
    PartnerReservationFactory(booking=booking, partner_ref="R-dry-1", status="pending")

    text = run("sync_booking", booking.reference, "--dry-run", "--no-live")
    # a reference read out over the phone, typed in lower case, is the same booking
    data = json.loads(run("sync_booking", booking.reference.lower(), "--dry-run", "--no-live", "--json"))

    assert "R-dry-1" in text and "Queue a partner sync" in text
    assert data["previews"][0]["booking"] == booking.reference
    assert data["dry_run"] is True and data["previews"][0]["reservations"][0]["partner_ref"] == "R-dry-1"
    assert not booking.events.exists()
    assert calls(broker, partner_queue) == []


def test_acting_as_a_console_user_checks_their_permission(make_booking, support_user, partner_queue):
    booking = make_booking(status=S.PENDING_PARTNER)
    PartnerReservationFactory(booking=booking, status="pending")

    with pytest.raises(CommandError, match=r"lacks the permission bookings\.compensate_booking"):
        run("compensate_booking", booking.reference, "--yes", "--as", support_user.username)
    with pytest.raises(CommandError, match="No active user"):
        run("sync_booking", booking.reference, "--as", "ghost")
    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER


def test_compensate_booking_wants_confirmation_when_not_interactive(make_booking, partner_queue, broker):
    booking = make_booking(status=S.PENDING_PARTNER)
    PartnerReservationFactory(booking=booking, status="pending")

    with pytest.raises(CommandError, match="pass --yes"):
        run("compensate_booking", booking.reference)

    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER and not booking.events.exists()


def test_compensate_booking_fails_and_cancels_at_the_partner(
    make_booking, ops_user, partner_queue, broker, django_capture_on_commit_callbacks, typed_by
):
    typed_by("olga")
    booking = make_booking(status=S.PENDING_PARTNER)
    live = PartnerReservationFactory(booking=booking, status="pending")

    data = json.loads(
        run(
            "compensate_booking",
            booking.reference,
            "--yes",
            "--json",
            "--as",
            ops_user.username,
            "--note",
            "duplicate hold",
            capture=django_capture_on_commit_callbacks,
        )
    )

    booking.refresh_from_db()
    assert booking.status == S.FAILED
    assert data["results"][0]["result"]["to_state"] == "failed"
    assert calls(broker, partner_queue) == [("compensate_reservation", [live.pk])]
    # who typed it beside whom it acted as (--as takes no credential)
    assert booking.events.get(kind="support.compensated").actor_label == f"ops:olga as {ops_user.username}"


def test_retry_booking_reports_a_refusal(make_booking, partner_queue, broker):
    booking = make_booking(status=S.UNKNOWN)

    with pytest.raises(CommandError, match="nothing was done"):
        run("retry_booking", booking.reference, "--yes")

    assert calls(broker, partner_queue) == []


def test_a_batch_with_a_refusal_fails_after_doing_the_rest(make_booking, partner_queue, broker):
    # A cron job reads the exit status: "2 done, 1 refused" must not look like success.
    ok = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    refused = make_booking(status=S.UNKNOWN)

    with pytest.raises(CommandError, match="retry: 1 of 2 refused, the others done"):
        run("retry_booking", ok.reference, refused.reference, "--yes")

    ok.refresh_from_db()
    refused.refresh_from_db()
    assert (ok.status, refused.status) == (S.REQUESTED, S.UNKNOWN)


def test_a_refused_action_exits_non_zero_with_dry_run_as_without_and_its_json_says_why(
    make_booking, partner_queue, broker
):
    # A tester saw a refused retry exit 0 with --dry-run and 1 without: a script checking first
    # with --dry-run read "fine" for what the run then refused.
    booking = make_booking(status=S.UNKNOWN)
    printed = {}
    for mode in ("--dry-run", "--yes"):
        out = io.StringIO()
        with pytest.raises(CommandError) as refused:
            call_command("retry_booking", booking.reference, mode, "--json", stdout=out, stderr=io.StringIO())
        assert refused.value.returncode == 1
        printed[mode] = json.loads(out.getvalue())
    with pytest.raises(
        CommandError, match=r"retry: nothing would be done \(1 refused\); a dry run does nothing"
    ):
        run("retry_booking", booking.reference, "--dry-run")

    [preview] = printed["--dry-run"]["previews"]
    [result] = printed["--yes"]["results"]
    assert preview["allowed"] is False and preview["refusal"] and result["error"]["message"]
    assert calls(broker, partner_queue) == []


def test_a_dry_run_over_several_says_which_would_be_refused_and_exits_non_zero(make_booking, partner_queue):
    possible = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    refused = make_booking(status=S.UNKNOWN)

    with pytest.raises(CommandError, match="retry: 1 of 2 would be refused, the others possible; a dry run"):
        run("retry_booking", possible.reference, refused.reference, "--dry-run", "--no-live")
    run("retry_booking", possible.reference, "--dry-run", "--no-live")  # all possible: exit 0

    possible.refresh_from_db()
    assert possible.status == S.NEEDS_ATTENTION


def test_retry_booking_of_many_with_a_progress_bar(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    bookings = [make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401") for _ in range(3)]

    data = json.loads(
        run(
            "retry_booking",
            *[b.reference for b in bookings],
            "--json",
            "--yes",
            capture=django_capture_on_commit_callbacks,
        )
    )

    assert [r["result"]["to_state"] for r in data["results"]] == ["requested"] * 3
    assert actor_names(broker, partner_queue) == ["submit_booking"] * 3


def test_replay_inbound_event(partner, make_booking):
    from tests.reconciliation.test_admin import _signed_inbound

    booking = make_booking(status=S.PENDING_PARTNER)
    event = _signed_inbound(partner, booking.reference)

    dry = json.loads(run("replay_inbound_event", str(event.pk), "--dry-run", "--json"))
    done = json.loads(run("replay_inbound_event", str(event.pk), "--json", "--token", "r1"))
    again = json.loads(run("replay_inbound_event", str(event.pk), "--json", "--token", "r1"))

    assert dry["results"][0]["verifies"] is True and "performed" not in dry["results"][0]
    assert done["results"][0]["performed"] is True and done["results"][0]["booking"] == booking.reference
    assert again["results"][0]["performed"] is False
    event.refresh_from_db()
    assert event.state == InboundState.PROCESSED


def test_replay_inbound_event_bad_id(db):
    with pytest.raises(CommandError, match="No inbound event 999999"):
        run("replay_inbound_event", "999999")


BEYOND_ANY_ID = "99999999999999999999999"  # past a 64-bit id: the database overflows on it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay_inbound_event", BEYOND_ANY_ID], f"No inbound event {BEYOND_ANY_ID}."),
        (["replay_inbound_event", "9223372036854775808"], "No inbound event 9223372036854775808."),
        (["replay_inbound_event", "-1"], "No inbound event -1."),
        (["replay_inbound_event", "abc"], "No inbound event abc."),
        (["orphan_cancel", BEYOND_ANY_ID, "--dry-run"], f"No orphan case '{BEYOND_ANY_ID}'."),
        (["orphan_close", BEYOND_ANY_ID, "--dry-run"], f"No orphan case '{BEYOND_ANY_ID}'."),
        (["orphan_link", BEYOND_ANY_ID, "--dry-run"], f"No orphan case '{BEYOND_ANY_ID}'."),
        (["approve_refund", BEYOND_ANY_ID, "--dry-run"], f"No refund proposal '{BEYOND_ANY_ID}'."),
        (
            ["approve_refund", BEYOND_ANY_ID, "--reject", "--dry-run"],
            f"No refund proposal '{BEYOND_ANY_ID}'.",
        ),
    ],
)
def test_an_id_no_row_can_have_is_no_such_row_not_a_traceback(args, message, ops_user):
    # Past a 64-bit id the database raised (OverflowError on SQLite, DataError on PostgreSQL).
    with pytest.raises(CommandError) as error:
        run(*args, "--as", ops_user.username)

    assert message in str(error.value)


def test_replay_of_a_tampered_delivery_is_refused(partner):
    from tests.reconciliation.test_admin import _signed_inbound

    event = _signed_inbound(partner)
    type(event).objects.filter(pk=event.pk).update(raw_body=b'{"tampered": 1}')

    with pytest.raises(CommandError, match="Nothing was replayed"):
        run("replay_inbound_event", str(event.pk))
    # its dry run (a re-verify) refuses it the same way, and says so in --json too
    out = io.StringIO()
    with pytest.raises(
        CommandError, match="Nothing would be replayed: The stored delivery's signature does not"
    ):
        call_command("replay_inbound_event", str(event.pk), "--dry-run", "--json", stdout=out)
    assert json.loads(out.getvalue())["results"][0]["verifies"] is False


UNREADABLE_BODY = "not json"
UNSUPPORTED_BODY = json.dumps({"type": "ping", "data": {}})


@pytest.mark.parametrize(
    ("body", "code", "said"),
    [
        pytest.param(
            UNREADABLE_BODY,
            "malformed_body",
            "The stored body cannot be applied: body is not JSON (unreadable at line 1, column 1)",
            id="unreadable",
        ),
        # authentic, of a type we do not handle (stored `unsupported`): no malformed body
        pytest.param(
            UNSUPPORTED_BODY,
            "unsupported_event",
            "Its type is not one we handle (unsupported webhook type 'ping'): nothing to apply.",
            id="unsupported",
        ),
    ],
)
def test_a_dry_run_refuses_what_the_replay_refuses_by_the_same_rule(partner, body, code, said):
    """Its dry run said `verifies` and exited 0 for a delivery whose replay was then refused."""
    from tests.reconciliation.test_admin import _signed_inbound

    event = _signed_inbound(partner, body=body)
    out = io.StringIO()

    with pytest.raises(CommandError, match=re.escape(f"Nothing would be replayed: {said}")):
        call_command("replay_inbound_event", str(event.pk), "--dry-run", "--json", stdout=out)
    with pytest.raises(CommandError, match="Nothing was replayed"):
        ran = io.StringIO()
        call_command("replay_inbound_event", str(event.pk), "--json", stdout=ran)

    previewed = json.loads(out.getvalue())["results"][0]
    assert previewed["verifies"] is True  # authentic: refused for its body, not its signature
    assert previewed["refusal"] == {"code": code, "message": said}
    assert json.loads(ran.getvalue())["results"][0]["error"] == {"code": code, "message": said}
    event.refresh_from_db()
    assert event.state == InboundState.FAILED


def test_a_dry_run_of_a_replayable_delivery_says_it_would_be_replayed(partner, make_booking):
    from tests.reconciliation.test_admin import _signed_inbound

    event = _signed_inbound(partner, make_booking(status=S.PENDING_PARTNER).reference)

    previewed = json.loads(run("replay_inbound_event", str(event.pk), "--dry-run", "--json"))

    assert previewed["results"][0]["refusal"] is None


def test_a_refused_replay_run_again_with_its_token_is_refused_again_not_already_done(partner):
    """Review: the refused replay kept its claim, so the same command again answered "already
    replayed" and exited 0, while nothing was ever replayed."""
    from tests.reconciliation.test_admin import _signed_inbound

    event = _signed_inbound(partner)
    type(event).objects.filter(pk=event.pk).update(raw_body=b'{"tampered": 1}')

    for _ in range(2):
        with pytest.raises(CommandError, match="Nothing was replayed"):
            run("replay_inbound_event", str(event.pk), "--token", "t-refused")


def test_a_replay_that_refuses_some_deliveries_exits_non_zero_after_replaying_the_others(
    partner, make_booking
):
    from tests.reconciliation.test_admin import _signed_inbound

    tampered = _signed_inbound(partner)
    type(tampered).objects.filter(pk=tampered.pk).update(raw_body=b'{"tampered": 1}', event_id="msg_tampered")
    good = _signed_inbound(partner, make_booking(status=S.PENDING_PARTNER).reference)

    with pytest.raises(CommandError, match="1 of 2 not replayed"):
        run("replay_inbound_event", str(good.pk), str(tampered.pk))

    good.refresh_from_db()
    assert good.state == InboundState.PROCESSED


def test_partner_health(partner, make_booking, broker, partner_queue):
    booking = make_booking()
    for latency in (10, 20, 30, 40):
        PartnerAttemptFactory(booking=booking, operation="get", outcome="ok", latency_ms=latency)
    PartnerAttemptFactory(booking=booking, operation="get", outcome="ambiguous", latency_ms=5000)
    webhook = InboundEventFactory(partner=partner)

    data = json.loads(run("partner_health", "--json", "--partner", partner.code))
    text = run("partner_health", "--partner", partner.code)

    row = data["partners"][0]
    assert (row["calls"], row["errors"], row["error_rate"]) == (5, 1, 0.2)
    assert (row["p50_ms"], row["p99_ms"]) == (30, 5000)
    assert row["queue_ready"] == 0 and row["circuit"]["circuit"] == "closed"
    assert row["last_webhook_at"] == webhook.received_at.isoformat()
    assert partner.code in text and "20.0%" in text
    with pytest.raises(CommandError, match="No partner"):
        run("partner_health", "--partner", "nope")


def test_partner_health_counts_answers_refused_at_the_edge(partner, make_booking, broker, partner_queue):
    booking = make_booking()
    PartnerAttemptFactory(booking=booking, operation="get", outcome="ok", latency_ms=10)
    PartnerAttemptFactory(
        booking=booking,
        operation="get",
        outcome="transient",
        latency_ms=10,
        refusal="version out of range: 9223372036854775808 (expected an integer from 0 to 2147483647)",
    )

    row = json.loads(run("partner_health", "--json", "--partner", partner.code))["partners"][0]

    assert (row["calls"], row["errors"], row["refused_answers"]) == (2, 1, 1)
    assert "partner answers refused at our edge (malformed or out of range): 1" in row["problems"]


@pytest.mark.django_db(transaction=True)
def test_sync_booking_now_runs_the_sync_here(make_booking, partner_queue, broker):
    booking = make_booking(status=S.UNKNOWN)

    text = run("sync_booking", booking.reference, "--now", "--yes")

    assert "Synced:" in text
    kinds = list(booking.events.values_list("kind", flat=True))
    assert kinds[0] == "support.sync_requested"
    assert "sync.failed" in kinds  # the closed port: recorded, retried later
    assert actor_names(broker, partner_queue) == ["sync_booking"]  # the follow-up


def test_reconcile_json_is_written_as_every_command_writes_its_json(db, broker):
    out = run("reconcile", "--dry-run", "--json")

    report = json.loads(out)
    assert report["dry_run"] is True
    assert out.rstrip("\n") == json.dumps(report, default=str, indent=2)  # the shared writer: not one line


# --- stored text is printed as it is --------------------------------------------------------------
MARKUP_LIKE = "R-[/]7"  # rich's markup read "[/]" as closing a style none opened: MarkupError
STYLE_LIKE = "R-[hold]-7"  # and "[hold]" as a style: printed "R--7"


def _orphan_case(partner, partner_ref: str, client_reference: str = "BK-[x]:smile:"):
    from partners.models import OrphanAutomation, OrphanCase, OrphanFinding

    reservation = PartnerReservationFactory(
        booking=None, partner=partner, partner_ref=partner_ref, client_reference=client_reference
    )
    return OrphanCase.objects.create(
        reservation=reservation,
        opened_because=OrphanFinding.UNKNOWN_REFERENCE,
        automation=OrphanAutomation.LEFT_TO_SUPPORT,
    )


def test_the_orphan_queue_and_an_orphan_action_print_a_partner_s_reference_as_it_is(partner):
    closing, other = _orphan_case(partner, MARKUP_LIKE), _orphan_case(partner, STYLE_LIKE)

    listed = run("orphans", "--partner", partner.code)
    closed = run("orphan_close", str(closing.pk), "--no-live", "--yes", "--note", "[done] at :ok: desk")

    assert MARKUP_LIKE in listed and STYLE_LIKE in listed and "BK-[x]:smile:" in listed
    assert f"orphan case #{closing.pk} ({MARKUP_LIKE})" in closed and "Case closed." in closed
    assert other.reservation.partner_ref == STYLE_LIKE


def test_a_preview_and_the_timeline_print_stored_text_as_it_is(make_booking, partner_queue, broker):
    booking = make_booking(status=S.UNKNOWN)
    PartnerReservationFactory(booking=booking, partner_ref=STYLE_LIKE, status="pending")
    record_event(booking, "note.added", actor="support", actor_label="[b]ann[/b]", summary="held [/] :ok:")

    preview = run("sync_booking", booking.reference, "--dry-run", "--no-live")
    timeline = run("booking_timeline", booking.reference, "--raw")

    assert STYLE_LIKE in preview
    assert "[b]ann[/b]" in timeline and "held [/] :ok:" in timeline and "\\[" not in timeline


# --- a preview refuses what the run refuses, by the run's own rule ----------------------------------
@pytest.mark.parametrize("outcome", ["expired", "rejected"])
def test_resolve_dry_run_refuses_an_end_the_booking_never_had_as_the_run_does(
    outcome, make_booking, partner_queue
):
    # failed and cancelled are possible (nothing live): the preview allows the booking, and only
    # the outcome asked for is refused, by the rule the run applies
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    args = ("resolve_booking", booking.reference, "--outcome", outcome, "--no-live", "--json")
    said = f"Only a booking that had ended {outcome} before support took it up returns to {outcome}"

    dry_out, run_out = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"nothing would be done \(1 refused\)"):
        call_command(*args, "--dry-run", stdout=dry_out, stderr=io.StringIO())
    with pytest.raises(CommandError, match=r"nothing was done \(1 refused\)"):
        call_command(*args, "--yes", "--note", "gone", stdout=run_out, stderr=io.StringIO())

    [preview] = json.loads(dry_out.getvalue())["previews"]
    [result] = json.loads(run_out.getvalue())["results"]
    assert preview["allowed"] is False and said in preview["refusal"]
    assert said in result["error"]["message"]
    booking.refresh_from_db()
    assert booking.status == S.NEEDS_ATTENTION


# --- a run an outage or a bug stops keeps what it did ---------------------------------------------
def _failing_on_second(monkeypatch, error: Exception) -> None:
    """The sync service, failing with `error` on its second booking (the first is synced)."""
    from reconciliation.services import support

    real, called = support.support_sync, []

    def sync(**kwargs):
        called.append(kwargs["booking_id"])
        if len(called) == 2:
            raise error
        return real(**kwargs)

    monkeypatch.setattr(support, "support_sync", sync)


def test_an_outage_in_the_middle_of_a_run_keeps_the_results_before_it_in_the_json(
    make_booking, partner_queue, broker, monkeypatch
):
    import redis

    first, second, third = (make_booking(status=S.UNKNOWN) for _ in range(3))
    _failing_on_second(monkeypatch, redis.ConnectionError("Connection refused"))
    out = io.StringIO()

    references = (first.reference, second.reference, third.reference)

    with pytest.raises(CommandError) as stopped:
        call_command(
            "sync_booking", *references, "--yes", "--no-live", "--json", stdout=out, stderr=io.StringIO()
        )

    printed = json.loads(out.getvalue())
    [done] = printed["results"]
    assert done["result"]["booking"] == first.reference and done["result"]["performed"] is True
    assert printed["error"] == {"code": "service_unavailable", "message": str(stopped.value)}
    assert str(stopped.value).startswith(f"{second.reference}: the run stopped here, 1 after it not tried")
    assert "Our queue (Redis) is not answering (ConnectionError: Connection refused)" in str(stopped.value)
    assert isinstance(stopped.value.__cause__, redis.ConnectionError)
    assert stopped.value.returncode == 75  # an outage: try again, not a refusal
    assert first.events.filter(kind="support.sync_requested").exists()
    assert not third.events.exists()


def test_a_bug_in_the_middle_of_a_run_is_raised_as_it_is_after_the_json_of_what_was_done(
    make_booking, partner_queue, broker, monkeypatch
):
    first, second = make_booking(status=S.UNKNOWN), make_booking(status=S.UNKNOWN)
    _failing_on_second(monkeypatch, KeyError("oops"))
    out = io.StringIO()

    with pytest.raises(KeyError):
        call_command(
            "sync_booking", first.reference, second.reference, "--yes", "--no-live", "--json",
            stdout=out, stderr=io.StringIO(),
        )  # fmt: skip

    printed = json.loads(out.getvalue())
    assert [r["result"]["booking"] for r in printed["results"]] == [first.reference]
    assert printed["error"] == {
        "code": "command_error",
        "message": f"{second.reference}: the run stopped here (its timeline says what was recorded): "
        "KeyError: 'oops'",
    }
