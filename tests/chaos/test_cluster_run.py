"""The small cluster run, as CI runs it: every role on a host of its own, faults between hosts.

`manage.py chaos --cluster` builds nine hosts (network namespaces on a bridge) with their own
PostgreSQL and Redis, books (and pays, through the payment provider on the partners host) through
both web hosts, follows every customer's live stream and mail, while the partners inject every fault,
workers are SIGKILLed, Redis restarts and connections drop, and cuts web-1, the broker, worker-1
and the scheduler off in turn and partitions worker-2 from the partners. This test asserts that
every check of the single-host run ran and held, that every network fault ran, and that nothing
of the cluster is left on the machine.

The broker and scheduler cuts last 2 s: long enough for requests to fail, short enough to keep
the case small. The long cuts (a sweeper lock request delivered after its scheduler gave up on
it, a worker's messages given back by the broker) are the full-size run's (docs/chaos.md,
"Cluster").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from chaos.checks import Limits, allowed_transitions, run_all
from chaos.cluster import kernel
from chaos.model import Snapshot

ROOT = Path(__file__).resolve().parents[2]
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.solo,  # nine hosts' processes and "leaves nothing" are judged machine-wide
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, veth links, a bridge"),
    pytest.mark.skipif(
        not IS_POSTGRES,
        reason="runs once per CI, with the PostgreSQL suite: the cluster brings its own PostgreSQL "
        "and Redis, so the embedded-defaults suite would only repeat it",
    ),
]

SMALL = [
    "--cluster",
    "--bookings=80",
    "--concurrency=8",
    "--duration=30",
    "--workers=2",
    "--kill-interval=8",
    "--confirmation-window=70",
    "--settle-timeout=60",
    "--web-cut=4",
    "--partition=5",
    "--broker-cut=2",
    "--worker-cut=10",
    "--scheduler-cut=2",
    "--seed=20270101",
    "--no-live",
]


# About two minutes on a machine to itself; the guards leave room for a busy shared one.
@pytest.mark.timeout(300)
def test_the_small_cluster_run_holds_every_invariant_and_leaves_nothing(tmp_path: Path):
    # Given the system spread over nine hosts, under every fault and the faults between hosts
    report = tmp_path / "cluster.json"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    command = [sys.executable, "manage.py", "chaos", *SMALL, f"--json={report}", f"--run-dir={tmp_path}"]

    # When the small configuration runs
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=290)

    # Then every check of the single-host run ran and held
    output = f"{completed.stdout[-8000:]}\n{completed.stderr[-3000:]}"
    assert report.exists(), output
    data = json.loads(report.read_text())
    assert (completed.returncode, data["violations"], data["harness_errors"]) == (0, 0, []), output
    assert [check["name"] for check in data["checks"]] == every_check()
    assert data["clients"]["accepted"] == 80
    # and the customers' side was observed across the hosts: followed, shown, and mailed about
    checks = {check["name"]: check for check in data["checks"]}
    followed = checks["customer_last_shown_final"]["figures"]
    assert (followed["bookings_followed"], followed["followers_customer-stream"]) == (80, 80)
    assert data["watchers"]["catch_up"]["caught_up"] is True
    mail = checks["customer_one_mail_per_change"]["figures"]
    assert mail["changes_owing_mail"] >= 1 and mail["mails"] >= 1
    # and money moved through the provider on the partners host, judged against its truth
    assert checks["money_owed"]["figures"]["judged"] >= 1
    assert checks["money_one_authorization"]["figures"]["intents"] >= 1
    # and both web hosts took requests, and every fault between hosts ran
    cluster = data["cluster"]
    assert len(cluster["throughput"]["requests_by_host"]) == 2
    assert [(f["fault"], f["ran"]) for f in cluster["network_faults"]] == [
        ("web_cut", True),
        ("partners_partition", True),
        ("broker_cut", True),
        ("worker_cut", True),
        ("scheduler_cut", True),
    ]
    assert {"worker_kill", "redis_restart", "db_drop", "network_fault", "network_heal"} <= {
        event["kind"] for event in data["disruptions"]
    }
    # and nothing of the cluster is left
    assert cluster["cleanup"]["not_removed"] == []
    left = kernel.leftover_names(live_run_ids=set())
    assert not [name for names in left.values() for name in names if data["run_id"] in name]
    assert not (Path(data["run_dir"]) / "pgdata").exists()


def every_check() -> list[str]:
    """The names of every check chaos/checks runs: a new one must run in the cluster too."""
    empty = Snapshot(
        profiles={},
        skew_s={},
        bookings={},
        idempotency=[],
        reservations=[],
        observations=[],
        truth=[],
        clients=[],
    )
    limits = Limits(
        allowance_s=1.0, detection_window_s=1.0, max_retries=5, refused_max_tries=3, compensation_max_tries=8
    )
    checks = run_all(empty, allowed=allowed_transitions(), limits=limits, checked_at=datetime.now(UTC))
    return [check.name for check in checks]
