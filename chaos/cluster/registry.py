"""What a cluster run created, written down before each thing is created, and its removal.

The registry is a JSON file per run in `/run/chaos-cluster/` (a tmpfs: a reboot clears it, as
it clears namespaces), beside a lock file the run holds (`flock`) for as long as it lives. A
crashed or killed run leaves the file with its lock free: `sweep()` (at the start of every
cluster run, and `manage.py chaos --cleanup`) removes what such runs left, from their files
and, for anything created before it was written down, by name (`plan.NAME_PATTERN`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from chaos.cluster import kernel

DEFAULT_STATE_DIR = Path("/run/chaos-cluster")
# Teardown order: processes die with their namespaces, then cables, the bridge, the cgroups
# (empty only once their processes are gone) and the data directories.
TEARDOWN_ORDER = ("netns", "link", "bridge", "cgroup", "dir")


def state_dir() -> Path:
    if os.access(DEFAULT_STATE_DIR.parent, os.W_OK):
        return DEFAULT_STATE_DIR
    return Path(tempfile.gettempdir()) / "chaos-cluster"


class Registry:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.directory = state_dir()  # one place for every run: a sweep must see every live lock
        self.path = self.directory / f"{run_id}.json"
        self.lock_path = self.directory / f"{run_id}.lock"
        self.resources: list[tuple[str, str]] = []
        self._lock: IO[str] | None = None
        self._meta: dict[str, Any] = {}

    def claim(self, *, run_dir: Path) -> None:
        """Hold this run's lock and start its file; the lock ends with the process, however it ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = self.lock_path.open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._meta = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "run_dir": str(run_dir),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._write()

    def record(self, kind: str, name: str) -> None:
        """Write down a resource before creating it: a crash in between leaves it listed."""
        if kind not in TEARDOWN_ORDER:
            raise ValueError(f"unknown resource kind {kind!r}")
        self.resources.append((kind, name))
        self._write()

    def teardown(self) -> list[str]:
        """Remove every recorded resource; return what was removed and what could not be."""
        done = _remove(self.resources)
        self.resources = []
        self.release()
        return done

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            self._lock.close()  # releases the flock
            self._lock = None

    def _write(self) -> None:
        data = {**self._meta, "resources": [list(r) for r in self.resources]}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1))
        temporary.replace(self.path)


def sweep() -> list[str]:
    """Remove what cluster runs that are no longer alive left behind; return what was removed."""
    directory = state_dir()
    live: set[str] = set()
    removed: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        run_id = path.stem
        if _held(directory / f"{run_id}.lock"):
            live.add(run_id)
            continue
        try:
            resources = [tuple(r) for r in json.loads(path.read_text()).get("resources", [])]
        except (OSError, ValueError):
            resources = []
        removed += _remove([(str(kind), str(name)) for kind, name in resources])
        for leftover in (path, directory / f"{run_id}.lock"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    by_name = kernel.leftover_names(live)
    removed += _remove([(kind, name) for kind in ("netns", "link", "cgroup") for name in by_name[kind]])
    return removed


def _held(lock_path: Path) -> bool:
    """Whether a live process holds this lock (our own run included: flock is per open file)."""
    if not lock_path.exists():
        return False
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _remove(resources: list[tuple[str, str]]) -> list[str]:
    done: list[str] = []
    for kind in TEARDOWN_ORDER:
        for name in reversed([n for k, n in resources if k == kind]):
            try:
                _REMOVERS[kind](name)
            except Exception as exc:  # noqa: BLE001 - remove the rest; report what stayed
                done.append(f"{kind} {name}: NOT removed ({exc})")
            else:
                done.append(f"{kind} {name}")
    return done


_REMOVERS = {
    "netns": kernel.remove_namespace,
    "link": kernel.remove_link,
    "bridge": kernel.remove_link,
    "cgroup": kernel.remove_cgroup,
    "dir": lambda path: shutil.rmtree(path, ignore_errors=True),
}
