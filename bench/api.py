"""Benchmark 1, customer API: `POST /api/v1/bookings` beside a bare DRF model create.

gunicorn as in the Procfile (4 workers x 2 threads) on PostgreSQL; the Dramatiq workers are NOT
running, so this measures the customer path alone (its submission is still queued to Redis on
commit, which is part of that path). Both endpoints use the same customers, tokens, per-user
throttling and database; rounds alternate which endpoint goes first.
Target: bookings reach at least 70% of the baseline's throughput.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import common, fixtures, observe, output, stats
from bench.load import Endpoint, LoadResult, run_load

NAME = "api"
TARGET_RATIO = 0.70
CUSTOMERS_PER_CLIENT = 25


@dataclass(frozen=True)
class Config:
    concurrencies: tuple[int, ...]
    requests_each: int
    rounds: int


FULL = Config(concurrencies=(4, 8), requests_each=200, rounds=5)
QUICK = Config(concurrencies=(4,), requests_each=40, rounds=1)

BASELINE = Endpoint("baseline", "/bench/baseline/items", {"name": "item", "quantity": 2}, ok_status=201)


def endpoints(offer_id: int) -> list[Endpoint]:
    booking = Endpoint(
        "bookings", "/api/v1/bookings", fixtures.booking_body(offer_id), ok_status=202, idempotency_key=True
    )
    return [BASELINE, booking]


def client_tokens(clients: int) -> list[list[str]]:
    pool = fixtures.customers(clients * CUSTOMERS_PER_CLIENT, prefix=f"c{clients}")
    return [
        [token for _, token in pool[i * CUSTOMERS_PER_CLIENT : (i + 1) * CUSTOMERS_PER_CLIENT]]
        for i in range(clients)
    ]


def summarize(runs: list[LoadResult]) -> dict[str, Any]:
    latencies = [value for run in runs for value in run.latencies_s]
    errors: dict[str, int] = {}
    for run in runs:
        for code, count in run.errors.items():
            errors[code] = errors.get(code, 0) + count
    return {
        "throughput_rps": round(stats.median([run.throughput for run in runs]), 1),
        "throughput_rounds_rps": [round(run.throughput, 1) for run in runs],
        "p99_rounds_ms": [stats.latency_summary_ms(run.latencies_s)["p99_ms"] for run in runs],
        "requests_ok": len(latencies),
        "errors": errors,
        "error_samples": [sample for run in runs for sample in run.error_samples][:5],
        **stats.latency_summary_ms(latencies),
    }


def measure(base: str, offer_id: int, config: Config, env: common.BenchEnv) -> dict[str, Any]:
    """Run every concurrency and round against a running web server."""
    results: dict[str, Any] = {}
    for clients in config.concurrencies:
        tokens = client_tokens(clients)
        runs: dict[str, list[LoadResult]] = {"baseline": [], "bookings": []}
        samplers = {name: observe.ActivitySampler(env.database_url, env.db_name) for name in runs}
        for round_index in range(config.rounds):
            order = endpoints(offer_id)
            if round_index % 2:
                order.reverse()
            for endpoint in order:
                sampler = samplers[endpoint.name]
                sampler.start()
                try:
                    runs[endpoint.name].append(
                        run_load(base, endpoint, tokens=tokens, requests_each=config.requests_each)
                    )
                finally:
                    sampler.pause()
        for sampler in samplers.values():
            sampler.close()
        row = {
            name: {**summarize(value), "db_activity": samplers[name].summary()}
            for name, value in runs.items()
        }
        # Side by side: each round runs both endpoints back to back; the ratio is the median of
        # the rounds' ratios, so that a burst of other load on the machine hits one round only.
        ratios = [
            b.throughput / a.throughput for a, b in zip(runs["baseline"], runs["bookings"], strict=True)
        ]
        ratio = stats.median(ratios)
        row["ratio"] = round(ratio, 3)
        row["ratio_rounds"] = [round(value, 3) for value in ratios]
        row["target_met"] = ratio >= TARGET_RATIO
        results[str(clients)] = row
    return results


def in_process_costs(offer_id: int, tokens: list[str], requests: int) -> dict[str, Any]:
    """Each endpoint called in this process through Django's test Client (no HTTP server): its
    queries per request, its time per request, and a pyinstrument profile of the bookings POST."""
    import json
    import time
    import uuid

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    costs: dict[str, Any] = {}
    for endpoint in endpoints(offer_id):

        def post(index: int, endpoint: Endpoint = endpoint) -> int:
            headers = {"Authorization": f"Token {tokens[index % len(tokens)]}"}
            if endpoint.idempotency_key:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            response = client.post(
                endpoint.path, json.dumps(endpoint.body), content_type="application/json", headers=headers
            )
            return response.status_code

        for index in range(5):
            post(index)
        with CaptureQueriesContext(connection) as captured:
            assert post(0) == endpoint.ok_status
        # Read now: every request start clears the connection's query log.
        statements = [query["sql"][:90] for query in captured.captured_queries]
        start = time.perf_counter()
        for index in range(requests):
            post(index)
        elapsed = time.perf_counter() - start
        costs[endpoint.name] = {
            "queries_per_request": len(statements),
            "statements": statements,
            "ms_per_request": round(elapsed / requests * 1000, 2),
        }
        if endpoint.name == "bookings":
            _, costs["profile"] = output.profiled(NAME, lambda: [post(i) for i in range(requests)])
    return costs


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    with common.BenchEnv(NAME) as env:
        _, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=False)
        web, base = env.start_web()
        started = common.now_iso()
        by_concurrency = measure(base, offer.pk, config, env)
        web_cpu_s = web.cpu_seconds()
        env.stop(web)
        costs = in_process_costs(offer.pk, client_tokens(1)[0], 50 if quick else 300)
        data = {
            "benchmark": NAME,
            "started_at": started,
            "quick": quick,
            "machine": env.machine(),
            "setup": {
                "web": "gunicorn config.wsgi --workers 4 --threads 2 (as in the Procfile)",
                "workers": "not running (customer path only; submissions are queued to Redis)",
                "clients": "one process per client, one requests.Session each, closed loop",
                "requests_each": config.requests_each,
                "rounds": config.rounds,
                "customers_per_client": CUSTOMERS_PER_CLIENT,
                "target_ratio": TARGET_RATIO,
            },
            "checks": _checks(),
            "web_cpu_s": round(web_cpu_s, 1),
            "by_concurrency": by_concurrency,
            "in_process": costs,
            "target_met": all(row["target_met"] for row in by_concurrency.values()),
        }
    report(data)
    return data


def _checks() -> dict[str, int]:
    """Every accepted booking is stored once and has its submission queued."""
    from bookings.models import Booking
    from partners.models import Partner

    return {
        "bookings_stored": Booking.objects.count(),
        "idempotency_keys": Booking.objects.exclude(idempotency_key="").count(),
        "submissions_queued": common.queue_size(Partner(code=fixtures.PARTNER_CODE).queue_name),
    }


def report(data: dict[str, Any], *, results_dir: Any = None, img_dir: Any = None) -> None:
    rows = []
    for clients, row in data["by_concurrency"].items():
        for name in ("baseline", "bookings"):
            measured = name == "bookings"
            rows.append(
                [
                    *output.latency_row(f"{name} x{clients}", row[name], row["ratio"] if measured else ""),
                    row["target_met"] if measured else "",
                ]
            )
    output.print_table(
        "Customer API: POST /api/v1/bookings vs bare DRF create (gunicorn, PostgreSQL)",
        ["endpoint x clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "ratio", ">= 70%"],
        rows,
    )
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Any = None) -> None:
    plt = output.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    groups = list(data["by_concurrency"])
    width = 0.38
    for offset, name in ((-width / 2, "baseline"), (width / 2, "bookings")):
        values = [data["by_concurrency"][g][name]["throughput_rps"] for g in groups]
        bars = left.bar([i + offset for i in range(len(groups))], values, width, label=name)
        left.bar_label(bars, fmt="%.0f")
    left.set_xticks(range(len(groups)), [f"{g} clients" for g in groups])
    left.set_ylabel("requests/s (median of rounds)")
    left.set_title("Throughput")
    left.legend()
    labels = []
    for g in groups:
        for name in ("baseline", "bookings"):
            labels.append((g, name))
    for index, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        values = [data["by_concurrency"][g][name][q] for g, name in labels]
        right.bar(
            [i + (index - 1) * 0.27 for i in range(len(labels))], values, 0.27, label=q.replace("_ms", "")
        )
    right.set_xticks(range(len(labels)), [f"{name}\nx{g}" for g, name in labels])
    right.set_ylabel("latency (ms)")
    right.set_title("Latency percentiles")
    right.legend()
    fig.suptitle(f"POST /api/v1/bookings vs bare DRF create ({data['machine']['nproc']} cores)")
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
