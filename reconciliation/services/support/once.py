"""Each support action runs once per action token: a double submit (a second click, a re-run
command with the same `--token`) finds the correction the first one wrote and does nothing more.

A token is for one ask (`Ask`: the action, its targets, what was asked beyond them, the operator),
held in `ActionToken` by the first action it lets run. The same token asking anything else (another
amount, booking, action or operator) is a conflict, like an idempotency key reused with another
body: refused, nothing done (`claim_token`, the one rule for the console and the commands).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db.models import Model

from bookings.models import Booking, BookingEvent
from bookings.services import lock_booking
from config.errors import Conflict, ValidationFailed
from reconciliation.models import ActionToken
from reconciliation.services.support.notes import NOTE_MAX_CHARS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionResult:
    action: str
    booking: Booking
    performed: bool  # False: a double submit (token already seen); nothing was done
    from_state: str
    to_state: str
    message: str
    # The messages the action owes a worker (`owed.Owed`), and what to say instead of `message`
    # when one is not on the queue (our Redis down): the action is done, its work not queued yet.
    owed: tuple = field(default=(), compare=False, repr=False)
    if_not_queued: str = field(default="", compare=False, repr=False)
    queued: bool = True  # False: something it asked for waits for our queue (sent by the sweeper)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "booking": self.booking.reference,
            "performed": self.performed,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "message": self.message,
            "queued": self.queued,
        }


def new_token() -> str:
    return uuid.uuid4().hex


def clean_token(token: str) -> str:
    token = (token or "").strip()
    if not token or len(token) > 64:
        raise ValidationFailed("A support action needs an action token (up to 64 characters).")
    return token


def target_key(target: Booking | Model | int) -> str:
    """How an ask names its target: a booking by its reference, anything else (an orphan case, a
    refund proposal, a stored webhook; or its id) by its number."""
    if isinstance(target, Booking):
        return target.reference
    return f"#{target if isinstance(target, int) else target.pk}"


@dataclass(frozen=True)
class Ask:
    """What an action token is given for. `targets`: all those one token covers (a command or a
    bulk action over several shares one), sorted. The note is not compared: it says why, not what."""

    action: str
    targets: tuple[str, ...]
    operator: str
    params: dict[str, str] = field(default_factory=dict)
    target: str = field(default="", compare=False)  # the one of `targets` acted on now

    @classmethod
    def of(
        cls, action: str, target: str, *, operator: str, batch: Iterable[str] = (), **params: object
    ) -> Ask:
        """The ask of `action` on `target`, one of `batch` (default: `target` alone)."""
        targets = tuple(sorted(set(batch) or {target}))
        if target not in targets:
            raise ValidationFailed(f"{target} is not among the targets of this action token.")
        asked = {k: str(v) for k, v in params.items() if v not in (None, "")}
        return cls(action, targets, operator, asked, target=target)

    @classmethod
    def held(cls, row: ActionToken) -> Ask:
        return cls(row.action, tuple(row.targets), row.operator_label, dict(row.params))

    def covers(self, ask: Ask) -> bool:
        """Whether `ask` is this ask again for one of its targets: the same action, operator and
        parameters (a re-run over a subset, or a bulk action whose list changed meanwhile)."""
        same = (self.action, self.operator, self.params) == (ask.action, ask.operator, ask.params)
        return same and (ask.target or ask.targets[0]) in self.targets

    def words(self) -> str:
        """`refund_payment of BK-7F3K2Q (amount 10.00) by alice`"""
        asked = ", ".join(f"{name} {value}" for name, value in sorted(self.params.items()))
        asked = f" ({asked})" if asked else ""
        return f"{self.action} of {', '.join(self.targets)}{asked} by {self.operator}"


class TokenReused(Conflict):
    code = "token_reused"


def claim_token(token: str, ask: Ask) -> None:
    """Hold `token` for `ask`, inside the caller's transaction (an action refused later rolls the
    claim back with it, leaving the token unused); refuse, changing nothing, a token already held
    for another ask. The same ask again passes: the caller then finds what it already did."""
    held, created = ActionToken.objects.get_or_create(
        token=token,
        defaults={
            "action": ask.action,
            "targets": list(ask.targets),
            "params": dict(ask.params),
            "operator_label": ask.operator,
        },
    )
    if created:
        return
    earlier = Ask.held(held)
    if earlier.covers(ask):
        return
    logger.warning(
        "support action token reused for another ask",
        extra={"token": token, "held_for": earlier.words(), "asked": ask.words()},
    )
    message = (
        f"This action token was already used for {earlier.words()} at {held.used_at:%Y-%m-%d %H:%M:%S} UTC; "
        f"it cannot also be used for {ask.words()}. Nothing was done: another action needs a new token."
    )
    raise TokenReused(message, fields={"token": [message]})


def lock_unless_done(
    action: str,
    booking_id: UUID,
    token: str,
    *,
    operator: str,
    batch: Iterable[str] = (),
    not_queued: Callable[[Booking, str], str] | None = None,
    **params: object,
) -> tuple[Booking, ActionResult | None]:
    """Lock the booking and claim the token for this ask (inside the caller's transaction); when
    the token was already used for it here, also the earlier result, and the caller does nothing
    more. `not_queued(booking, token)`: how the earlier action's work still waits for our queue
    ('' when it does not), said instead of claiming it done."""
    booking = lock_booking(booking_id)
    claim_token(token, Ask.of(action, target_key(booking), operator=operator, batch=batch, **params))
    earlier = (
        BookingEvent.objects.filter(booking=booking, kind__startswith="support.", data__action_token=token)
        .order_by("id")
        .first()
    )
    if earlier is None:
        return booking, None
    by = f"by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} ({earlier.kind})"
    waiting = not_queued(booking, token) if not_queued else ""
    return booking, ActionResult(
        action=action,
        booking=booking,
        performed=False,
        from_state=earlier.from_state,
        to_state=earlier.to_state,
        message=(
            f"Already requested {by}; {waiting} Nothing more was done."
            if waiting
            else f"Already done {by}; nothing more was done."
        ),
        queued=not waiting,
    )


def correction_data(token: str, note: str, **extra: Any) -> dict[str, Any]:
    """The data of an action's named correction on the timeline: its token, the note, and more."""
    return {"action_token": token, "note": note[:NOTE_MAX_CHARS], **extra}
