"""The money invariants (docs/design.md, "Money"), judged by the payment provider's own ground
truth (`/_sandbox/ground_truth` of the sandbox's `payments` profile) for every booking that pays,
beside our payment rows and the partner's ground truth:

- `money_captured_only_when_confirmed`: never captured without a reservation of that booking the
  partner confirmed (`captured_without_confirmed_reservation`);
- `money_owed`: for every booking at rest, captured - refunded at the provider = what its final
  state and the policy owe: confirmed the price, cancelled the fee fixed at the cancel, anything
  unconfirmed or taken back by the partner nothing (`money_owed_mismatch`); and our row says what
  the provider says (`money_ledger_disagrees`). A refund the card refused after it was made is not
  refunded: it gave nothing back; what support recorded paying back another way instead
  (`refunded_outside`, ours alone: the provider never saw it) is given back. A refund the
  provider refused every time it was asked (`refund_refused_rate`) gave nothing back either: the
  provider holding that much more than owed is no violation only if our row keeps exactly that
  amount owed back (`refused_refunds_owed`), the timeline left it to support
  (`payment.left_to_support`, step refund, that amount) with no look of ours planned, the provider
  refused it every time (its saved answer under each key of our refused refunds a 400, at least
  REFUSED_MAX_TRIES of them, and no refund made under any), and the customer was told so: their
  view's money `refund_failed` with that amount, and the mail of the change that told it saying
  "We still owe you <amount>" (a mail still owed at the end, or whose delivery is unknown, is the
  mail check's to judge) (`refused_refund_not_left_to_support`, `refused_refund_made`,
  `refused_refund_untold`; counted as `refunds_refused_for_good` when all hold). A booking whose
  debt is not decided (still open, or support's other cases) is counted, not judged:
  `everything_ends` judges that;
- `money_one_authorization`: at most one live authorization (held or captured) per booking
  (`authorizations_live_twice`), and no intent the provider made for a payment we do not have
  (`intent_without_payment`);
- `money_nothing_held`: every authorization captured or voided, none left held at rest once the
  booking's debt is decided (`authorization_left_held`); a hold of a booking still undecided
  (support's case) must have our look planned before the provider lets it lapse
  (`hold_left_to_lapse`). A hold the provider refused to release every time it was asked
  (`void_refused_rate`) is left held for want of a release, not by us: no violation only on the
  evidence, as a refund refused for good, that the booking owes nothing and our row says the
  release was refused for good (`release_refused`), the provider refused it every time (a 400
  saved under the key of each void we hold refused, at least REFUSED_MAX_TRIES of them, none of
  them in the intent's history: nothing changed, still held), the timeline left it to support
  (`payment.left_to_support`, step void) with no look of ours planned, and the customer was told
  so: their view's money `release_refused` with the amount held and the provider's lapse, and the
  mail of the change that told it saying "We could not release <amount> ... The hold ends by
  <lapse>" (a mail still owed at the end, or whose delivery is unknown, is the mail check's);
  without it all, still `authorization_left_held` (counted as `releases_refused_for_good` when
  all holds). A row that says the release was refused for good while the provider holds nothing
  tells the customer a hold that is gone (`release_refused_not_held`);
- `money_no_refund_twice`: one refund per refund operation of ours, and never more refunded (less
  what failed) than captured (`refund_made_twice`, `refunded_more_than_captured`).

Each violation's evidence: the booking's reference, our payment row, the provider's history of
its intents and refunds, the booking's timeline and the partner's truth. Pure: plain data in.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.checks.mail import INCLUDED, including_row
from chaos.model import BookingRow, Snapshot, ViewChange
from chaos.money_truth import REFUSED_MAX_TRIES, MoneyTruth, PaymentRow, ProviderIntent

# The provider's intent states that hold or took the customer's money.
HELD = "requires_capture"
LIVE = frozenset({HELD, "succeeded", "processing"})


def minor(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def _evidence(snapshot: Snapshot, money: MoneyTruth, booking: str, row: PaymentRow | None) -> dict[str, Any]:
    truth = [t for t in snapshot.truth if t.client_reference == booking]
    evidence = booking_evidence(snapshot.bookings.get(booking), truth)
    evidence["ours"] = row.excerpt() if row else "no payment row of ours"
    provider: list[str] = []
    intents = money.intents_of(row.payment) if row else [i for i in money.intents if i.booking == booking]
    for intent in intents:
        provider.append(intent.excerpt())
        provider.extend(f"  {line}" for line in intent.history)
        provider.extend(f"  {r.excerpt()}" for r in money.refunds_of(intent.id))
    evidence["provider"] = provider
    return evidence


def _result(name: str, invariant: str, snapshot: Snapshot) -> tuple[CheckResult, MoneyTruth | None]:
    result = CheckResult(name=name, invariant=invariant)
    money = snapshot.money
    if money is None:
        result.notes.append("no payments in this run: not observed")
    return result, money


def check_captured_only_when_confirmed(snapshot: Snapshot) -> CheckResult:
    result, money = _result(
        "money_captured_only_when_confirmed",
        "never captured without a reservation of that booking the partner confirmed",
        snapshot,
    )
    if money is None:
        return result
    rows = {p.payment: p for p in money.payments}
    confirmed = {t.client_reference for t in snapshot.truth if t.first("confirmed") is not None}
    captured = [i for i in money.intents if i.amount_received > 0]
    for intent in captured:
        if intent.booking not in confirmed:
            result.violations.append(
                Violation(
                    "captured_without_confirmed_reservation",
                    f"{intent.booking}: the provider captured {intent.amount_received} on {intent.id} "
                    "and the partner never confirmed a reservation of it",
                    booking=intent.booking,
                    evidence=_evidence(snapshot, money, intent.booking, rows.get(intent.payment)),
                )
            )
    result.figures = {"intents_captured": len(captured)}
    return result


def check_money_owed(snapshot: Snapshot) -> CheckResult:
    result, money = _result(
        "money_owed",
        "for every booking at rest, captured - refunded at the provider = what its final state and the "
        "policy owe (confirmed: the price; cancelled: the fee; unconfirmed or taken back: nothing), and "
        "our row says what the provider says",
        snapshot,
    )
    if money is None:
        return result
    figures: Counter[str] = Counter()
    for row in money.payments:
        intents = money.intents_of(row.payment)
        captured = sum(i.amount_received for i in intents)
        # A refund the card refused after it was made gave nothing back: not refunded.
        refunded = sum(r.amount for i in intents for r in money.refunds_of(i.id) if r.given_back)
        owed = row.owed()
        # The asks of a refund the provider refused (the sandbox counts no such fault of its own).
        figures["refund_asks_refused"] += len(row.refund_refusals)
        if owed is None:
            figures["undecided"] += 1
            continue
        figures["judged"] += 1
        outside = minor(row.refunded_outside)
        # Owed back to the customer, the provider refusing the refund every time: still with it.
        refused = minor(row.refused_refunds_owed)
        paid = captured - refunded - outside
        figures["paid_minor"] += paid
        balanced = paid == minor(owed) + refused
        if not balanced:
            result.violations.append(
                Violation(
                    "money_owed_mismatch",
                    f"{row.booking} ({row.booking_status}) owes {owed} {row.currency}"
                    + (f" and owes back {row.refused_refunds_owed} refused for good" if refused else "")
                    + f"; the provider holds captured {captured} - refunded {refunded}"
                    + (f" - paid back another way {outside}" if outside else "")
                    + f" = {paid} minor units",
                    booking=row.booking,
                    evidence=_evidence(snapshot, money, row.booking, row),
                )
            )
        if refused and balanced:
            problems = _refused_for_good(snapshot, money, row)
            if not problems:
                figures["refunds_refused_for_good"] += 1
        else:  # whatever else holds, nothing is made under a refund we hold refused
            problems = _made_under_refusal(money, row)
        for kind, message in problems:
            result.violations.append(
                Violation(
                    kind,
                    f"{row.booking}: {message}",
                    booking=row.booking,
                    evidence=_refusal_evidence(snapshot, money, row),
                )
            )
        if (minor(row.captured), minor(row.refunded)) != (captured, refunded):
            result.violations.append(
                Violation(
                    "money_ledger_disagrees",
                    f"{row.booking}: we hold captured {row.captured}, refunded {row.refunded}; the provider "
                    f"{captured}, {refunded} minor units",
                    booking=row.booking,
                    evidence=_evidence(snapshot, money, row.booking, row),
                )
            )
    figures.setdefault("judged", 0)
    figures.setdefault("undecided", 0)
    figures.setdefault("refunds_refused_for_good", 0)
    figures.setdefault("refund_asks_refused", 0)
    result.figures = dict(sorted(figures.items()))
    return result


# --- a refund refused for good ------------------------------------------------------------------
LEFT_TO_SUPPORT = "payment.left_to_support"
REFUND_FAILED = "refund_failed"
# A notification whose mail is not in the sink for want of a send, not of words: still owed
# (`queued`, `sending`) or perhaps handed over (`delivery_unknown`).
MAIL_NOT_YET_OR_UNKNOWN = frozenset({"queued", "sending", "delivery_unknown"})


def _refused_for_good(snapshot: Snapshot, money: MoneyTruth, row: PaymentRow) -> list[tuple[str, str]]:
    """What fails of a refund refused for good, owed and told (the provider holds exactly the
    amount our row keeps owed back); empty when it all holds."""
    amount = row.refused_refunds_owed
    booking = snapshot.bookings.get(row.booking)
    problems: list[tuple[str, str]] = []  # (kind, what fails of the refund of `amount`)
    left = [
        e
        for e in (booking.events if booking else ())
        if e.kind == LEFT_TO_SUPPORT
        and e.data.get("step") == "refund"
        and _amount(e.data.get("amount")) == amount
    ]
    if not left:
        problems.append(
            (
                "refused_refund_not_left_to_support",
                f"no {LEFT_TO_SUPPORT} row of a refund of {amount} on its timeline",
            )
        )
    elif row.next_check_at is not None:
        problems.append(
            (
                "refused_refund_not_left_to_support",
                f"left to support, yet our next look is at {row.next_check_at}",
            )
        )
    problems.extend(_refused_refund_made(money, row))
    problems.extend(_untold(snapshot, row, booking))
    said = f"{amount} {row.currency} owed back, refused for good"
    return [(kind, f"{said}: {message}") for kind, message in problems]


def _made_under_refusal(money: MoneyTruth, row: PaymentRow) -> list[tuple[str, str]]:
    keys = set(row.refund_refusals)
    return [
        ("refused_refund_made", f"the provider made {r.excerpt()} under a refund we hold refused")
        for i in money.intents_of(row.payment)
        for r in money.refunds_of(i.id)
        if r.moved and r.operation in keys
    ]


def _refused_refund_made(money: MoneyTruth, row: PaymentRow) -> list[tuple[str, str]]:
    """The provider's side of "refused every time it was asked": a 400 saved under each key of our
    refused refunds, at least REFUSED_MAX_TRIES of them, and no refund made under any."""
    problems = _made_under_refusal(money, row)
    answered = {key: money.answers.get(key) for key in sorted(set(row.refund_refusals))}
    refused = [key for key, status in answered.items() if status == 400]
    if len(refused) < max(REFUSED_MAX_TRIES, len(answered)):
        saved = ", ".join(f"{k} {s or 'none'}" for k, s in answered.items()) or "no refused refund of ours"
        problems.append(
            (
                "refused_refund_made",
                f"the provider refused {len(refused)} of its asks, not every one of at least "
                f"{REFUSED_MAX_TRIES} (its saved answers: {saved})",
            )
        )
    return problems


def _untold(snapshot: Snapshot, row: PaymentRow, booking: BookingRow | None) -> list[tuple[str, str]]:
    """Told `refund_failed` with the amount owed back: in the view the page, the API and the mails
    read, and in the mail of the change that told it ("We still owe you <amount>")."""
    amount = row.refused_refunds_owed
    view = booking.view_money if booking else {}
    if view.get("code") != REFUND_FAILED or _amount(view.get(REFUND_FAILED)) != amount:
        shown = f"{view.get('code')} {view.get(REFUND_FAILED, '')}".strip() if view else "nothing"
        return [
            (
                "refused_refund_untold",
                f"the customer is shown {shown} of their money, not {REFUND_FAILED} {amount}",
            )
        ]
    assert booking is not None
    told = [
        c
        for c in booking.view_changes()
        if c.money_told.get("code") == REFUND_FAILED and _amount(c.money_told.get(REFUND_FAILED)) == amount
    ]
    if not told:
        return [
            ("refused_refund_untold", f"no change of the view on its timeline told {REFUND_FAILED} {amount}")
        ]
    unsaid = _mail_unsaid(snapshot, row.booking, told[-1], [f"We still owe you {amount:.2f} {row.currency}"])
    return [("refused_refund_untold", unsaid)] if unsaid else []


def _mail_unsaid(snapshot: Snapshot, reference: str, change: ViewChange, words: list[str]) -> str | None:
    """What the mail of the change that told the customer something fails to say of `words`
    (read with its lines joined); None when it says them all, or is not this check's to judge."""
    if snapshot.mails is None or change.actor == "customer":
        return None  # no sink to read; or they caused the change and their page or answer showed it
    # Its own mail, or the status mail that told it with its own (`X-Booking-Included-Versions`).
    mails = [m for m in snapshot.mails if m.announces(reference, change.version)]
    if any(all(w in " ".join(m.text.split()) for w in words) for m in mails):
        return None
    rows = {(n.reference, n.version): n for n in snapshot.notifications}
    outbox = rows.get((reference, change.version))
    if outbox is not None and outbox.state == INCLUDED:
        outbox = including_row(rows, reference, change.version) or outbox  # it ends as that mail does
    if not mails and outbox is not None and outbox.state in MAIL_NOT_YET_OR_UNKNOWN:
        # Told on the page and in the API; its mail late (still owed when the run ended) or maybe
        # handed over (sent at most once): customer_one_mail_per_change judges those, not this.
        return None
    return (
        f"the mail of version {change.version} ({len(mails)} in the sink"
        + (f", outbox {outbox.state}" if outbox else ", no notification")
        + ") does not say "
        + " and ".join(repr(w) for w in words)
    )


def _amount(text: object) -> Decimal | None:
    try:
        return Decimal(str(text))
    except (ArithmeticError, ValueError):
        return None


def _refusal_evidence(
    snapshot: Snapshot, money: MoneyTruth, row: PaymentRow, keys: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The evidence of a step the provider refused: besides the booking's, the provider's saved
    answer under each refused key (`keys`; the refunds' by default), the money the customer is
    shown and the booking's mails."""
    evidence = _evidence(snapshot, money, row.booking, row)
    booking = snapshot.bookings.get(row.booking)
    keys = row.refund_refusals if keys is None else keys
    evidence["provider_answers"] = [f"{key}: {money.answers.get(key, 'nothing saved')}" for key in keys]
    evidence["customer_money"] = dict(booking.view_money) if booking else {}
    evidence["mails"] = [
        f"{m.file} v{m.version} {m.kind}: {' '.join(m.text.split())[:400]}"
        for m in snapshot.mails or []
        if m.reference == row.booking
    ]
    return evidence


def check_one_authorization(snapshot: Snapshot) -> CheckResult:
    result, money = _result(
        "money_one_authorization",
        "at most one live authorization (held or captured) per booking, each made for a payment of ours",
        snapshot,
    )
    if money is None:
        return result
    rows = {p.payment: p for p in money.payments}
    by_booking: dict[str, list[ProviderIntent]] = defaultdict(list)
    for intent in money.intents:
        by_booking[intent.booking].append(intent)
        if intent.payment not in rows:
            result.violations.append(
                Violation(
                    "intent_without_payment",
                    f"the provider holds {intent.id} ({intent.status}) for payment {intent.payment or '-'} "
                    f"of {intent.booking or '-'}, which we do not have",
                    booking=intent.booking or None,
                    evidence=_evidence(snapshot, money, intent.booking, None),
                )
            )
    for booking, intents in by_booking.items():
        live = [i for i in intents if i.status in LIVE]
        if len(live) > 1:
            result.violations.append(
                Violation(
                    "authorizations_live_twice",
                    f"{booking}: {len(live)} live authorizations at the provider: "
                    + ", ".join(i.excerpt() for i in live),
                    booking=booking,
                    evidence=_evidence(snapshot, money, booking, rows.get(live[0].payment)),
                )
            )
    result.figures = {
        "intents": len(money.intents),
        "bookings_with_intents": len(by_booking),
        "most_intents_per_booking": max((len(v) for v in by_booking.values()), default=0),
    }
    return result


def check_nothing_held(snapshot: Snapshot) -> CheckResult:
    result, money = _result(
        "money_nothing_held",
        "every authorization captured or voided: none left held once the booking's debt is decided, "
        "and one still undecided looked at again before it lapses",
        snapshot,
    )
    if money is None:
        return result
    rows = {p.payment: p for p in money.payments}
    figures: Counter[str] = Counter(f"intents_{i.status}" for i in money.intents)
    # The asks to release a hold the provider refused (the sandbox counts no such fault of its own).
    figures["release_asks_refused"] = sum(len(p.void_refusals) for p in money.payments)
    for row in (p for p in money.payments if p.release_refused):
        intents = money.intents_of(row.payment)
        if not any(i.status == HELD for i in intents):
            result.violations.append(
                Violation(
                    "release_refused_not_held",
                    f"{row.booking}: our row says the provider refused to release its hold for good, and the "
                    "provider holds nothing: " + (", ".join(i.excerpt() for i in intents) or "no intent"),
                    booking=row.booking,
                    evidence={
                        **_refusal_evidence(snapshot, money, row, row.void_refusals),
                        "release_refused": ["the provider holds nothing"],
                    },
                )
            )
    for intent in (i for i in money.intents if i.status == HELD):
        row = rows.get(intent.payment)
        if row is not None and row.release_refused:
            problems = _release_refused_for_good(snapshot, money, row, intent)
            if not problems:
                figures["releases_refused_for_good"] += 1
                continue
            result.violations.append(
                Violation(
                    "authorization_left_held",
                    f"{intent.booking}: {intent.id} still holds {intent.amount} at rest, its release "
                    "refused for good by our row, but " + "; ".join(problems),
                    booking=intent.booking,
                    evidence={
                        **_refusal_evidence(snapshot, money, row, row.void_refusals),
                        "release_refused": problems,  # what fails of its evidence
                    },
                )
            )
            continue
        if row is not None and row.owed() is None:
            figures["held_undecided"] += 1
            if row.next_check_at is not None and (
                intent.lapses_at is None or row.next_check_at < intent.lapses_at
            ):
                continue
            lapse = intent.lapses_at.isoformat() if intent.lapses_at else "unknown"
            result.violations.append(
                Violation(
                    "hold_left_to_lapse",
                    f"{intent.booking} ({row.booking_status}, undecided): {intent.id} holds {intent.amount} "
                    f"and lapses at {lapse}; our next look: {row.next_check_at or 'none'}",
                    booking=intent.booking,
                    evidence=_evidence(snapshot, money, intent.booking, row),
                )
            )
            continue
        result.violations.append(
            Violation(
                "authorization_left_held",
                f"{intent.booking}: {intent.id} still holds {intent.amount} at rest, neither captured nor "
                "voided",
                booking=intent.booking,
                evidence=_evidence(snapshot, money, intent.booking, row),
            )
        )
    figures.setdefault("held_undecided", 0)
    figures.setdefault("releases_refused_for_good", 0)
    result.figures = dict(sorted(figures.items()))
    return result


# --- a release refused for good -----------------------------------------------------------------
RELEASE_REFUSED = "release_refused"
# The lapse the customer is told is the provider's, to the minute the words show it.
LAPSE_TOLD_WITHIN = timedelta(seconds=60)


def _release_refused_for_good(
    snapshot: Snapshot, money: MoneyTruth, row: PaymentRow, intent: ProviderIntent
) -> list[str]:
    """What fails of a hold left held because the provider refused to release it every time it
    was asked (our row says `release_refused`; `intent` is still held): empty when it all holds."""
    booking = snapshot.bookings.get(row.booking)
    problems: list[str] = []
    owed = row.owed()
    if owed != 0:
        problems.append(f"the booking owes {'what is undecided' if owed is None else owed}, not nothing")
    # The provider's side: a 400 saved under each key, at least REFUSED_MAX_TRIES, nothing changed.
    answered = {key: money.answers.get(key) for key in sorted(set(row.void_refusals))}
    refused = [key for key, status in answered.items() if status == 400]
    if len(refused) < max(REFUSED_MAX_TRIES, len(answered)):
        saved = ", ".join(f"{k} {s or 'none'}" for k, s in answered.items()) or "no refused void of ours"
        problems.append(
            f"the provider refused {len(refused)} of its asks, not every one of at least {REFUSED_MAX_TRIES} "
            f"(its saved answers: {saved})"
        )
    changed = sorted(intent.changed_by & answered.keys())
    if changed:
        problems.append(f"the provider changed {intent.id} under voids we hold refused: {', '.join(changed)}")
    # Ours: left to support, nothing planned.
    left = [
        e
        for e in (booking.events if booking else ())
        if e.kind == LEFT_TO_SUPPORT and e.data.get("step") == "void"
    ]
    if not left:
        problems.append(f"no {LEFT_TO_SUPPORT} row of a void on its timeline")
    elif row.next_check_at is not None:
        problems.append(f"left to support, yet our next look is at {row.next_check_at}")
    problems.extend(_release_untold(snapshot, row, booking, intent))
    return problems


def _release_untold(
    snapshot: Snapshot, row: PaymentRow, booking: BookingRow | None, intent: ProviderIntent
) -> list[str]:
    """Told `release_refused` with the amount held and the provider's lapse: in the view the page,
    the API and the mails read, and in the mail of the change that told it ("We could not release
    <amount> ... The hold ends by <lapse> at the latest")."""
    held = Decimal(intent.amount) / 100
    view = booking.view_money if booking else {}
    if view.get("code") != RELEASE_REFUSED or _amount(view.get("amount")) != held:
        shown = f"{view.get('code')} {view.get('amount', '')}".strip() if view else "nothing"
        return [f"the customer is shown {shown} of their money, not {RELEASE_REFUSED} {held:.2f}"]
    told_lapse = _moment(view.get("lapses_at"))
    if intent.lapses_at is not None and (
        told_lapse is None or abs(told_lapse - intent.lapses_at) > LAPSE_TOLD_WITHIN
    ):
        return [
            f"the customer is told the hold lapses at {view.get('lapses_at') or 'no time'}, the provider "
            f"says {intent.lapses_at.isoformat()}"
        ]
    assert booking is not None
    told = [c for c in booking.view_changes() if c.money_told.get("code") == RELEASE_REFUSED]
    if not told:
        return [f"no change of the view on its timeline told {RELEASE_REFUSED}"]
    words = [f"We could not release the {held:.2f} {row.currency} held on your card"]
    if told_lapse is not None:
        at = told_lapse.astimezone(UTC)
        words.append(f"The hold ends by {at.day} {at:%b %Y, %H:%M} UTC at the latest")
    unsaid = _mail_unsaid(snapshot, row.booking, told[-1], words)
    return [unsaid] if unsaid else []


def _moment(text: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def check_no_refund_twice(snapshot: Snapshot) -> CheckResult:
    result, money = _result(
        "money_no_refund_twice",
        "one refund per refund operation of ours, never more refunded than captured",
        snapshot,
    )
    if money is None:
        return result
    rows = {p.payment: p for p in money.payments}
    refunds = [r for r in money.refunds if r.moved]
    for intent in money.intents:
        made = [r for r in refunds if r.payment_intent == intent.id]
        evidence = None
        for operation, count in Counter(r.operation for r in made).items():
            if count > 1:
                evidence = evidence or _evidence(snapshot, money, intent.booking, rows.get(intent.payment))
                result.violations.append(
                    Violation(
                        "refund_made_twice",
                        f"{intent.booking}: {count} refunds of {intent.id} for operation {operation or '-'}",
                        booking=intent.booking,
                        evidence=evidence,
                    )
                )
        total = sum(r.amount for r in made if not r.failed)
        if total > intent.amount_received:
            result.violations.append(
                Violation(
                    "refunded_more_than_captured",
                    f"{intent.booking}: {total} refunded of the {intent.amount_received} captured "
                    f"on {intent.id}",
                    booking=intent.booking,
                    evidence=evidence or _evidence(snapshot, money, intent.booking, rows.get(intent.payment)),
                )
            )
    result.figures = {"refunds": len(refunds), "releases": len(money.refunds) - len(refunds)}
    return result


def money_checks(snapshot: Snapshot) -> list[CheckResult]:
    return [
        check_captured_only_when_confirmed(snapshot),
        check_money_owed(snapshot),
        check_one_authorization(snapshot),
        check_nothing_held(snapshot),
        check_no_refund_twice(snapshot),
    ]
