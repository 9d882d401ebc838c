"""Retry the capture of a booking's hold (the console's payment "Retry the capture")."""

from __future__ import annotations

from reconciliation.management.commands._payment_ops import PaymentActionCommand
from reconciliation.services.support import payments as money


class Command(PaymentActionCommand):
    help = (
        "Capture what a confirmed booking owes of its payment's hold (the step automation takes on the "
        "partner's confirmation; e.g. after the provider refused it and it was left to support), under a "
        "new key, and recorded as support.capture_requested. Refused while another operation's outcome is "
        "unknown, for a booking the partner never confirmed, or a hold that lapsed. Shows our payment beside "
        "the provider's first and asks to confirm (--yes to skip)."
    )
    action = money.CAPTURE
