"""The few kernel facilities a cluster run uses: network namespaces, links and CPU cgroups.

Everything goes through iproute2 (`ip`) and the cgroup file system, which every Linux with
network namespaces has; no iptables or nft is needed. All of it needs root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from chaos.cluster.plan import run_id_of
from chaos.procs import wait_until

CGROUP_V1_CPUACCT = Path("/sys/fs/cgroup/cpuacct")
CGROUP_V2 = Path("/sys/fs/cgroup")


class KernelCommandFailed(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> str:
    completed = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and completed.returncode != 0:
        raise KernelCommandFailed(f"ip {' '.join(args)}: {completed.stderr.strip()}")
    return completed.stdout


def namespaces() -> list[str]:
    # "name (id: 3)" per line
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def links() -> list[str]:
    # "5: name@if4: <BROADCAST,...> ..." per line
    return [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").splitlines()]


def networks_in_use() -> list[str]:
    """Every IPv4 network this machine has an address in or a route to."""
    found = [line.split()[3] for line in ip("-o", "-4", "addr", "show").splitlines()]
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        destination = line.split()[0] if line.split() else "default"
        if destination not in ("default", "broadcast", "local", "unreachable", "blackhole"):
            found.append(destination)
    return found


def namespace_pids(name: str) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", name, check=False).split()]


def remove_namespace(name: str) -> None:
    """SIGKILL whatever still runs in the namespace, then delete it (its links go with it)."""
    for pid in namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not namespace_pids(name), timeout_s=10, interval_s=0.1)
    ip("netns", "delete", name, check=False)


def remove_link(name: str) -> None:
    ip("link", "delete", name, check=False)  # already gone with its namespace: fine


def leftover_names(live_run_ids: set[str]) -> dict[str, list[str]]:
    """Namespaces, links and cgroups named by a run whose owner is no longer alive."""

    def dead(names: list[str]) -> list[str]:
        return [n for n in names if (run_id := run_id_of(n)) and run_id not in live_run_ids]

    return {
        "netns": dead(namespaces()),
        "link": dead(links()),
        "cgroup": [str(CpuGroups.root_dir() / n) for n in dead(CpuGroups.names())],
    }


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


class CpuGroups:
    """One CPU-accounting cgroup per host: how many CPU seconds each host's processes used.

    cgroup v1 (`cpuacct`) or v2; where neither can be written, no CPU figures are reported.
    """

    def __init__(self, name: str) -> None:
        root = self.root_dir()
        self.path = root / name if root is not None else None
        self.created: list[Path] = []

    @staticmethod
    def root_dir() -> Path | None:
        if (CGROUP_V1_CPUACCT / "cpuacct.usage").exists():
            return CGROUP_V1_CPUACCT
        if (CGROUP_V2 / "cgroup.controllers").exists():
            return CGROUP_V2
        return None

    @classmethod
    def names(cls) -> list[str]:
        root = cls.root_dir()
        return [p.name for p in root.iterdir() if p.is_dir()] if root is not None else []

    def create(self, host: str) -> Path | None:
        """The cgroup's `cgroup.procs` file for the host, or None without accounting."""
        if self.path is None:
            return None
        try:
            (self.path / host).mkdir(parents=True, exist_ok=True)
        except OSError:
            self.path = None
            return None
        return self.path / host / "cgroup.procs"

    def procs_file(self, host: str) -> Path | None:
        if self.path is None or not (self.path / host).is_dir():
            return None
        return self.path / host / "cgroup.procs"

    def cpu_seconds(self, host: str) -> float | None:
        if self.path is None:
            return None
        group = self.path / host
        try:
            if (group / "cpuacct.usage").exists():
                return int((group / "cpuacct.usage").read_text()) / 1e9
            for line in (group / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except OSError:
            return None
        return None


def remove_cgroup(path: str) -> None:
    """Remove a cgroup and its children (empty by now: their processes were killed)."""
    root = Path(path)
    if not root.is_dir():
        return
    for child in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        _rmdir_when_empty(child)
    _rmdir_when_empty(root)


def _rmdir_when_empty(path: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while the last killed process is being reaped
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
