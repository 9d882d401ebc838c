"""Scaling on the cluster: what one more worker host or web host buys (root only).

`python -m bench.cluster [--quick]` runs `manage.py chaos --cluster` once per shape (1 or 2 web
hosts x 1 or 2 worker hosts) with perfect partners and nothing disrupted, the requests sent flat
out, and reads each run's report: confirmed bookings per second (first request to last
confirmation), the customers' booking POST latency, and the CPU seconds each host's cgroup used
from the load's start to the verdict. The confirmation window (600 s) and the sync age (30 s,
so the sweeper's claims last 60 s) are long enough that a backlog drains instead of expiring
or being queued again: the figures are the pipeline's cost, not its overload behaviour. The
hosts share this machine's cores, so the absolute rates say little about real machines; the CPU
per booking and per request of each role does carry over, and is what docs/benchmarks.md
("Scaling on a cluster") builds its capacity model on.

Figures go to bench/results/cluster.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import common, output

NAME = "cluster"


@dataclass(frozen=True)
class Config:
    shapes: tuple[tuple[int, int], ...]  # (web hosts, worker hosts)
    bookings: int
    concurrency: int
    workers_per_host: int
    timeout_s: float


FULL = Config(
    shapes=((1, 1), (1, 2), (2, 1), (2, 2)), bookings=600, concurrency=16, workers_per_host=3, timeout_s=900
)
QUICK = Config(shapes=((1, 1), (2, 2)), bookings=120, concurrency=12, workers_per_host=2, timeout_s=600)


def _argv(config: Config, *, web_hosts: int, worker_hosts: int, report: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "manage.py",
        "chaos",
        "--cluster",
        f"--web-hosts={web_hosts}",
        f"--worker-hosts={worker_hosts}",
        f"--workers={config.workers_per_host}",
        f"--bookings={config.bookings}",
        f"--concurrency={config.concurrency}",
        "--duration=0",
        "--confirmation-window=600",
        "--sync-age=30",
        "--settle-timeout=400",
        "--fault-rate=0",
        "--phase-interval=0",
        "--no-kill",
        "--no-redis-restart",
        "--no-db-drop",
        "--no-network-faults",
        "--no-standby-scheduler",
        "--client-replay-rate=0",
        "--client-race-rate=0",
        "--cancel-rate=0",
        "--no-payments",  # the pipeline's cost, as measured before the cluster had a provider
        "--no-watch",
        "--seed=1",
        "--no-live",
        f"--json={report}",
        f"--run-dir={run_dir}",
    ]


def measure(config: Config, web_hosts: int, worker_hosts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as scratch:
        report = Path(scratch) / "report.json"
        argv = _argv(
            config, web_hosts=web_hosts, worker_hosts=worker_hosts, report=report, run_dir=Path(scratch)
        )
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
        child = subprocess.Popen(
            argv, cwd=common.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            out, _ = child.communicate(timeout=config.timeout_s)
        except BaseException:
            child.terminate()  # the run removes its cluster on SIGTERM; SIGKILL would leave it
            child.wait(120)
            raise
        if not report.exists():
            raise RuntimeError(f"the cluster run wrote no report:\n{out.decode(errors='replace')[-3000:]}")
        data = json.loads(report.read_text())
    cluster, throughput = data["cluster"], data["cluster"]["throughput"]
    return {
        "web_hosts": web_hosts,
        "worker_hosts": worker_hosts,
        "verdict": "pass" if child.returncode == 0 else f"exit {child.returncode}",
        "violations": data["violations"],
        "confirmed": throughput["confirmed"],
        "confirmed_per_s": throughput["confirmed_per_s"],
        "booking_post_202_s": throughput["booking_post_202_s"],
        "requests": throughput["requests"],
        "cpu": cluster["cpu"],
        "load_s": data["phases"].get("load_s"),
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    results = [measure(config, web, workers) for web, workers in config.shapes]
    data = {
        "benchmark": NAME,
        "started_at": common.now_iso(),
        "quick": quick,
        "config": {
            "bookings": config.bookings,
            "concurrency": config.concurrency,
            "workers_per_host": config.workers_per_host,
        },
        "machine": {"nproc": len(os.sched_getaffinity(0)), "git_commit": _git_commit()},
        "results": results,
    }
    output.write_json(NAME, data)
    print(table(results))
    return data


ROLES = ("web", "worker", "db", "broker", "scheduler", "partners")


def table(results: list[dict[str, Any]]) -> str:
    """The figures as the Markdown table docs/benchmarks.md shows."""
    header = [
        "web hosts",
        "worker hosts",
        "confirmed/s",
        "booking POST p50 / p99 ms",
        f"CPU ms per booking: {' / '.join(ROLES)}",
        "web CPU ms per request",
        "CPU s outside the run",
        "verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        per = r["cpu"].get("ms_per_booking", {})
        posts = r["booking_post_202_s"]
        row = [
            r["web_hosts"],
            r["worker_hosts"],
            r["confirmed_per_s"],
            f"{posts['p50'] * 1000:.0f} / {posts['p99'] * 1000:.0f}",
            " / ".join(f"{per.get(role, 0):.1f}" for role in ROLES),
            r["cpu"].get("web_ms_per_request"),
            r["cpu"].get("outside_the_run_s"),
            r["verdict"],
        ]
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def _git_commit() -> str:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT, capture_output=True, text=True, check=False
    )
    return completed.stdout.strip()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through `measure`, which stops the run it started


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two shapes, a small load")
    run(quick=parser.parse_args().quick)
