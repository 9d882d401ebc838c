"""Benchmark 8, webhook flood: authentic partner deliveries while 10,000 forged ones arrive.

The partners' webhook receiver runs as the Procfile's `webhooks` line runs it (gunicorn, 2 x 4) on
the bench's database, behind one trusted proxy (`TRUSTED_PROXY_COUNT=1`), with small limits on
the evidence it stores of refused deliveries (per source, per partner, first bytes). The attacker
is a separate, niced process (it stands for another machine): 4 keep-alive connections posting
forged deliveries (a well-formed but wrong signature, an 8 KB body naming a booking of ours)
from 200 addresses at 300 a second in all. The flood is on for half a
second, then paused (SIGSTOP) for a quarter, in turn, while one client sends authentic signed
deliveries one after another throughout: each one's latency counts for the phase it ran in, so
both sets see the machine's same background load.

Printed: the authentic deliveries' p50 and p99 with the flood on and off and the ratio of the
p99s (target: at most 2), the rate the flood reached, what every forged delivery was answered,
and how much the database grew (the refused deliveries' evidence: rows, bytes, per source).
`python -m bench webhook_flood --quick` is a small smoke configuration.

The attacker (`FLOOD_SCRIPT`, `start_flood`) and the Procfile's command (`procfile_argv`) are
shared with the flood test in `tests/partners/test_webhook_abuse.py`, which checks what the
receiver answers and stores, and times nothing.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from bench import common, fixtures, output, stats

NAME = "webhook_flood"
TARGET_P99_RATIO = 2.0  # authentic p99 with the flood on, at most this multiple of it off
RATE_REACHED = 0.8  # below this share of its rate the flood did not load the receiver as meant


@dataclass(frozen=True)
class Config:
    flood: int  # forged deliveries in all
    rate_per_s: int  # forged deliveries a second while the flood is on (0: as fast as it can)
    connections: int
    sources: int  # addresses the forged deliveries come from (X-Forwarded-For)
    pad_bytes: int  # padding in each forged body
    source_limit: int  # refused deliveries stored per source an hour
    partner_limit: int  # ... and per partner
    evidence_bytes: int  # first bytes of a refused body kept
    on_s: float  # the flood's phases: on this long, then off this long, in turn
    off_s: float
    warmup: int  # authentic deliveries before the flood, not counted


FULL = Config(
    flood=10_000,
    rate_per_s=300,
    connections=4,
    sources=200,
    pad_bytes=8_000,
    source_limit=5,
    partner_limit=100,
    evidence_bytes=1024,
    on_s=0.5,
    off_s=0.25,
    warmup=20,
)
QUICK = Config(
    flood=600,
    rate_per_s=300,
    connections=4,
    sources=40,
    pad_bytes=8_000,
    source_limit=5,
    partner_limit=20,
    evidence_bytes=1024,
    on_s=0.5,
    off_s=0.25,
    warmup=5,
)

# A well-formed Standard Webhooks signature made with nobody's key.
FORGED_SIGNATURE = "v1,Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJlLTAxMjM0NQ=="

# The attacker: `connections` keep-alive connections posting the body on stdin with a forged
# signature from `sources` addresses (X-Forwarded-For), `total` deliveries at `rate` a second in
# all (0: as fast as the receiver answers; a pause, SIGSTOP, is not made up for), at `niceness`.
# Prints "started", then when done each answer's status counted (a failed connection as
# "error: ...", and it connects again).
FLOOD_SCRIPT = """
import collections, http.client, json, os, sys, threading, time
port, total, connections, sources, rate, niceness = (int(sys.argv[i]) for i in (1, 3, 4, 5, 6, 8))
path, body, signature = sys.argv[2], sys.stdin.buffer.read(), sys.argv[7]
os.nice(niceness)
statuses, lock, numbers = collections.Counter(), threading.Lock(), iter(range(total))
def attack():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    interval, next_at = (connections / rate if rate else 0.0), time.monotonic()
    for n in numbers:
        if interval:
            next_at = max(next_at + interval, time.monotonic() - interval)
            time.sleep(max(0.0, next_at - time.monotonic()))
        source = n % sources
        try:
            connection.request("POST", path, body=body, headers={
                "webhook-id": f"msg_forged_{n}", "webhook-timestamp": str(int(time.time())),
                "webhook-signature": signature, "content-type": "application/json",
                "x-forwarded-for": f"10.9.{source // 250}.{source % 250}",
            })
            response = connection.getresponse()
            response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status = f"error: {type(exc).__name__}"
        with lock:
            statuses[status] += 1
print("started", flush=True)
threads = [threading.Thread(target=attack) for _ in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(statuses), flush=True)
"""


def procfile_argv(process: str, **ports: int) -> list[str]:
    """The Procfile's line for `process`, its `${NAME}` ports filled in, as `python -m ...`
    (the same program, from this interpreter's environment)."""
    line = next(
        line.split(": ", 1)[1]
        for line in (common.ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{process}: ")
    )
    for name, port in ports.items():
        line = line.replace(f"${{{name}}}", str(port))
    return [common.PYTHON, "-m", *shlex.split(line)]


def start_flood(
    port: int,
    path: str,
    body: bytes,
    *,
    total: int,
    connections: int,
    sources: int,
    rate_per_s: int,
    niceness: int = 10,
) -> subprocess.Popen[bytes]:
    """The attacker, started and sending (see `FLOOD_SCRIPT`); `flood_statuses` waits for its end.
    Niced by default: in a measurement it stands for another machine, and takes from ours only
    what the receiver's processes leave it."""
    argv = [str(port), path, str(total), str(connections), str(sources), str(rate_per_s)]
    flood = subprocess.Popen(
        [common.PYTHON, "-c", FLOOD_SCRIPT, *argv, FORGED_SIGNATURE, str(niceness)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert flood.stdin is not None and flood.stdout is not None
    flood.stdin.write(body)
    flood.stdin.close()
    started = flood.stdout.readline().strip()
    if started != b"started":
        flood.kill()
        raise RuntimeError(f"the flood did not start: {started!r}")
    return flood


def flood_statuses(flood: subprocess.Popen[bytes], *, timeout_s: float = 600) -> Counter[str]:
    """What the receiver answered the flood, by status, once the flood is done."""
    assert flood.stdout is not None
    flood.wait(timeout_s)
    return Counter(json.loads(flood.stdout.readline()))


def delivery(reference: str, *, pad: int = 0) -> bytes:
    """A partner's `reservation.updated` naming a booking reference (padded: a forged one)."""
    data = {
        "id": f"R-{uuid.uuid4().hex[:8]}",
        "client_reference": reference,
        "status": "cancelled",
        "version": 9,
        "updated_at": "2027-01-01T12:00:00+00:00",
    }
    body = {"type": "reservation.updated", "data": data, **({"pad": "x" * pad} if pad else {})}
    return json.dumps(body).encode()


def signed_headers(raw: bytes, secret: str) -> dict[str, str]:
    from standardwebhooks.webhooks import Webhook

    event_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, raw.decode()),
        "content-type": "application/json",
    }


# --- the database's growth -----------------------------------------------------------------------
def _evidence(partner: Any) -> dict[str, Any]:
    """The refused deliveries stored for `partner`: rows, bytes (kept body, headers, reason), by
    source; and the deliveries table's size on disk."""
    from django.db import connection

    from partners.models import InboundEvent

    rows = list(
        InboundEvent.objects.filter(partner=partner, signature_valid=False).values_list(
            "raw_body", "headers", "error", "source_address", "body_size"
        )
    )
    table_bytes = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size(%s)", [InboundEvent._meta.db_table])
            table_bytes = cursor.fetchone()[0]
    by_source = Counter(source for *_, source, _size in rows)
    return {
        "rows": len(rows),
        "bytes": sum(
            len(bytes(body)) + len(json.dumps(headers)) + len(error) for body, headers, error, *_ in rows
        ),
        "body_bytes_kept": sum(len(bytes(body)) for body, *_ in rows),
        "body_bytes_delivered": sum(size or 0 for *_, size in rows),
        "sources": len(by_source),
        "most_from_one_source": max(by_source.values(), default=0),
        "authentic_rows": InboundEvent.objects.filter(partner=partner, signature_valid=True).count(),
        "table_bytes": table_bytes,
    }


def _growth(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    grown = {key: after[key] - before[key] for key in ("rows", "bytes", "authentic_rows")}
    table = None
    if before["table_bytes"] is not None and after["table_bytes"] is not None:
        table = after["table_bytes"] - before["table_bytes"]
    return {**grown, "table_bytes": table}


# --- the run -------------------------------------------------------------------------------------
def measure(env: common.BenchEnv, config: Config) -> dict[str, Any]:
    """Start the receiver on `env`, flood it in phases while timing authentic deliveries; the
    figures (the smoke test calls this on the test database)."""
    from django.utils import timezone

    from bookings.models import Booking

    partner, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=True)
    ((customer, _token),) = fixtures.customers(1, prefix=f"flood-{uuid.uuid4().hex[:6]}")
    now = timezone.now()
    fixtures.bulk_bookings(count=1, customer=customer, offer=offer, due_from=now, due_until=now)
    booking = Booking.objects.get(customer=customer)

    port = common.free_port()
    receiver = env.start(
        f"webhooks-{port}",
        procfile_argv("webhooks", WEBHOOK_PORT=port),
        TRUSTED_PROXY_COUNT="1",
        WEBHOOK_REFUSED_SOURCE_RATE=f"{config.source_limit}/hour",
        WEBHOOK_REFUSED_PARTNER_RATE=f"{config.partner_limit}/hour",
        WEBHOOK_EVIDENCE_BYTES=str(config.evidence_bytes),
        API_THROTTLE_NAMESPACE=f"flood-{uuid.uuid4().hex}",  # its counters start empty
    )
    common.wait_http(receiver, f"http://127.0.0.1:{port}/healthz", timeout_s=60)
    path = f"/partners/{partner.code}/webhooks/"
    authentic = HTTPConnection("127.0.0.1", port, timeout=30)
    answered: Counter[str] = Counter()

    def deliver_authentic() -> float:
        raw = delivery(f"BK-{uuid.uuid4().hex[:6].upper()}")
        headers = signed_headers(raw, partner.webhook_secret)
        started = time.perf_counter()
        authentic.request("POST", path, body=raw, headers=headers)
        response = authentic.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        answered[str(response.status)] += 1
        return elapsed

    for _ in range(config.warmup):  # both workers and their connections warm
        deliver_authentic()
    answered.clear()
    before = _evidence(partner)
    cpu_before = receiver.cpu_seconds()
    flood = start_flood(
        port,
        path,
        delivery(booking.reference, pad=config.pad_bytes),
        total=config.flood,
        connections=config.connections,
        sources=config.sources,
        rate_per_s=config.rate_per_s,
    )
    phases: list[tuple[bool, list[float]]] = [(True, [])]  # whether the flood was on, latencies (s)
    series: list[tuple[float, float, bool]] = []  # (since the start s, latency ms, flood on)
    flooding, started, phase_started, flood_on_s = True, time.monotonic(), time.monotonic(), 0.0
    try:
        while flood.poll() is None:
            phase_s = time.monotonic() - phase_started
            if phase_s >= (config.on_s if flooding else config.off_s):
                flood_on_s += phase_s if flooding else 0.0
                flooding, phase_started = not flooding, time.monotonic()
                flood.send_signal(signal.SIGCONT if flooding else signal.SIGSTOP)
                phases.append((flooding, []))
                if not flooding:
                    time.sleep(0.05)  # what was already sent drains before the pause counts
                continue
            sent_at = time.monotonic()
            latency = deliver_authentic()
            if time.monotonic() - phase_started < (config.on_s if flooding else config.off_s):
                phases[-1][1].append(latency)
                series.append((round(sent_at - started, 3), round(latency * 1000, 2), flooding))
        flood_on_s += time.monotonic() - phase_started
        statuses = flood_statuses(flood)
    finally:
        if flood.poll() is None:
            flood.send_signal(signal.SIGCONT)
            flood.kill()
            flood.wait(10)
        authentic.close()
    receiver_cpu_s = receiver.cpu_seconds() - cpu_before
    after = _evidence(partner)
    env.stop(receiver)

    rounds = {
        side: [values for was_on, values in phases if was_on == side and values] for side in (True, False)
    }
    latencies = {side: [value for values in rounds[side] for value in values] for side in (True, False)}
    on, off = stats.latency_summary_ms(latencies[True]), stats.latency_summary_ms(latencies[False])
    ratio = stats.percentile(latencies[True], 99) / stats.percentile(latencies[False], 99)
    # How far the p99s could differ by chance alone: the phases, then their deliveries, drawn again.
    low, high = stats.percentile_change_interval(rounds[False], rounds[True], 99)
    achieved = config.flood / flood_on_s if flood_on_s else 0.0
    growth = _growth(before, after)
    bounded = (
        growth["rows"] <= config.partner_limit
        and after["most_from_one_source"] <= config.source_limit
        and after["body_bytes_kept"] <= after["rows"] * config.evidence_bytes
    )
    return {
        "setup": {
            **asdict(config),
            "receiver": " ".join(procfile_argv("webhooks", WEBHOOK_PORT=port)[2:]),
            "attacker": f"one niced process, {config.connections} keep-alive connections",
        },
        "authentic": {
            "flood_on": {**on, "n": len(latencies[True])},
            "flood_off": {**off, "n": len(latencies[False])},
            "statuses": dict(answered),
        },
        "p99_ratio": round(ratio, 3),
        "p99_ratio_interval": [round(1 + low, 3), round(1 + high, 3)],
        "target_ratio": TARGET_P99_RATIO,
        "flood": {
            "deliveries": config.flood,
            "statuses": dict(statuses),
            "on_s": round(flood_on_s, 1),
            "phases": len(phases),
            "rate_per_s": round(achieved, 1),
            "target_rate_per_s": config.rate_per_s,
            "rate_reached": not config.rate_per_s or achieved >= RATE_REACHED * config.rate_per_s,
            "receiver_cpu_s": round(receiver_cpu_s, 1),
        },
        "evidence": {"before": before, "after": after, "growth": growth, "bounded": bounded},
        "series": series,
        "target_met": ratio <= TARGET_P99_RATIO and bounded and statuses == {"401": config.flood},
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    return common.run_measured(NAME, quick=quick, measure=lambda env: measure(env, config), report=report)


# --- output --------------------------------------------------------------------------------------
def latency_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, label in (("flood_off", "flood off"), ("flood_on", "flood on")):
        s = data["authentic"][key]
        rows.append([label, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]])
    return rows


def evidence_rows(data: dict[str, Any]) -> list[list[Any]]:
    evidence = data["evidence"]
    before, after, growth = evidence["before"], evidence["after"], evidence["growth"]
    table = growth["table_bytes"]
    return [
        ["refused deliveries stored (rows)", before["rows"], after["rows"], growth["rows"]],
        ["their bytes (kept body, headers, reason)", before["bytes"], after["bytes"], growth["bytes"]],
        ["sources stored / most from one", "", f"{after['sources']} / {after['most_from_one_source']}", ""],
        ["authentic deliveries stored (rows)", before["authentic_rows"], after["authentic_rows"],
         growth["authentic_rows"]],
        ["deliveries table on disk (bytes)", before["table_bytes"], after["table_bytes"],
         "" if table is None else table],
    ]  # fmt: skip


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{count:,} x {status}" for status, count in sorted(statuses.items())) or "none"


def _interval(data: dict[str, Any]) -> str:
    low, high = data["p99_ratio_interval"]
    return f"95% interval {low:.2f} to {high:.2f}"


def _undecided(data: dict[str, Any]) -> bool:
    """Whether chance alone could put the ratio on either side of the target."""
    low, high = data["p99_ratio_interval"]
    return low <= data["target_ratio"] < high


def markdown(data: dict[str, Any]) -> str:
    """The section of `docs/benchmarks.md` (`bench.docs`)."""
    setup, flood, evidence = data["setup"], data["flood"], data["evidence"]
    after = evidence["after"]
    rate = f"{flood['rate_per_s']:,.0f} a second while on (meant: {flood['target_rate_per_s']:,})"
    if not flood["rate_reached"]:
        rate += ", **short of its rate: the machine was too busy for the comparison to mean much**"
    return "\n".join(
        [
            f"The receiver as the Procfile's `webhooks` line runs it; {flood['deliveries']:,} forged "
            f"deliveries ({setup['pad_bytes']:,} bytes of padding each, from {setup['sources']} addresses "
            f"behind one trusted proxy) from {setup['attacker']}, on for {setup['on_s']:g} s and off for "
            f"{setup['off_s']:g} s in turn ({flood['phases']} phases), while one client sent authentic "
            f"signed deliveries one after another. The flood reached {rate}; the receiver used "
            f"{flood['receiver_cpu_s']} CPU-s. Forged deliveries answered: {_statuses(flood['statuses'])}; "
            f"authentic: {_statuses(data['authentic']['statuses'])}.",
            "",
            _table(["authentic deliveries", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"], latency_rows(data)),
            "",
            f"p99 with the flood on / off: {data['p99_ratio']:.3f} ({_interval(data)}: the range chance "
            "alone gives that ratio, by a two-stage bootstrap, the phases, then each phase's deliveries, "
            "drawn again; `bench.stats.percentile_change_interval`)."
            + (
                f" The interval spans the target ({data['target_ratio']:g}): this run cannot tell on which "
                "side of it the flood's effect is."
                if _undecided(data)
                else ""
            ),
            "",
            _table(["database", "before", "after", "grown"], evidence_rows(data)),
            "",
            f"Limits: {setup['source_limit']} refused deliveries stored per source and "
            f"{setup['partner_limit']} per partner an hour, their first {setup['evidence_bytes']:,} "
            "bytes kept "
            f"({after['body_bytes_kept']:,} bytes kept of {after['body_bytes_delivered']:,} delivered). "
            f"Within them: {output.fmt(evidence['bounded'])}.",
            "",
            f"Target (every forged delivery refused, the stored evidence within its limits, authentic p99 "
            f"with the flood on <= {data['target_ratio']:g} x with it off): "
            f"{'**met**' if data['target_met'] else '**missed**'}.",
        ]
    )


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(output.fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(data: dict[str, Any], *, results_dir: Path | None = None, img_dir: Path | None = None) -> None:
    flood = data["flood"]
    output.print_table(
        f"Webhook flood: authentic deliveries, {flood['deliveries']:,} forged ones at "
        f"{flood['rate_per_s']:,.0f}/s (meant {flood['target_rate_per_s']:,}/s) in phases",
        ["authentic deliveries", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        latency_rows(data),
    )
    print(
        f"p99 flood on / off: {data['p99_ratio']:.3f} ({_interval(data)}; target <= "
        f"{data['target_ratio']:g}); forged answered "
        f"{_statuses(flood['statuses'])}; receiver CPU {flood['receiver_cpu_s']} s"
    )
    output.print_table("Webhook flood: the database", ["", "before", "after", "grown"], evidence_rows(data))
    print(f"target met: {data['target_met']}")
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Path | None = None) -> None:
    plt = output.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for on, color, label in ((False, "tab:blue", "flood off"), (True, "tab:red", "flood on")):
        points = [(at, ms) for at, ms, flooding in data["series"] if flooding == on]
        if points:
            xs, ys = zip(*points, strict=True)
            left.scatter(xs, ys, s=3, color=color, label=label, alpha=0.6)
    left.set_yscale("log")
    left.set_xlabel("seconds since the flood started")
    left.set_ylabel("authentic delivery, ms")
    left.set_title("Each authentic delivery, by the phase it ran in")
    left.legend(markerscale=4)
    labels = ["p50", "p95", "p99"]
    off, on = data["authentic"]["flood_off"], data["authentic"]["flood_on"]
    xs = range(len(labels))
    right.bar(
        [x - 0.2 for x in xs], [off[f"{p}_ms"] for p in labels], 0.4, label="flood off", color="tab:blue"
    )
    right.bar([x + 0.2 for x in xs], [on[f"{p}_ms"] for p in labels], 0.4, label="flood on", color="tab:red")
    right.axhline(
        off["p99_ms"] * data["target_ratio"], color="black", linestyle="--", label="target: 2 x p99 off"
    )
    right.set_xticks(list(xs), labels)
    right.set_ylabel("ms")
    right.set_title(f"p99 on / off: {data['p99_ratio']:.2f}")
    right.legend()
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
