"""Write the figures of `bench/results/*.json` into `docs/benchmarks.md`.

Only the part between the two markers is generated; the analysis around it is written by hand
and kept as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import common, independence, output

DOC = common.ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:generated:begin (python -m bench report rewrites this part) -->"
END = "<!-- bench:generated:end -->"
ORDER = ("api", "independence", "pipeline", "sweeper", "timeline")


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
    )


def _met(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def _api(data: dict[str, Any]) -> str:
    rows = []
    for clients, row in data["by_concurrency"].items():
        for name in ("baseline", "bookings"):
            s = row[name]
            rows.append(
                [
                    f"{name}, {clients} clients",
                    s["throughput_rps"],
                    s["p50_ms"],
                    s["p95_ms"],
                    s["p99_ms"],
                    s["requests_ok"],
                    sum(s["errors"].values()),
                    f"{row['ratio'] * 100:.0f}%" if name == "bookings" else "",
                ]
            )
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
    "then each round's requests, drawn again; `bench.common.percentile_change_interval`). It "
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


RENDER = {
    "api": ("1. Customer API", _api),
    "independence": ("2. Partner independence", _independence),
    "pipeline": ("3. Pipeline", _pipeline),
    "sweeper": ("4. Sweeper", _sweeper),
    "timeline": ("5. Timeline", _timeline),
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
