"""The support console's orphan cases: the queue (the changelist), a case's page with its story
and actions, and each action's preview and confirmation.

As for bookings, every button is an interface over `reconciliation.services.support`: the page
shows the action's preview (our record beside the partner's live answer), and a confirmed POST
calls the service, which checks the permission again, locks, re-checks, dedupes by the form's
one-time token and writes the case's history.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from config.errors import ApplicationError
from partners.admin import OrphanCaseAdmin
from partners.models import OrphanCase, Partner
from reconciliation.confirm import run_confirmed, show_previewed, show_token, token_to_keep
from reconciliation.selectors.orphans import open_orphans_by_partner, orphan_queue, orphan_story
from reconciliation.services import support
from reconciliation.services.support.notes import validate_note

QUEUE_LIMIT = 500


class LiveRefsField(forms.CharField):
    """The partner's ids of the booking's live reservations as the preview showed them, carried as
    a JSON list: an id is the partner's, any character in it (a comma too) is its own."""

    NOT_PREVIEWED = "Not the booking's live reservations as this page previewed them."

    @staticmethod
    def carried(refs: Sequence[str]) -> str:
        return json.dumps(list(refs), ensure_ascii=False)

    def clean(self, value: object) -> list[str]:
        text = super().clean(value)  # a string, its length bounded
        if not text:
            return []
        try:
            refs = json.loads(text)
        except ValueError:
            raise forms.ValidationError(self.NOT_PREVIEWED) from None
        if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
            raise forms.ValidationError(self.NOT_PREVIEWED)
        return refs


class OrphanActionForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    booking = forms.CharField(required=False, widget=forms.HiddenInput, max_length=12, label="Booking")
    # The booking's live reservations the preview showed: a link that would add another is refused.
    expected_live = LiveRefsField(
        required=False, widget=forms.HiddenInput, max_length=1000, label="The booking's live reservations"
    )
    note = forms.CharField(
        required=False,
        validators=[validate_note],
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why; it goes in the case's history with your name.",
    )

    def __init__(self, *args, needs_note: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if needs_note:
            self.fields["note"].required = True
            self.fields["note"].help_text = "Required: what you found and decided."


admin.site.unregister(OrphanCase)


@admin.register(OrphanCase)
class SupportOrphanCaseAdmin(OrphanCaseAdmin):
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/action/<str:action>/",
                wrap(self.action_view),
                name="partners_orphancase_action",
            ),
            *super().get_urls(),
        ]

    def _case_or_404(self, request: HttpRequest, object_id: str) -> OrphanCase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            return support.orphan_case_by_id(object_id)
        except ApplicationError as exc:
            raise Http404(exc.message) from exc

    # --- the queue -----------------------------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        partner_code = request.GET.get("partner") or ""
        partner = Partner.objects.filter(code=partner_code).first() if partner_code else None
        include_closed = request.GET.get("all") == "1"
        cases = (
            []
            if partner_code and partner is None
            else list(orphan_queue(partner=partner, include_closed=include_closed)[:QUEUE_LIMIT])
        )
        codes = dict(Partner.objects.values_list("pk", "code"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Orphan cases",
            "opts": self.opts,
            "cases": [
                {"case": c, "url": reverse("admin:partners_orphancase_change", args=[c.pk])} for c in cases
            ],
            "counts": sorted(
                ((codes[pk], n) for pk, n in open_orphans_by_partner().items()),
                key=lambda item: (-item[1].flagged, -item[1].open, item[0]),
            ),
            "partner_code": partner_code,
            "include_closed": include_closed,
            "truncated": len(cases) == QUEUE_LIMIT,
        }
        return TemplateResponse(request, "admin/reconciliation/orphans.html", context)

    # --- a case ----------------------------------------------------------------------------------------
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        case = self._case_or_404(request, object_id)
        operator = support.Operator.for_user(request.user)
        candidate = support.link_candidate(case)
        reservation = case.reservation
        context = {
            **self.admin_site.each_context(request),
            "title": f"Orphan case #{case.pk}: {reservation.partner.code} {reservation.partner_ref}",
            "opts": self.opts,
            "case": case,
            "story": orphan_story(case),
            "candidate": candidate,
            "actions": [
                {
                    "name": name,
                    "title": spec["title"],
                    "allowed": operator.can(spec["permission"]),
                    "url": reverse("admin:partners_orphancase_action", args=[case.pk, name]),
                }
                for name, spec in support.ORPHAN_ACTIONS.items()
            ],
            "queue_url": reverse("admin:partners_orphancase_changelist"),
        }
        return TemplateResponse(request, "admin/reconciliation/orphan_case.html", context)

    # --- an action: preview, then confirm ------------------------------------------------------------------
    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """GET: the preview and a confirm form (a link names its booking with ?booking=). POST:
        perform it (once per token), then back to the case."""
        if action not in support.ORPHAN_ACTIONS:
            raise Http404("No such orphan action.")
        case = self._case_or_404(request, object_id)
        operator = support.Operator.for_user(request.user)
        if not operator.can(support.ORPHAN_ACTIONS[action]["permission"]):
            raise PermissionDenied
        case_url = reverse("admin:partners_orphancase_change", args=[case.pk])
        title = support.ORPHAN_ACTIONS[action]["title"]
        if request.method == "POST":
            form = OrphanActionForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                run = functools.partial(
                    support.support_orphan_action_run,
                    action,
                    case_id=case.pk,
                    operator=operator,
                    token=data["token"],
                    note=data["note"],
                    booking_reference=data["booking"],
                    expected_live=data["expected_live"],
                )

                def told(result: support.OrphanActionResult) -> str:
                    return f"Orphan case #{case.pk}: {title}. {result.message}"

                response = run_confirmed(request, run, title=title, back_to=case_url, told=told, form=form)
                if response is not None:
                    return response
            booking_reference = request.POST.get("booking", "")
            shown = self._preview(
                action, case, operator, booking_reference, live=False, token=token_to_keep(form)
            )
            show_token(form, shown.token)
            show_previewed(
                form,
                booking=shown.booking.reference if shown.booking else "",
                expected_live=LiveRefsField.carried(shown.booking_live),
            )
        else:
            booking_reference = request.GET.get("booking", "")
            shown = self._preview(action, case, operator, booking_reference)
            form = OrphanActionForm(
                initial={
                    "token": shown.token,
                    "booking": shown.booking.reference if shown.booking else "",
                    "expected_live": LiveRefsField.carried(shown.booking_live),
                },
                needs_note=shown.needs_note,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: orphan case #{case.pk}",
            "opts": self.opts,
            "case": case,
            "preview": shown,
            "form": form,
            "case_url": case_url,
            "booking_reference": booking_reference,
        }
        return TemplateResponse(request, "admin/reconciliation/orphan_action.html", context)

    @staticmethod
    def _preview(action, case, operator, booking_reference, *, live=True, token=None):
        try:
            return support.orphan_preview(
                action, case, operator=operator, booking_reference=booking_reference, live=live, token=token
            )
        except ApplicationError as exc:  # a booking reference that names nothing
            shown = support.orphan_preview(action, case, operator=operator, live=live, token=token)
            shown.allowed, shown.refusal, shown.effects, shown.booking = False, exc.message, [], None
            return shown
