"""What the payment provider holds for a booking, as the payments app states it to the booking
side (`bookings.ports.PaymentPort`). Its own module, free of the rest: the port declares it and
`customer_money` words it, and the port must not depend on the wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class PaymentFacts:
    """What the payment provider holds for a booking, as the payments app knows it.

    `state` is one of `authorizing` (asked, no answer yet), `held`, `held_in_review` (held, and
    the provider placed the payment in its review queue), `charge_unknown` (held, and a
    capture was asked for whose outcome is not known: it may or may not have been taken),
    `charged` (captured, perhaps partly refunded since), `released` (the hold was voided),
    `lapsed` (the hold ended at the provider: nobody released it), `release_refused` (held,
    nothing is owed, and the provider refused to release it every time it was asked: it lapses
    at `lapses_at`, the provider's word), `declined` (by the card's bank), `refused` (the
    provider refused the request itself, e.g. a payment method it does not know: no bank saw
    it), `needs_action` (the provider answered neither held nor declined: the payment awaits a
    step from the customer, such as their bank's authentication, that we never ask for),
    `not_charged` (the booking ended
    before a hold was asked for). Amounts in the booking's currency; `refund_failed` is what
    refunds that could not be made (the card refused them after they were made, or the provider
    every time it was asked) still owe the customer (not in `refunded`), and
    `refunded_outside` what support paid back of it another way (not to the card: not in
    `refunded` either). `charging` is what the charge in doubt asked to take (`charge_unknown`
    only): the whole hold, or part of it (a cancel's fee), and no more can be taken.
    """

    state: str
    currency: str
    amount: Decimal
    charged: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    refund_failed: Decimal = Decimal(0)
    refunded_outside: Decimal = Decimal(0)
    lapses_at: datetime | None = None
    charging: Decimal | None = None
