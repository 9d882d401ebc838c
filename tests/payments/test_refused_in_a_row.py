"""When automation stops asking for a step and leaves it to support: the provider refused (or
declined) it every time it was asked lately, not at some time in the payment's life."""

from __future__ import annotations

import pytest

from payments.decisions import Step
from payments.models import OperationKind, OperationState, PaymentOperation
from payments.services.runs import _refused_for_good

Op = OperationState


def _history(kind: str, *states: str) -> list[PaymentOperation]:
    return [PaymentOperation(kind=kind, seq=n, state=state) for n, state in enumerate(states, start=1)]


@pytest.mark.parametrize(
    ("states", "left_to_support"),
    [
        ((Op.REFUSED, Op.REFUSED), True),
        ((Op.REFUSED, Op.DECLINED), True),  # a card error on a capture loops as surely as a 400
        ((Op.REFUSED, Op.NOT_MADE, Op.REFUSED), True),  # "not now" answers neither count nor reset
        ((Op.REFUSED, Op.REFUSED, Op.SUCCEEDED), False),  # review: refusals long ago barred a new refund
        ((Op.REFUSED, Op.SUCCEEDED, Op.REFUSED), False),
        ((Op.SUCCEEDED,), False),
    ],
)
def test_a_step_is_left_to_support_only_after_refusals_in_a_row(settings, states, left_to_support):
    settings.PAYMENTS_REFUSED_MAX_TRIES = 2
    other_step = _history(OperationKind.CAPTURE, Op.REFUSED, Op.REFUSED)
    operations = _history(OperationKind.REFUND, *states) + other_step

    assert _refused_for_good(operations, Step.REFUND) is left_to_support
