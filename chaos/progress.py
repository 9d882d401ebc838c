"""The live display: what the clients got, where the bookings stand, what was done to the system.

On a terminal it is a rich Live panel refreshed every second; elsewhere (CI logs) one plain line
every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from django.db import connection
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

PLAIN_EVERY_S = 5.0
FAILED = ("rejected", "failed", "expired")
PENDING = ("requested", "submitting", "pending_partner", "unknown", "cancel_requested")


class ProgressDisplay:
    def __init__(
        self, *, console: Console, live: bool, total: int, poll: Callable[[], dict[str, Any]]
    ) -> None:
        self.console = console
        self.live = live
        self.poll = poll
        self.phase = "starting"
        self.latest: dict[str, Any] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-progress", daemon=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._accepted = self._bar.add_task("accepted", total=total)
        self._at_rest = self._bar.add_task("at rest", total=total)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if not self.live:
            self.console.print(f"[chaos] phase: {phase}", highlight=False, markup=False)

    def _run(self) -> None:
        try:
            if self.live:
                with Live(self._render(), console=self.console, refresh_per_second=2, transient=True) as live:
                    while not self._halt.wait(1.0):
                        self._refresh()
                        live.update(self._render())
            else:
                while not self._halt.wait(PLAIN_EVERY_S):
                    self._refresh()
                    self.console.print(self._line(), highlight=False, markup=False, soft_wrap=True)
        finally:
            connection.close()

    def _refresh(self) -> None:
        try:
            self.latest = self.poll()
        except Exception as exc:  # noqa: BLE001 - a failed poll (database dropped) must not end the display
            self.latest = {**self.latest, "poll_error": type(exc).__name__}

    def _figures(self) -> dict[str, int]:
        data = self.latest
        states = data.get("states", {})
        return {
            "accepted": data.get("accepted", 0),
            "confirmed": states.get("confirmed", 0),
            "failed": sum(states.get(s, 0) for s in FAILED),
            "cancelled": states.get("cancelled", 0),
            "needs_attention": states.get("needs_attention", 0),
            "pending": sum(states.get(s, 0) for s in PENDING),
            "kills": data.get("worker_kill", 0),
            "redis": data.get("redis_restart", 0),
            "db_drops": data.get("db_drop", 0),
        }

    def _render(self) -> Group:
        figures = self._figures()
        self._bar.update(self._accepted, completed=figures["accepted"])
        at_rest = figures["confirmed"] + figures["failed"] + figures["cancelled"] + figures["needs_attention"]
        self._bar.update(self._at_rest, completed=at_rest)
        table = Table.grid(padding=(0, 2))
        table.add_row("phase", self.phase, "elapsed", f"{time.monotonic() - self._started:.0f}s")
        table.add_row("confirmed", str(figures["confirmed"]), "failed", str(figures["failed"]))
        table.add_row("pending", str(figures["pending"]), "needs attention", str(figures["needs_attention"]))
        table.add_row("cancelled", str(figures["cancelled"]), "worker kills", str(figures["kills"]))
        table.add_row("redis restarts", str(figures["redis"]), "db drops", str(figures["db_drops"]))
        if self.latest.get("poll_error"):
            table.add_row("last poll", f"failed: {self.latest['poll_error']}", "", "")
        return Group(self._bar, table)

    def _line(self) -> str:
        f = self._figures()
        return (
            f"[chaos] {time.monotonic() - self._started:5.0f}s {self.phase}: accepted={f['accepted']} "
            f"confirmed={f['confirmed']} failed={f['failed']} cancelled={f['cancelled']} "
            f"pending={f['pending']} needs_attention={f['needs_attention']} kills={f['kills']} "
            f"redis_restarts={f['redis']} db_drops={f['db_drops']}"
        )
