"""The run's verdict: a JSON document and tables on the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chaos.checks import CheckResult

SHOWN_PER_KIND = 3


@dataclass
class RunReport:
    run_id: str
    run_dir: str
    config: dict[str, Any]
    environment: dict[str, Any]
    phases: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    watchers: dict[str, Any] = field(default_factory=dict)  # the customers' streams and pollers
    disruptions: list[dict[str, Any]] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    partners: dict[str, Any] = field(default_factory=dict)
    log_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)  # hosts and network faults (--cluster)

    @property
    def violations(self) -> int:
        return sum(len(c.violations) for c in self.checks)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and self.violations == 0 and not self.harness_errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "verdict": "pass" if self.passed else "fail",
            "violations": self.violations,
            "violations_by_check": {c.name: len(c.violations) for c in self.checks},
            "harness_errors": self.harness_errors,
            "run_dir": self.run_dir,
            "config": self.config,
            "environment": self.environment,
            "phases": self.phases,
            "clients": self.clients,
            "watchers": self.watchers,
            "disruptions": self.disruptions,
            "partners": self.partners,
            "log_errors": self.log_errors,
            "checks": [c.as_dict() for c in self.checks],
            **({"cluster": self.cluster} if self.cluster else {}),
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str))


def render(report: RunReport, console: Console) -> None:
    console.print(_checks_table(report))
    by_name = {c.name: c for c in report.checks}
    if (refused := refused_for_good_line(by_name.get("money_owed"))) is not None:
        console.print(refused)
    if (held := release_refused_line(by_name.get("money_nothing_held"))) is not None:
        console.print(held)
    if "everything_ends" in by_name:
        console.print(_states_table(report, by_name["everything_ends"]))
        attention = by_name["everything_ends"].figures.get("needs_attention") or {}
        if attention:
            console.print(_attention_table(attention))
    if "partner_to_us_latency" in by_name:
        console.print(_latency_table(by_name["partner_to_us_latency"]))
    if report.watchers:
        console.print(_watchers_table(report, by_name))
    console.print(_disruptions_table(report))
    console.print(_faults_table(report))
    if report.log_errors:
        console.print(_log_errors_table(report))
    _print_violations(report, console)
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    console.print(
        f"Chaos run {report.run_id}: {verdict} - {report.violations} violation(s); logs in {report.run_dir}"
    )


# The money_owed violations of a refund the provider refused every time it was asked.
REFUSED_KINDS = ("refused_refund_not_left_to_support", "refused_refund_made", "refused_refund_untold")


def refused_for_good_line(money_owed: CheckResult | None) -> str | None:
    """The run's refunds refused for good, judged: each owed back, left to support and told."""
    if money_owed is None or "refunds_refused_for_good" not in money_owed.figures:
        return None
    wrong = {v.booking for v in money_owed.violations if v.kind in REFUSED_KINDS}
    return (
        f"Refunds refused for good: {money_owed.figures['refunds_refused_for_good']}, each owed and told"
        + (f"; {len(wrong)} more not so (money_owed violations)" if wrong else "")
    )


def release_refused_line(nothing_held: CheckResult | None) -> str | None:
    """The run's holds the provider refused to release for good, judged: each left to support and
    told; those our row says so of without the evidence are `authorization_left_held`."""
    if nothing_held is None or "releases_refused_for_good" not in nothing_held.figures:
        return None
    wrong = {v.booking for v in nothing_held.violations if "release_refused" in v.evidence}
    return (
        f"Releases refused for good: {nothing_held.figures['releases_refused_for_good']}, each left to "
        "support and told" + (f"; {len(wrong)} more not so (money_nothing_held violations)" if wrong else "")
    )


def _checks_table(report: RunReport) -> Table:
    table = Table(title=f"Chaos run {report.run_id}: invariants")
    table.add_column("check")
    table.add_column("result")
    table.add_column("violations", justify="right")
    table.add_column("figures")
    for check in report.checks:
        result = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        kinds = ", ".join(f"{k} {n}" for k, n in check.violation_counts().items())
        table.add_row(
            check.name, result, f"{len(check.violations)}" + (f" ({kinds})" if kinds else ""), _short(check)
        )
    return table


def _short(check: CheckResult) -> str:
    figures = {k: v for k, v in check.figures.items() if isinstance(v, int | float | str)}
    return ", ".join(f"{k}={v}" for k, v in list(figures.items())[:8])


def _states_table(report: RunReport, ending: CheckResult) -> Table:
    table = Table(title="Bookings and clients")
    table.add_column("what")
    table.add_column("count", justify="right")
    for state, count in ending.figures.get("final_states", {}).items():
        table.add_row(f"final state: {state}", str(count))
    for key, value in report.clients.items():
        table.add_row(f"clients: {key}", str(value))
    settle = report.phases
    if "settled" in settle:
        owed = settle.get("at_settle_end", {})
        table.add_row(
            f"settled in {settle.get('settle_s')} s"
            if settle["settled"]
            else f"NOT settled after {settle.get('settle_s')} s",
            f"open {owed.get('open', '?')}, fences {owed.get('fences', '?')}, "
            f"compensations owed {owed.get('compensations', '?')}",
        )
    rest = ending.figures.get("seconds_to_rest", {})
    if rest.get("n"):
        table.add_row("seconds to rest p50 / p99 / max", f"{rest['p50']} / {rest['p99']} / {rest['max']}")
    return table


def _attention_table(attention: dict[str, Any]) -> Table:
    table = Table(title="needs_attention: reasons")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("what the partner holds")
    for reason, data in attention.items():
        holds = "; ".join(f"{view}: {n}" for view, n in data["partner_holds"].items())
        table.add_row(escape(reason), str(data["count"]), escape(holds))
    return table


def _latency_table(latency: CheckResult) -> Table:
    table = Table(title="Partner change -> our booking state (seconds)")
    table.add_column("partner / path")
    for column in ("n", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="right")
    for key, figures in latency.figures.get("booking_state", {}).items():
        table.add_row(key, *(str(figures[c]) for c in ("n", "p50", "p95", "p99", "max")))
    return table


def _watchers_table(report: RunReport, by_name: dict[str, CheckResult]) -> Table:
    table = Table(title="What the customers were shown, and their mail")
    table.add_column("what")
    table.add_column("figure")
    watchers = report.watchers
    table.add_row(
        "clients",
        f"{watchers.get('customer_streams', 0)} customer streams, {watchers.get('booking_streams', 0)} "
        f"booking streams, {watchers.get('pollers', 0)} pollers; {watchers.get('bookings_followed', 0)} "
        "bookings followed",
    )
    table.add_row(
        "received",
        f"{watchers.get('stream_events', 0)} stream events over {watchers.get('stream_connections', 0)} "
        f"connections ({watchers.get('streams_ended_by_server', 0)} ended by the server), "
        f"{watchers.get('heartbeats', 0)} heartbeats; polls "
        + ", ".join(f"{k[6:]}: {v}" for k, v in watchers.items() if k.startswith("polls_")),
    )
    catch_up = watchers.get("catch_up", {})
    table.add_row(
        "caught up at the end",
        f"{'yes' if catch_up.get('caught_up') else 'NO'} in {catch_up.get('seconds')} s"
        + (f" ({catch_up.get('clients_behind')} clients behind)" if catch_up.get("clients_behind") else ""),
    )
    if watchers.get("errors"):
        table.add_row("client errors", escape(", ".join(f"{k}: {v}" for k, v in watchers["errors"].items())))
    confirmed = by_name.get("customer_confirmed_after_partner")
    if confirmed is not None:
        delay = confirmed.figures.get("partner_confirmed_to_first_shown_s", {})
        if delay.get("n"):
            table.add_row(
                "partner confirmed -> first shown confirmed (s)",
                f"n {delay['n']}, p50 {delay['p50']}, p99 {delay['p99']}, max {delay['max']}",
            )
    mail = by_name.get("customer_one_mail_per_change")
    if mail is not None and mail.figures.get("observed", True):
        figures = mail.figures
        table.add_row(
            "mail",
            f"{figures.get('mails', 0)} emails for {figures.get('changes_owing_mail', 0)} changes owing one "
            f"({', '.join(f'{k} {v}' for k, v in figures.get('owed_by_kind', {}).items())}); outbox "
            + ", ".join(f"{k} {v}" for k, v in figures.get("outbox_states", {}).items()),
        )
        delay = figures.get("change_to_mail_s", {})
        if delay.get("n"):
            table.add_row(
                "change -> email in the sink (s)",
                f"p50 {delay['p50']}, p99 {delay['p99']}, max {delay['max']}",
            )
    return table


def _disruptions_table(report: RunReport) -> Table:
    table = Table(title="Disruptions")
    table.add_column("kind")
    table.add_column("count", justify="right")
    table.add_column("detail")
    kinds: dict[str, list[dict[str, Any]]] = {}
    for event in report.disruptions:
        kinds.setdefault(event["kind"], []).append(event)
    for kind, events in kinds.items():
        detail = ""
        if kind in ("redis_restart", "db_drop"):
            detail = "; ".join(
                f"at {e['at_s']}s: {e.get('detail', '')}"
                + (
                    f" (clients killed {e['clients_killed']}, keys deleted {e['keys_deleted']})"
                    if "keys_deleted" in e
                    else ""
                )
                + (f" (connections terminated {e['terminated']})" if "terminated" in e else "")
                for e in events
            )
        table.add_row(kind, str(len(events)), escape(detail))
    for error in report.harness_errors:
        table.add_row("[red]harness error[/]", "", escape(error))
    return table


def _faults_table(report: RunReport) -> Table:
    table = Table(title="Faults injected by the partners")
    table.add_column("partner")
    table.add_column("fault")
    table.add_column("count", justify="right")
    for code, data in report.partners.items():
        for fault, count in sorted((data.get("stats", {}).get("faults") or {}).items()):
            table.add_row(code, fault, str(count))
    return table


def _log_errors_table(report: RunReport) -> Table:
    table = Table(title="Errors in the processes' logs (survived or not: look here first)")
    table.add_column("process")
    table.add_column("error")
    table.add_column("count", justify="right")
    for process, errors in report.log_errors.items():
        for signature, count in errors.items():
            table.add_row(process, escape(signature), str(count))
    return table


def _print_violations(report: RunReport, console: Console) -> None:
    for check in report.checks:
        shown: dict[str, int] = {}
        for violation in check.violations:
            shown[violation.kind] = shown.get(violation.kind, 0) + 1
            if shown[violation.kind] > SHOWN_PER_KIND:
                continue
            console.print(
                f"[red]{check.name}/{violation.kind}[/]: {escape(violation.message)}", highlight=False
            )
            for line in violation.evidence.get("timeline", [])[-12:]:
                console.print(f"    ours:    {line}", highlight=False, markup=False, soft_wrap=True)
            for line in violation.evidence.get("partner_truth", [])[:4]:
                console.print(f"    partner: {line}", highlight=False, markup=False, soft_wrap=True)
            for line in violation.evidence.get("shown", [])[-8:]:
                console.print(f"    shown:   {line}", highlight=False, markup=False, soft_wrap=True)
