"""Benchmark 2, partner independence: the customer path while the partner answers at once, and
while every partner call takes 3 s.

Everything runs as in production (the Procfile): gunicorn for customers (4 x 2), the partners'
webhook receiver in its own gunicorn (2 x 4), Dramatiq workers (2 processes x 4 threads) and a
reference sandbox partner that sends its webhooks to that receiver.
Target: the customer path's p99 with the partner at 3 s within 10% of its p99 at 0 s, with
every process on the same 2 cores ("co-located"), under a paced load: a fixed offered rate, each
request's latency counted from when it was due (so a stall cannot hide as fewer requests).

How the paced figure is made as stable as a run allows:
- a discarded warm-up round first (new database connections, statement preparation and
  PostgreSQL's per-connection caches made the first round's tail twice the others');
- the rounds alternate latencies in an ABBA order (0, 3, 3, 0 s, four times), so that a drift of
  the shared VM during the run weighs on both latencies alike, and each latency's p99 is taken
  over all its rounds pooled (3,200 requests: the 32nd-worst, not the 4th-worst of one round);
- after every round the system settles (no open booking, no webhook in the partner's outbox, no
  message in our queues), so one round's leftover pipeline work is not charged to the next; the
  leftovers of a 3 s round drain with the partner at 0 s (seconds, not minutes), which is what
  makes sixteen rounds fit in the time eight took.

What chance alone can still do to the comparison is reported beside it: the signed change of
the p99 at 3 s against 0 s with a 95% two-stage bootstrap interval (rounds, then their requests:
`stats.percentile_change_interval`), so a spread can be told apart from noise.
The closed-loop loads of benchmark 1 (4 and 8 clients) run too, once per latency, at
saturation: there, with the partner at 0 s the pipeline does its work during the load on the
same cores, while at 3 s it has mostly not started, so their spread measures CPU sharing rather
than waiting on the partner.

`BENCH_PLACEMENTS=co-located,pinned` repeats everything on a fresh database with the web server
pinned to CPU 0 and the workers and the partner to CPU 1 (`taskset`; PostgreSQL, Redis and the
load clients float): a diagnosis that tells CPU sharing between web and workers apart from
coupling through the database. A `pg_stat_activity` sampler records what the database backends
wait for during each load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench import common, fixtures, observe, output, stats
from bench.api import client_tokens
from bench.load import Endpoint, run_load

NAME = "independence"
TARGET_SPREAD = 0.10
LATENCIES_MS = (0, 3000)
PLACEMENTS = {
    "co-located": {"web": None, "workers": None},
    "pinned": {"web": "0", "workers": "1"},
}
PACED_CLIENTS = 4


@dataclass(frozen=True)
class Config:
    concurrencies: tuple[int, ...]
    requests_each: int
    settle_timeout_s: float
    paced_rate_per_s: float
    paced_requests_each: int  # per client and round
    paced_rounds: tuple[int, ...]  # the partner latency (ms) of each paced round, in order
    warmup_requests_each: int
    paced_arrivals: str = "poisson"


FULL = Config(
    concurrencies=(4, 8),
    requests_each=300,
    settle_timeout_s=300,
    paced_rate_per_s=10.0,
    paced_requests_each=100,  # 4 clients x 100 at 10/s: 40 s a round
    paced_rounds=(0, 3000, 3000, 0) * 4,  # ABBA four times: 3,200 requests a latency
    warmup_requests_each=100,
)
QUICK = Config(
    concurrencies=(4,),
    requests_each=40,
    settle_timeout_s=120,
    paced_rate_per_s=10.0,
    paced_requests_each=20,
    paced_rounds=(0, 3000, 3000, 0),
    warmup_requests_each=5,
)


def placements() -> list[str]:
    """Co-located always (the target's figures); pinned on request, with at least 2 CPUs."""
    wanted = [p.strip() for p in os.environ.get("BENCH_PLACEMENTS", "co-located").split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PLACEMENTS))
    if unknown:
        raise SystemExit(
            f"BENCH_PLACEMENTS: unknown {', '.join(unknown)} (choose from {', '.join(PLACEMENTS)})"
        )
    chosen = ["co-located", *(p for p in wanted if p != "co-located")]
    return [p for p in chosen if p == "co-located" or len(os.sched_getaffinity(0)) >= 2]


def paced_key(config: Config) -> str:
    return f"paced {config.paced_rate_per_s:g}/s {config.paced_arrivals}"


def label(key: str) -> str:
    return f"{key} clients" if key.isdigit() else key


def _open_bookings() -> int:
    from bookings.models import Booking

    return Booking.objects.open().count()


def _settled(sandbox_base: str) -> bool:
    """Nothing of the last load left to do: no open booking, no webhook waiting in the
    partner's outbox and no message in our queues (webhook duplicates arrive after the
    confirmation, and would otherwise be processed during the next load)."""
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
    queues = [*Partner(code=fixtures.PARTNER_CODE).queue_names, "webhooks", "partners"]
    return not any(common.queue_size(name) for name in queues)


def _states() -> dict[str, int]:
    from django.db.models import Count

    from bookings.models import Booking

    return dict(Booking.objects.values_list("status").annotate(n=Count("id")).order_by("status"))


@dataclass
class Stack:
    """The processes of one placement, and what a load needs to reach them."""

    env: common.BenchEnv
    base: str
    sandbox_base: str
    endpoint: Endpoint
    roles: dict[str, common.Proc]

    def set_latency(self, latency_ms: int) -> None:
        common.set_sandbox_faults(self.sandbox_base, latency_ms=[latency_ms, latency_ms])

    def load(
        self,
        tokens: list[list[str]],
        requests_each: int,
        rate: float | None,
        *,
        arrivals: str = "uniform",
        seed: int = 0,
    ) -> dict[str, Any]:
        """One load, with the CPU each role used and what the database backends waited for."""
        cpu_before = {role: proc.cpu_seconds() for role, proc in self.roles.items()}
        with observe.ActivitySampler(self.env.database_url, self.env.db_name) as sampler:
            result = run_load(
                self.base,
                self.endpoint,
                tokens=tokens,
                requests_each=requests_each,
                rate_per_s=rate,
                arrivals=arrivals,
                seed=seed,
            )
        waits = sampler.summary()
        cpu_after = {role: proc.cpu_seconds() for role, proc in self.roles.items()}
        return {
            "latencies_s": result.latencies_s,
            "throughput_rps": round(result.throughput, 1),
            "requests_ok": result.ok,
            "errors": result.errors,
            "error_samples": result.error_samples,
            "cpu_s": {role: round(cpu_after[role] - cpu_before[role], 1) for role in self.roles},
            "lock_waits_per_sample": waits["backends_waiting_on_locks_per_sample"],
            "wait_events_per_sample": waits["wait_events_per_sample"],
        }

    def settle(self, timeout_s: float) -> float | None:
        """Seconds until everything of the last load is done (None: not within `timeout_s`)."""
        started = time.perf_counter()
        try:
            common.wait_for(
                lambda: _settled(self.sandbox_base),
                timeout_s=timeout_s,
                interval_s=1.0,
                what="every booking and webhook settled",
            )
        except TimeoutError:
            return None
        return round(time.perf_counter() - started, 1)


def start_stack(env: common.BenchEnv, cpus: dict[str, str | None]) -> Stack:
    """The Procfile's processes: web (customers), webhooks (the partner's callbacks), workers,
    and the sandbox partner; pinned, the partner's side shares the workers' CPUs."""
    # The receiver first: the sandbox is told its URL.
    webhooks, receiver_base = env.start_webhooks(cpus=cpus["workers"])
    sandbox, sandbox_base = env.start_sandbox(
        webhook_url=fixtures.webhook_url(receiver_base), cpus=cpus["workers"]
    )
    _, offer = fixtures.bench_partner(base_url=sandbox_base)
    web, base = env.start_web(cpus=cpus["web"])
    workers = env.start_workers(processes=2, threads=4, cpus=cpus["workers"])
    endpoint = Endpoint(
        "bookings", "/api/v1/bookings", fixtures.booking_body(offer.pk), ok_status=202, idempotency_key=True
    )
    roles = {"web": web, "webhooks": webhooks, "workers": workers, "sandbox": sandbox}
    return Stack(env, base, sandbox_base, endpoint, roles)


def _summary(loads: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency's loads pooled: the quantiles over all their requests, summed CPU."""
    latencies = [value for load in loads for value in load["latencies_s"]]
    errors: dict[str, int] = {}
    for load in loads:
        for status, count in load["errors"].items():
            errors[status] = errors.get(status, 0) + count
    return {
        "throughput_rps": round(sum(load["throughput_rps"] for load in loads) / len(loads), 1),
        "requests_ok": len(latencies),
        "errors": errors,
        "error_samples": [sample for load in loads for sample in load["error_samples"]][:5],
        **stats.latency_summary_ms(latencies),
        "worker_cpu_s": round(sum(load["cpu_s"]["workers"] for load in loads), 1),
        "lock_waits_per_sample": round(sum(load["lock_waits_per_sample"] for load in loads) / len(loads), 2),
        "rounds": len(loads),
    }


def _round_record(latency_ms: int, load: dict[str, Any], settled_s: float | None) -> dict[str, Any]:
    return {
        "latency_ms": latency_ms,
        **stats.latency_summary_ms(load["latencies_s"]),
        "errors": sum(load["errors"].values()),
        "cpu_s": load["cpu_s"],
        "lock_waits_per_sample": load["lock_waits_per_sample"],
        "wait_events_per_sample": load["wait_events_per_sample"],
        "settled_s": settled_s,
    }


def measure(env: common.BenchEnv, config: Config, cpus: dict[str, str | None]) -> dict[str, Any]:
    """The paced rounds, then the closed-loop loads, on a fresh stack; the p99 comparisons."""
    stack = start_stack(env, cpus)
    tokens = {clients: client_tokens(clients) for clients in {*config.concurrencies, PACED_CLIENTS}}
    key = paced_key(config)
    rate = config.paced_rate_per_s

    paced_tokens, arrivals = tokens[PACED_CLIENTS], config.paced_arrivals

    stack.set_latency(0)
    warmup = stack.load(paced_tokens, config.warmup_requests_each, rate, arrivals=arrivals, seed=999)
    warmup_record = _round_record(0, warmup, stack.settle(config.settle_timeout_s))

    paced: dict[int, list[dict[str, Any]]] = {latency: [] for latency in LATENCIES_MS}
    rounds = []
    for latency_ms in config.paced_rounds:
        stack.set_latency(latency_ms)
        # The k-th round of each latency gets the same arrival times: a paired comparison.
        seed = len(paced[latency_ms])
        load = stack.load(paced_tokens, config.paced_requests_each, rate, arrivals=arrivals, seed=seed)
        paced[latency_ms].append(load)
        # What is left drains with the partner at 0 s: the next round starts from an empty
        # pipeline all the same, in seconds instead of the two minutes 3 s calls take.
        stack.set_latency(0)
        rounds.append(_round_record(latency_ms, load, stack.settle(config.settle_timeout_s)))

    phases: dict[str, Any] = {}
    rounds_by: dict[int, dict[str, list[list[float]]]] = {}  # latency -> load -> its rounds' latencies
    for latency_ms in LATENCIES_MS:
        stack.set_latency(latency_ms)
        phase: dict[str, Any] = {"by_concurrency": {key: _summary(paced[latency_ms])}}
        rounds_by[latency_ms] = {key: [load["latencies_s"] for load in paced[latency_ms]]}
        for clients in config.concurrencies:
            load = stack.load(tokens[clients], config.requests_each, None)
            phase["by_concurrency"][str(clients)] = _summary([load])
            rounds_by[latency_ms][str(clients)] = [load["latencies_s"]]
        phase["states_after_load"] = _states()
        if latency_ms != LATENCIES_MS[-1]:  # the last one's backlog needs no settling
            phase["settled_s"] = stack.settle(config.settle_timeout_s)
            phase["states_settled"] = _states()
        phases[str(latency_ms)] = phase
    for role in ("workers", "web", "webhooks", "sandbox"):
        env.stop(stack.roles[role])

    comparison = {}
    for load_key in phases["0"]["by_concurrency"]:
        fast = phases["0"]["by_concurrency"][load_key]["p99_ms"]
        slow = phases["3000"]["by_concurrency"][load_key]["p99_ms"]
        spread = max(fast, slow) / min(fast, slow) - 1
        low, high = stats.percentile_change_interval(rounds_by[0][load_key], rounds_by[3000][load_key], 99)
        comparison[load_key] = {
            "p99_0s_ms": fast,
            "p99_3s_ms": slow,
            "spread": round(spread, 3),
            # the range that the luck of which requests were slow and the rounds' drift could
            # give p99 at 3 s against p99 at 0 s on their own (95%, bootstrap)
            "change_interval": [round(low, 3), round(high, 3)],
            "target_met": spread <= TARGET_SPREAD,
        }
    return {
        "cpus": cpus,
        "warmup": warmup_record,
        "paced_rounds": rounds,
        "phases": phases,
        "comparison": comparison,
        "target_met": comparison[key]["target_met"],
        "target_load": key,
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    variants: dict[str, Any] = {}
    machine: dict[str, Any] = {}
    started = common.now_iso()
    # What waking an idle process costs on this machine, beside the figures it shapes.
    wake = {"before": observe.wake_after_idle_us()}
    for placement in placements():
        with common.BenchEnv(f"{NAME}-{placement}") as env:
            variants[placement] = measure(env, config, PLACEMENTS[placement])
            variants[placement]["machine"] = env.machine()
            machine = machine or variants[placement]["machine"]
    wake["after"] = observe.wake_after_idle_us()
    data = {
        "benchmark": NAME,
        "started_at": started,
        "quick": quick,
        "machine": machine,
        "wake_after_idle_us": wake,
        "setup": {
            "web": "gunicorn --workers 4 --threads 2 (customers)",
            "webhooks": "gunicorn --workers 2 --threads 4 (the partner's webhooks, as in the Procfile)",
            "workers": "rundramatiq --processes 2 --threads 4 (as in the Procfile)",
            "partner": "reference sandbox, webhooks to the receiver, max_concurrency 8 (default)",
            "requests_each": config.requests_each,
            "paced": {
                "clients": PACED_CLIENTS,
                "rate_per_s": config.paced_rate_per_s,
                "requests_each_per_round": config.paced_requests_each,
                "rounds_ms": list(config.paced_rounds),
                "warmup_requests_each": config.warmup_requests_each,
                "arrivals": config.paced_arrivals,
            },
            "target_spread": TARGET_SPREAD,
            "placements": {name: PLACEMENTS[name] for name in variants},
        },
        "variants": variants,
        "target_met": variants["co-located"]["target_met"],
    }
    report(data)
    return data


def round_rows(variant: dict[str, Any]) -> list[list[Any]]:
    """One row per paced round, in the order they ran (the terminal table and the docs)."""
    return [
        [index, f"{r['latency_ms'] // 1000} s", r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"],
         r["cpu_s"]["workers"], r["settled_s"]]
        for index, r in enumerate(variant.get("paced_rounds", []), start=1)
    ]  # fmt: skip


def load_rows(variant: dict[str, Any]) -> list[list[Any]]:
    """One row per load and partner latency (paced: its rounds pooled)."""
    return [
        [f"partner {int(latency) // 1000} s, {label(key)}", s["throughput_rps"], s["p50_ms"],
         s["p95_ms"], s["p99_ms"], s["requests_ok"], sum(s["errors"].values()), s["worker_cpu_s"],
         s["lock_waits_per_sample"]]
        for latency, phase in variant["phases"].items()
        for key, s in phase["by_concurrency"].items()
    ]  # fmt: skip


def change_text(row: dict[str, Any]) -> str:
    """The p99 at 3 s against the p99 at 0 s, signed, with its sampling interval ("+9.9%
    (-6.1% to +24.8%)"); runs recorded before the interval was measured show the change alone."""
    text = f"{row['p99_3s_ms'] / row['p99_0s_ms'] - 1:+.1%}"
    if "change_interval" in row:
        low, high = row["change_interval"]
        text += f" ({low:+.1%} to {high:+.1%})"
    return text


def comparison_rows(variant: dict[str, Any]) -> list[list[Any]]:
    """One row per load: both p99s, their spread and the signed change with its interval."""
    return [
        [label(key), row["p99_0s_ms"], row["p99_3s_ms"], f"{row['spread'] * 100:.1f}%", change_text(row),
         row["target_met"]]
        for key, row in variant["comparison"].items()
    ]  # fmt: skip


def report(data: dict[str, Any]) -> None:
    for placement, variant in data["variants"].items():
        output.print_table(
            f"Partner independence ({placement}): paced rounds in the order they ran (after a warm-up)",
            ["round", "partner", "p50 ms", "p95 ms", "p99 ms", "max ms", "worker CPU s", "settled s"],
            round_rows(variant),
        )
        output.print_table(
            f"Partner independence ({placement}): customer path with the partner at 0 s and 3 s",
            ["load", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "worker CPU s", "lock waits"],
            load_rows(variant),
        )
        output.print_table(
            f"p99 spread ({placement}; target <= 10% under the paced load)",
            ["load", "p99 @0s ms", "p99 @3s ms", "spread", "3 s vs 0 s (95% interval)", "within 10%"],
            comparison_rows(variant),
        )
    output.write_json(NAME, data)
    plot(data)


COLOURS = {"0": "tab:blue", "3000": "tab:orange"}


def plot(data: dict[str, Any]) -> None:
    """Per placement: the pooled quantiles of each load (top), and each paced round's in the
    order they ran (bottom: whether a latency's rounds differ more from each other than from the
    other latency's)."""
    plt = output.pyplot()
    variants = data["variants"]
    fig, axes = plt.subplots(2, len(variants), figsize=(7 * len(variants), 8), squeeze=False)
    quantiles = ("p50_ms", "p95_ms", "p99_ms")
    for column, (placement, variant) in enumerate(variants.items()):
        ax = axes[0][column]
        loads = list(variant["comparison"])
        width = 0.12
        position = 0.0
        ticks = []
        for load_key in loads:
            ticks.append((position + 2.5 * width, label(load_key)))
            for latency, colour in COLOURS.items():
                stats = variant["phases"][latency]["by_concurrency"][load_key]
                for index, q in enumerate(quantiles):
                    ax.bar(
                        position,
                        stats[q],
                        width,
                        color=colour,
                        alpha=0.4 + 0.3 * index,
                        label=f"partner {int(latency) // 1000} s {q[:3]}" if load_key == loads[0] else None,
                    )
                    position += width
            position += width * 2
        ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks])
        ax.set_ylabel("customer POST latency (ms)")
        ax.set_title(f"{placement}: partner at 0 s vs 3 s (paced: all rounds pooled)")
        ax.legend(fontsize=7, ncol=2)

        ax = axes[1][column]
        rounds = variant["paced_rounds"]
        positions = range(1, len(rounds) + 1)
        for q, style in zip(quantiles, (":", "--", "-"), strict=True):
            ax.plot(positions, [r[q] for r in rounds], color="grey", linestyle=style, label=q[:3])
            ax.scatter(
                positions, [r[q] for r in rounds], c=[COLOURS[str(r["latency_ms"])] for r in rounds], zorder=3
            )
        ax.set_xticks(list(positions), [f"{r['latency_ms'] // 1000} s" for r in rounds])
        ax.set_xlabel("paced round, in order (partner latency)")
        ax.set_ylabel("customer POST latency (ms)")
        ax.set_title(f"{placement}: each paced round")
        ax.legend(fontsize=7)
    fig.tight_layout()
    output.save_figure(fig, NAME)
