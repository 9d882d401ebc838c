"""The cluster's network and its cleanup, with real namespaces (root only).

What a cut and a partition do to real connections, that a run removes what it created, and that
a sweep removes what a killed run left while it leaves a live run's resources alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.cluster import kernel, registry
from chaos.cluster.network import Network
from chaos.cluster.plan import build_plan, pick_subnet
from chaos.config import ClusterOptions, new_run_id
from chaos.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
PORT = 9000

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: creates network namespaces, veth links and a bridge"
    ),
    # One machine has one set of the cluster's bridge, links and addresses: one test at a time.
    pytest.mark.xdist_group("cluster-network"),
]


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    run_id = new_run_id()
    plan = build_plan(
        run_id=run_id,
        subnet=pick_subnet(kernel.networks_in_use()),
        options=ClusterOptions(web_hosts=1, worker_hosts=2, standby_scheduler=False),
    )
    claimed = registry.Registry(run_id)
    claimed.claim(run_dir=tmp_path)
    network = Network(plan=plan, registry=claimed)
    try:
        network.create()
        yield network
    finally:
        network.destroy()


@pytest.fixture
def listener(network: Network) -> Iterator[str]:
    """A TCP server on the partners host; yields its address."""
    partners = network.plan.host("partners")
    serve = [sys.executable, "-m", "http.server", str(PORT), "--bind", partners.address]
    server = subprocess.Popen(
        network.on_host(partners, serve),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: reaches(network, None, partners.address), timeout_s=20)
        yield partners.address
    finally:
        server.kill()
        server.wait(10)


def reaches(network: Network, host: str | None, address: str) -> bool:
    """Whether a TCP connection from the host (None: this machine) to address:PORT succeeds."""
    connect = f"import socket; socket.create_connection(('{address}', {PORT}), timeout=1)"
    probe = [sys.executable, "-c", connect]
    argv = network.on_host(network.plan.host(host), probe) if host else probe
    return subprocess.run(argv, capture_output=True, timeout=20, check=False).returncode == 0


def test_a_partition_separates_two_hosts_and_no_one_else(network: Network, listener: str):
    assert reaches(network, "worker-2", listener)

    network.partition("worker-2", "partners")
    cut_off = [reaches(network, "worker-2", listener), reaches(network, "worker-1", listener)]
    network.mend("worker-2", "partners")

    assert cut_off == [False, True]
    assert reaches(network, "worker-2", listener)


def test_a_cut_host_is_unreachable_until_it_is_reconnected(network: Network, listener: str):
    network.cut("partners")
    # the link is down at once; a busy machine may still finish a connection it had begun
    unreachable = wait_until(lambda: not reaches(network, None, listener), timeout_s=10)
    while_cut = [not unreachable, reaches(network, "worker-1", listener)]
    network.reconnect("partners")

    assert while_cut == [False, False]
    assert wait_until(lambda: reaches(network, "worker-1", listener), timeout_s=10)


def test_processes_on_a_host_are_counted_in_its_cpu_group(network: Network):
    busy = [sys.executable, "-c", "sum(i * i for i in range(3_000_000))"]
    subprocess.run(network.on_host(network.plan.host("worker-1"), busy), check=True, timeout=60)

    used = network.cpu_seconds()
    if network.cpu.path is None:
        pytest.skip("no writable cgroup hierarchy for CPU accounting on this machine")
    assert used["worker-1"] > 0.05
    assert used["worker-2"] < used["worker-1"]


def test_a_run_removes_everything_it_created(tmp_path: Path):
    run_id = new_run_id()
    plan = build_plan(
        run_id=run_id,
        subnet=pick_subnet(kernel.networks_in_use()),
        options=ClusterOptions(web_hosts=1, worker_hosts=1),
    )
    claimed = registry.Registry(run_id)
    claimed.claim(run_dir=tmp_path)
    network = Network(plan=plan, registry=claimed)
    network.create()
    data = tmp_path / "pgdata"
    claimed.record("dir", str(data))
    data.mkdir()

    removed = network.destroy()

    assert not [r for r in removed if "NOT removed" in r]
    assert leftovers(run_id) == {"netns": [], "link": [], "cgroup": []}
    assert not data.exists()
    assert not claimed.path.exists()


def test_a_sweep_removes_what_a_killed_run_left_and_spares_a_live_one(tmp_path: Path):
    # Given a run killed with SIGKILL after creating a namespace, a stray link named by another
    # dead run, and a live run (this process) with a namespace of its own
    killed = new_run_id()
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from chaos.cluster import kernel, registry\n"
        f"r = registry.Registry('{killed}')\n"
        f"r.claim(run_dir=Path('{tmp_path}'))\n"
        f"r.record('netns', 'ccl{killed}-db')\n"
        f"kernel.ip('netns', 'add', 'ccl{killed}-db')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    crashed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60, check=False)
    assert crashed.returncode == -9
    stray = new_run_id()
    kernel.ip("link", "add", f"ccl{stray}br", "type", "bridge")
    live = new_run_id()
    alive = registry.Registry(live)
    alive.claim(run_dir=tmp_path)
    alive.record("netns", f"ccl{live}-db")
    kernel.ip("netns", "add", f"ccl{live}-db")
    try:
        # When a sweep runs
        removed = registry.sweep()

        # Then the dead runs' things are gone and the live run's namespace is still there
        assert {f"netns ccl{killed}-db", f"link ccl{stray}br"} <= set(removed)
        assert leftovers(killed)["netns"] == [] and leftovers(stray)["link"] == []
        assert f"ccl{live}-db" in kernel.namespaces()
    finally:
        alive.teardown()
    assert f"ccl{live}-db" not in kernel.namespaces()


def leftovers(run_id: str) -> dict[str, list[str]]:
    found = kernel.leftover_names(live_run_ids=set())
    return {kind: [n for n in names if run_id in n] for kind, names in found.items()}
