"""The support console's payments: the booking page's payment panel, each payment action's preview
and confirmation, the refund proposals (the two-person rule) and payment health.

As for the other actions, every button is an interface over the support services
(`reconciliation.services.support.payments`): the page shows the action's preview (our payment
beside the provider's live answer), and a confirmed POST calls the service, which checks the
permission again, locks, re-checks, dedupes by the form's one-time token and audits. The provider
is asked by a worker after commit: the page says the action was queued (or, while our Redis is
down, that it is not queued yet and the sweeper queues it), the timeline its outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.forms.utils import ErrorList
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from config.errors import ApplicationError
from payments.models import OutsideMethod
from reconciliation.confirm import run_confirmed, show_previewed, show_token, token_to_keep
from reconciliation.models import RefundProposal
from reconciliation.selectors.payment_health import payment_health
from reconciliation.selectors.payment_panel import payment_panel
from reconciliation.services import support
from reconciliation.services.support import payments as money
from reconciliation.services.support.notes import validate_note


def refund_amount(raw: str, currency: str) -> Decimal:
    """A typed refund amount by the one rule the command uses too (`parse_amount`), its refusal in
    the words shown next to the field."""
    try:
        return money.parse_amount(raw, currency)
    except ApplicationError as exc:
        raise forms.ValidationError((exc.fields or {}).get("amount") or [exc.message]) from exc


class PaymentActionForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    amount = forms.CharField(required=False, max_length=32, help_text="")
    # The amount the page previewed: a confirm sending another one does nothing and previews that.
    previewed = forms.CharField(
        required=False, widget=forms.HiddenInput, max_length=32, label="The previewed amount"
    )
    # How a refund paid another way was paid (that action only).
    method = forms.ChoiceField(
        required=False, choices=[("", "(choose)"), *OutsideMethod.choices], label="How it was paid"
    )
    note = forms.CharField(
        required=False,
        validators=[validate_note],
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why; it goes on the booking's timeline with your name.",
    )

    def __init__(self, *args: Any, action: str, currency: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        above = money.approval_above(currency) if currency else None
        # "more than 200.00 EUR"; with no approval amount for the currency, any amount is proposed.
        more_than = f"more than {above} {currency}" if above is not None else "any amount"
        unset = f" (no approval amount is set for {currency})" if above is None else ""
        if action == money.REFUND:
            self.fields["amount"].required = True
            self.fields["previewed"].required = True
            self.fields["amount"].help_text = (
                f"In the payment's currency. When support's refunds of this payment, with this one and "
                f"any proposal waiting, come to {more_than}{unset}, it is only proposed, "
                "and a note saying why is required. Another amount than the one previewed above is "
                "previewed first, then confirmed."
            )
        elif action == money.OUTSIDE:
            self.fields["amount"].required = True
            self.fields["previewed"].required = True
            self.fields["amount"].help_text = (
                "In the payment's currency: what you paid the customer another way, at most what is owed "
                "back. Another amount than the one previewed above is previewed first, then confirmed. "
                f"When what support gave back of this payment, with this, comes to {more_than}{unset}, "
                "it is only proposed: recorded once another person approves it."
            )
            self.fields["method"].required = True
            self.fields["method"].help_text = (
                "Required: how the customer was paid. It goes on the booking's timeline, the payment panel "
                "and the day's settlement report."
            )
            self.fields["note"].required = True
            self.fields["note"].help_text = (
                "Required: the trace of the payment (e.g. the bank transfer's reference). It goes on the "
                "booking's timeline with your name; the customer does not see it."
            )
        else:
            del self.fields["amount"]
            del self.fields["previewed"]
        if action != money.OUTSIDE:
            del self.fields["method"]

    def clean_amount(self) -> Decimal:
        return refund_amount(self.cleaned_data["amount"], self.currency)

    def clean_previewed(self) -> Decimal:
        try:
            return money.parse_amount(self.cleaned_data["previewed"], self.currency)
        except ApplicationError as exc:
            raise forms.ValidationError("Not an amount this page previewed.") from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        amount, previewed = data.get("amount"), data.get("previewed")
        if amount is not None and previewed is not None and amount != previewed:
            self.add_error(
                "previewed",
                f"The amount changed: the preview was of {previewed} {self.currency}, the confirm sent "
                f"{amount} {self.currency}. This page now previews {amount} {self.currency}.",
            )
        return data


def _operator(request: HttpRequest) -> support.Operator:
    return support.Operator.for_user(request.user)


def _told(booking, title: str) -> Callable[[money.PaymentActionResult], str]:
    """The page's message: the action asked, then what came of it; a proposal's result says what
    was proposed itself ("BK-…: Refund proposed (#5): …", not "Refund. Proposed …")."""
    return lambda result: (
        f"{booking.reference}: {result.message}"
        if result.proposed
        else f"{booking.reference}: {title}. {result.message}"
    )


class PaymentConsoleMixin:
    """For the booking admin: the payment panel on the booking's page and the payment actions'
    pages (preview, then a confirmed POST)."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/payment/proposal/<int:proposal_id>/<str:decision>/",
                wrap(self.refund_proposal_view),
                name=f"{prefix}_refund_proposal",
            ),
            path(
                "<path:object_id>/payment/<str:action>/",
                wrap(self.payment_action_view),
                name=f"{prefix}_payment_action",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        booking = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if booking is not None and self.has_view_permission(request, booking):
            extra["payment_panel"] = payment_panel(booking, operator=_operator(request))
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _paying_booking(self, request: HttpRequest, object_id: str):
        booking = self.get_object(request, object_id)
        if booking is None:
            raise Http404("No such booking.")
        if not self.has_view_permission(request, booking):
            raise PermissionDenied
        return booking

    def _render(
        self, request: HttpRequest, booking, shown: money.PaymentPreview, form, change_url: str, **extra
    ):
        context = {
            **self.admin_site.each_context(request),
            "title": f"{shown.title}: {booking.reference}",
            "subtitle": None,
            "opts": self.opts,
            "original": booking,
            "booking": booking,
            "preview": shown,
            "form": form,
            "change_url": change_url,
            "has_view_permission": True,
            **extra,
        }
        return TemplateResponse(request, "admin/reconciliation/payment_action.html", context)

    def payment_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """GET: the preview (refund: of `?amount=`, else of its default amount) and a confirm
        form. POST: perform it (once per token), unless the refund's amount is not the previewed one."""
        if action not in (money.REFUND, money.CAPTURE, money.VOID, money.OUTSIDE):
            raise Http404("No such payment action.")
        amounts = action in (money.REFUND, money.OUTSIDE)  # an amount typed, previewed, confirmed
        booking = self._paying_booking(request, object_id)
        operator = _operator(request)
        spec = money.PAYMENT_ACTIONS[action]
        if not operator.can(spec["permission"]):
            raise PermissionDenied
        change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
        currency = booking.currency
        if request.method == "POST":
            form = PaymentActionForm(request.POST, action=action, currency=currency)
            if form.is_valid():
                run = functools.partial(
                    money.payment_action_run,
                    action,
                    booking_id=booking.pk,
                    operator=operator,
                    token=form.cleaned_data["token"],
                    note=form.cleaned_data.get("note", ""),
                    amount=form.cleaned_data.get("amount"),
                    method=form.cleaned_data.get("method", ""),
                )
                response = run_confirmed(
                    request,
                    run,
                    title=spec["title"],
                    back_to=change_url,
                    told=_told(booking, spec["title"]),
                    form=form,
                )
                if response is not None:
                    return response
            # Nothing was done: the preview of what the form sent (another amount: of that one).
            shown = money.payment_preview(
                action,
                booking,
                operator=operator,
                amount=form.cleaned_data.get("amount"),
                live=False,
                token=token_to_keep(form),
                method=form.cleaned_data.get("method") or "",
            )
            show_token(form, shown.token)
            if shown.amount is not None:
                show_previewed(form, previewed=str(shown.amount))
            amount_errors = form.errors.get("amount")
        else:
            raw = request.GET.get("amount", "").strip()
            amount, amount_errors = None, None
            if raw and amounts:
                try:
                    amount = refund_amount(raw, currency)
                except forms.ValidationError as exc:
                    amount_errors = ErrorList(exc.messages)
            shown = money.payment_preview(
                action, booking, operator=operator, amount=amount, all_by_default=not amount_errors
            )
            initial: dict[str, Any] = {"token": shown.token}
            if amounts:
                initial["amount"] = raw if amount_errors else shown.amount
                initial["previewed"] = shown.amount
            form = PaymentActionForm(initial=initial, action=action, currency=currency)
        # An amount refused (typed, or sent with the confirm) is said beside it, and nothing is
        # offered to confirm until a valid one is previewed.
        return self._render(request, booking, shown, form, change_url, amount_errors=amount_errors)

    def refund_proposal_view(
        self, request: HttpRequest, object_id: str, proposal_id: int, decision: str
    ) -> HttpResponse:
        """Approve or reject a refund proposal: GET the preview, POST the decision."""
        action = {"approve": money.APPROVE, "reject": money.REJECT}.get(decision)
        if action is None:
            raise Http404("No such decision.")
        booking = self._paying_booking(request, object_id)
        proposal = RefundProposal.objects.filter(pk=proposal_id, booking=booking).first()
        if proposal is None:
            raise Http404("No such refund proposal.")
        operator = _operator(request)
        withdrawing = action == money.REJECT and proposal.proposed_by_same(operator.person)
        if not withdrawing and not operator.can(money.PAYMENT_ACTIONS[action]["permission"]):
            raise PermissionDenied
        change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
        title = money.WITHDRAW_TITLE if withdrawing else money.PAYMENT_ACTIONS[action]["title"]
        if proposal.outside:
            title += " paid another way"
        if request.method == "POST":
            form = PaymentActionForm(request.POST, action=action)
            if form.is_valid():
                run = functools.partial(
                    money.payment_action_run,
                    action,
                    proposal_id=proposal.pk,
                    operator=operator,
                    token=form.cleaned_data["token"],
                    note=form.cleaned_data.get("note", ""),
                )
                response = run_confirmed(
                    request, run, title=title, back_to=change_url, told=_told(booking, title), form=form
                )
                if response is not None:
                    return response
            shown = money.proposal_preview(
                action, proposal, operator=operator, live=False, token=token_to_keep(form)
            )
            show_token(form, shown.token)
        else:
            shown = money.proposal_preview(action, proposal, operator=operator)
            form = PaymentActionForm(initial={"token": shown.token}, action=action)
        return self._render(request, booking, shown, form, change_url)


def _payment_panel(proposal: RefundProposal) -> str:
    """Where a proposal is approved or rejected: its booking's payment panel."""
    return reverse("admin:bookings_booking_change", args=[proposal.booking_id]) + "#payment"


@admin.register(RefundProposal)
class RefundProposalAdmin(admin.ModelAdmin):
    """Refund proposals, pending first: each links to its booking, where it is approved or rejected
    (with its preview). Read-only here; and the payment health page.

    A proposal has no page of its own: approving or rejecting it needs its booking's payment panel
    (the preview of what the refund does now), so a proposal's address leads there."""

    list_display = (
        "id",
        "booking_link",
        "kind",
        "method",
        "amount",
        "currency",
        "state",
        "proposed_by_label",
        "proposed_at",
    )
    list_filter = ("state", "kind", "currency")
    search_fields = ("booking__reference", "proposed_by_label", "decided_by_label")
    ordering = ("state", "-proposed_at")
    change_list_template = "admin/reconciliation/refundproposal_change_list.html"
    readonly_fields = [f.name for f in RefundProposal._meta.fields]
    list_display_links = None  # the booking's link is the way in: see `change_view`

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("booking")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        proposal = self.get_object(request, object_id)
        if proposal is None or not self.has_view_or_change_permission(request, proposal):
            return super().change_view(request, object_id, form_url, extra_context)  # its 404 / 403
        return HttpResponseRedirect(_payment_panel(proposal))

    @admin.display(description="booking", ordering="booking__reference")
    def booking_link(self, proposal: RefundProposal):
        return format_html('<a href="{}">{}</a>', _payment_panel(proposal), proposal.booking.reference)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("health/", wrap(self.health_view), name="reconciliation_payment_health"),
            *super().get_urls(),
        ]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("bookings.view_booking"):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Payment health (last hour)",
            "opts": self.opts,
            "health": payment_health(),
            "now": timezone.now(),
        }
        return TemplateResponse(request, "admin/reconciliation/payment_health.html", context)
