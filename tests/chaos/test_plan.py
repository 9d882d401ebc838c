"""The chaos run's fault plan, options and helpers (no processes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from chaos.config import ChaosConfig, RunIdentity, Timing, child_env
from chaos.disruptions import PHASE_UNREACHABLE_GRACE_S, Disruptor
from chaos.faults import FaultOptionError, build_plan, parse_override
from chaos.logscan import scan
from chaos.sandboxes import SandboxPartner
from chaos.stats import summary


def test_every_fault_is_on_by_default_and_the_rate_scales_them():
    plan = build_plan("reference", fault_rate=0.5, time_scale=60, seed=7)
    assert plan.settings["timeout_after_commit_rate"] == 0.02
    assert plan.settings["webhook_duplicate_rate"] == 0.1
    assert (plan.settings["time_scale"], plan.settings["seed"], plan.clock_skew_s) == (60, 7, 75.0)
    assert plan.async_delay == 180


@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_what_a_partner_does_on_its_own_is_on_by_default_at_realistic_rates(profile):
    plan = build_plan(profile, fault_rate=1, time_scale=60, seed=7)
    assert {key: plan.settings[key] for key in ("partner_cancel_rate", "amend_rate", "vanish_rate")} == {
        "partner_cancel_rate": 0.02,
        "amend_rate": 0.01,
        "vanish_rate": 0.002,
    }
    assert plan.settings["garbage_values_rate"] == 0.002
    assert (plan.settings["auth_failure_window_s"], plan.settings["outage_window_s"]) == (
        [5400, 600],
        [7200, 600],
    )
    assert plan.latest_initiative_s == 10.0  # 600 partner seconds at 60x


def test_fault_rate_zero_makes_a_perfect_partner():
    plan = build_plan("reference", fault_rate=0, time_scale=60, seed=1)
    rates = {k: v for k, v in plan.settings.items() if k.endswith("_rate")}
    assert set(rates.values()) == {0}
    assert (plan.async_delay, plan.clock_skew_s, plan.settings["webhook_delay_s"]) == (None, 0.0, [0, 0])
    assert (plan.settings["auth_failure_window_s"], plan.settings["outage_window_s"]) == (None, None)
    assert plan.latest_initiative_s == 0.0


def test_legacy_gets_no_webhook_faults():
    plan = build_plan("legacy", fault_rate=1, time_scale=60, seed=1)
    assert not [k for k in plan.settings if k.startswith("webhook_")]
    assert plan.clock_skew_s == -50.0


def test_overrides_apply_to_their_profile_only():
    overrides = (
        parse_override("reference.reject_rate=0.5"),
        parse_override("clock_skew_s=-400"),
        parse_override("legacy.async_confirm_delay_s=null"),
    )
    reference = build_plan("reference", fault_rate=1, time_scale=60, seed=1, overrides=overrides)
    legacy = build_plan("legacy", fault_rate=1, time_scale=60, seed=1, overrides=overrides)
    assert (reference.settings["reject_rate"], reference.clock_skew_s, reference.async_delay) == (
        0.5,
        -400,
        180,
    )
    assert (legacy.settings["reject_rate"], legacy.clock_skew_s, legacy.async_delay) == (0.05, -400, None)


@pytest.mark.parametrize("text", ["reject_rate", "nonsense=1", "mainframe.reject_rate=1", "reject_rate=high"])
def test_bad_fault_overrides_are_refused(text):
    with pytest.raises(FaultOptionError):
        parse_override(text)


def test_children_get_their_own_namespaces_and_short_timings(tmp_path: Path):
    identity = RunIdentity(run_id="abc123", directory=tmp_path)
    env = child_env(
        {"PATH": "/bin", "DRAMATIQ_NAMESPACE": "shared"},
        config=ChaosConfig(),
        identity=identity,
        database_url="postgres://db/x",
        redis_url="redis://r/0",
        role="worker-2",
    )
    assert env["DRAMATIQ_NAMESPACE"] == "chaos-abc123"
    assert env["PARTNER_GUARD_NAMESPACE"] == "chaos-abc123-guard"
    assert env["PGAPPNAME"] == "chaos-abc123-worker-2"
    assert identity.app_name_pattern == "chaos-abc123-%"
    assert (env["RECONCILE_INTERVAL_S"], env["DATABASE_URL"], env["DEBUG"]) == (
        "2.0",
        "postgres://db/x",
        "false",
    )
    # the customers' side: live channels of the run's own, mail and "taking longer" at its pace
    assert env["LIVE_CHANNEL_PREFIX"] == "chaos-abc123-live"
    assert (env["NOTIFICATION_REQUEUE_AFTER_S"], env["NOTIFICATION_CLAIM_TIMEOUT_S"]) == ("10", "70")
    assert env["CUSTOMER_SLOW_AFTER_S"] == "40"  # a third of the 120 s window


class UnreachablePartner(SandboxPartner):
    """A partner whose port is closed (its outage window): every control call is refused."""

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        raise requests.ConnectionError("[Errno 111] Connection refused")


def test_a_phase_switch_during_the_partners_outage_is_skipped_and_only_a_longer_one_is_an_error(
    tmp_path: Path,
):
    # Given a partner whose outage window closes its port for 10 s real
    plan = build_plan("reference", fault_rate=1.0, time_scale=60, seed=1)
    assert plan.outage_s == 10.0
    partner = UnreachablePartner(profile="reference", code="chaos-ref-abc123", plan=plan)
    disruptor = Disruptor(
        config=ChaosConfig(),
        identity=RunIdentity(run_id="abc123", directory=tmp_path),
        stack=None,  # type: ignore[arg-type] - a phase switch touches only the partners
        sandboxes=[partner],
        load_progress=lambda: 0.0,
        load_done=threading.Event(),
    )

    # When a phase switch meets it: skipped, and the phase stays as it was
    disruptor._flip_phase()
    assert [e.kind for e in disruptor.events] == ["fault_phase_skipped"]
    assert (disruptor.errors, disruptor._async_on[partner.code]) == ([], True)

    # and when it is still unreachable past its outage and the grace: a harness error
    disruptor._unreachable_since[partner.code] = time.monotonic() - (10.0 + PHASE_UNREACHABLE_GRACE_S + 1)
    disruptor._flip_phase()
    assert len(disruptor.errors) == 1
    assert "unreachable for 26s, longer than its outage window (10s)" in disruptor.errors[0]


def test_percentiles_are_measured_values():
    assert summary([3.0, 1.0, 2.0, 10.0]) == {"n": 4, "p50": 2.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert summary([])["n"] == 0


def test_the_log_scan_groups_errors_by_their_last_exception(tmp_path: Path):
    (tmp_path / "worker-1.log").write_text(
        'ts=1 level=error msg="Failed" exc="Traceback\\npsycopg.errors.DeadlockDetected: deadlock detected\\n'
        'django.db.utils.OperationalError: deadlock detected\\nDETAIL: x"\n'
        "ts=2 level=info msg=fine\n"
        'ts=3 level=error msg="Failed" exc="django.db.utils.OperationalError: deadlock detected\\n"\n'
    )
    assert scan(tmp_path) == {"worker-1": {"django.db.utils.OperationalError: deadlock detected": 2}}


def test_the_detection_window_is_a_round_over_the_reads_the_partner_answers():
    timing = Timing()  # 20 reads a sweep every 2 s, a second read 3 s after a 404
    answered_all = timing.detection_window_s(7_000)
    assert answered_all == 700 + 3 + 4
    # A tenth of the reads refused (429s, an outage): each takes a slot of the next batch.
    assert timing.detection_window_s(7_000, unanswered_share=0.1) == pytest.approx(700 / 0.9 + 7)
    # A partner refusing most reads is down, not slow: the window stops growing at half.
    assert timing.detection_window_s(7_000, unanswered_share=0.9) == pytest.approx(1_400 + 7)
    # A few bookings: the audit's age sets the window, whatever the partner answers.
    assert timing.detection_window_s(10, unanswered_share=0.3) == timing.audit_age_s + 7


def test_the_payment_provider_refuses_a_share_of_refunds_and_takes_its_own_overrides():
    from chaos.payments import provider_faults

    overrides = (
        parse_override("payments.refund_refused_rate=0.7"),
        parse_override("payments.error_5xx_rate=0"),
        parse_override("error_5xx_rate=0.5"),  # the partners'
    )
    default = provider_faults(fault_rate=1, time_scale=60, seed=1)
    assert (
        default["refund_refused_rate"],
        provider_faults(fault_rate=0.5, time_scale=60, seed=1)["refund_refused_rate"],
    ) == (0.3, 0.15)
    provider = provider_faults(fault_rate=1, time_scale=60, seed=1, overrides=overrides)
    assert (provider["refund_refused_rate"], provider["error_5xx_rate"]) == (0.7, 0)
    partner = build_plan("reference", fault_rate=1, time_scale=60, seed=1, overrides=overrides)
    assert (partner.settings["error_5xx_rate"], "refund_refused_rate" in partner.settings) == (0.5, False)


def test_the_payment_provider_refuses_a_share_of_releases_and_a_run_may_force_it_higher():
    from chaos.payments import provider_faults

    assert parse_override("payments.void_refused_rate=0.7") == ("payments", "void_refused_rate", 0.7)
    # on by default, fewer than refunds: a run releases about four times as many holds as it refunds
    assert provider_faults(fault_rate=1, time_scale=60, seed=1)["void_refused_rate"] == 0.2
    assert provider_faults(fault_rate=0.5, time_scale=60, seed=1)["void_refused_rate"] == 0.1
    assert provider_faults(fault_rate=0, time_scale=60, seed=1)["void_refused_rate"] == 0
    forced = provider_faults(
        fault_rate=1, time_scale=60, seed=1, overrides=(parse_override("payments.void_refused_rate=0.7"),)
    )
    assert forced["void_refused_rate"] == 0.7


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("refund_refused_rate=0.5", "refund_refused_rate"),
        ("reference.refund_refused_rate=0.5", "refund_refused_rate"),
        ("void_refused_rate=0.5", "void_refused_rate"),
        ("legacy.void_refused_rate=0.5", "void_refused_rate"),
    ],
)
def test_the_payment_provider_s_own_faults_are_set_through_its_scope_only(text, key):
    with pytest.raises(FaultOptionError, match=rf"payments\.{key}"):
        parse_override(text)
