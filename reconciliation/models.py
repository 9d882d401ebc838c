"""Support's own records: what the support actions need to remember between two people, and what
each action token was given for.

`RefundProposal` is a refund above its currency's approval amount that one person proposed and
another must approve before it runs (the two-person rule, docs/console.md): through the provider
(`kind` refund), or a refund the card refused paid to the customer another way and recorded
(`kind` outside, with its `method`). The proposal is the state between the two; the audit is on
the booking's timeline (`support.refund_proposed`, `support.refund_approved`,
`support.refund_rejected`), written in the same transaction as each change of it. The permissions
of the payment actions are declared here, beside the record the approval needs.

`ActionToken` is what a support action's token was first used for (the action, its targets, what
was asked beyond them, who asked): the same token asking anything else is refused
(`services.support.once.claim_token`), as an idempotency key reused with another body is.

`OwedMessage` is a message a support action owes a worker (a sync, a submission), written in the
action's transaction: the hint after commit sends it and marks it sent; one the broker did not take
(our Redis down) is sent by the sweeper once the broker answers again (docs/design.md, invariant 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from payments.models import OutsideMethod

# The console accounts named like each OS user (`Person`), as one query found them.
NamedAccounts = dict[str, frozenset[int]]


def accounts_named(os_users: Iterable[str]) -> NamedAccounts:
    """The console accounts named like each of these OS users, in one query (every name is a key,
    an empty set for none: a name asked once is never asked again)."""
    names = {name for name in os_users if name}
    found: dict[str, set[int]] = {name: set() for name in names}
    if names:
        rows = get_user_model().objects.filter(username__in=names).values_list("username", "pk")
        for username, pk in rows:
            found[username].add(pk)
    return {name: frozenset(pks) for name, pks in found.items()}


@dataclass(frozen=True)
class Person:
    """Everyone a person acted as, for the two-person rule: their console accounts and, at the
    shell, the OS user (who stays the same person whatever `--as` names). An OS user counts as the
    console account of the same name too: `alice` proposing in the console and approving at the
    shell as OS user alice is one person. Two are the same when any identity is shared."""

    accounts: frozenset[int]
    os_users: frozenset[str]
    label: str

    @classmethod
    def of(
        cls, account_id: int | None, os_user: str, label: str, named: NamedAccounts | None = None
    ) -> Person:
        """`named`: the accounts already looked up by OS user (`accounts_named`), kept and added to,
        so that many people read together cost one query, not one each."""
        accounts = {account_id} if account_id is not None else set()
        if os_user:
            named = {} if named is None else named
            if os_user not in named:
                named.update(accounts_named([os_user]))
            accounts.update(named[os_user])
        return cls(frozenset(accounts), frozenset({os_user} if os_user else ()), label)

    def same(self, other: Person) -> bool:
        # The labels too: a row whose account was deleted since keeps only its name.
        return bool(self.accounts & other.accounts or self.os_users & other.os_users) or (
            self.label == other.label
        )

    def shares_os_user(self, other: Person) -> str:
        """The OS user both typed as ('' if none): at the shell one OS account is one person."""
        return min(self.os_users & other.os_users, default="")


def _os_user_of(os_user: str, account_id: int | None, label: str) -> str:
    """The OS user a row names: recorded, or, on a shell operator's row from before it was, read
    from its label `ops:<os user>`."""
    if os_user:
        return os_user
    return label.removeprefix("ops:") if account_id is None and label.startswith("ops:") else ""


class ProposalState(models.TextChoices):
    PENDING = "pending", "Waiting for a second person's approval"
    APPROVED = "approved", "Approved: the refund was asked of the provider"
    REJECTED = "rejected", "Rejected (or withdrawn): nothing was refunded"


class ProposalKind(models.TextChoices):
    REFUND = "refund", "Refund through the provider"
    OUTSIDE = "outside", "Refund paid another way (recorded)"


class RefundProposal(models.Model):
    id = models.BigAutoField(primary_key=True)
    booking = models.ForeignKey("bookings.Booking", on_delete=models.PROTECT, related_name="refund_proposals")
    payment = models.ForeignKey("payments.Payment", on_delete=models.PROTECT, related_name="refund_proposals")
    # Database defaults: processes still on the old code insert refund proposals without these
    # during a rolling deploy.
    kind = models.CharField(
        max_length=10,
        choices=ProposalKind.choices,
        default=ProposalKind.REFUND,
        db_default=ProposalKind.REFUND,
    )
    # How the customer was paid, for a refund paid another way ('' for a refund through the provider).
    method = models.CharField(max_length=20, choices=OutsideMethod.choices, blank=True, db_default="")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    note = models.TextField()
    state = models.CharField(max_length=10, choices=ProposalState.choices, default=ProposalState.PENDING)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_by_label = models.CharField(max_length=150)
    # The OS user of a proposal made at the shell (with or without --as, which sets `proposed_by`);
    # '' in the console and on rows from before it was recorded (`_os_user_of` reads their label).
    # A database default: the column is added without rewriting the table, and processes still on
    # the old code insert proposals without it during a rolling deploy.
    proposed_by_os_user = models.CharField(max_length=150, blank=True, default="", db_default="")
    proposed_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by_label = models.CharField(max_length=150, blank=True)
    decided_by_os_user = models.CharField(max_length=150, blank=True, default="", db_default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    # The refund the approval asked for (its key, tries and outcome are the operation's).
    operation = models.OneToOneField(
        "payments.PaymentOperation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refund_proposal",
    )

    class Meta:
        ordering = ["-proposed_at", "-id"]
        constraints = [
            # While one waits, another would let two approvals together refund more than the
            # approver of either saw: one at a time per payment.
            models.UniqueConstraint(
                fields=["payment"], condition=Q(state="pending"), name="refund_proposal_one_pending"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_proposal_amount_positive"),
            # A refund paid another way says how; one through the provider has no such method.
            models.CheckConstraint(
                condition=(Q(kind="refund") & Q(method="")) | (Q(kind="outside") & ~Q(method="")),
                name="refund_proposal_method_of_outside",
            ),
        ]
        permissions = [
            ("refund_payment", "Can refund a payment (above the approval amount: propose one)"),
            ("approve_refund", "Can approve or reject another person's refund proposal"),
            ("capture_payment", "Can retry the capture of a payment's hold"),
            ("void_payment", "Can void a payment's hold"),
        ]

    def __str__(self) -> str:
        return f"{self.what} {self.amount} {self.currency} of {self.booking.reference} ({self.state})"

    @property
    def pending(self) -> bool:
        return self.state == ProposalState.PENDING

    # The accounts looked up by OS user, shared by proposals read together (`read_people`); None:
    # each looks up its own.
    _named: NamedAccounts | None = None

    @property
    def proposer_os_user(self) -> str:
        return _os_user_of(self.proposed_by_os_user, self.proposed_by_id, self.proposed_by_label)

    @property
    def decider_os_user(self) -> str:
        return _os_user_of(self.decided_by_os_user, self.decided_by_id, self.decided_by_label)

    @property
    def proposer(self) -> Person:
        return Person.of(self.proposed_by_id, self.proposer_os_user, self.proposed_by_label, self._named)

    @property
    def decider(self) -> Person:
        return Person.of(self.decided_by_id, self.decider_os_user, self.decided_by_label, self._named)

    @classmethod
    def read_people(cls, proposals: Iterable[RefundProposal], *also: str) -> NamedAccounts:
        """Looks up, in one query, the accounts named like every OS user these proposals (and
        `also`, e.g. the operator's) name, shared by them all: a list of proposals, each asked
        who proposed and who decided it, costs one query instead of two a row."""
        proposals = list(proposals)
        named = accounts_named(
            [*also, *(p.proposer_os_user for p in proposals), *(p.decider_os_user for p in proposals)]
        )
        for proposal in proposals:
            proposal._named = named
        return named

    def proposed_by_same(self, person: Person) -> bool:
        """Whether this person proposed it, by any identity either acted as (`Person.same`). The
        one rule for who may not approve their own and who withdraws rather than rejects."""
        return self.proposer.same(person)

    @property
    def withdrawn(self) -> bool:
        """Rejected by its own proposer."""
        return self.state == ProposalState.REJECTED and self.proposer.same(self.decider)

    @property
    def outside(self) -> bool:
        return self.kind == ProposalKind.OUTSIDE

    @property
    def name(self) -> str:
        """'Refund proposal #5', or 'Proposal #5 of a refund paid another way (bank transfer)'."""
        if self.outside:
            return f"Proposal #{self.pk} of a refund paid another way ({self.get_method_display().lower()})"
        return f"Refund proposal #{self.pk}"

    @property
    def what(self) -> str:
        """'Refund', or 'Refund paid another way (bank transfer)': how the proposal is named."""
        if not self.outside:
            return "Refund"
        return f"Refund paid another way ({self.get_method_display().lower()})"


class ActionToken(models.Model):
    """What a support action token was first given for; written in the transaction of the action
    it lets run, so a refused action leaves the token unused."""

    id = models.BigAutoField(primary_key=True)
    token = models.CharField(max_length=64, unique=True)
    action = models.CharField(max_length=40)
    # Every target one token covers (a command or a bulk action over several), sorted.
    targets = models.JSONField()
    params = models.JSONField(default=dict)  # what was asked beyond the targets (an amount, an outcome)
    operator_label = models.CharField(max_length=150)
    used_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.token}: {self.action} of {', '.join(self.targets)} by {self.operator_label}"


class OwedMessage(models.Model):
    """A support action's message for its booking's partner queue, owed until it is on the queue.

    Written with the action (so a committed action can never lose its message), marked sent by
    the action's hint after commit or, when our Redis did not take it, by the sweeper
    (`sweeper._send_owed_messages`) once it does."""

    id = models.BigAutoField(primary_key=True)
    booking = models.ForeignKey("bookings.Booking", on_delete=models.CASCADE, related_name="+")
    actor_name = models.CharField(max_length=40)
    action_token = models.CharField(max_length=64, db_default="", blank=True)
    owed_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweeper reads the unsent ones only.
            models.Index(fields=["owed_at"], condition=Q(sent_at__isnull=True), name="owed_message_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} for {self.booking_id} ({'sent' if self.sent_at else 'owed'})"
