"""Benchmark 2, partner independence: the customer path while the partner answers at once, then
while every partner call takes 3 s.

Everything runs as in production: gunicorn (4 x 2), Dramatiq workers (2 processes x 4 threads,
as in the Procfile) and a reference sandbox partner that sends its webhooks to our gunicorn. The
same loads run at each latency; between the two, the first phase's bookings are left to settle.
Target: the customer path's p99 at 3 s within 10% of its p99 at 0 s, with every process on the
same 2 cores ("co-located", the target's figures), under a paced load: a fixed offered rate,
each request's latency counted from when it was due (so a stall cannot hide as fewer requests).
The closed-loop loads of benchmark 1 (4 and 8 clients) run too, at saturation: there, with the
partner at 0 s the pipeline does its work during the load on the same cores, while at 3 s it has
mostly not started, so their spread measures CPU sharing rather than waiting on the partner.

The full run repeats it on a fresh database with the web server pinned to CPU 0 and the workers
and the partner to CPU 1 (`taskset`; PostgreSQL, Redis and the load clients float): a diagnosis
that tells CPU sharing between web and workers apart from coupling through the database.
A `pg_stat_activity` sampler records what the database backends wait for in each phase.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench import common, fixtures, observe, output
from bench.api import client_tokens
from bench.load import Endpoint, run_load

NAME = "independence"
TARGET_SPREAD = 0.10
LATENCIES_MS = (0, 3000)
PLACEMENTS = {
    "co-located": {"web": None, "workers": None},
    "pinned": {"web": "0", "workers": "1"},
}


@dataclass(frozen=True)
class Config:
    concurrencies: tuple[int, ...]
    requests_each: int
    settle_timeout_s: float
    placements: tuple[str, ...]
    paced_rate_per_s: float
    paced_requests_each: int


PACED_CLIENTS = 4
FULL = Config(
    concurrencies=(4, 8),
    requests_each=300,
    settle_timeout_s=180,
    placements=("co-located", "pinned"),
    paced_rate_per_s=10.0,
    paced_requests_each=100,  # 4 clients x 100 at 10/s: 40 s
)
QUICK = Config(
    concurrencies=(4,),
    requests_each=40,
    settle_timeout_s=60,
    placements=("co-located",),
    paced_rate_per_s=10.0,
    paced_requests_each=20,
)


def paced_key(config: Config) -> str:
    return f"paced {config.paced_rate_per_s:g}/s"


def label(key: str) -> str:
    return f"{key} clients" if key.isdigit() else key


def _open_bookings() -> int:
    from bookings.models import Booking

    return Booking.objects.open().count()


def _settled(sandbox_base: str) -> bool:
    """Nothing of the last phase left to do: no open booking, no webhook waiting in the
    partner's outbox and no message in our queues (webhook duplicates arrive after the
    confirmation, and would otherwise be processed during the next phase)."""
    import requests

    from partners.models import Partner

    if _open_bookings():
        return False
    stats = requests.get(
        f"{sandbox_base}/_sandbox/stats",
        headers={"Authorization": f"Bearer {common.SANDBOX_API_KEY}"},
        timeout=10,
    ).json()
    if stats["webhooks"]["events_by_status"].get("queued", 0):
        return False
    queues = [Partner(code=fixtures.PARTNER_CODE).queue_name, "webhooks", "partners"]
    return not any(common.queue_size(name) for name in queues)


def _states() -> dict[str, int]:
    from django.db.models import Count

    from bookings.models import Booking

    return dict(Booking.objects.values_list("status").annotate(n=Count("id")).order_by("status"))


def measure(env: common.BenchEnv, config: Config, cpus: dict[str, str | None]) -> dict[str, Any]:
    """Both latencies on a fresh stack; the phases and their p99 comparison."""
    web_port = common.free_port()
    # The sandbox needs our webhook URL and we need its base URL: fix the web port first.
    sandbox, sandbox_base = env.start_sandbox(
        webhook_url=f"http://127.0.0.1:{web_port}/partners/{fixtures.PARTNER_CODE}/webhooks/",
        cpus=cpus["workers"],
    )
    _, offer = fixtures.bench_partner(base_url=sandbox_base)
    web, base = env.start_web(port=web_port, cpus=cpus["web"])
    workers = env.start_workers(processes=2, threads=4, cpus=cpus["workers"])
    endpoint = Endpoint(
        "bookings", "/api/v1/bookings", fixtures.booking_body(offer.pk), ok_status=202, idempotency_key=True
    )
    tokens = {clients: client_tokens(clients) for clients in {*config.concurrencies, PACED_CLIENTS}}
    # The paced load first: at 0 s it then meets only its own bookings' pipeline work.
    loads = [
        (paced_key(config), tokens[PACED_CLIENTS], config.paced_requests_each, config.paced_rate_per_s),
        *((str(c), tokens[c], config.requests_each, None) for c in config.concurrencies),
    ]
    roles = {"web": web, "workers": workers, "sandbox": sandbox}
    phases: dict[str, Any] = {}
    for latency_ms in LATENCIES_MS:
        common.set_sandbox_faults(sandbox_base, latency_ms=[latency_ms, latency_ms])
        phase: dict[str, Any] = {"by_concurrency": {}}
        cpu_before = {role: proc.cpu_seconds() for role, proc in roles.items()}
        wall = time.perf_counter()
        with observe.ActivitySampler(env.database_url, env.db_name) as sampler:
            for key, load_tokens, requests_each, rate in loads:
                result = run_load(
                    base, endpoint, tokens=load_tokens, requests_each=requests_each, rate_per_s=rate
                )
                phase["by_concurrency"][key] = {
                    "throughput_rps": round(result.throughput, 1),
                    "requests_ok": result.ok,
                    "errors": result.errors,
                    "error_samples": result.error_samples,
                    **common.latency_summary_ms(result.latencies_s),
                }
        wall = time.perf_counter() - wall
        phase["lock_waits"] = sampler.summary()
        phase["load_wall_s"] = round(wall, 1)
        phase["cpu_s_during_load"] = {
            role: round(proc.cpu_seconds() - cpu_before[role], 1) for role, proc in roles.items()
        }
        phase["states_after_load"] = _states()
        if latency_ms == LATENCIES_MS[0]:
            settle = time.perf_counter()
            try:
                common.wait_for(
                    lambda: _settled(sandbox_base),
                    timeout_s=config.settle_timeout_s,
                    interval_s=1.0,
                    what="every booking and webhook settled",
                )
                phase["settled_s"] = round(time.perf_counter() - settle, 1)
            except TimeoutError:
                phase["settled_s"] = None
            phase["states_settled"] = _states()
        phases[str(latency_ms)] = phase
    for proc in (workers, web, sandbox):
        env.stop(proc)
    comparison = {}
    for key, *_ in loads:
        fast = phases["0"]["by_concurrency"][key]["p99_ms"]
        slow = phases["3000"]["by_concurrency"][key]["p99_ms"]
        spread = max(fast, slow) / min(fast, slow) - 1
        comparison[key] = {
            "p99_0s_ms": fast,
            "p99_3s_ms": slow,
            "spread": round(spread, 3),
            "target_met": spread <= TARGET_SPREAD,
        }
    return {
        "cpus": cpus,
        "phases": phases,
        "comparison": comparison,
        "target_met": comparison[paced_key(config)]["target_met"],
        "target_load": paced_key(config),
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    placements = [p for p in config.placements if p == "co-located" or len(os.sched_getaffinity(0)) >= 2]
    variants: dict[str, Any] = {}
    machine: dict[str, Any] = {}
    started = common.now_iso()
    for placement in placements:
        with common.BenchEnv(f"{NAME}-{placement}") as env:
            variants[placement] = measure(env, config, PLACEMENTS[placement])
            variants[placement]["machine"] = env.machine()
            machine = machine or variants[placement]["machine"]
    data = {
        "benchmark": NAME,
        "started_at": started,
        "quick": quick,
        "machine": machine,
        "setup": {
            "web": "gunicorn --workers 4 --threads 2",
            "workers": "rundramatiq --processes 2 --threads 4 (as in the Procfile)",
            "partner": "reference sandbox, webhooks to our gunicorn, max_concurrency 8 (default)",
            "requests_each": config.requests_each,
            "paced": {
                "clients": PACED_CLIENTS,
                "rate_per_s": config.paced_rate_per_s,
                "requests_each": config.paced_requests_each,
            },
            "target_spread": TARGET_SPREAD,
            "placements": {name: PLACEMENTS[name] for name in placements},
        },
        "variants": variants,
        "target_met": variants["co-located"]["target_met"],
    }
    report(data)
    return data


def report(data: dict[str, Any]) -> None:
    for placement, variant in data["variants"].items():
        rows = []
        for latency, phase in variant["phases"].items():
            for clients, stats in phase["by_concurrency"].items():
                rows.append(
                    [
                        f"partner {int(latency) / 1000:.0f} s, {label(clients)}",
                        stats["throughput_rps"],
                        stats["p50_ms"],
                        stats["p95_ms"],
                        stats["p99_ms"],
                        stats["requests_ok"],
                        sum(stats["errors"].values()),
                        phase["cpu_s_during_load"]["workers"],
                        phase["lock_waits"]["backends_waiting_on_locks_per_sample"],
                    ]
                )
        output.print_table(
            f"Partner independence ({placement}): customer path with the partner at 0 s and 3 s",
            ["phase", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "worker CPU s", "lock waits"],
            rows,
        )
        output.print_table(
            f"p99 spread ({placement}; target <= 10% under the paced load)",
            ["load", "p99 @0s ms", "p99 @3s ms", "spread", "within 10%"],
            [
                [c, row["p99_0s_ms"], row["p99_3s_ms"], f"{row['spread'] * 100:.1f}%", row["target_met"]]
                for c, row in variant["comparison"].items()
            ],
        )
    output.write_json(NAME, data)
    plot(data)


def plot(data: dict[str, Any]) -> None:
    plt = output.pyplot()
    variants = data["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(7 * len(variants), 4), squeeze=False)
    quantiles = ("p50_ms", "p95_ms", "p99_ms")
    for ax, (placement, variant) in zip(axes[0], variants.items(), strict=True):
        clients = list(variant["comparison"])
        width = 0.12
        position = 0.0
        ticks = []
        for c in clients:
            ticks.append((position + 2.5 * width, label(c)))
            for latency, colour in (("0", "tab:blue"), ("3000", "tab:orange")):
                stats = variant["phases"][latency]["by_concurrency"][c]
                for index, q in enumerate(quantiles):
                    ax.bar(
                        position,
                        stats[q],
                        width,
                        color=colour,
                        alpha=0.4 + 0.3 * index,
                        label=f"partner {int(latency) // 1000} s {q[:3]}" if c == clients[0] else None,
                    )
                    position += width
            position += width * 2
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
        ax.set_ylabel("customer POST latency (ms)")
        ax.set_title(f"{placement}: partner at 0 s vs 3 s")
        ax.legend(fontsize=7, ncol=2)
    output.save_figure(fig, NAME)
