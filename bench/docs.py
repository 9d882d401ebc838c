"""Write the figures of `bench/results/*.json` into `docs/benchmarks.md`.

Only the part between the two markers is generated; the analysis around it is written by hand
and kept as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import common, independence, output, pages, payments, streams, webhook_flood

DOC = common.ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:generated:begin (python -m bench report rewrites this part) -->"
END = "<!-- bench:generated:end -->"
ORDER = common.BENCHMARKS


def _table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(output.fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(data: dict[str, Any]) -> str:
    m = data["machine"]
    other = m.get("other_load", {})
    quiet = m.get("quiet", {})
    return (
        f"Run {data['started_at']} on {m['nproc']} x {m['cpu_model']}, {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}, Django {m['django']}, PostgreSQL {m['postgresql']}, Redis {m['redis']}, "
        f"commit {m.get('git_commit') or '?'}"
        + (" (quick configuration)" if data.get("quick") else "")
        + f". Machine CPU {quiet.get('cpu_percent_at_start', '?')}% busy at the start; other processes used "
        f"{other.get('foreign_cpu_s', '?')} CPU-s during the {other.get('wall_s', '?')} s run."
        + _load_average(quiet.get("load_average_at_start"), m.get("load_average_at_end"))
    )


def _load_average(start: list[float] | None, end: list[float] | None) -> str:
    """The load averages (1 min) around a run, when it recorded them: on this 2-core machine
    anything above 2 means processes waited for a CPU."""
    if not start or not end:
        return ""
    return f" Load average (1 min) {start[0]:.1f} at the start, {end[0]:.1f} at the end."


def _met(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def _api(data: dict[str, Any]) -> str:
    rows = []
    for clients, row in data["by_concurrency"].items():
        for name in ("baseline", "bookings"):
            share = f"{row['ratio'] * 100:.0f}%" if name == "bookings" else ""
            rows.append(output.latency_row(f"{name}, {clients} clients", row[name], share))
    return "\n".join(
        [
            _table(["endpoint", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "of baseline"], rows),
            "",
            f"Target (bookings >= 70% of the baseline's throughput): {_met(data['target_met'])}.",
        ]
    )


ROUND_COLUMNS = ["paced round", "partner", "p50 ms", "p95 ms", "p99 ms", "max ms"]
ROUND_COLUMNS += ["worker CPU-s", "settled s"]


def wake_line(wake: dict[str, dict[str, float]]) -> str:
    """The machine's cost of waking an idle process, measured before and after the run."""

    def label(key: str) -> str:  # "after_100ms"
        idle_ms = int(key.removeprefix("after_").removesuffix("ms"))
        return f"after {idle_ms} ms asleep" if idle_ms else "back to back"

    figures = "; ".join(
        f"{when} the run: " + ", ".join(f"{value:,.0f} µs {label(key)}" for key, value in trips.items())
        for when, trips in wake.items()
    )
    return (
        "Waking an idle process here (median round trip of one byte to another process, "
        f"`bench.observe.wake_after_idle_us`): {figures}."
    )


CHANGE_NOTE = (
    "3 s vs 0 s: the p99 with the partner at 3 s against the p99 at 0 s; in brackets, the range "
    "that chance alone gives that comparison (95%, a two-stage bootstrap: each latency's rounds, "
    "then each round's requests, drawn again; `bench.stats.percentile_change_interval`). It "
    "covers which requests happened to be slow and, for the paced load's rounds, how the machine "
    "drifted between them. A difference inside that range is below what the run can resolve."
)


def _independence(data: dict[str, Any]) -> str:
    parts = []
    for placement, variant in data["variants"].items():
        rounds = [[f"{placement}: {row[0]}", *row[1:]] for row in independence.round_rows(variant)]
        loads = [[f"{placement}: {row[0]}", *row[1:]] for row in independence.load_rows(variant)]
        spread = [[f"{placement}, {row[0]}", *row[1:]] for row in independence.comparison_rows(variant)]
        if rounds:
            parts += [
                _table(ROUND_COLUMNS, rounds),
                "",
            ]
        parts += [
            _table(
                [
                    "load (paced: its rounds pooled)",
                    "req/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "requests",
                    "errors",
                    "worker CPU-s",
                    "backends waiting on locks",
                ],
                loads,
            ),
            "",
            _table(
                ["", "p99 @ 0 s", "p99 @ 3 s", "spread", "3 s vs 0 s (95% interval)", "within 10%"],
                spread,
            ),
            "",
        ]
    if any("change_interval" in row for v in data["variants"].values() for row in v["comparison"].values()):
        parts += [CHANGE_NOTE, ""]
    if "wake_after_idle_us" in data:
        parts += [wake_line(data["wake_after_idle_us"]), ""]
    target_load = next(iter(data["variants"].values())).get("target_load", "paced")
    parts.append(
        f"Target (p99 within 10%, co-located, {target_load} load; the closed-loop rows are at "
        f"saturation): {_met(data['target_met'])}."
    )
    return "\n".join(parts)


def _pipeline(data: dict[str, Any]) -> str:
    rows = []
    for processes, row in data["by_processes"].items():
        p, n = row["pipeline"], row["noop"]
        rows.append(
            [
                f"{processes} x {data['setup']['threads']}",
                p["per_s"],
                n["per_s"],
                f"{p['elapsed_s']:.1f}" + ("" if p["completed"] else " (timeout)"),
                p["peak_rss_mib_max"],
                n["peak_rss_mib_max"],
                p["worker_cpu_s"],
            ]
        )
    return _table(
        [
            "processes x threads",
            "bookings confirmed/s",
            "no-op msg/s",
            "time s",
            "peak RSS/process MiB",
            "no-op peak RSS MiB",
            "worker CPU-s",
        ],
        rows,
    )


def _sweeper(data: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            r["due_total"],
            r["batches"],
            r["seconds"],
            r["queries"],
            r["queries_per_batch"],
            r.get("on_commit_s", ""),
            r.get("enqueue_s", ""),
            r.get("enqueue_bookings_per_s", ""),
        ]
        for r in data["runs"]
    ]
    return "\n".join(
        [
            _table(
                [
                    "run",
                    "due",
                    "batches",
                    "s",
                    "queries",
                    "queries/batch",
                    "on-commit (Redis) s",
                    "of which enqueue s",
                    "bookings queued/s",
                ],
                rows,
            ),
            "",
            f"Queries per batch by batch size: {data['queries_per_batch_by_batch_size']} "
            f"(constant: {data['queries_per_batch_constant']}). "
            f"Target (constant queries per batch, under 10 s): {_met(data['target_met'])}.",
        ]
    )


def _timeline(data: dict[str, Any]) -> str:
    rows = []
    for size, row in data["sizes"].items():
        b, a = row["build"], row["admin_page"]
        rows.append([f"booking_timeline(), {size} rows", b["queries"], b["ms"], ""])
        rows.append([f"admin change page, {size} rows", a["queries"], a["ms"], a["bytes"]])
    return "\n".join(
        [
            _table(["what", "queries", "ms (median)", "bytes"], rows),
            "",
            f"Constant queries: {data['queries_constant']}; under 300 ms at "
            f"{data['rows'][1]} rows: {data['under_target']}. Target: {_met(data['target_met'])}.",
        ]
    )


def _streams(data: dict[str, Any]) -> str:
    latency, live, polling, beside = data["latency"], data["streams"], data["polling"], data["api_beside"]
    after_commit, after_partner = latency["stream_after_commit"], latency["stream_after_partner"]
    idle, rss = live["idle"], live["rss_mib"]
    fanout, seen = live["fanout"], polling["change_seen"]
    delay = data["setup"]["latency"]["partner"]
    cores = polling["web_cpu_ms_per_request"] * polling["pollers"] / polling["interval_s"] / 1000
    return "\n".join(
        [
            f"**Partner change to the customer's open stream.** {latency['timed']} of {latency['bookings']} "
            f"bookings timed ({delay}; each followed by a stream of its own from its creation). The "
            f"confirmed status reached the stream {after_commit['p50_ms']:,.0f} ms (p50) and "
            f"{after_commit['p99_ms']:,.0f} ms (p99) after our commit, {after_partner['p50_ms']:,.0f} / "
            f"{after_partner['p99_ms']:,.0f} ms after the partner's change (the webhook's trip, its queue "
            "and the worker's transaction in between).",
            "",
            _table(
                ["interval", "bookings", "p50 ms", "p95 ms", "p99 ms", "max ms"], streams.latency_rows(data)
            ),
            "",
            f"Target (stream p99 within 1 s of our commit): {_met(latency['target_met'])}.",
            "",
            f"**{live['streams']:,} open streams on one events process.** Opened at "
            f"{live['opening']['per_s']:,.0f} a second; then {idle['seconds']:.0f} s with nothing changing "
            f"(a heartbeat every 15 s: {idle['heartbeats_received']:,} received). The process used "
            f"{idle['cpu_percent_of_core']:.2f}% of a core and held {rss['peak']:.0f} MiB "
            f"({rss['peak'] * 1.048576:.0f} MB; {rss['before_streams']:.0f} MiB before the first stream), "
            f"with {live['threads']['streams_open']:,} threads (one per stream: Django runs the sync "
            "middleware of an ASGI request on a thread of its own). The same customers polling their "
            f"bookings every {polling['interval_s']:g} s instead (with `If-None-Match`, as a well-behaved "
            f"client) kept the web server at {polling['web_cpu_percent_of_core']:.0f}% of a core for "
            f"{polling['requests_per_s']:,.0f} requests a second ({polling['web_cpu_ms_per_request']:.1f} ms "
            f"of CPU each: {cores:.1f} cores for the {polling['pollers'] / polling['interval_s']:,.0f} a "
            "second they ask for). The clients (one asyncio process) used the share in the last column.",
            "",
            _table(
                ["server", "CPU (of one core)", "peak RSS MiB", "requests/s", "clients' CPU"],
                streams.cost_rows(data),
            ),
            "",
            f"Targets (idle: <= 5% of a core over 60 s, RSS <= 200 MB): CPU {_met(live['idle_cpu_met'])}, "
            f"RSS {_met(live['rss_met'])}.",
            "",
            f"**One change reaching every client.** A change to the one booking {live['streams']:,} "
            f"streams follow reached all of them within {fanout['p99_ms']:,.0f} ms (p99 over "
            f"{fanout['changes']} changes); every follower's booking changed in one commit, within "
            f"{live['wave']['p99_ms']:,.0f} ms; the pollers saw a change {seen['p50_ms']:,.0f} ms (p50) and "
            f"{seen['p99_ms']:,.0f} ms (p99) after its commit.",
            "",
            _table(["what", "arrivals", "p50 ms", "p99 ms", "max ms", "missing"], streams.reach_rows(data)),
            "",
            f"Target (one change reaching all {live['streams']:,}, p99 <= 1 s): {_met(live['fanout_met'])}.",
            "",
            f"**What it costs the sync API.** Benchmark 1's booking POST, {beside['clients']} clients, in "
            f"rounds without (A) and with (B) in the order {_order(beside['rounds'])}: with the events "
            "process holding "
            f"{live['streams']:,} idle streams beside it ({_percents(beside['events_cpu_percent_of_core'])} "
            f"of a core during the rounds), against no events process. With it the API kept "
            f"{beside['ratio'] * 100:.1f}% of its throughput (median of the pairs of rounds; the pairs "
            f"{', '.join(f'{r * 100:.0f}%' for r in beside['ratio_rounds'])}).",
            "",
            _table(
                ["events process", "req/s", "p50 ms", "p99 ms", "ok", "errors", "of without"],
                streams.api_rows(data),
            ),
            "",
            "Target (the API loses at most a few percent: >= 95% of its throughput): "
            f"{_met(beside['target_met'])}.",
        ]
    )


def _order(rounds: list[str]) -> str:
    return "".join("B" if name == "with" else "A" for name in rounds)


def _percents(values: list[float]) -> str:
    return f"{min(values):.1f}% to {max(values):.1f}%" if values else "?"


def _pages(data: dict[str, Any]) -> str:
    times, weight = data["times"], data["weight"]["progress"]
    offers, progress = times["offers"], times["progress"]
    return "\n".join(
        [
            f"**Server time.** {pages.CLIENTS} clients at once, each logged in as its own customer, "
            f"{data['setup']['requests_each']} requests each per page: the offers page (a page of "
            f"{data['setup']['offers']} offers) took the web server {offers['server']['p50_ms']:,.0f} ms "
            f"(p50) and {offers['server']['p99_ms']:,.0f} ms (p99), a booking's progress page "
            f"{progress['server']['p50_ms']:,.0f} / {progress['server']['p99_ms']:,.0f} ms (gunicorn's own "
            "time for each request; the client's on loopback beside it).",
            "",
            _table(
                [
                    "page",
                    "requests",
                    "server p50 ms",
                    "server p99 ms",
                    "client p50 ms",
                    "client p99 ms",
                    "web CPU ms/request",
                    "HTML bytes",
                ],
                pages.time_rows(data),
            ),
            "",
            f"**Page weight.** Chromium loading the progress page (through the router, its stream "
            f"opened with status {weight['stream_status']}) transferred {weight['transferred_bytes']:,} "
            f"bytes in {len(weight['resources'])} requests ({weight['decoded_bytes']:,} bytes decoded): "
            "the HTML as rendered, the CSS and scripts gzipped as WhiteNoise serves them. The stream "
            "stays open and is not counted.",
            "",
            _table(
                ["request", "type", "status", "encoding", "bytes transferred", "bytes decoded"],
                pages.weight_rows(data),
            ),
            "",
            f"Target (progress page <= 100 KB transferred, scripts included): {_met(data['target_met'])}.",
        ]
    )


RENDER = {
    "api": ("1. Customer API", _api),
    "independence": ("2. Partner independence", _independence),
    "pipeline": ("3. Pipeline", _pipeline),
    "sweeper": ("4. Sweeper", _sweeper),
    "timeline": ("5. Timeline", _timeline),
    "streams": ("6. Live status", _streams),
    "pages": ("7. Customer pages", _pages),
    "webhook_flood": ("8. Webhook flood", webhook_flood.markdown),
    "payments": ("9. Payments", payments.markdown),
}


def _sections(block: str) -> dict[str, str]:
    """The body of each `### title` section of a generated block."""
    sections: dict[str, str] = {}
    for chunk in block.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip()] = body.replace(END, "").strip("\n")
    return sections


def generated(results_dir: Path = common.RESULTS_DIR, previous: str = "") -> str:
    """The figures section. A benchmark without results here (they are not committed) keeps its
    section from `previous`, the block as it stood: a report after one benchmark updates that
    one's figures and leaves the others' as they were last recorded."""
    kept = _sections(previous)
    parts = [BEGIN, ""]
    for name in ORDER:
        path = results_dir / f"{name}.json"
        title, render = RENDER[name]
        parts.append(f"### {title}")
        parts.append("")
        if not path.exists():
            parts += [kept.get(title, "Not run yet."), ""]
            continue
        data = json.loads(path.read_text())
        parts += [_machine(data), "", render(data), "", f"![{title}](img/bench-{name}.png)", ""]
    parts.append(END)
    return "\n".join(parts)


def write(doc: Path = DOC) -> Path:
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        previous, tail = rest.split(END, 1)
        text = head + generated(previous=previous) + tail
    else:
        text = text.rstrip() + "\n\n" + generated() + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"wrote {doc.relative_to(common.ROOT)}")
    return doc
