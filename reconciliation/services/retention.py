"""The sweep's retention phase: what grows with time and is no longer needed goes, in batches.

One place, run by every sweep (`sweeper.sweep`), each rule one batch of RECONCILE_BATCH_SIZE rows
(oldest first) per sweep, so a backlog is worked off over a few sweeps and never in one long
statement; a dry run counts what would go and changes nothing.

- Unverified deliveries' evidence: deleted after WEBHOOK_REFUSED_RETENTION_DAYS
  (`inbound_refused_prune`).
- The bodies of authentic deliveries once processed, the partners' and the payment provider's:
  cleared after WEBHOOK_BODY_RETENTION_DAYS; the rows stay, so the event ids still de-duplicate
  (`inbound_bodies_prune`, `event_bodies_prune`).
- Expired sessions: Django's `SessionStore.clear_expired()`.
- django-axes's access logs and access failure logs: deleted after LOGIN_LOG_RETENTION_DAYS (the
  rule of axes's own `reset_logs(age_days=)` and `reset_failure_logs(age_days=)`, which delete in
  one statement, in batches here). Its lockout counters (access attempts) are axes's own to clean:
  it drops them once the cool-off has passed.

Timeline rows, attempts, observations and the webhook rows themselves are never deleted
(invariant 8); the timeline folds what repeats instead (`selectors.timeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module

from axes.models import AccessFailureLog, AccessLog
from django.conf import settings
from django.db.models import Model

from partners.models import Partner
from partners.services.webhooks import inbound_bodies_prune, inbound_refused_prune
from payments.services.webhooks import event_bodies_prune


@dataclass(frozen=True)
class Retained:
    """How many rows each rule pruned (would prune, on a dry run)."""

    refused_pruned: int = 0
    webhook_bodies_pruned: int = 0
    payment_bodies_pruned: int = 0
    sessions_cleared: int = 0
    login_logs_pruned: int = 0


def retention_run(*, now: datetime, partner: Partner | None, batch_size: int, dry_run: bool) -> Retained:
    """One batch of each rule. A sweep of one partner prunes only that partner's deliveries;
    sessions and login logs belong to no partner and are left to the full sweeps."""
    body_before = now - timedelta(days=settings.WEBHOOK_BODY_RETENTION_DAYS)
    everyone = partner is None
    return Retained(
        refused_pruned=inbound_refused_prune(
            before=now - timedelta(days=settings.WEBHOOK_REFUSED_RETENTION_DAYS),
            partner=partner,
            batch_size=batch_size,
            dry_run=dry_run,
        ),
        webhook_bodies_pruned=inbound_bodies_prune(
            before=body_before, partner=partner, batch_size=batch_size, dry_run=dry_run
        ),
        payment_bodies_pruned=event_bodies_prune(
            before=body_before, partner=partner, batch_size=batch_size, dry_run=dry_run
        ),
        sessions_cleared=_clear_expired_sessions(now, dry_run) if everyone else 0,
        login_logs_pruned=(
            _prune_login_logs(now - timedelta(days=settings.LOGIN_LOG_RETENTION_DAYS), batch_size, dry_run)
            if everyone
            else 0
        ),
    )


def _clear_expired_sessions(now: datetime, dry_run: bool) -> int:
    """Expired sessions, by the session engine's own `clear_expired()`; how many there were when
    the engine keeps them in the database (counted on a dry run too), else 0. A session store
    that expires its own (the cache, signed cookies) has nothing to clear."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    model = store.get_model_class() if hasattr(store, "get_model_class") else None
    expired = model.objects.filter(expire_date__lt=now).count() if model is not None else 0
    if not dry_run and expired:
        store.clear_expired()
    return expired


def _prune_login_logs(before: datetime, batch_size: int, dry_run: bool) -> int:
    return sum(_delete_batch(model, before, batch_size, dry_run) for model in (AccessLog, AccessFailureLog))


def _delete_batch(model: type[Model], before: datetime, batch_size: int, dry_run: bool) -> int:
    ids = list(
        model.objects.filter(attempt_time__lte=before)
        .order_by("attempt_time")
        .values_list("id", flat=True)[:batch_size]
    )
    if dry_run or not ids:
        return len(ids)
    deleted, _ = model.objects.filter(pk__in=ids).delete()
    return deleted
