"""The timeline's rows as the support console's booking page prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any, TypedDict

from django.utils import timezone

from payments.timeline import PROVIDER_TRUTH_PERMISSION, hide_provider_ids
from reconciliation.selectors.timeline import TimelineRow

# What the console shows in a cell with no value.
NO_VALUE = "\N{EN DASH}"


class TimelineRowDisplay(TypedDict):
    """A row's cells as strings, formatted once here so that the template only prints them; a
    dict, because the template engine looks a key up before an attribute.

    `at_iso` is ISO 8601, `*_date` reads `Y-m-d` and `*_clock` `H:i:s.mmm` (milliseconds,
    truncated), as the `|date` filter shows them. Empty `partner_date`/`partner_clock` mean no
    partner time; `skew` is NO_VALUE when unknown; `raw` (the data as indented JSON) is empty
    when the row has no data.
    """

    kind: str
    actor: str
    actor_label: str
    summary: str
    transition: str
    mark: str
    css_class: str
    at_iso: str
    at_date: str
    at_clock: str
    partner_date: str
    partner_clock: str
    skew: str
    source_label: str
    raw: str


def row_for(row: TimelineRow, viewer: Any) -> TimelineRow:
    """The row as `viewer` (a user; None: a trusted shell) may see it: without the provider's ids
    (in its data, its summary, its actor label) unless they may see the provider's truth. The one
    rule for the booking page and its JSON."""
    if viewer is None or viewer.has_perm(PROVIDER_TRUTH_PERMISSION):
        return row
    return replace(
        row,
        summary=hide_provider_ids(row.summary),
        actor_label=hide_provider_ids(row.actor_label),
        data=hide_provider_ids(row.data),
    )


def rows_for(rows: Iterable[TimelineRow], viewer: Any) -> list[TimelineRow]:
    return [row_for(row, viewer) for row in rows]


def _local(moment: datetime, zone: tzinfo) -> datetime:
    return moment if timezone.is_naive(moment) else moment.astimezone(zone)


def _display(row: TimelineRow, zone: tzinfo) -> TimelineRowDisplay:
    at = _local(row.at, zone)
    partner = _local(row.partner_time, zone) if row.partner_time is not None else None
    return TimelineRowDisplay(
        kind=row.kind,
        actor=row.actor,
        actor_label=row.actor_label,
        summary=row.summary,
        transition=row.transition,
        mark=row.mark,
        css_class=" ".join(name for name, on in (("support", row.is_support), ("marked", row.mark)) if on),
        at_iso=at.isoformat(),
        at_date=at.date().isoformat(),
        at_clock=at.time().isoformat(timespec="milliseconds"),
        partner_date=partner.date().isoformat() if partner else "",
        partner_clock=partner.time().isoformat(timespec="milliseconds") if partner else "",
        skew=NO_VALUE if row.skew_ms is None else str(row.skew_ms),
        source_label=f"{row.source} #{row.source_id}",
        raw=row.data_json if row.data else "",
    )


def timeline_display(rows: Iterable[TimelineRow]) -> list[TimelineRowDisplay]:
    """The rows as the admin page shows them, in the active time zone (as `|date` would)."""
    zone = timezone.get_current_timezone()
    return [_display(row, zone) for row in rows]
