"""Dead processes' counts, folded into one archive file per kind.

prometheus_client's multiprocess mode keeps each process's counts in files of its own
(`counter_<pid>.db`, `histogram_<pid>.db`, ...) and each scrape reads and sums every file in the
directory. A process's files outlive it, as they must (totals never go back), so on a machine
whose directory is emptied only at boot every restart, release and one-off `manage.py` command
left files each scrape kept reading: its cost grew with the processes that had ever run. A scrape
now first folds the files of processes gone into `<kind>_archive.db` (summed, or the max or min
for gauges in those modes), then reads: as many files as processes run, and the same figures.

The fold is exact whatever stops it. It runs under an exclusive lock (`fold.lock`) while scrapes
read under a shared one, so no scrape sees a count both in the archive and in its old file; it
writes the new archives into a directory of its own inside it (`fold-staging/`, which no scrape
reads), then a journal naming what they replace (the commit point), then moves them in and
removes the old files. A fold stopped before its journal left nothing that counts (the staging is
discarded); one stopped after is finished before anything reads again (a scrape that finds the
journal finishes it first). A fold that fails (a full or missing directory) is logged and left
for the next scrape: the scrape still answers. Live gauges are not folded: a dead process's go
(`dead_processes`). Gauges kept per process (`all`) or by time (`mostrecent`) are left as they are.

A pid handed to a new process between the fold's check that its process is gone and its removal
of the file (the pid namespace wrapping around within those milliseconds) would leave the new
process counting into a removed file, unread until it restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator

from prometheus_client.mmap_dict import MmapedDict

from config.metrics.pids import running

# How the values of one key in several files become one, by the file name's kind.
_COMBINE: dict[str, Callable[[float, float], float]] = {
    "counter": lambda a, b: a + b,
    "histogram": lambda a, b: a + b,
    "summary": lambda a, b: a + b,
    "gauge_sum": lambda a, b: a + b,
    "gauge_max": max,
    "gauge_min": min,
}
_PROCESS_FILE = re.compile(r"(counter|histogram|summary|gauge_sum|gauge_max|gauge_min)_(\d+)\.db")
LOCK, JOURNAL, STAGING = "fold.lock", "fold.journal", "fold-staging"

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def reading(directory: str) -> Iterator[None]:
    """Read the directory's files under the shared lock: never beside a fold half done (one that
    stopped after its commit point is finished first, once: a fold that cannot finish is logged
    and the files read as they are). A directory this process cannot write is read unlocked, as
    prometheus_client alone would."""
    for attempt in (1, 2):
        try:
            lock = open(os.path.join(directory, LOCK), "a")  # noqa: SIM115 - closed below
        except OSError:
            yield
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                if attempt == 2 or not os.path.exists(os.path.join(directory, JOURNAL)):
                    yield
                    return
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        fold_dead_processes(directory)  # waits for the lock, finishes the fold


def fold_dead_processes(directory: str) -> int:
    """Fold the files of processes no longer running into the archives; how many were folded.
    Skipped while another fold runs or a scrape reads (the next scrape folds), unless a fold was
    stopped after its commit point: that one is finished first, whatever it waits for."""
    interrupted = os.path.exists(os.path.join(directory, JOURNAL))
    flags = fcntl.LOCK_EX if interrupted else fcntl.LOCK_EX | fcntl.LOCK_NB
    try:
        with _locked(directory, flags):
            finish_fold(directory)
            dead = _dead_process_files(directory)
            if not dead:
                return 0
            stage_fold(directory, dead)
            finish_fold(directory)
            return len(dead)
    except BlockingIOError:
        return 0
    except OSError as exc:  # the directory full, gone or not ours: counted as they are, folded later
        logger.warning("metrics fold skipped: %s", exc)
        return 0


def stage_fold(directory: str, dead: list[str]) -> None:
    """Write the archives that include `dead`, then the journal that commits them. The lock held."""
    staging = os.path.join(directory, STAGING)
    shutil.rmtree(staging, ignore_errors=True)  # a fold stopped before its journal
    os.mkdir(staging)
    by_archive: dict[str, list[str]] = {}
    for name in dead:
        kind = _PROCESS_FILE.fullmatch(name)[1]  # type: ignore[index]
        by_archive.setdefault(f"{kind}_archive.db", []).append(name)
    for archive, names in by_archive.items():
        combine = _COMBINE[archive.removesuffix("_archive.db")]
        values: dict[str, float] = {}
        for source in [archive, *names]:
            for key, value in _values(os.path.join(directory, source)):
                values[key] = combine(values[key], value) if key in values else value
        staged = MmapedDict(os.path.join(staging, archive))
        for key, value in values.items():
            staged.write_value(key, value, 0.0)
        staged.close()
    journal = os.path.join(directory, JOURNAL)
    with open(f"{journal}.tmp", "w") as file:
        json.dump({"archives": sorted(by_archive), "folded": sorted(dead)}, file)
    os.replace(f"{journal}.tmp", journal)  # the commit point


def finish_fold(directory: str) -> None:
    """Move a committed fold's archives in and remove the files they include; drop a staging
    that was never committed. The lock held."""
    journal = os.path.join(directory, JOURNAL)
    staging = os.path.join(directory, STAGING)
    try:
        with open(journal) as file:
            committed = json.load(file)
    except FileNotFoundError:
        shutil.rmtree(staging, ignore_errors=True)
        return
    for archive in committed["archives"]:
        with contextlib.suppress(FileNotFoundError):  # moved in before the fold stopped
            os.replace(os.path.join(staging, archive), os.path.join(directory, archive))
    for name in committed["folded"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    os.remove(journal)
    shutil.rmtree(staging, ignore_errors=True)


def _dead_process_files(directory: str) -> list[str]:
    alive: dict[int, bool] = {}
    dead = []
    for name in os.listdir(directory):
        if match := _PROCESS_FILE.fullmatch(name):
            pid = int(match[2])
            if pid not in alive:
                alive[pid] = running(pid)
            if not alive[pid]:
                dead.append(name)
    return dead


def _values(path: str) -> list[tuple[str, float]]:
    """The file's keys and values; none for a file never written (created, then its process
    killed before it sized it) or not there (the first fold of its kind)."""
    try:
        if os.path.getsize(path) < 8:
            return []
        return [(key, value) for key, value, _, _ in MmapedDict.read_all_values_from_file(path)]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _locked(directory: str, flags: int) -> Iterator[None]:
    with open(os.path.join(directory, LOCK), "a") as lock:
        fcntl.flock(lock, flags)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
