"""The timeline's rows as the support console's booking page prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any, TypedDict

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from bookings.models import BookingEvent
from payments.timeline import PROVIDER_TRUTH_PERMISSION, hide_provider_ids
from reconciliation.selectors.timeline import SOURCE_CHECKS, TimelineRow

# What the console shows in a cell with no value.
NO_VALUE = "\N{EN DASH}"


class TimelineRowDisplay(TypedDict):
    """A row's cells as strings, formatted once here so that the template only prints them; a
    dict, because the template engine looks a key up before an attribute.

    `at_iso` is ISO 8601, `*_date` reads `Y-m-d` and `*_clock` `H:i:s.mmm` (milliseconds,
    truncated), as the `|date` filter shows them. Empty `partner_date`/`partner_clock` mean no
    partner time; `skew` is NO_VALUE when unknown; `raw` (the data as indented JSON) is empty
    when the row has no data; `link` is where the stored rows a folded row stands for are listed
    (empty for the others).
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
    link: str


# The words of a timeline row (a TimelineRow, or the BookingEvent stored for one) that may name
# the provider's ids.
_WORDS = ("summary", "actor_label", "data")


def sees_provider_ids(viewer: Any) -> bool:
    """Whether `viewer` (a user; None: a trusted shell) may see the provider's ids."""
    return viewer is None or viewer.has_perm(PROVIDER_TRUTH_PERMISSION)


def _hidden_words(row: Any, viewer: Any) -> dict[str, Any]:
    """The row's words `viewer` may not see as they are, without the provider's ids; none when
    they may see them. The one rule wherever timeline data is shown (docs/console.md)."""
    if sees_provider_ids(viewer):
        return {}
    return {name: hide_provider_ids(getattr(row, name)) for name in _WORDS}


def row_for(row: TimelineRow, viewer: Any) -> TimelineRow:
    """The row as `viewer` may see it: without the provider's ids (in its data, its summary, its
    actor label) unless they may see the provider's truth. For the booking page and its JSON."""
    hidden = _hidden_words(row, viewer)
    return replace(row, **hidden) if hidden else row


def rows_for(rows: Iterable[TimelineRow], viewer: Any) -> list[TimelineRow]:
    return [row_for(row, viewer) for row in rows]


def event_for(event: BookingEvent, viewer: Any) -> BookingEvent:
    """A stored timeline row as `viewer` may see it, by the same rule, for the pages that show the
    rows themselves (the BookingEvent admin). Hidden on the instance, which is never saved: the
    timeline is append-only, so `save` refuses it."""
    for name, value in _hidden_words(event, viewer).items():
        setattr(event, name, value)
    return event


def _local(moment: datetime, zone: tzinfo) -> datetime:
    return moment if timezone.is_naive(moment) else moment.astimezone(zone)


def stored_rows_link(row: TimelineRow) -> str:
    """The stored timeline rows (the Booking events list) that a folded row of reads stands for:
    the booking's, from the first read's to the last's (invariant 8: folded, never gone)."""
    if row.source != SOURCE_CHECKS:
        return ""
    query = {
        "booking__id__exact": row.data["booking"],
        "occurred_at__gte": row.data["first_at"],
        "occurred_at__lte": row.data["last_at"],
    }
    return f"{reverse('admin:bookings_bookingevent_changelist')}?{urlencode(query)}"


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
        link=stored_rows_link(row),
    )


def timeline_display(rows: Iterable[TimelineRow]) -> list[TimelineRowDisplay]:
    """The rows as the admin page shows them, in the active time zone (as `|date` would)."""
    zone = timezone.get_current_timezone()
    return [_display(row, zone) for row in rows]
