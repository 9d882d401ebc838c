"""Dramatiq worker processes yield the CPU to the customer path.

When web and workers share cores, a booking's pipeline (its partner call, the outcome, the
webhook) runs in bursts that delay customer requests arriving meanwhile: the customers' p99
doubled in the partner-independence benchmark (docs/benchmarks.md). Async work is built to
absorb delay, so workers run at a lower CPU priority (`WORKER_NICE`, 0 turns it off) and give
way whenever the customer path wants the CPU; when it does not, they get all of it.

With the kernel's session autogrouping (`/proc/sys/kernel/sched_autogroup_enabled`), the CPU is
shared between sessions first and a process's nice only ranks it within its session, so the
session's autogroup gets the same nice value, but only when the session holds nothing but this
worker (its launcher, its sibling worker processes and their children): honcho and the
benchmarks start each process in its own session. Under systemd or containers, CPU weights of
the cgroups do this job (README, "Against PostgreSQL and Redis").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

PROC = Path("/proc")


def _stat(pid: int, proc: Path) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, None if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3])


def session_is_ours(pid: int, proc: Path = PROC) -> bool:
    """Whether every process in `pid`'s session is one of its ancestors, a sibling (another
    worker process of the same parent) or a descendant of either."""
    own = _stat(pid, proc)
    if own is None:
        return False
    parent, session = own
    members: dict[int, int] = {}  # pid -> parent pid, for the session's processes
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name), proc)) and stat[1] == session:
            members[int(entry.name)] = stat[0]
    ancestors = set()
    cursor = parent
    while cursor in members and cursor not in ancestors:
        ancestors.add(cursor)
        cursor = members[cursor]

    def descends_from_parent(member: int) -> bool:
        seen = set()
        while member in members and member not in seen:
            if members[member] == parent:
                return True
            seen.add(member)
            member = members[member]
        return False

    return all(m == pid or m in ancestors or descends_from_parent(m) for m in members)


def lower_cpu_priority(nice: int, *, proc: Path = PROC) -> dict[str, object]:
    """Raise this process's nice value to `nice` (never lower it), and its session's autogroup
    nice when the session is only this worker. Returns what was done, for the log."""
    done: dict[str, object] = {"nice": os.nice(0)}
    if nice <= 0:
        return done
    if done["nice"] < nice:
        done["nice"] = os.nice(nice - os.nice(0))
    autogroup = proc / "self" / "autogroup"
    enabled = proc / "sys" / "kernel" / "sched_autogroup_enabled"
    try:
        if enabled.read_text().strip() != "1":
            return done
        if not session_is_ours(os.getpid(), proc):
            done["autogroup"] = "shared session: left alone"
            return done
        autogroup.write_text(str(nice))
        done["autogroup"] = autogroup.read_text().strip()
    except OSError as exc:  # no /proc, or not allowed: the nice value alone still applies
        done["autogroup"] = f"unchanged ({exc.strerror or exc})"
    return done


class WorkerPriorityMiddleware(Middleware):
    """Lowers each worker process's CPU priority as it boots (`settings.WORKER_NICE`)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from django.conf import settings

        done = lower_cpu_priority(settings.WORKER_NICE)
        logger.info("worker cpu priority", extra={"worker_nice": settings.WORKER_NICE, **done})
