"""A dead process's live gauges, out of the machine's metrics directory.

A gauge in a `live*` multiprocess mode (Dramatiq's `dramatiq_messages_inprogress` is `livesum`)
sums the processes that run: prometheus_client keeps each process's in a file of its own
(`gauge_livesum_<pid>.db`), which must go when that process ends
(`prometheus_client.multiprocess.mark_process_dead`). Nothing else removes it: the directory
outlives any one process (emptied only while none of the machine's processes runs), so what a
killed process held, a message in progress, stayed in every scrape. Only these files go: a dead
process's counters, histograms and other gauges stay counted (totals never go back), folded into
one archive per kind by each scrape (config/metrics/archive.py).

Both ways a file goes are here:

- gunicorn's master reaps its workers: its `child_exit` hook (gunicorn.conf.py) forgets the worker
  at once, before a new worker can be given the same pid and read the old value back;
- a Dramatiq worker process that dies is seen by Dramatiq's main process only, which runs no code
  of ours and has no hook for it (a killed process runs nothing; one that stops cleanly forgets
  itself, Dramatiq's `after_worker_shutdown`), and a scheduler or a gunicorn master killed outright
  by nobody of ours. So each scrape (`/metrics`, the workers' port: `collect`) first forgets every
  pid that has a live gauge file and no process: it reads what it then answers, and costs a
  directory listing and a signal 0 per pid.

The pids are those of the machine's one pid namespace, as the file names already assume
(processes with pid namespaces of their own, containers, cannot share a directory anyway).
Outside Django: gunicorn's master and the workers' exposition process import this.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from config.metrics import archive, pids

# prometheus_client's file of a gauge whose multiprocess mode is live*: `gauge_<mode>_<pid>.db`.
LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def collect(registry: CollectorRegistry, directory: str) -> None:
    """Every process's figures in `directory`, less the live gauges of processes gone, with the
    other files of processes gone folded into their archives first (config/metrics/archive.py)."""
    forget_dead_processes(directory)
    archive.fold_dead_processes(directory)
    _WrittenFilesCollector(registry, path=directory)


class _WrittenFilesCollector(MultiProcessCollector):
    """prometheus_client's collector, reading only files a process has begun to write: a file
    exists empty between its creation and its first size (a process starting as the scrape
    reads, or one killed at that moment), and prometheus_client fails the whole scrape on it
    (`struct.error`: /metrics answered 500). An empty file holds no figure yet; a dead process's
    goes with its other live gauges, the rest stay until they are written."""

    def collect(self):  # type: ignore[override]
        with archive.reading(self._path):  # never beside a fold half done
            files = glob.glob(os.path.join(self._path, "*.db"))
            return self.merge([name for name in files if _written(name)], accumulate=True)


def _written(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8  # its first field, how much of it is used
    except OSError:  # gone meanwhile: removed by another scrape or the directory's cleanup
        return False


def forget_process(pid: int, directory: str) -> None:
    """Remove `pid`'s live gauge files: mark_process_dead's work, except that it never raises (a
    file a concurrent scrape removed first, a directory gone): in gunicorn's master (`child_exit`)
    an exception would stop the server."""
    for name, file_pid in _live_gauge_files(directory):
        if file_pid == pid:
            _remove(directory, name)


def forget_dead_processes(directory: str) -> None:
    running: dict[int, bool] = {}
    for name, pid in _live_gauge_files(directory):
        if pid not in running:
            running[pid] = pids.running(pid)
        if not running[pid]:
            _remove(directory, name)


def _live_gauge_files(directory: str) -> list[tuple[str, int]]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [(name, int(match[1])) for name in names if (match := LIVE_GAUGE_FILE.fullmatch(name))]


def _remove(directory: str, name: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(os.path.join(directory, name))
