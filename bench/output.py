"""Output of the benchmarks: rich tables, JSON results, matplotlib figures, pyinstrument profiles."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import IMG_DIR, RESULTS_DIR, ROOT


def write_json(name: str, data: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(cell) for cell in row))
    Console(width=160).print(table)


def latency_row(label: str, stats: dict[str, Any], share: object = "") -> list[object]:
    """A load's row as the latency tables show it: throughput, p50/p95/p99, answered, errors,
    and (for the measured side) its share of the baseline."""
    return [
        label,
        stats["throughput_rps"],
        stats["p50_ms"],
        stats["p95_ms"],
        stats["p99_ms"],
        stats["requests_ok"],
        sum(stats["errors"].values()),
        share,
    ]


def fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, name: str, img_dir: Path = IMG_DIR) -> Path:
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / f"bench-{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def profiled(
    name: str, fn: Callable[[], Any], *, results_dir: Path = RESULTS_DIR
) -> tuple[Any, dict[str, Any]]:
    """Run `fn` under pyinstrument; the call tree goes to `<results>/<name>-profile.txt`, the
    functions with the most self time and the tree's top lines come back for the JSON."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        result = fn()
    finally:
        profiler.stop()
    tree = profiler.output_text(unicode=False, color=False)
    flat = profiler.output_text(unicode=False, color=False, flat=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-profile.txt"
    path.write_text(f"{tree}\n\n--- by self time ---\n{flat}")
    lines = [line for line in tree.splitlines() if line.strip()]
    return result, {
        "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "top_self_time": [line.strip() for line in flat.splitlines() if line.strip()][2:14],
        "tree_top": lines[:40],
    }
