"""Support actions on a booking's payment, in the frame of the booking actions: permission, a
preview with our payment beside the provider's live answer, the same checks re-run under the
locks, once per token, and a `support.*` row on the booking's timeline.

- refund: part or all of what was captured and not yet refunded; above the payment's
  currency's approval amount (`approval_above`: `PAYMENTS_REFUND_APPROVAL_ABOVE` in
  `PAYMENTS_REFUND_APPROVAL_CURRENCY`, or its own in `PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY`;
  with none, any amount) only proposed, and run once another person approves it
  (the two-person rule; the proposer may withdraw it, an approver may reject it);
- retry the capture: what the booking owes, of a hold the partner's confirmation allows taking;
- void: release a hold the booking no longer needs (never one a confirmed booking owes);
- record a refund paid another way: of what refunds the card refused still owe, what support paid
  the customer outside the provider, and how (a bank transfer, cash, a voucher or credit, other);
  nothing is asked of the provider. Above the same approval amount (what support gave back of the
  payment, either way, counts together) it is only proposed, and recorded once another person
  approves it.

What is asked of the provider is always the payments app's own operation and run, so a support
refund is keyed, fenced, recorded and settled exactly as automation's. The payment as an action
finds it, the names, permissions and refusals are in `situation`; the provider's live answer in
`provider_side`; what an action will do in `previews`; the actions in `actions`.
"""

from reconciliation.services.support.payments.actions import (
    payment_action_run,
    support_capture,
    support_record_outside,
    support_refund,
    support_refund_approve,
    support_refund_reject,
    support_void,
)
from reconciliation.services.support.payments.previews import (
    PaymentPreview,
    payment_preview,
    proposal_preview,
)
from reconciliation.services.support.payments.provider_side import ProviderSide, provider_side
from reconciliation.services.support.payments.situation import (
    APPROVE,
    CAPTURE,
    OUTSIDE,
    PAYMENT_ACTIONS,
    PROPOSED_KIND,
    PROVIDER_TRUTH_PERMISSION,
    REFUND,
    REJECT,
    VOID,
    WITHDRAW_TITLE,
    PaymentActionResult,
    PaymentSituation,
    approval_above,
    approval_rule,
    parse_amount,
    parse_method,
    proposal_by_id,
)

__all__ = [
    "APPROVE",
    "CAPTURE",
    "OUTSIDE",
    "PAYMENT_ACTIONS",
    "PROPOSED_KIND",
    "PROVIDER_TRUTH_PERMISSION",
    "REFUND",
    "REJECT",
    "VOID",
    "WITHDRAW_TITLE",
    "PaymentActionResult",
    "PaymentPreview",
    "PaymentSituation",
    "ProviderSide",
    "approval_above",
    "approval_rule",
    "parse_amount",
    "parse_method",
    "payment_action_run",
    "payment_preview",
    "proposal_by_id",
    "proposal_preview",
    "provider_side",
    "support_capture",
    "support_record_outside",
    "support_refund",
    "support_refund_approve",
    "support_refund_reject",
    "support_void",
]
