"""The cluster's shape, names and fault schedule, as plain data (no commands run here).

Every name the run gives to the kernel starts with `ccl` and the run id, so that a later run can
find what a crashed one left behind (`registry.sweep`). Interface names are limited to 15
characters: `ccl` + 6 hex digits + a short host code of at most 3 characters.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from chaos.config import ClusterOptions

PREFIX = "ccl"
NAME_PATTERN = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})")
SUBNET_SPACE = ipaddress.ip_network("10.231.0.0/16")
MAX_ROLE_HOSTS = 9  # web-1..9 and worker-1..9 keep their short codes and addresses unique
IFNAMSIZ = 15

# Network faults in the order they run, each at its share of the load (or after the previous
# one): the worker cut starts after the Redis restart (35% of the load, chaos/disruptions.py),
# which would otherwise wipe the very acknowledgements whose redelivery the cut is about.
FAULT_ORDER = (
    ("web_cut", 0.04),
    ("partners_partition", 0.12),
    ("broker_cut", 0.22),
    ("worker_cut", 0.38),
    ("scheduler_cut", 0.70),
)
FAULT_GAP_S = 3.0


@dataclass(frozen=True)
class Host:
    name: str  # "worker-1"
    role: str  # db | broker | partners | scheduler | web | worker
    short: str  # in interface names: "k1"
    address: str


@dataclass(frozen=True)
class ClusterPlan:
    run_id: str
    subnet: ipaddress.IPv4Network
    hosts: tuple[Host, ...]

    @property
    def gateway(self) -> str:
        """The bridge's own address: where this machine (the harness, the clients) stands."""
        return str(self.subnet.network_address + 1)

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def netns(self, host: Host) -> str:
        return f"{self.prefix}-{host.name}"

    def link(self, host: Host) -> str:
        """The host's end of its cable, on this machine's side: down means the host is cut off."""
        return f"{self.prefix}{host.short}"

    def peer(self, host: Host) -> str:
        """The cable's other end before it moves into the host (where it is renamed eth0)."""
        return f"{self.prefix}{host.short}p"

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def as_dict(self) -> dict[str, object]:
        return {
            "subnet": str(self.subnet),
            "gateway": self.gateway,
            "bridge": self.bridge,
            "hosts": {
                h.name: {"role": h.role, "address": h.address, "netns": self.netns(h)} for h in self.hosts
            },
        }


def build_plan(*, run_id: str, subnet: str, options: ClusterOptions) -> ClusterPlan:
    if not 1 <= options.web_hosts <= MAX_ROLE_HOSTS or not 1 <= options.worker_hosts <= MAX_ROLE_HOSTS:
        raise ValueError(f"web and worker hosts: between 1 and {MAX_ROLE_HOSTS} each")
    network = ipaddress.ip_network(subnet)
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 26:
        raise ValueError(f"subnet {subnet}: an IPv4 network of at least 64 addresses, e.g. 10.231.0.0/24")

    def at(offset: int) -> str:
        return str(network.network_address + offset)

    hosts = [
        Host("db", "db", "db", at(2)),
        Host("broker", "broker", "mq", at(3)),
        Host("partners", "partners", "pt", at(4)),
        Host("scheduler", "scheduler", "s1", at(5)),
    ]
    if options.standby_scheduler:
        hosts.append(Host("scheduler-2", "scheduler", "s2", at(6)))
    hosts += [Host(f"web-{n}", "web", f"w{n}", at(10 + n)) for n in range(1, options.web_hosts + 1)]
    hosts += [Host(f"worker-{n}", "worker", f"k{n}", at(20 + n)) for n in range(1, options.worker_hosts + 1)]
    plan = ClusterPlan(run_id=run_id, subnet=network, hosts=tuple(hosts))
    too_long = [n for h in hosts for n in (plan.link(h), plan.peer(h)) if len(n) > IFNAMSIZ]
    if too_long or len(plan.bridge) > IFNAMSIZ:
        raise ValueError(f"interface names longer than {IFNAMSIZ} characters: {too_long}")
    return plan


def pick_subnet(in_use: Iterable[str]) -> str:
    """The first 10.231.N.0/24 that overlaps none of the networks already on this machine."""
    taken = [ipaddress.ip_network(n, strict=False) for n in in_use]
    for candidate in SUBNET_SPACE.subnets(new_prefix=24):
        if not any(candidate.overlaps(n) for n in taken if n.version == 4):
            return str(candidate)
    raise RuntimeError(f"every /24 of {SUBNET_SPACE} is in use on this machine")


def run_id_of(name: str) -> str | None:
    """The run id in a name this package gave (a namespace, an interface, a cgroup), else None."""
    match = NAME_PATTERN.match(name)
    return match.group(1) if match else None


@dataclass(frozen=True)
class NetworkFault:
    kind: str
    hosts: tuple[str, ...]  # the host cut off, or the two hosts that cannot reach each other
    start_s: float  # after the load started
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def label(self) -> str:
        return f"{self.kind} ({' x '.join(self.hosts)})"


def plan_faults(*, plan: ClusterPlan, options: ClusterOptions, load_s: float) -> list[NetworkFault]:
    """When each fault that only exists between machines starts, and on which hosts.

    A fault needs a second host to fail over to: no web cut with one web host, no worker cut
    with one worker host. Faults never overlap, so that what the system did is each one's.
    """
    if not options.network_faults:
        return []
    webs = [h.name for h in plan.by_role("web")]
    workers = [h.name for h in plan.by_role("worker")]
    wanted = {
        "web_cut": ((webs[0],), options.web_cut_s) if len(webs) > 1 else None,
        "partners_partition": ((workers[-1], "partners"), options.partition_s),
        "broker_cut": (("broker",), options.broker_cut_s),
        "worker_cut": ((workers[0],), options.worker_cut_s) if len(workers) > 1 else None,
        "scheduler_cut": (("scheduler",), options.scheduler_cut_s),
    }
    faults: list[NetworkFault] = []
    free_from = 0.0
    for kind, share in FAULT_ORDER:
        chosen = wanted[kind]
        if chosen is None or chosen[1] <= 0:
            continue
        hosts, duration = chosen
        start = max(share * load_s, free_from)
        faults.append(NetworkFault(kind=kind, hosts=hosts, start_s=round(start, 1), duration_s=duration))
        free_from = start + duration + FAULT_GAP_S
    return faults
