"""Benchmark 6, live status: what the customer's open stream costs and how late it is.

1. **Partner change -> stream.** A reference sandbox partner that confirms each booking
   `confirm_delay_s` after it is created (`async_confirm_delay_s`), its webhooks to our receiver
   (gunicorn 2 x 4), the Dramatiq workers (2 x 4) and the events process, as in the Procfile.
   Bookings are created at a steady rate (`booking_create`, as the API does), each followed at
   once by a stream of its own. For each: the partner's change (the `settle` entry of the
   sandbox's ground-truth history; its clock is this machine's, no skew set), its webhook's
   first delivery attempt, our commit (the timeline row that shows it `confirmed`) and the
   confirmed event's arrival at the client. Target: stream p99 within 1 s of our commit.
2. **1,000 idle streams** on one events process, each customer following their own booking
   (1,000 channels, the heartbeat re-reading 1,000 bookings): the process's CPU over `idle_s`
   while nothing changes (target <= 5% of a core over 60 s) and its RSS (target <= 200 MB);
   then all 1,000 bookings changed in one commit. Then 1,000 streams on one booking, changed
   `fanouts` times: each change's arrival at every stream (target p99 <= 1 s of the commit).
3. **The baseline this design must beat**: the same 1,000 customers polling
   `GET /api/v1/bookings/<ref>` every 2 s with `If-None-Match` against the web gunicorn (4 x 2):
   its CPU per second, and when the pollers see a change committed halfway.
4. **The sync API beside it**: `POST /api/v1/bookings` (benchmark 1's load, 4 clients) with the
   events process holding the 1,000 idle streams against no events process at all, rounds in
   ABBA order; the ratio of their throughputs (target: at most a few percent lost, >= 0.95).

The clients are `bench.sse` (one asyncio process on raw sockets); its CPU is reported beside the
server's, to show it is too small to distort them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench import api, common, fixtures, output, stats
from bench.load import LoadResult, run_load
from bench.sse import Clients, Event, PollSample, Target

NAME = "streams"
STREAM_TARGET_S = 1.0  # stream p99 after our commit; also the fan-out's
IDLE_CPU_TARGET_PERCENT = 5.0
RSS_TARGET_MB = 200.0
API_TARGET_RATIO = 0.95
CUSTOMERS_FOLLOWING = 10  # the latency phase's bookings belong to this many customers
# Every stream of the one-booking fan-out authenticates with one customer's token: that many
# connects a minute are above the per-customer rate limit, which is not what is measured here.
EVENTS_ENV = {"API_THROTTLE_RATE": "1000000/min"}


@dataclass(frozen=True)
class Config:
    bookings: int  # followed from create to confirmed
    booking_rate_per_s: float
    confirm_delay_s: float
    streams: int
    idle_s: float
    fanouts: int
    poll_interval_s: float
    poll_s: float
    api_requests_each: int
    api_rounds: tuple[bool, ...]  # with the events process and its streams, or without
    timeout_s: float


FULL = Config(
    bookings=200,
    booking_rate_per_s=5.0,
    confirm_delay_s=2.0,
    streams=1000,
    idle_s=60.0,
    fanouts=5,
    poll_interval_s=2.0,
    poll_s=60.0,
    api_requests_each=1000,  # 4 clients: 4,000 bookings, ~15 s a round, a heartbeat or more
    api_rounds=(False, True, True, False) * 2,
    timeout_s=300.0,
)
QUICK = Config(
    bookings=10,
    booking_rate_per_s=5.0,
    confirm_delay_s=1.0,
    streams=40,
    idle_s=3.0,
    fanouts=2,
    poll_interval_s=2.0,
    poll_s=5.0,
    api_requests_each=30,
    api_rounds=(False, True),
    timeout_s=120.0,
)


def stream_path(reference: str) -> str:
    return f"/api/v1/bookings/{reference}/events"


def _token(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


def _summary_ms(values_s: list[float]) -> dict[str, Any]:
    return {"n": len(values_s), **stats.latency_summary_ms(values_s)}


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- 1. partner change -> stream ---------------------------------------------------------------------
def _create_booking(customer: Any, offer: Any) -> Any:
    from bookings.services import BookingRequest, booking_create

    start, end = fixtures.stay_dates()
    request = BookingRequest(offer_id=offer.pk, start_date=start, end_date=end, guests=2)
    return booking_create(customer=customer, request=request, idempotency_key=uuid.uuid4().hex).booking


def _our_commits(ids: list[Any]) -> dict[str, tuple[float, str]]:
    """Per booking reference: when our timeline shows it confirmed, and by whom."""
    from bookings.models import BookingEvent

    rows = BookingEvent.objects.filter(booking_id__in=ids, data__customer_view__to="confirmed").values_list(
        "booking__reference", "occurred_at", "actor"
    )
    return {reference: (at.timestamp(), actor) for reference, at, actor in rows}


def _partner_changes(sandbox_base: str) -> dict[str, dict[str, float]]:
    """Per client reference: when the partner confirmed (its history's `settle`), and when it
    first tried to deliver that version's webhook."""
    import requests

    headers = {"Authorization": f"Bearer {common.SANDBOX_API_KEY}"}
    truth = requests.get(f"{sandbox_base}/_sandbox/reservations", headers=headers, timeout=30).json()
    stats = requests.get(f"{sandbox_base}/_sandbox/stats", headers=headers, timeout=30).json()
    first_attempt: dict[tuple[str, int], float] = {}
    for attempt in stats["webhooks"]["attempt_log"]:
        key = (attempt["reservation_id"], attempt["version"])
        first_attempt.setdefault(key, _at(attempt["at"]))
    changes = {}
    for reservation in truth["reservations"]:
        settle = next((h for h in reservation["history"] if h["cause"] == "settle"), None)
        if settle is None or settle["status"] != "confirmed":
            continue
        changes[reservation["client_reference"]] = {
            "partner_at": _at(settle["at"]),
            "webhook_at": first_attempt.get((reservation["id"], settle["version"])),
        }
    return changes


def measure_latency(env: common.BenchEnv, config: Config) -> dict[str, Any]:
    webhooks, receiver_base = env.start_webhooks()
    sandbox, sandbox_base = env.start_sandbox(webhook_url=fixtures.webhook_url(receiver_base))
    common.set_sandbox_faults(sandbox_base, async_confirm_delay_s=config.confirm_delay_s)
    _, offer = fixtures.bench_partner(base_url=sandbox_base)
    workers = env.start_workers(processes=2, threads=4)
    events, events_base = env.start_events(**EVENTS_ENV)
    following = fixtures.customers(CUSTOMERS_FOLLOWING, prefix="following")
    roles = {"events": events, "workers": workers, "webhooks": webhooks, "sandbox": sandbox}
    cpu_before = {role: proc.cpu_seconds() for role, proc in roles.items()}
    ids, references = [], []
    arrived: list[Event] = []
    with Clients(events_base) as clients:
        client_cpu = clients.cpu_seconds()
        begin = time.monotonic()
        for index in range(config.bookings):
            time.sleep(max(0.0, begin + index / config.booking_rate_per_s - time.monotonic()))
            customer, token = following[index % len(following)]
            booking = _create_booking(customer, offer)
            ids.append(booking.pk)
            references.append(booking.reference)
            clients.open_streams([Target(stream_path(booking.reference), _token(token))])

        def every_confirmation_arrived() -> bool:
            arrived.extend(clients.events())
            return len({e.stream for e in arrived if e.data["status"] == "confirmed"}) >= config.bookings

        with contextlib.suppress(TimeoutError):  # reported as fewer timed bookings
            common.wait_for(every_confirmation_arrived, timeout_s=config.timeout_s, interval_s=0.5)
        elapsed = time.monotonic() - begin
        failed = clients.status()["failed"]
        client_cpu = clients.cpu_seconds() - client_cpu
    cpu = {role: round(proc.cpu_seconds() - cpu_before[role], 1) for role, proc in roles.items()}
    partner = _partner_changes(sandbox_base)
    ours = _our_commits(ids)
    for proc in roles.values():
        env.stop(proc)

    stream_at: dict[str, float] = {}
    opened_confirmed = 0
    for event in arrived:
        if event.data["status"] != "confirmed":
            continue
        if event.opening:
            opened_confirmed += 1  # confirmed before its stream opened: no arrival to time
        else:
            stream_at.setdefault(references[event.stream], event.at)
    rows = [
        {"stream_at": at, "commit_at": ours[reference][0], **partner[reference]}
        for reference, at in stream_at.items()
        if reference in partner and reference in ours
    ]
    by_actor: dict[str, int] = {}
    for _, actor in ours.values():
        by_actor[actor] = by_actor.get(actor, 0) + 1
    after_partner = [r["stream_at"] - r["partner_at"] for r in rows]
    after_commit = [r["stream_at"] - r["commit_at"] for r in rows]
    return {
        "bookings": config.bookings,
        "timed": len(rows),
        "confirmed_before_stream_opened": opened_confirmed,
        "streams_failed": failed[:5],
        "confirmed_by": by_actor,
        "stream_after_partner": _summary_ms(after_partner),
        "stream_after_commit": _summary_ms(after_commit),
        "commit_after_partner": _summary_ms([r["commit_at"] - r["partner_at"] for r in rows]),
        "webhook_after_partner": _summary_ms(
            [r["webhook_at"] - r["partner_at"] for r in rows if r["webhook_at"] is not None]
        ),
        "stream_after_partner_s": sorted(round(value, 4) for value in after_partner),
        "stream_after_commit_s": sorted(round(value, 4) for value in after_commit),
        "cpu_s": cpu,
        "client_cpu_s": round(client_cpu, 2),
        "elapsed_s": round(elapsed, 1),
        "target_met": len(rows) >= config.bookings * 0.95
        and stats.percentile(after_commit, 99) <= STREAM_TARGET_S,
    }


# --- 2. 1,000 streams on one events process -------------------------------------------------------
@dataclass(frozen=True)
class Population:
    """Customers with one open booking each: who follows (or polls) what."""

    booking_ids: list[Any]
    references: list[str]
    tokens: list[str]

    def stream_targets(self) -> list[Target]:
        return [
            Target(stream_path(ref), _token(key))
            for ref, key in zip(self.references, self.tokens, strict=True)
        ]


def population(count: int, offer: Any, *, prefix: str) -> Population:
    pairs = fixtures.customers(count, prefix=prefix)
    bookings = fixtures.one_booking_each([user for user, _ in pairs], offer=offer)
    return Population([b.pk for b in bookings], [b.reference for b in bookings], [key for _, key in pairs])


def commit_changes(booking_ids: list[Any]) -> tuple[dict[Any, int], float]:
    """Change what each booking's customer is shown (received <-> submitting), all in one
    transaction: each booking's new `status_version`, and when the commit returned (the first
    thing run after it, before the changes are published)."""
    from django.db import transaction

    from bookings import services
    from bookings.models import Actor
    from bookings.states import BookingState

    committed: list[float] = []
    versions = {}
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.time()))
        for booking_id in booking_ids:
            booking = services.lock_booking(booking_id)
            move = "start_submission" if booking.status == BookingState.REQUESTED else "release_submission"
            services.apply_transition(booking, move, actor=Actor.WORKER)
            versions[booking_id] = booking.status_version
    return versions, committed[0]


def arrivals(clients: Clients, owed: dict[int, int], committed_at: float, *, timeout_s: float) -> list[float]:
    """Seconds from the commit to each stream's event of the version it is owed (stream number
    -> version), once every stream has it or `timeout_s` passed (the missing are not in it)."""
    late: dict[int, float] = {}

    def every_stream_has_it() -> bool:
        for event in clients.events():
            if not event.opening and event.data["status_version"] >= owed.get(event.stream, 1 << 62):
                late.setdefault(event.stream, event.at - committed_at)
        return len(late) >= len(owed)

    with contextlib.suppress(TimeoutError):  # reported as missing
        common.wait_for(every_stream_has_it, timeout_s=timeout_s, interval_s=0.1)
    return list(late.values())


def _fanout_summary(late_s: list[float], streams: int) -> dict[str, Any]:
    return {**_summary_ms(late_s), "streams": streams, "missing": streams - len(late_s)}


def _rss_mib(proc: common.Proc) -> float:
    return round(sum(p.memory_info().rss for p in proc.tree()) / 2**20, 1)


def _threads(proc: common.Proc) -> int:
    return sum(p.num_threads() for p in proc.tree())


def _open(clients: Clients, targets: list[Target], timeout_s: float) -> dict[str, Any]:
    """Open a stream per target and wait for all (an error if any failed); how the opening went."""
    began = time.monotonic()
    clients.open_streams(targets)
    status = clients.wait_open(timeout_s=timeout_s)
    if status["failed"]:
        raise RuntimeError(f"{len(status['failed'])} streams failed to open, e.g. {status['failed'][:3]}")
    clients.events()  # the openings
    seconds = time.monotonic() - began
    return {"seconds": round(seconds, 1), "per_s": round(len(targets) / seconds, 1)}


def measure_streams(
    env: common.BenchEnv, config: Config, people: Population, one: Population
) -> dict[str, Any]:
    """`people`: `config.streams` customers with one booking each, each following it; then
    `config.streams` streams on `one`'s single booking."""
    events, base = env.start_events(**EVENTS_ENV)
    rss_before, threads_before = _rss_mib(events), _threads(events)
    with Clients(base) as clients:
        opening = _open(clients, people.stream_targets(), config.timeout_s)
        time.sleep(2)  # the last connects' work done before the idle window
        heartbeats, cpu, client_cpu = (
            clients.status()["heartbeats"],
            events.cpu_seconds(),
            clients.cpu_seconds(),
        )
        started = time.monotonic()
        time.sleep(config.idle_s)
        idle_s = time.monotonic() - started
        idle_cpu_s = events.cpu_seconds() - cpu
        client_cpu_s = clients.cpu_seconds() - client_cpu
        heartbeats = clients.status()["heartbeats"] - heartbeats
        rss_open, threads_open = _rss_mib(events), _threads(events)

        versions, committed_at = commit_changes(people.booking_ids)
        owed = {stream: versions[booking_id] for stream, booking_id in enumerate(people.booking_ids)}
        wave = _fanout_summary(arrivals(clients, owed, committed_at, timeout_s=config.timeout_s), len(owed))
        clients.close_streams()

    with Clients(base) as clients:
        one_opening = _open(clients, one.stream_targets() * config.streams, config.timeout_s)
        late_s: list[float] = []
        by_change = []
        for _ in range(config.fanouts):
            time.sleep(1)
            versions, committed_at = commit_changes(one.booking_ids)
            owed = dict.fromkeys(range(config.streams), versions[one.booking_ids[0]])
            late = arrivals(clients, owed, committed_at, timeout_s=config.timeout_s)
            late_s += late
            by_change.append(_fanout_summary(late, config.streams))
        clients.close_streams()
    peak_rss = max(events.peak_rss_mib().values())
    env.stop(events)
    idle_percent = idle_cpu_s / idle_s * 100
    fanout = _fanout_summary(late_s, config.streams * config.fanouts)
    return {
        "streams": config.streams,
        "opening": opening,
        "idle": {
            "seconds": round(idle_s, 1),
            "cpu_s": round(idle_cpu_s, 2),
            "cpu_percent_of_core": round(idle_percent, 2),
            "heartbeats_received": heartbeats,
            "client_cpu_percent_of_core": round(client_cpu_s / idle_s * 100, 2),
        },
        "rss_mib": {"before_streams": rss_before, "streams_open": rss_open, "peak": peak_rss},
        "threads": {"before_streams": threads_before, "streams_open": threads_open},
        "wave": {"bookings_changed_in_one_commit": len(people.booking_ids), **wave},
        "fanout": {"opening": one_opening, "changes": config.fanouts, **fanout, "by_change": by_change},
        "idle_cpu_met": idle_percent <= IDLE_CPU_TARGET_PERCENT,
        "rss_met": peak_rss * 2**20 / 1e6 <= RSS_TARGET_MB,
        "fanout_met": not fanout["missing"] and fanout["p99_ms"] <= STREAM_TARGET_S * 1000,
    }


# --- 3. the same customers polling ----------------------------------------------------------------------
def measure_polling(config: Config, people: Population, web: common.Proc, web_base: str) -> dict[str, Any]:
    """`people` poll their bookings on the web server; halfway, every booking changes in one
    commit, and each poller's first 200 after it says when it saw the change."""
    from bookings.models import Booking

    versions = dict(
        Booking.objects.filter(pk__in=people.booking_ids).values_list("reference", "status_version")
    )
    targets = [
        Target(
            f"/api/v1/bookings/{reference}", {**_token(key), "If-None-Match": f'W/"{versions[reference]}"'}
        )
        for reference, key in zip(people.references, people.tokens, strict=True)
    ]
    change: dict[str, float] = {}

    def change_halfway() -> None:
        time.sleep(config.poll_s / 2)
        change["committed_at"] = commit_changes(people.booking_ids)[1]

    with Clients(web_base) as clients:
        cpu, client_cpu, started = web.cpu_seconds(), clients.cpu_seconds(), time.monotonic()
        result = clients.poll(
            targets, interval_s=config.poll_interval_s, duration_s=config.poll_s, meanwhile=change_halfway
        )
        wall_s = time.monotonic() - started
        web_cpu_s = web.cpu_seconds() - cpu
        client_cpu_s = clients.cpu_seconds() - client_cpu
    samples: list[PollSample] = result["samples"]
    statuses: dict[str, int] = {}
    for sample in samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    seen: dict[int, float] = {}
    for sample in samples:
        if sample.status == 200 and sample.answered_at > change["committed_at"]:
            seen.setdefault(sample.poller, sample.answered_at - change["committed_at"])
    answered = [s.latency_s for s in samples if s.status in (200, 304)]
    return {
        "pollers": len(targets),
        "interval_s": config.poll_interval_s,
        "seconds": round(wall_s, 1),
        "requests": len(samples),
        "requests_per_s": round(len(samples) / config.poll_s, 1),
        "statuses": statuses,
        "errors": result["errors"],
        "connections_opened": result["connections"],
        "polls_skipped": result["skipped"],  # due while the poller still waited for an answer
        "lateness": _summary_ms(answered),  # answered minus due
        "web_cpu_s": round(web_cpu_s, 1),
        "web_cpu_percent_of_core": round(web_cpu_s / wall_s * 100, 1),
        "web_cpu_ms_per_request": round(web_cpu_s / max(len(samples), 1) * 1000, 2),
        "client_cpu_percent_of_core": round(client_cpu_s / wall_s * 100, 1),
        "change_seen": _fanout_summary(list(seen.values()), len(targets)),
    }


# --- 4. the sync API beside the events process --------------------------------------------------------
def measure_api_beside(
    env: common.BenchEnv, config: Config, people: Population, web_base: str, offer: Any
) -> dict[str, Any]:
    """Benchmark 1's booking POST at 4 clients, in rounds with the events process holding
    `people`'s streams and rounds without any; the ratio of throughputs, round by round."""
    tokens = api.client_tokens(4)
    endpoint = api.endpoints(offer.pk)[1]
    runs: dict[str, list[LoadResult]] = {"without": [], "with": []}
    events_cpu_percent = []
    for with_streams in config.api_rounds:
        if not with_streams:
            runs["without"].append(
                run_load(web_base, endpoint, tokens=tokens, requests_each=config.api_requests_each)
            )
            continue
        events, base = env.start_events(**EVENTS_ENV)
        with Clients(base) as clients:
            _open(clients, people.stream_targets(), config.timeout_s)
            time.sleep(2)
            cpu, started = events.cpu_seconds(), time.monotonic()
            runs["with"].append(
                run_load(web_base, endpoint, tokens=tokens, requests_each=config.api_requests_each)
            )
            events_cpu_percent.append((events.cpu_seconds() - cpu) / (time.monotonic() - started) * 100)
        env.stop(events)
    ratios = [b.throughput / a.throughput for a, b in zip(runs["without"], runs["with"], strict=True)]
    low, high = stats.percentile_change_interval(
        [r.latencies_s for r in runs["without"]], [r.latencies_s for r in runs["with"]], 99
    )
    ratio = stats.median(ratios)
    return {
        "clients": 4,
        "requests_each": config.api_requests_each,
        "rounds": ["with" if value else "without" for value in config.api_rounds],
        **{name: api.summarize(value) for name, value in runs.items()},
        "events_cpu_percent_of_core": [round(value, 2) for value in events_cpu_percent],
        "ratio": round(ratio, 3),
        "ratio_rounds": [round(value, 3) for value in ratios],
        "p99_change_interval": [round(low, 3), round(high, 3)],
        "target_met": ratio >= API_TARGET_RATIO,
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    with common.BenchEnv(NAME) as env:
        started = common.now_iso()
        latency = measure_latency(env, config)
        _, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=False)
        people = population(config.streams, offer, prefix="follower")
        streams = measure_streams(env, config, people, population(1, offer, prefix="fan"))
        web, web_base = env.start_web()
        polling = measure_polling(config, people, web, web_base)
        beside = measure_api_beside(env, config, people, web_base, offer)
        env.stop(web)
        data = {
            "benchmark": NAME,
            "started_at": started,
            "quick": quick,
            "machine": env.machine(),
            "setup": setup(config),
            "latency": latency,
            "streams": streams,
            "polling": polling,
            "api_beside": beside,
            "target_met": latency["target_met"]
            and streams["idle_cpu_met"]
            and streams["rss_met"]
            and streams["fanout_met"]
            and beside["target_met"],
        }
    report(data)
    return data


def setup(config: Config) -> dict[str, Any]:
    return {
        "events": "python -m config.events (uvicorn, one process), heartbeat 15 s, stream life 300 s",
        "web": "gunicorn config.wsgi --workers 4 --threads 2 (as in the Procfile)",
        "latency": {
            "partner": f"reference sandbox, confirms {config.confirm_delay_s:g} s after a create",
            "workers": "rundramatiq --processes 2 --threads 4; webhooks: gunicorn 2 x 4",
            "bookings": config.bookings,
            "rate_per_s": config.booking_rate_per_s,
        },
        "streams": config.streams,
        "idle_s": config.idle_s,
        "fanouts": config.fanouts,
        "poll": {"interval_s": config.poll_interval_s, "seconds": config.poll_s},
        "api_rounds": len(config.api_rounds),
        "clients": "bench.sse: one asyncio process, raw sockets",
        "events_env": EVENTS_ENV,
        "targets": {
            "stream_p99_after_commit_s": STREAM_TARGET_S,
            "idle_cpu_percent_of_core": IDLE_CPU_TARGET_PERCENT,
            "rss_mb": RSS_TARGET_MB,
            "fanout_p99_s": STREAM_TARGET_S,
            "api_ratio": API_TARGET_RATIO,
        },
    }


# --- output -----------------------------------------------------------------------------------------
LATENCY_ROWS = (
    ("partner change -> stream", "stream_after_partner"),
    ("our commit -> stream", "stream_after_commit"),
    ("partner change -> our commit", "commit_after_partner"),
    ("partner change -> its webhook sent", "webhook_after_partner"),
)


def latency_rows(data: dict[str, Any]) -> list[list[Any]]:
    latency = data["latency"]
    return [
        [label, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
        for label, key in LATENCY_ROWS
        for s in [latency[key]]
    ]


def reach_rows(data: dict[str, Any]) -> list[list[Any]]:
    """How long one change takes to reach every client, by stream and by polling."""
    streams, polling = data["streams"], data["polling"]
    fanout, wave, seen = streams["fanout"], streams["wave"], polling["change_seen"]
    return [
        [f"stream: one booking, {streams['streams']:,} streams ({fanout['changes']} changes)", fanout["n"],
         fanout["p50_ms"], fanout["p99_ms"], fanout["max_ms"], fanout["missing"]],
        [f"stream: {wave['bookings_changed_in_one_commit']:,} bookings changed in one commit", wave["n"],
         wave["p50_ms"], wave["p99_ms"], wave["max_ms"], wave["missing"]],
        [f"polling every {polling['interval_s']:g} s: the same {polling['pollers']:,} bookings", seen["n"],
         seen["p50_ms"], seen["p99_ms"], seen["max_ms"], seen["missing"]],
    ]  # fmt: skip


def cost_rows(data: dict[str, Any]) -> list[list[Any]]:
    """What following 1,000 customers costs the server: idle streams against polling."""
    streams, polling = data["streams"], data["polling"]
    idle = streams["idle"]
    return [
        [f"events process, {streams['streams']:,} idle streams", f"{idle['cpu_percent_of_core']:.2f}%",
         streams["rss_mib"]["peak"], "", f"{idle['client_cpu_percent_of_core']:.2f}%"],
        [f"web (gunicorn 4 x 2), {polling['pollers']:,} pollers every {polling['interval_s']:g} s",
         f"{polling['web_cpu_percent_of_core']:.1f}%", "", polling["requests_per_s"],
         f"{polling['client_cpu_percent_of_core']:.1f}%"],
    ]  # fmt: skip


def api_rows(data: dict[str, Any]) -> list[list[Any]]:
    beside = data["api_beside"]
    return [
        [name, beside[name]["throughput_rps"], beside[name]["p50_ms"], beside[name]["p99_ms"],
         beside[name]["requests_ok"], sum(beside[name]["errors"].values()),
         f"{beside['ratio'] * 100:.1f}%" if name == "with" else ""]
        for name in ("without", "with")
    ]  # fmt: skip


def report(data: dict[str, Any], *, results_dir: Any = None, img_dir: Any = None) -> None:
    output.print_table(
        "Partner change -> the customer's open stream (ms)",
        ["interval", "bookings", "p50", "p95", "p99", "max"],
        latency_rows(data),
    )
    output.print_table(
        "One change reaching every client (ms after our commit)",
        ["what", "arrivals", "p50", "p99", "max", "missing"],
        reach_rows(data),
    )
    output.print_table(
        "Following the customers: server cost",
        ["server", "CPU (of one core)", "peak RSS MiB", "requests/s", "clients' CPU"],
        cost_rows(data),
    )
    output.print_table(
        "POST /api/v1/bookings (4 clients) without and with the events process and its streams",
        ["events process", "req/s", "p50 ms", "p99 ms", "ok", "errors", "of without"],
        api_rows(data),
    )
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Any = None) -> None:
    plt = output.pyplot()
    fig, ((cdf, cost), (reach, rounds)) = plt.subplots(2, 2, figsize=(12, 8))
    latency = data["latency"]
    for key, label in (
        ("stream_after_partner_s", "after the partner's change"),
        ("stream_after_commit_s", "after our commit"),
    ):
        values = [value * 1000 for value in latency[key]]
        cdf.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    cdf.axvline(STREAM_TARGET_S * 1000, color="grey", linestyle="--", label="target (p99, after our commit)")
    cdf.set_xlabel("confirmed event at the stream (ms)")
    cdf.set_ylabel("share of bookings")
    cdf.set_title(f"{latency['timed']} bookings confirmed by a partner")
    cdf.legend(fontsize=8)

    streams, polling = data["streams"], data["polling"]
    labels = [
        f"events: {streams['streams']:,}\nidle streams",
        f"web: {polling['pollers']:,} pollers\nevery {polling['interval_s']:g} s",
    ]
    values = [streams["idle"]["cpu_percent_of_core"], polling["web_cpu_percent_of_core"]]
    bars = cost.bar(labels, values, color=["tab:green", "tab:red"])
    cost.bar_label(bars, fmt="%.1f%%")
    cost.axhline(IDLE_CPU_TARGET_PERCENT, color="grey", linestyle="--", label="target for idle streams")
    cost.set_ylabel("CPU, % of one core")
    cost.set_title("Following the same customers")
    cost.legend(fontsize=8)

    rows = reach_rows(data)
    names = [
        "one booking,\nall streams",
        "all bookings,\none commit",
        f"polling\nevery {polling['interval_s']:g} s",
    ]
    for offset, (column, quantile) in zip((-0.2, 0.2), ((2, "p50"), (3, "p99")), strict=True):
        bars = reach.bar(
            [i + offset for i in range(len(rows))], [row[column] for row in rows], 0.4, label=quantile
        )
        reach.bar_label(bars, fmt="%.0f", fontsize=8)
    reach.axhline(STREAM_TARGET_S * 1000, color="grey", linestyle="--", label="target (p99)")
    reach.set_xticks(range(len(rows)), names)
    reach.set_ylabel("ms after the commit")
    reach.set_title("One change reaching every client")
    reach.legend(fontsize=8)

    beside = data["api_beside"]
    order = beside["rounds"]
    throughput = {name: list(beside[name]["throughput_rounds_rps"]) for name in ("without", "with")}
    values = [throughput[name].pop(0) for name in order]
    rounds.bar(
        range(len(order)), values, color=["tab:grey" if n == "without" else "tab:green" for n in order]
    )
    rounds.set_xticks(range(len(order)), order)
    rounds.set_ylabel("POST /api/v1/bookings per s")
    rounds.set_title(f"Sync API beside the events process: {beside['ratio'] * 100:.1f}% (median of pairs)")
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
