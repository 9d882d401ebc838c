"""The cluster's network: one namespace per host, each joined to one bridge by a veth cable.

The bridge carries the subnet's first address, so this machine (the harness and its clients)
reaches every host, while no host has a route beyond the subnet. Faults:

- `cut(host)`: its cable's outer end goes down; the host keeps running and keeps its sockets,
  but its packets go nowhere, as when a machine's switch port dies;
- `partition(a, b)`: each of the two hosts is told that the other lives at a hardware address
  nobody has (a permanent neighbour entry), so frames between them vanish silently in both
  directions while both still reach everyone else. No iptables or nft is needed.
"""

from __future__ import annotations

from chaos.cluster import kernel
from chaos.cluster.plan import ClusterPlan, Host
from chaos.cluster.registry import Registry

NOWHERE_MAC = "02:00:00:00:00:01"  # locally administered, never assigned to a host of ours


class Network:
    def __init__(self, *, plan: ClusterPlan, registry: Registry) -> None:
        self.plan = plan
        self.registry = registry
        self.cpu = kernel.CpuGroups(plan.prefix)

    def create(self) -> None:
        plan = self.plan
        self.registry.record("bridge", plan.bridge)
        kernel.ip("link", "add", plan.bridge, "type", "bridge")
        kernel.ip("addr", "add", f"{plan.gateway}/{plan.subnet.prefixlen}", "dev", plan.bridge)
        kernel.ip("link", "set", plan.bridge, "up")
        if self.cpu.path is not None:
            self.registry.record("cgroup", str(self.cpu.path))
        for host in plan.hosts:
            self._add_host(host)

    def _add_host(self, host: Host) -> None:
        plan, namespace = self.plan, self.plan.netns(host)
        self.registry.record("netns", namespace)
        kernel.ip("netns", "add", namespace)
        self.registry.record("link", plan.link(host))
        kernel.ip("link", "add", plan.link(host), "type", "veth", "peer", "name", plan.peer(host))
        kernel.ip("link", "set", plan.peer(host), "netns", namespace)
        kernel.ip("-n", namespace, "link", "set", plan.peer(host), "name", "eth0")
        kernel.ip("-n", namespace, "addr", "add", f"{host.address}/{plan.subnet.prefixlen}", "dev", "eth0")
        kernel.ip("-n", namespace, "link", "set", "eth0", "up")
        kernel.ip("-n", namespace, "link", "set", "lo", "up")
        kernel.ip("link", "set", plan.link(host), "master", plan.bridge)
        kernel.ip("link", "set", plan.link(host), "up")
        self.cpu.create(host.name)

    def destroy(self) -> list[str]:
        return self.registry.teardown()

    # --- running a process on a host ------------------------------------------------------------
    def on_host(self, host: Host, argv: list[str], *, user: str | None = None) -> list[str]:
        """argv that runs `argv` on the host: in its namespace and its CPU cgroup, as `user`."""
        wrapped = ["ip", "netns", "exec", self.plan.netns(host)]
        if user:
            wrapped += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        wrapped += argv
        procs = self.cpu.procs_file(host.name)
        if procs is None:
            return wrapped
        # The shell joins the cgroup, then becomes `ip`: everything the host forks is counted.
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *wrapped]

    def cpu_seconds(self) -> dict[str, float | None]:
        return {host.name: self.cpu.cpu_seconds(host.name) for host in self.plan.hosts}

    # --- faults ----------------------------------------------------------------------------
    def cut(self, name: str) -> None:
        kernel.ip("link", "set", self.plan.link(self.plan.host(name)), "down")

    def reconnect(self, name: str) -> None:
        kernel.ip("link", "set", self.plan.link(self.plan.host(name)), "up")

    def partition(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            kernel.ip(
                "-n",
                self.plan.netns(self.plan.host(here)),
                "neigh",
                "replace",
                self.plan.host(there).address,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            )

    def mend(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            kernel.ip(
                "-n",
                self.plan.netns(self.plan.host(here)),
                "neigh",
                "delete",
                self.plan.host(there).address,
                "dev",
                "eth0",
                check=False,
            )
