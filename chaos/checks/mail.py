"""Exactly one email per customer-visible change (docs/design.md, "Notifications"), judged by the
SMTP sink's messages against the changes our timeline records.

What is owed is read from the timeline's record of every numbered change of the view
(`data.customer_view`), by the documented rule, not from our outbox: a change the customer did not
cause (its actor is not `customer`) to `confirmed`, `failed`, `cancelled` or `disrupted` (each new
`disrupted` message too), the first `taking_longer`, a cancel that did not complete and went to
support (`cancel_with_support`, still `cancelling`), and a change of the money alone (status and
message as before) to charged, partly refunded, refunded or released, or to a refund that could
not be made (`refund_failed`: the card refused it, or the provider every time it was asked) or was
paid back another way (`refunded_outside`), or to a release the provider refused for good
(`release_refused`), or to the bank's answer that came after the booking
ended (declined, method refused, needing a step we never ask for, or never asked: not charged);
but not a change that would tell nothing the last mail owed did not (the same kind, message and
money told: shown `failed` again after `releasing`, with no mail between). Each must have exactly one
message in the sink, of its kind, named by its booking and version; a message for anything else
is one too many. A change of the money alone may instead be told in the status mail before it (its
outbox row `included`, its version named by that mail's `X-Booking-Included-Versions`): that mail
is its one message, whatever its kind; a mail that names as included a change that owes no money
mail is one too many.

The product sends at most once: an attempt whose conversation broke off after the message may have
been handed over ends `delivery_unknown` and is never retried, and support sees it. Such a change
without a message is counted apart (`delivery_unknown_without_mail`), as is a change included in such a
mail (it counts as that mail does), not as a violation; any other
change without exactly one message is: `mail_still_owed` when the run ended with its notification
still `queued` or `sending` (late: the settle waits for owed mail, so the settle timed out), else
`mail_missing` (no notification row, or one the outbox gave up on, or says was sent).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.checks.customer import not_observed
from chaos.model import MailRow, NotificationRow, Snapshot, ViewChange
from chaos.stats import summary

# The status a change shows -> the kind of mail it owes (bookings.customer_view._ANNOUNCED).
ANNOUNCED = {
    "confirmed": "confirmed",
    "failed": "not_confirmed",
    "cancelled": "cancelled",
    "disrupted": "disrupted",
}
# Messages mailed whenever they are new, whatever the status (customer_view._ANNOUNCED_MESSAGES).
ANNOUNCED_MESSAGES = {"taking_longer": "taking_longer", "cancel_with_support": "cancel_not_done"}
MONEY = "money"
# What the customer is told of their money that is news by mail on its own (customer_view).
MONEY_ANNOUNCED = frozenset(
    {
        "charged",
        "partly_refunded",
        "refunded",
        "released",
        "lapsed",
        "release_refused",
        "refund_failed",
        "refunded_outside",
        "declined",
        "method_refused",
        "needs_action",
        "not_charged",
    }
)
CUSTOMER = "customer"
DELIVERY_UNKNOWN = "delivery_unknown"
INCLUDED = "included"
STILL_OWED = frozenset({"queued", "sending"})


def including_row(
    rows: dict[tuple[str, int], NotificationRow], reference: str, version: int
) -> NotificationRow | None:
    """The status mail's row whose mail included the booking's `included` row of `version`: the
    nearest earlier row not itself included (bookings.notifications.to_include takes the money
    mails that follow a status mail with no other between)."""
    earlier = sorted((v for (r, v) in rows if r == reference and v < version), reverse=True)
    for v in earlier:
        if rows[(reference, v)].state != INCLUDED:
            return rows[(reference, v)]
    return None


def owed_kind(change: ViewChange) -> str | None:
    """The mail a change owes the customer, if any."""
    if change.actor == CUSTOMER:
        return None  # they caused it; their page or the API's answer shows it
    if (change.status, change.message) == (change.before, change.before_message):
        return MONEY if change.money in MONEY_ANNOUNCED else None  # only the money moved
    if change.message in ANNOUNCED_MESSAGES:
        return ANNOUNCED_MESSAGES[change.message]
    if change.status != change.before or change.status == "disrupted":
        return ANNOUNCED.get(change.status)
    return None


def owed_mails(changes: list[ViewChange], never_sent: frozenset[int] = frozenset()) -> dict[int, str]:
    """The mails a booking's changes owe, by version: each change's `owed_kind`, unless its mail
    would tell nothing the last one owed did not (customer_view._told_already): the same kind,
    message and money as told then (the money a change told is the last one the timeline records
    at or before it; the product compares the money's words, which the same money in the same
    kind and message words alike). A mail that was never sent (`never_sent`: its outbox row
    `failed`) told nothing: the next change owes its mail even if it says the same."""
    owed: dict[int, str] = {}
    last: tuple[str, str, dict[str, str]] | None = None
    money: dict[str, str] = {}
    for change in sorted(changes, key=lambda c: c.version):
        money = change.money_told or money
        kind = owed_kind(change)
        if kind is None:
            continue
        told = (kind, change.message, money)
        if told == last:
            continue
        owed[change.version] = kind
        last = None if change.version in never_sent else told
    return owed


def check_one_mail_per_change(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="customer_one_mail_per_change",
        invariant="every change of what a customer is shown that they did not cause has exactly one "
        "email in the SMTP sink, of its kind; no other email",
    )
    if snapshot.mails is None:
        return not_observed(result, "this run had no SMTP sink")
    mails: dict[tuple[str, int | None], list[MailRow]] = defaultdict(list)
    including: dict[tuple[str, int], list[MailRow]] = defaultdict(list)  # by a version it includes
    for mail in snapshot.mails:
        mails[(mail.reference, mail.version)].append(mail)
        for version in mail.included:
            including[(mail.reference, version)].append(mail)
    rows: dict[tuple[str, int], NotificationRow] = {
        (n.reference, n.version): n for n in snapshot.notifications
    }
    owed: Counter[str] = Counter()
    figures: Counter[str] = Counter()
    delays: list[float] = []
    truth = snapshot.truth_by_reference()
    owed_keys: set[tuple[str, int | None]] = set()
    money_keys: set[tuple[str, int]] = set()  # changes owing a money mail: a status mail may include them
    never_sent: defaultdict[str, set[int]] = defaultdict(set)  # by booking: versions whose mail failed
    for n in snapshot.notifications:
        if n.state == "failed":
            never_sent[n.reference].add(n.version)

    for reference, booking in snapshot.bookings.items():
        changes = booking.view_changes()
        owing = owed_mails(changes, frozenset(never_sent[reference]))
        for change in changes:
            kind = owing.get(change.version)
            if kind is None:
                continue
            owed[kind] += 1
            key = (reference, change.version)
            owed_keys.add(key)
            row = rows.get((reference, change.version))
            # A money change told in the status mail before it: that mail is its message.
            told_in = including.get(key, []) if kind == MONEY else []
            if kind == MONEY:
                money_keys.add(key)
            got = mails.get(key, []) + told_in
            outbox = (
                f"{row.state} after {row.attempts} attempt(s) {row.error[:200]}".strip() if row else "no row"
            )
            status_row = (
                including_row(rows, reference, change.version) if row and row.state == INCLUDED else None
            )
            if status_row is not None:
                outbox += f", in the {status_row.kind} mail of v{status_row.version} ({status_row.state})"
            details = {
                "change": f"v{change.version} {change.before}→{change.status}/{change.message} "
                f"[{change.actor}] at {change.at.isoformat(timespec='milliseconds')}",
                "owed": kind,
                "outbox": outbox,
                "mails": [f"{m.file} {m.kind} {m.message_id}" for m in got],
            }
            if not got:
                # Included in a mail, the change counts as that mail does.
                ended_as = status_row if status_row is not None else row
                if ended_as is not None and ended_as.state == DELIVERY_UNKNOWN:
                    figures["delivery_unknown_without_mail"] += 1
                    continue
                late = ended_as is not None and ended_as.state in STILL_OWED
                result.violations.append(
                    Violation(
                        "mail_still_owed" if late else "mail_missing",
                        f"{reference} v{change.version} ({kind}) has no email; outbox: {outbox}",
                        booking=reference,
                        evidence={**details, **booking_evidence(booking, truth.get(reference, []))},
                    )
                )
                continue
            delays.append((got[0].received_at - change.at).total_seconds())
            if len(got) > 1:
                result.violations.append(
                    Violation(
                        "mail_duplicated",
                        f"{reference} v{change.version} ({kind}) has {len(got)} emails",
                        booking=reference,
                        evidence={**details, **booking_evidence(booking, truth.get(reference, []))},
                    )
                )
            if told_in and len(got) == 1:
                figures["money_told_in_status_mail"] += 1
            wrong = [m for m in got if m.kind != kind and m not in told_in]
            if wrong:
                result.violations.append(
                    Violation(
                        "mail_wrong_kind",
                        f"{reference} v{change.version} owes a {kind} email and got {wrong[0].kind!r}",
                        booking=reference,
                        evidence={**details, **booking_evidence(booking, truth.get(reference, []))},
                    )
                )

    for (reference, version), told in including.items():
        if (reference, version) in money_keys:
            continue
        result.violations.append(
            Violation(
                "mail_not_owed",
                f"{len(told)} email(s) for {reference} name v{version} as included, a change that owes "
                "no money mail",
                booking=reference or None,
                evidence={
                    "mails": [f"{m.file} {m.kind} {m.message_id}" for m in told],
                    **booking_evidence(snapshot.bookings.get(reference), truth.get(reference, [])),
                },
            )
        )
    for key, extra in mails.items():
        if key in owed_keys:
            continue
        reference, version = key
        booking = snapshot.bookings.get(reference)
        change = next((c for c in booking.view_changes() if c.version == version), None) if booking else None
        result.violations.append(
            Violation(
                "mail_not_owed",
                f"{len(extra)} email(s) for {reference or '(no reference)'} v{version}, "
                "a change that owes none"
                + (f" ({change.before}→{change.status}/{change.message} [{change.actor}])" if change else ""),
                booking=reference or None,
                evidence={
                    "mails": [f"{m.file} {m.kind} {m.message_id}" for m in extra],
                    **booking_evidence(booking, truth.get(reference, [])),
                },
            )
        )

    result.figures.update(
        {
            "changes_owing_mail": sum(owed.values()),
            "owed_by_kind": dict(owed),
            "mails": len(snapshot.mails),
            "outbox_states": dict(Counter(n.state for n in snapshot.notifications)),
            "change_to_mail_s": summary(delays),
            **dict(figures),
        }
    )
    return result
