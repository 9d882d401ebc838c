"""Benchmark 3, pipeline: bookings confirmed per second end to end with 1, 2 and 4 worker
processes (`rundramatiq --processes K --threads 8`), beside a no-op actor on the same Redis.

For each K: N bookings are created through `booking_create` (the customer path's service) in one
transaction, so their N submissions reach Redis together on commit while no worker runs. Then K
worker processes start; the clock starts once all K are ready for action and stops when every
booking is confirmed. The no-op run is the same with M messages of `bench.baseline.tasks.noop`
(workers restricted to its queue). The webhook receiver runs as in the Procfile (its own
gunicorn, 2 x 4) for the partner's webhooks; the reference sandbox
answers at once and confirms synchronously; the partner's concurrency cap is raised to 64 so
that the cap (a per-partner setting) does not hide the pipeline's own capacity.
Peak memory is VmHWM of each worker process. The bookings take no payment; benchmark 9
(`bench.payments`) puts bookings that pay through the same machinery (`create_bookings`,
`bookings_through_workers`) beside bookings that do not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import common, fixtures, observe, output

NAME = "pipeline"
THREADS = 8


@dataclass(frozen=True)
class Config:
    processes: tuple[int, ...]
    bookings: int
    noop_messages: int
    timeout_s: float


FULL = Config(processes=(1, 2, 4), bookings=1500, noop_messages=30000, timeout_s=300)
QUICK = Config(processes=(1, 2), bookings=100, noop_messages=2000, timeout_s=120)


def create_bookings(count: int, customer: Any, offer: Any, *, payment_method: str = "") -> list[Any]:
    """`count` bookings through the service, in one transaction: their first messages (the
    partner submissions, or with a `payment_method` the payment runs) are sent to Redis together
    when it commits."""
    from django.db import transaction

    from bookings.services import BookingRequest, booking_create

    start, end = fixtures.stay_dates()
    request = BookingRequest(
        offer_id=offer.pk, start_date=start, end_date=end, guests=2, payment_method=payment_method
    )
    with transaction.atomic():
        ids = [
            booking_create(customer=customer, request=request, idempotency_key=uuid.uuid4().hex).booking.pk
            for _ in range(count)
        ]
    return ids


def profile_submissions(customer: Any, offer: Any, count: int) -> dict[str, Any]:
    """`count` bookings submitted one after the other in this process (the actor's function,
    no broker), under pyinstrument: where a worker's time goes per booking."""
    import time

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from partners import tasks

    ids = create_bookings(count, customer, offer)
    with CaptureQueriesContext(connection) as queries:
        tasks.submit_booking.fn(str(ids[0]))
    start = time.perf_counter()
    _, profile = output.profiled(
        f"{NAME}-submission", lambda: [tasks.submit_booking.fn(str(i)) for i in ids[1:]]
    )
    elapsed = time.perf_counter() - start
    return {
        "bookings": count,
        "confirmed": confirmed(customer),
        "statements_per_submission": len(queries),
        "ms_per_booking_profiled": round(elapsed / (count - 1) * 1000, 1),
        **profile,
    }


def pipeline_queues() -> list[str]:
    """The queues a booking's pipeline uses: the bench partner's own two (its audit reads'
    included), then the shared ones."""
    from partners.models import Partner

    return [*Partner(code=fixtures.PARTNER_CODE).queue_names, "partners", "webhooks", "reconciliation"]


def confirmed(customer: Any) -> int:
    """The customer's bookings confirmed so far: a run's bookings are one customer's, so that the
    poll, ten a second, is one index range whatever the run's size (an IN list of every id was a
    statement of its own to parse and plan each time, with a plan that worsened as tables grew)."""
    from bookings.models import Booking
    from bookings.states import BookingState

    return Booking.objects.filter(customer=customer, status=BookingState.CONFIRMED).count()


def _drain(queues: list[str], timeout_s: float) -> bool:
    try:
        common.wait_for(
            lambda: all(common.queue_size(q) == 0 for q in queues),
            timeout_s=timeout_s,
            interval_s=0.2,
            what="queues drained",
        )
        return True
    except TimeoutError:
        return False


UNFINISHED_LOG_TAIL_CHARS = 6000


def _run_workers(
    env: common.BenchEnv,
    *,
    processes: int,
    queues: tuple[str, ...],
    total: int,
    done: Any,
    timeout_s: float,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Start K worker processes on pre-loaded queues; time from all-ready to `done() == total`.
    The CPU spent within that window: the workers', the machine's and `cpu()`'s counters."""
    launched = time.perf_counter()
    workers = env.start_workers(processes=processes, threads=THREADS, queues=queues)

    def counters() -> dict[str, float]:
        return {
            "machine": observe.machine_busy_cpu_s(),
            "workers": workers.cpu_seconds(),
            **(cpu() if cpu else {}),
        }

    at_ready = counters()
    started = time.perf_counter()
    done_at_start = done()
    series = [(0.0, done_at_start)]
    finished = None
    while time.perf_counter() - started < timeout_s:
        count = done()
        series.append((round(time.perf_counter() - started, 2), count))
        if count >= total:
            finished = time.perf_counter()
            break
        time.sleep(0.1)
    elapsed = (finished or time.perf_counter()) - started
    at_end = counters()
    rss = workers.peak_rss_mib()
    cpu_s = at_end["workers"]
    # A run that did not finish says why in its workers' own words (the log goes with the env).
    log_tail = "" if finished is not None else workers.log()[-UNFINISHED_LOG_TAIL_CHARS:]
    env.stop(workers)
    children = [value for pid, value in rss.items() if pid != workers.pid]
    return {
        "processes": processes,
        "threads": THREADS,
        "total": total,
        "done_when_all_ready": done_at_start,
        "completed": finished is not None,
        "elapsed_s": round(elapsed, 2),
        "per_s": round((series[-1][1] - done_at_start) / elapsed, 1) if elapsed else 0.0,
        "boot_s": round(started - launched, 2),
        "peak_rss_mib_per_worker_process": children,
        "peak_rss_mib_max": max(children) if children else None,
        "peak_rss_mib_main": rss.get(workers.pid),
        "worker_cpu_s": round(cpu_s, 1),
        "window_cpu_s": {name: round(at_end[name] - at_ready[name], 2) for name in at_ready},
        "series": series,
        **({"worker_log_tail": log_tail} if log_tail else {}),
    }


def bookings_through_workers(
    env: common.BenchEnv,
    ids: list[Any],
    *,
    processes: int,
    queues: Sequence[str],
    timeout_s: float,
    done: Callable[[], int],
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Bookings `ids`, created with their first messages waiting in Redis, through K worker
    processes on every queue: timed from all-ready until `done()` counts them all (`confirmed` of
    their customer, say), with the database's lock waits sampled. What is still queued on `queues` then
    (late webhooks and the like) is processed before the caller's next run, so that it does not
    count against it (a short worker run with the same K)."""
    with observe.ActivitySampler(env.database_url, env.db_name, interval_s=0.1) as sampler:
        pipeline = _run_workers(
            env,
            processes=processes,
            queues=(),
            total=len(ids),
            done=done,
            timeout_s=timeout_s,
            cpu=cpu,
        )
    pipeline["lock_waits"] = sampler.summary(top=3)
    leftovers = {q: common.queue_size(q) for q in queues}
    if any(leftovers.values()):
        drainer = env.start_workers(processes=processes, threads=THREADS)
        pipeline["drained_after"] = _drain(list(queues), timeout_s)
        env.stop(drainer)
    pipeline["queued_after_confirmation"] = leftovers
    return pipeline


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    with common.BenchEnv(NAME) as env:
        import dramatiq

        from bench.baseline import tasks as noop_tasks

        webhooks, receiver_base = env.start_webhooks()
        sandbox, sandbox_base = env.start_sandbox(webhook_url=fixtures.webhook_url(receiver_base))
        _, offer = fixtures.bench_partner(base_url=sandbox_base, max_concurrency=64)
        broker = dramatiq.get_broker()
        all_queues = pipeline_queues()
        started = common.now_iso()
        rows: dict[str, Any] = {}
        for processes in config.processes:
            # No-op actor: M messages waiting, then K worker processes on its queue only.
            for index in range(config.noop_messages):
                broker.enqueue(noop_tasks.noop.message(index))
            noop = _run_workers(
                env,
                processes=processes,
                queues=(noop_tasks.NOOP_QUEUE,),
                total=config.noop_messages,
                done=lambda: config.noop_messages - common.queue_size(noop_tasks.NOOP_QUEUE),
                timeout_s=config.timeout_s,
            )
            # The booking pipeline: N bookings created and queued, then K worker processes.
            ((customer, _token),) = fixtures.customers(1, prefix=f"pipeline-{processes}")
            ids = create_bookings(config.bookings, customer, offer)
            pipeline = bookings_through_workers(
                env,
                ids,
                processes=processes,
                queues=all_queues,
                timeout_s=config.timeout_s,
                done=lambda customer=customer: confirmed(customer),
            )
            rows[str(processes)] = {
                "noop": noop,
                "pipeline": pipeline,
                "ratio_to_noop": round(pipeline["per_s"] / noop["per_s"], 4) if noop["per_s"] else None,
            }
        # Where the time goes: the submission step in this process, profiled (its messages,
        # queued on commit, are dropped afterwards).
        ((customer, _token),) = fixtures.customers(1, prefix="pipeline-profile")
        profile = profile_submissions(customer, offer, 50 if quick else 200)
        env.flush_redis()
        webhooks_cpu_s = webhooks.cpu_seconds()
        sandbox_cpu_s = sandbox.cpu_seconds()
        for proc in (webhooks, sandbox):
            env.stop(proc)
        data = {
            "benchmark": NAME,
            "started_at": started,
            "quick": quick,
            "machine": env.machine(),
            "setup": {
                "bookings": config.bookings,
                "noop_messages": config.noop_messages,
                "threads": THREADS,
                "partner": "reference sandbox, no latency, synchronous confirmation, webhooks on, cap 64",
                "webhooks": "gunicorn --workers 2 --threads 4 (the Procfile's webhooks receiver)",
            },
            "by_processes": rows,
            "submission_profile": profile,
            "webhooks_cpu_s": round(webhooks_cpu_s, 1),
            "sandbox_cpu_s": round(sandbox_cpu_s, 1),
        }
    report(data)
    return data


def report(data: dict[str, Any]) -> None:
    rows = []
    for processes, row in data["by_processes"].items():
        noop, pipeline = row["noop"], row["pipeline"]
        rows.append(
            [
                f"{processes} x {data['setup']['threads']}",
                noop["per_s"],
                pipeline["per_s"],
                f"{pipeline['elapsed_s']:.1f}" + ("" if pipeline["completed"] else " (timeout)"),
                pipeline["peak_rss_mib_max"],
                noop["peak_rss_mib_max"],
                pipeline["worker_cpu_s"],
                pipeline["boot_s"],
            ]
        )
    output.print_table(
        "Pipeline: bookings confirmed per second vs a no-op actor (same Redis)",
        [
            "processes x threads",
            "no-op msg/s",
            "confirmed/s",
            "time s",
            "peak RSS MiB (pipeline)",
            "peak RSS MiB (no-op)",
            "worker CPU s",
            "boot s",
        ],
        rows,
    )
    output.write_json(NAME, data)
    plot(data)


def plot(data: dict[str, Any]) -> None:
    plt = output.pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    keys = list(data["by_processes"])
    confirmed = [data["by_processes"][k]["pipeline"]["per_s"] for k in keys]
    noop = [data["by_processes"][k]["noop"]["per_s"] for k in keys]
    bars = left.bar(keys, confirmed, color="tab:green")
    left.bar_label(bars, fmt="%.0f")
    left.set_xlabel(f"worker processes (x {data['setup']['threads']} threads)")
    left.set_ylabel("bookings confirmed / s")
    left.set_title("Booking pipeline")
    bars = middle.bar(keys, noop, color="tab:grey")
    middle.bar_label(bars, fmt="%.0f")
    middle.set_xlabel("worker processes")
    middle.set_ylabel("messages / s")
    middle.set_title("No-op actor (same Redis)")
    for k in keys:
        series = data["by_processes"][k]["pipeline"]["series"]
        right.plot([t for t, _ in series], [n for _, n in series], label=f"{k} processes")
    right.set_xlabel("seconds after all workers ready")
    right.set_ylabel("bookings confirmed")
    right.set_title("Confirmations over time")
    right.legend()
    output.save_figure(fig, NAME)
