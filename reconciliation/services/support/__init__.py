"""Support actions (invariant 10): the same services and actors as automation, permission-checked,
idempotent, audited, and previewed before they run.

Every action has two halves: `preview(action, booking)` says what it will do, our state beside
the partner's (`previews`, `partner_side`); `support_<action>` runs it (`actions`), after the
same checks the preview shows (`checks`), once per action token (`once`), for an operator with
the permission (`permissions`). Stored webhooks are re-verified and replayed in `replay`; orphan
cases (partner reservations no booking wants) have their own actions in the same frame (`orphans`).
"""

from reconciliation.services.support.actions import (
    support_action_run,
    support_cancel,
    support_compensate,
    support_resolve,
    support_retry,
    support_sync,
)
from reconciliation.services.support.checks import (
    RESOLUTIONS,
    Situation,
    all_outcomes,
    outcome_refusal,
    refusal,
)
from reconciliation.services.support.once import ActionResult, TokenReused, clean_token, new_token, target_key
from reconciliation.services.support.orphans.actions import support_orphan_action_run
from reconciliation.services.support.orphans.previews import OrphanPreview, orphan_preview
from reconciliation.services.support.orphans.situation import (
    OrphanActionResult,
    link_candidate,
    orphan_case_by_id,
)
from reconciliation.services.support.owed import NOT_QUEUED
from reconciliation.services.support.permissions import (
    ACTIONS,
    CANCEL,
    CLOSE_LIVE_ORPHAN_PERMISSION,
    COMPENSATE,
    ORPHAN_ACTIONS,
    ORPHAN_CANCEL,
    ORPHAN_CLOSE,
    ORPHAN_LINK,
    REPLAY,
    REPLAY_PERMISSION,
    RESOLVE,
    RETRY,
    SYNC,
    Operator,
    SupportActionDenied,
)
from reconciliation.services.support.previews import Preview, booking_by_reference, preview
from reconciliation.services.support.replay import (
    ReplayResult,
    inbound_event_replay_refusal,
    inbound_event_reverify,
    support_replay_inbound,
)

__all__ = [
    "ACTIONS",
    "CANCEL",
    "CLOSE_LIVE_ORPHAN_PERMISSION",
    "COMPENSATE",
    "NOT_QUEUED",
    "ORPHAN_ACTIONS",
    "ORPHAN_CANCEL",
    "ORPHAN_CLOSE",
    "ORPHAN_LINK",
    "REPLAY",
    "REPLAY_PERMISSION",
    "RESOLUTIONS",
    "RESOLVE",
    "RETRY",
    "SYNC",
    "ActionResult",
    "Operator",
    "OrphanActionResult",
    "OrphanPreview",
    "Preview",
    "ReplayResult",
    "Situation",
    "SupportActionDenied",
    "TokenReused",
    "all_outcomes",
    "booking_by_reference",
    "clean_token",
    "inbound_event_replay_refusal",
    "inbound_event_reverify",
    "link_candidate",
    "new_token",
    "orphan_case_by_id",
    "orphan_preview",
    "outcome_refusal",
    "preview",
    "refusal",
    "support_action_run",
    "support_cancel",
    "support_compensate",
    "support_orphan_action_run",
    "support_replay_inbound",
    "support_resolve",
    "support_retry",
    "support_sync",
    "target_key",
]
