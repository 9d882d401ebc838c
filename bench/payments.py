"""Benchmark 9, payments: what taking the customer's money costs, each side measured beside the
same work without it, in one run, on one set of processes.

End to end: N bookings that pay (the provider's test card `pm_card_visa`: the price is held,
the partner is asked, and the hold is captured once the partner confirms) go through K worker
processes, and N bookings that take no payment go through the same K, partner and provider
(benchmark 3's machinery, `bench.pipeline.bookings_through_workers`): bookings confirmed AND
captured per second against bookings confirmed per second. Rounds alternate which side goes
first; the ratio is the median of the rounds' ratios. Target: with payments >= 70% of without.

The customer POST: `POST /api/v1/bookings` with a `payment_method` beside the same POST without
(benchmark 1's load: gunicorn as in the Procfile, closed-loop clients, the workers not running),
rounds alternating; p50/p95/p99 and throughput of each, and their ratios. No target: the figure
says what the payment row and the customer's first money news add to the customer's wait.

The provider is the sandbox's `payments` profile as the Procfile's `sandbox_payments` runs it
(no faults, answering at once), its signed webhooks sent to our receiver's `/payments/webhooks/`
(the Procfile's `webhooks`, beside the partner's); every process is pointed at it through
`STRIPE_API_BASE` and friends. At the end each paying booking is checked against the provider's
ground truth (one intent, captured in full) and each booking without payment against having none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from bench import api, common, fixtures, output, pipeline, stats
from bench.load import Endpoint, LoadResult, run_load

NAME = "payments"
TARGET_RATIO = 0.70  # bookings confirmed and captured / s, at least this share of confirmed / s
CARD = "pm_card_visa"  # authorized at once by the sandbox
SIDES = ("without", "with")

# The provider's credentials in the bench (loopback only).
PROVIDER_API_KEY = "sk_test_bench_payments_key"
PROVIDER_WEBHOOK_SECRET = "whsec_YmVuY2gtcGF5bWVudHMtd2ViaG9vay1zZWNyZXQ="


@dataclass(frozen=True)
class Config:
    processes: int  # worker processes (x pipeline.THREADS threads), both sides
    bookings: int  # per side and round
    rounds: int
    timeout_s: float
    clients: int  # the customer POST's closed-loop clients
    requests_each: int
    api_rounds: int


FULL = Config(processes=2, bookings=600, rounds=3, timeout_s=300, clients=4, requests_each=200, api_rounds=5)
QUICK = Config(processes=2, bookings=60, rounds=1, timeout_s=120, clients=4, requests_each=40, api_rounds=2)


# --- the provider --------------------------------------------------------------------------------
def provider_env(base: str) -> dict[str, str]:
    """What points our processes at the sandbox provider."""
    return {
        "STRIPE_API_KEY": PROVIDER_API_KEY,
        "STRIPE_API_BASE": base,
        "STRIPE_WEBHOOK_SECRET": PROVIDER_WEBHOOK_SECRET,
    }


def start_provider(env: common.BenchEnv, *, webhook_url: str) -> tuple[common.Proc, str]:
    """The sandbox's `payments` profile on a free port, as the Procfile's `sandbox_payments`."""
    port = common.free_port()
    argv = [
        common.PYTHON,
        "manage.py",
        "run_sandbox_partner",
        "--profile",
        "payments",
        "--port",
        str(port),
        "--store",
        str(env.tmp / f"provider-{port}.sqlite3"),
        "--api-key",
        PROVIDER_API_KEY,
        "--webhook-url",
        webhook_url,
        "--webhook-secret",
        PROVIDER_WEBHOOK_SECRET,
    ]
    proc = env.start(f"provider-{port}", argv)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {PROVIDER_API_KEY}"}
    common.wait_http(proc, f"{base}/_sandbox/info", timeout_s=60, headers=headers)
    return proc, base


def provider_intents(base: str) -> list[dict[str, Any]]:
    """Every payment intent the provider holds (its ground truth, not what it told us)."""
    import requests

    response = requests.get(
        f"{base}/_sandbox/ground_truth", headers={"Authorization": f"Bearer {PROVIDER_API_KEY}"}, timeout=120
    )
    response.raise_for_status()
    return list(response.json()["payment_intents"])


# --- end to end ----------------------------------------------------------------------------------
def _confirmed_and_captured(customer: Any) -> int:
    """The side's bookings (its customer's) confirmed and captured so far (`pipeline.confirmed`)."""
    from bookings.models import Booking
    from bookings.states import BookingState
    from payments.models import PaymentStatus

    return Booking.objects.filter(
        customer=customer, status=BookingState.CONFIRMED, payment__status=PaymentStatus.CAPTURED
    ).count()


def _where_they_stand(ids: list[Any]) -> dict[str, int]:
    """How many of `ids` are in each booking status (and payment status): a run that timed out
    says where its bookings stopped."""
    from collections import Counter

    from bookings.models import Booking

    rows = Booking.objects.filter(pk__in=ids).values_list("status", "payment__status")
    return dict(Counter(f"{status}/{payment or '-'}" for status, payment in rows))


def _cpu(procs: dict[str, common.Proc]) -> dict[str, float]:
    return {name: proc.cpu_seconds() for name, proc in procs.items()}


def _side(
    env: common.BenchEnv,
    config: Config,
    side: str,
    *,
    customer: Any,
    offer: Any,
    servers: dict[str, common.Proc],
) -> tuple[dict[str, Any], list[Any]]:
    """One side of a round: N bookings created and queued, then K worker processes until every
    one is confirmed (and, with payments, captured); the servers' CPU spent meanwhile."""
    paying = side == "with"
    ids = pipeline.create_bookings(config.bookings, customer, offer, payment_method=CARD if paying else "")
    before = _cpu(servers)
    figures = pipeline.bookings_through_workers(
        env,
        ids,
        processes=config.processes,
        queues=[*pipeline.pipeline_queues(), "payments"],
        timeout_s=config.timeout_s,
        done=lambda: (_confirmed_and_captured if paying else pipeline.confirmed)(customer),
        cpu=lambda: _cpu(servers),
    )
    after = _cpu(servers)
    figures["servers_cpu_s"] = {name: round(after[name] - before[name], 1) for name in servers}
    if not figures["completed"]:
        figures["unfinished"] = _where_they_stand(ids)
    done = figures["series"][-1][1]
    figures["worker_cpu_ms_per_booking"] = round(figures["worker_cpu_s"] / done * 1000, 1) if done else None
    # What the timed window cost the whole machine, and where it went, a booking at a time: the
    # workers, each server, and the rest (PostgreSQL, Redis, the mail sink, this process's polls).
    spent = dict(figures["window_cpu_s"])
    machine = spent.pop("machine")
    spent["rest"] = max(machine - sum(spent.values()), 0.0)
    figures["machine_cpu_s"] = round(machine, 1)
    figures["machine_cpu_ms_per_booking"] = round(machine / done * 1000, 1) if done else None
    figures["cpu_ms_per_booking"] = (
        {part: round(cpu / done * 1000, 1) for part, cpu in spent.items()} if done else {}
    )
    return figures, ids


def measure_end_to_end(
    env: common.BenchEnv, config: Config, *, offer: Any, servers: dict[str, common.Proc]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The rounds of both sides; the bookings of each side (for the checks)."""
    rounds: list[dict[str, Any]] = []
    ids: dict[str, list[Any]] = {side: [] for side in SIDES}
    for index in range(config.rounds):
        order = SIDES if index % 2 == 0 else SIDES[::-1]
        row: dict[str, Any] = {"order": list(order)}
        for side in order:
            # Each side's bookings are a customer's of their own: what its poll counts.
            ((customer, _token),) = fixtures.customers(1, prefix=f"pay-e2e-{index}-{side}")
            row[side], made = _side(env, config, side, customer=customer, offer=offer, servers=servers)
            ids[side] += made
        row["ratio"] = (
            round(row["with"]["per_s"] / row["without"]["per_s"], 3) if row["without"]["per_s"] else None
        )
        rounds.append(row)
    ratios = [row["ratio"] for row in rounds if row["ratio"] is not None]
    ratio = round(stats.median(ratios), 3) if ratios else None
    completed = all(row[side]["completed"] for row in rounds for side in SIDES)
    return {
        "rounds": rounds,
        "cpu_ms_per_booking": {side: _median_split([row[side] for row in rounds]) for side in SIDES},
        "per_s": {side: round(stats.median([row[side]["per_s"] for row in rounds]), 1) for side in SIDES},
        "ratio": ratio,
        "completed": completed,
        "target_ratio": TARGET_RATIO,
        "target_met": bool(completed and ratio is not None and ratio >= TARGET_RATIO),
    }, ids


def _median_split(sides: list[dict[str, Any]]) -> dict[str, float]:
    """The machine's CPU a booking, whole and by part, median of the rounds."""
    split = {"machine": stats.median([side["machine_cpu_ms_per_booking"] or 0.0 for side in sides])}
    for part in sides[0].get("cpu_ms_per_booking", {}):
        split[part] = stats.median([side["cpu_ms_per_booking"].get(part, 0.0) for side in sides])
    return {part: round(value, 1) for part, value in split.items()}


def money_checks(ids: dict[str, list[Any]], intents: list[dict[str, Any]]) -> dict[str, Any]:
    """Each paying booking confirmed and captured in full, by our rows and by the provider's own
    truth (one intent, `succeeded`, the price received); no money for a booking without payment."""
    from bookings.models import Booking
    from bookings.states import BookingState
    from payments.models import PaymentStatus
    from payments.money import to_minor

    by_booking: dict[str, list[dict[str, Any]]] = {}
    for intent in intents:
        by_booking.setdefault((intent.get("metadata") or {}).get("booking", ""), []).append(intent)
    paying = Booking.objects.filter(pk__in=ids["with"]).select_related("payment")
    ours = captured = 0
    mismatches: list[str] = []
    for booking in paying:
        payment = booking.payment
        if (
            booking.status == BookingState.CONFIRMED
            and payment.status == PaymentStatus.CAPTURED
            and payment.captured_amount == booking.total_price
        ):
            ours += 1
        theirs = by_booking.get(booking.reference, [])
        owed = to_minor(booking.total_price, booking.currency)
        if len(theirs) == 1 and theirs[0]["status"] == "succeeded" and theirs[0]["amount_received"] == owed:
            captured += 1
        elif len(mismatches) < 5:
            states = [(i["id"], i["status"], i["amount_received"]) for i in theirs]
            mismatches.append(f"{booking.reference}: owed {owed}, provider {states}")
    free = Booking.objects.filter(pk__in=ids["without"])
    free_references = set(free.values_list("reference", flat=True))
    return {
        "paying_bookings": len(ids["with"]),
        "captured_in_full_by_our_rows": ours,
        "captured_in_full_at_provider": captured,
        "intents_at_provider": len(intents),
        "mismatch_samples": mismatches,
        "bookings_without_payment": len(ids["without"]),
        "without_payment_confirmed": free.filter(status=BookingState.CONFIRMED).count(),
        "without_payment_with_money": free.filter(payment__isnull=False).count()
        + sum(1 for reference in free_references if reference in by_booking),
        "all_held": ours == captured == len(ids["with"]) and len(intents) == len(ids["with"]),
    }


# --- the customer POST ---------------------------------------------------------------------------
def post_endpoints(offer_id: int) -> dict[str, Endpoint]:
    body = fixtures.booking_body(offer_id)
    return {
        "without": Endpoint("without", "/api/v1/bookings", body, ok_status=202, idempotency_key=True),
        "with": Endpoint(
            "with", "/api/v1/bookings", {**body, "payment_method": CARD}, ok_status=202, idempotency_key=True
        ),
    }


def _post_tokens(clients: int) -> list[list[str]]:
    per = api.CUSTOMERS_PER_CLIENT
    pool = fixtures.customers(clients * per, prefix="pay-api")
    return [[token for _, token in pool[i * per : (i + 1) * per]] for i in range(clients)]


def _post_checks(before: dict[str, int]) -> dict[str, int]:
    """What the POSTs stored and queued: a payment row and a payment run for each booking that
    pays, a partner submission for each one that does not (the workers are not running)."""
    from bookings.models import Booking
    from partners.models import Partner
    from payments.models import Payment

    bookings = Booking.objects.count() - before["bookings"]
    payments = Payment.objects.count() - before["payments"]
    return {
        "bookings_stored": bookings,
        "payments_stored": payments,
        "payment_runs_queued": common.queue_size("payments"),
        "submissions_queued": common.queue_size(Partner(code=fixtures.PARTNER_CODE).queue_name),
    }


def measure_post(base: str, offer_id: int, config: Config) -> dict[str, Any]:
    """Rounds of both POSTs against a running web server, the workers not running."""
    import dramatiq

    from bookings.models import Booking
    from payments.models import Payment

    dramatiq.get_broker().flush_all()  # the checks count what these POSTs queue
    before = {"bookings": Booking.objects.count(), "payments": Payment.objects.count()}
    tokens = _post_tokens(config.clients)
    endpoints = post_endpoints(offer_id)
    runs: dict[str, list[LoadResult]] = {side: [] for side in SIDES}
    order_run: list[str] = []
    for index in range(config.api_rounds):
        order = SIDES if index % 2 == 0 else SIDES[::-1]
        for side in order:
            runs[side].append(
                run_load(base, endpoints[side], tokens=tokens, requests_each=config.requests_each)
            )
            order_run.append(side)
    checks = _post_checks(before)
    dramatiq.get_broker().flush_all()
    summary = {side: api.summarize(runs[side]) for side in SIDES}
    ratios = [b.throughput / a.throughput for a, b in zip(runs["without"], runs["with"], strict=True)]
    low, high = stats.percentile_change_interval(
        [run.latencies_s for run in runs["without"]], [run.latencies_s for run in runs["with"]], 99
    )
    return {
        **summary,
        "clients": config.clients,
        "rounds": order_run,
        "throughput_ratio": round(stats.median(ratios), 3),
        "throughput_ratio_rounds": [round(value, 3) for value in ratios],
        "latency_ratio": {
            q: round(summary["with"][f"{q}_ms"] / summary["without"][f"{q}_ms"], 3)
            for q in ("p50", "p95", "p99")
        },
        "p99_change_interval": [round(low, 3), round(high, 3)],
        "checks": checks,
    }


# --- the run -------------------------------------------------------------------------------------
def setup(config: Config) -> dict[str, Any]:
    return {
        "processes": config.processes,
        "threads": pipeline.THREADS,
        "bookings_per_side_and_round": config.bookings,
        "rounds": config.rounds,
        "card": CARD,
        "partner": "reference sandbox, no latency, synchronous confirmation, webhooks on, cap 64",
        "provider": "payments sandbox, no faults, webhooks on",
        "webhooks": "gunicorn --workers 2 --threads 4 (the Procfile's webhooks receiver, both senders)",
        "web": "gunicorn config.wsgi --workers 4 --threads 2 (as in the Procfile)",
        "clients": config.clients,
        "requests_each": config.requests_each,
        "api_rounds": config.api_rounds,
        "target_ratio": TARGET_RATIO,
    }


def measure(env: common.BenchEnv, config: Config) -> dict[str, Any]:
    """Both comparisons on `env`'s database and Redis; the processes they need are started here,
    pointed at a provider of their own."""
    webhooks_port = common.free_port()
    receiver_base = f"http://127.0.0.1:{webhooks_port}"
    provider, provider_base = start_provider(env, webhook_url=f"{receiver_base}/payments/webhooks/")
    with mock.patch.dict(os.environ, provider_env(provider_base)):
        webhooks, _ = env.start_webhooks(port=webhooks_port)
        sandbox, sandbox_base = env.start_sandbox(webhook_url=fixtures.webhook_url(receiver_base))
        _, offer = fixtures.bench_partner(base_url=sandbox_base, max_concurrency=64)
        servers = {"webhooks": webhooks, "partner": sandbox, "provider": provider}
        end_to_end, ids = measure_end_to_end(env, config, offer=offer, servers=servers)
        checks = money_checks(ids, provider_intents(provider_base))
        web, web_base = env.start_web()
        post = measure_post(web_base, offer.pk, config)
        for proc in (web, webhooks, sandbox, provider):
            env.stop(proc)
    return {"setup": setup(config), "end_to_end": end_to_end, "money": checks, "post": post}


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    return common.run_measured(NAME, quick=quick, measure=lambda env: measure(env, config), report=report)


# --- output --------------------------------------------------------------------------------------
def end_to_end_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for index, row in enumerate(data["end_to_end"]["rounds"], start=1):
        for side in row["order"]:
            figures = row[side]
            rows.append(
                [
                    f"round {index}, {side} payments",
                    figures["per_s"],
                    f"{figures['elapsed_s']:.1f}" + ("" if figures["completed"] else " (timeout)"),
                    figures.get("machine_cpu_ms_per_booking", ""),
                    figures["worker_cpu_s"],
                    figures["worker_cpu_ms_per_booking"],
                    figures["servers_cpu_s"]["provider"],
                    figures["servers_cpu_s"]["webhooks"],
                    f"{row['ratio'] * 100:.0f}%" if side == "with" and row["ratio"] is not None else "",
                ]
            )
    return rows


END_TO_END_COLUMNS = [
    "side",
    "done/s",
    "time s",
    "machine CPU ms/booking",
    "worker CPU-s",
    "worker CPU ms/booking",
    "provider CPU-s",
    "receiver CPU-s",
    "of without",
]


def post_rows(data: dict[str, Any]) -> list[list[Any]]:
    post = data["post"]
    rows = []
    for side in SIDES:
        share = f"{post['throughput_ratio'] * 100:.0f}%" if side == "with" else ""
        rows.append(output.latency_row(f"{side} payment, {post['clients']} clients", post[side], share))
    return rows


POST_COLUMNS = ["POST /api/v1/bookings", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "of without"]


def _money_line(data: dict[str, Any]) -> str:
    money = data["money"]
    return (
        f"Every paying booking confirmed and captured in full: {output.fmt(money['all_held'])} "
        f"({money['captured_in_full_at_provider']:,} of {money['paying_bookings']:,} at the provider, one "
        f"intent each, {money['intents_at_provider']:,} intents in all; "
        f"{money['captured_in_full_by_our_rows']:,} by our rows); bookings without payment with any money: "
        f"{money['without_payment_with_money']}."
    )


PARTS = {
    "workers": "workers",
    "webhooks": "receiver",
    "provider": "provider",
    "partner": "partner",
    "rest": "the rest (PostgreSQL, Redis, mail)",
}


def _cost_line(data: dict[str, Any]) -> str:
    """Where a booking's CPU went on each side: on a machine the sides keep busy, the ratio of
    throughputs cannot be much above the inverse of the ratio of these costs."""
    split = data["end_to_end"].get("cpu_ms_per_booking")
    if not split or not split["without"].get("machine"):
        return ""

    def parts(side: str) -> str:
        return ", ".join(f"{label} {split[side].get(part, 0.0):.1f}" for part, label in PARTS.items())

    times = split["with"]["machine"] / split["without"]["machine"]
    return (
        f"The machine's CPU a booking (median of the rounds): {split['with']['machine']:.1f} ms with a "
        f"payment against {split['without']['machine']:.1f} without, {times:.2f} x (at the target a "
        f"paying booking could cost about {1 / TARGET_RATIO:.2f} x). With: {parts('with')}. "
        f"Without: {parts('without')}."
    )


def _target_line(data: dict[str, Any]) -> str:
    e2e = data["end_to_end"]
    ratio = "?" if e2e["ratio"] is None else f"{e2e['ratio'] * 100:.0f}%"
    return (
        f"Target (bookings confirmed and captured per second >= {e2e['target_ratio'] * 100:.0f}% of bookings "
        f"confirmed per second without payments; median of the rounds: {ratio}): "
        f"{'**met**' if e2e['target_met'] else '**missed**'}."
    )


def markdown(data: dict[str, Any]) -> str:
    """The section of `docs/benchmarks.md` (`bench.docs`)."""
    setup_, e2e, post = data["setup"], data["end_to_end"], data["post"]
    checks = post["checks"]
    latency = post["latency_ratio"]
    low, high = post["p99_change_interval"]
    return "\n".join(
        [
            f"**End to end.** {setup_['bookings_per_side_and_round']:,} bookings a side in each of "
            f"{setup_['rounds']} round{'' if setup_['rounds'] == 1 else 's'} through "
            f"{setup_['processes']} x {setup_['threads']} worker processes, the same partner and "
            f"provider for both sides: with payments (`{setup_['card']}`) counted when confirmed and "
            f"captured ({e2e['per_s']['with']:,.1f} a second, median of the rounds), without when "
            f"confirmed ({e2e['per_s']['without']:,.1f} a second).",
            "",
            _table(END_TO_END_COLUMNS, end_to_end_rows(data)),
            "",
            _money_line(data),
            "",
            *([_cost_line(data), ""] if _cost_line(data) else []),
            _target_line(data),
            "",
            f"**The customer POST.** {post['clients']} clients, {setup_['requests_each']} requests each per "
            f"round, the rounds in the order {''.join('B' if r == 'with' else 'A' for r in post['rounds'])} "
            "(A without a payment, B with), the workers not running. With a payment the POST kept "
            f"{post['throughput_ratio'] * 100:.0f}% of its throughput (median of the pairs of rounds); "
            f"its p50 was {latency['p50']:.2f} x, p95 {latency['p95']:.2f} x, p99 {latency['p99']:.2f} x "
            f"without (p99 change {low * 100:+.0f}% to {high * 100:+.0f}%, 95% interval, "
            "`bench.stats.percentile_change_interval`). Stored: "
            f"{checks['bookings_stored']:,} bookings, {checks['payments_stored']:,} payments; queued: "
            f"{checks['payment_runs_queued']:,} payment runs, {checks['submissions_queued']:,} partner "
            "submissions.",
            "",
            _table(POST_COLUMNS, post_rows(data)),
        ]
    )


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(output.fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(data: dict[str, Any], *, results_dir: Path | None = None, img_dir: Path | None = None) -> None:
    e2e = data["end_to_end"]
    output.print_table(
        "Payments end to end: bookings confirmed and captured / s vs confirmed / s without payments",
        END_TO_END_COLUMNS,
        end_to_end_rows(data),
    )
    print(
        f"with payments {e2e['per_s']['with']:,.1f}/s, without {e2e['per_s']['without']:,.1f}/s, ratio "
        f"{e2e['ratio']} (target >= {e2e['target_ratio']}): target {'met' if e2e['target_met'] else 'MISSED'}"
    )
    print(_money_line(data).replace("`", ""))
    print(_cost_line(data))
    output.print_table("Payments: the customer POST with a payment vs without", POST_COLUMNS, post_rows(data))
    post = data["post"]
    print(f"POST latency with / without: {post['latency_ratio']}; checks {post['checks']}")
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Path | None = None) -> None:
    plt = output.pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    e2e, post = data["end_to_end"], data["post"]
    colors = {"without": "tab:grey", "with": "tab:green"}
    rounds = e2e["rounds"]
    width = 0.38
    for offset, side in ((-width / 2, "without"), (width / 2, "with")):
        bars = left.bar(
            [i + offset for i in range(len(rounds))],
            [row[side]["per_s"] for row in rounds],
            width,
            color=colors[side],
            label=f"{side} payments",
        )
        left.bar_label(bars, fmt="%.0f")
    left.axhline(e2e["per_s"]["without"] * e2e["target_ratio"], color="black", linestyle="--", label="target")
    left.set_xticks(range(len(rounds)), [f"round {i}" for i in range(1, len(rounds) + 1)])
    left.set_ylabel("bookings done / s")
    left.set_title("End to end (with: confirmed and captured)")
    left.legend()
    for row in rounds:
        for side in SIDES:
            series = row[side]["series"]
            middle.plot([t for t, _ in series], [n for _, n in series], color=colors[side], alpha=0.7)
    middle.set_xlabel("seconds after all workers ready")
    middle.set_ylabel("bookings done")
    middle.set_title("Each side of each round")
    labels = ["p50", "p95", "p99"]
    for offset, side in ((-width / 2, "without"), (width / 2, "with")):
        right.bar(
            [i + offset for i in range(len(labels))],
            [post[side][f"{q}_ms"] for q in labels],
            width,
            color=colors[side],
            label=f"{side} payment",
        )
    right.set_xticks(range(len(labels)), labels)
    right.set_ylabel("ms")
    right.set_title(f"POST /api/v1/bookings ({post['clients']} clients)")
    right.legend()
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
