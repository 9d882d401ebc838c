"""Who may run which support action: each action's title, permission and timeline kind, and the
operator who acts (a console user, checked against their permissions, or ops at the server)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.contrib.auth import get_user_model

from config.errors import ApplicationError, NotFound
from reconciliation.models import NamedAccounts, Person

SYNC, RETRY, COMPENSATE, CANCEL, RESOLVE = "sync", "retry", "compensate", "cancel", "resolve"
ACTIONS: dict[str, dict[str, str]] = {
    SYNC: {
        "title": "Force a partner sync",
        "permission": "bookings.sync_booking",
        "kind": "support.sync_requested",
    },
    RETRY: {
        "title": "Retry the submission",
        "permission": "bookings.retry_booking",
        "kind": "support.retry_requested",
    },
    COMPENSATE: {
        "title": "Compensate: cancel at the partner and fail",
        "permission": "bookings.compensate_booking",
        "kind": "support.compensated",
    },
    CANCEL: {
        "title": "Cancel on the customer's behalf",
        "permission": "bookings.cancel_booking_support",
        "kind": "support.cancel_requested",
    },
    RESOLVE: {
        "title": "Mark resolved",
        "permission": "bookings.resolve_booking",
        "kind": "support.resolved",
    },
}
REPLAY, REPLAY_PERMISSION = "replay_webhook", "partners.replay_inboundevent"

# Actions on an orphan case (a partner reservation no booking wants; `support.orphans`).
ORPHAN_CANCEL, ORPHAN_LINK, ORPHAN_CLOSE = "orphan_cancel", "orphan_link", "orphan_close"
ORPHAN_ACTIONS: dict[str, dict[str, str]] = {
    ORPHAN_CANCEL: {
        "title": "Cancel at the partner",
        "permission": "partners.cancel_orphan",
        "kind": "support.orphan_cancel_requested",
    },
    ORPHAN_LINK: {
        "title": "Link to a booking",
        "permission": "partners.link_orphan",
        "kind": "support.orphan_linked",
    },
    ORPHAN_CLOSE: {
        "title": "Close with a note",
        "permission": "partners.close_orphan",
        "kind": "support.orphan_closed",
    },
}
# Closing a case while the partner still holds the reservation live takes this one as well.
CLOSE_LIVE_ORPHAN_PERMISSION = "partners.close_live_orphan"


class SupportActionDenied(ApplicationError):
    code = "permission_denied"
    http_status = 403


# The longest label the records keep (the actor and proposer labels, an action token's operator).
LABEL_MAX = 150


def os_user() -> str:
    """The OS account the shell's command runs as, by the process's real uid: never by the LOGNAME,
    USER, LNAME or USERNAME variables (`getpass.getuser` reads those first), which whoever types the
    command sets (`USER=bob manage.py approve_refund 5`). A uid with no passwd entry (a container's)
    is named by its number, `uid:1000`: two such uids stay two, never one shared "unknown"."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


@dataclass(frozen=True)
class Operator:
    """Who performs a support action. `user` None means a shell operator (ops at the server),
    who is trusted; console users are checked against their permissions. `os_user` is the OS
    user at the shell, kept beside any `--as` account: `--as` takes no credential, so the person
    at the terminal stays one of the identities the two-person rule compares (`person`)."""

    label: str
    user: Any = None
    os_user: str = ""  # '' in the console

    @classmethod
    def for_user(cls, user: Any) -> Operator:
        return cls(label=user.get_username(), user=user)

    @classmethod
    def shell(cls, username: str | None = None) -> Operator:
        """`ops:<os user>`, or the named console user (`--as USER`), checked like in the console
        and labelled with both (`ops:root as alice`): every row it writes names who typed it."""
        at = os_user()
        if username is not None:  # "" is no user to find, never the trusted shell
            user = get_user_model().objects.filter(username=username, is_active=True).first()
            if user is None:
                raise NotFound(f"No active user {username!r}.")
            return cls(label=f"ops:{at} as {user.get_username()}"[:LABEL_MAX], user=user, os_user=at)
        return cls(label=f"ops:{at}"[:LABEL_MAX], os_user=at)

    @cached_property  # once per request or command, however many proposals it is compared with
    def person(self) -> Person:
        """Every identity this operator acts as, for the two-person rule."""
        return self.person_among(None)

    def person_among(self, named: NamedAccounts | None) -> Person:
        """`person`, its accounts read from `named` (`RefundProposal.read_people`) when there."""
        return Person.of(self.user.pk if self.user is not None else None, self.os_user, self.label, named)

    def can(self, permission: str) -> bool:
        return self.user is None or self.user.has_perm(permission)

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise SupportActionDenied(f"{self.label} lacks the permission {permission}.")
