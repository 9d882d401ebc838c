"""The cluster's part of a run's verdict on the terminal: hosts, network faults, throughput, CPU."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chaos.report import RunReport


def render(report: RunReport, console: Console) -> None:
    cluster = report.cluster
    console.print(_hosts_table(cluster))
    if cluster.get("network_faults"):
        console.print(_faults_table(cluster["network_faults"]))
    if cluster.get("throughput"):
        console.print(_throughput_table(cluster["throughput"], cluster.get("cpu", {})))
    cleanup = cluster.get("cleanup", {})
    left = "; ".join(cleanup.get("not_removed", []))
    console.print(
        f"Cluster cleanup: {cleanup.get('removed', 0)} resources removed"
        + (f", NOT removed: {escape(left)}" if left else ""),
        highlight=False,
    )


def _hosts_table(cluster: dict[str, Any]) -> Table:
    table = Table(title=f"Cluster: {cluster.get('subnet', '?')} on bridge {cluster.get('bridge', '?')}")
    for column in ("host", "role", "address", "CPU s"):
        table.add_column(column)
    used = cluster.get("cpu", {}).get("seconds_by_host", {})
    for name, host in cluster.get("hosts", {}).items():
        table.add_row(name, host["role"], host["address"], str(used.get(name, "")))
    return table


def _faults_table(faults: list[dict[str, Any]]) -> Table:
    table = Table(title="Network faults")
    table.add_column("fault")
    table.add_column("at s", justify="right")
    table.add_column("for s", justify="right")
    table.add_column("what the system did")
    for fault in faults:
        at = f"{fault['began_s']}" if fault.get("ran") else "not run"
        table.add_row(
            escape(f"{fault['fault']} ({' x '.join(fault['hosts'])})"),
            at,
            f"{fault['duration_s']:g}",
            escape(describe(fault)),
        )
    return table


def describe(fault: dict[str, Any]) -> str:
    """One line per fault: the figures that say what the system did."""
    if not fault.get("ran"):
        return ""
    clients, attempts, dupes = fault["clients"], fault["attempts"], fault["duplicates"]
    parts = [
        f"clients: {clients['requests']} requests {_counts(clients['outcomes'])}",
        f"fenced creates {attempts['fenced_creates']} {_counts(attempts['fence_resolutions'])}".rstrip(),
        f"duplicates created {dupes['created']}, compensated {dupes['compensated']}",
    ]
    kind = fault["fault"]
    if kind == "worker_cut":
        redelivered = (
            f"after {fault['broker_redelivered_after_s']} s"
            if fault["broker_redelivered_while_cut_off"]
            else "nothing while it was away"
        )
        parts.append(
            f"held {fault['held_at_cut']} messages ({fault['held_bookings']} bookings), "
            f"{fault['held_bookings_moved_on_elsewhere_while_cut_off']} of those bookings moved on by "
            f"another host while it was away; the broker redelivered {redelivered}; "
            f"the cut host's workers back {fault.get('cut_host_back_after_s')} s after the heal, "
            f"all broker clients {fault['all_workers_back_after_s']} s"
        )
    elif kind == "web_cut":
        parts.append(
            f"{fault['requests_lost_with_the_host']} requests lost with the host, "
            f"{fault['keys_retried_elsewhere_and_accepted']} keys retried elsewhere and accepted, "
            f"host back {fault['host_back_after_s']} s after the heal"
        )
    elif kind == "broker_cut":
        submitted = fault["submitted_after_heal_s"]
        parts.append(
            f"{fault['bookings_accepted_while_away']} bookings accepted while away, "
            f"{fault['of_them_submitted']} submitted (max {submitted.get('max')} s after the heal); "
            f"all {fault['workers_before']} broker clients (workers, web, schedulers) back "
            f"{fault['all_workers_back_after_s']} s after the heal"
        )
    elif kind == "scheduler_cut":
        parts.append(
            f"cut host held the lock: {fault['cut_host_held_the_lock']}, standby swept after "
            f"{fault['standby_swept_after_s']} s, sweeps {_counts(fault['sweeps_during_cut'])}, "
            f"sweeps that outlived their lock {fault['sweep_outlived_its_lock']}, cut host swept again "
            f"{fault['cut_host_swept_again_after_s']} s after the heal"
        )
    return "; ".join(parts)


def _throughput_table(throughput: dict[str, Any], cpu: dict[str, Any]) -> Table:
    table = Table(title="Throughput and CPU (load start to verdict)")
    table.add_column("what")
    table.add_column("value", justify="right")
    posts = throughput["booking_post_202_s"]
    table.add_row("confirmed bookings", str(throughput["confirmed"]))
    table.add_row("confirmed per second", str(throughput["confirmed_per_s"]))
    table.add_row("booking POST 202 p50 / p99 (s)", f"{posts.get('p50')} / {posts.get('p99')}")
    table.add_row("requests by web host", _counts(throughput["requests_by_host"]))
    if cpu.get("measured"):
        table.add_row("CPU s by role", _counts(cpu["seconds_by_role"]))
        table.add_row("CPU ms per booking, by role", _counts(cpu["ms_per_booking"]))
        table.add_row("web CPU ms per request", str(cpu["web_ms_per_request"]))
        table.add_row(
            "machine busy / of it outside the run (CPU s)",
            f"{cpu['machine_busy_s']} / {cpu['outside_the_run_s']} in {cpu['wall_s']} s",
        )
    return table


def _counts(values: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in values.items()) + ")" if values else ""
