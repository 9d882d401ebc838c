"""The support console: the Django admin, extended with the timeline, the support actions, the
needs-attention queue, partner health, stored-webhook replay, the state machine diagram, the
orphan cases (`orphan_admin`), and the payment panel, actions and health (`payment_admin`).

Every button here is an interface over `reconciliation.services.support`: it shows the action's
preview (our state beside the partner's), and a confirmed POST calls the service, which checks
the permission again, locks, re-checks, dedupes by the form's one-time token and audits.
No raw state transition is exposed (no FSMAdminMixin): states move only through services.
"""

from __future__ import annotations

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from bookings.admin import BookingAdmin, BookingEventAdmin
from bookings.models import Booking, BookingEvent
from config.errors import ApplicationError
from partners.admin import InboundEventAdmin, PartnerAdmin
from partners.models import InboundEvent, Partner
from reconciliation import diagram, orphan_admin  # noqa: F401 - orphan_admin registers its console
from reconciliation.apis import booking_timeline_json
from reconciliation.confirm import run_confirmed, show_previewed, show_token, token_to_keep
from reconciliation.payment_admin import PaymentConsoleMixin
from reconciliation.selectors.attention import needs_attention_queue, needs_attention_summary, urgent_until
from reconciliation.selectors.orphans import open_orphans_by_partner
from reconciliation.selectors.partner_feed import FEED_PAGE, FILTERS, partner_feed
from reconciliation.selectors.partner_health import partner_health
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.selectors.timeline_display import event_for, rows_for, timeline_display
from reconciliation.services import support
from reconciliation.services.support.notes import validate_note

# --- forms ----------------------------------------------------------------


class SupportActionForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    note = forms.CharField(
        required=False,
        validators=[validate_note],
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why; it goes on the booking's timeline with your name.",
    )
    outcome = forms.ChoiceField(required=False, choices=[], widget=forms.RadioSelect)
    # A cancel's fee as the page previewed it (what support may have told the customer): the
    # service refuses a cancel that would now take more, and the page previews the new fee.
    expected_fee = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        widget=forms.HiddenInput,
        label="The cancellation fee previewed",
    )

    def __init__(self, *args, action: str, outcomes: list[tuple[str, str, str]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.action = action
        if action == support.RESOLVE:
            self.fields["note"].required = True
            self.fields["note"].help_text = "Required: what you found and decided."
            self.fields["outcome"].required = True
            self.show_outcomes(outcomes)
        else:
            del self.fields["outcome"]
        if action == support.CANCEL:
            self.fields["expected_fee"].required = True
        else:
            del self.fields["expected_fee"]

    def show_outcomes(self, outcomes: list[tuple[str, str, str]]) -> None:
        """The outcomes as the preview sees them now, each with why it is not possible."""
        if "outcome" in self.fields:
            self.fields["outcome"].choices = [
                (value, f"{label}" + (f" — not possible: {refusal}" if refusal else ""))
                for value, label, refusal in outcomes
            ] or [(value, value) for value in support.all_outcomes()]


# The most bookings one bulk "Force a partner sync" takes: its confirm page lists each, and its
# confirmation runs each sync in the request.
BULK_SYNC_MOST = 500
# The most stored webhooks one re-verify or one replay takes: each is checked (a replay, processed)
# in the request, and the replay's confirm page lists each with its check.
REVERIFY_MOST = 200
REPLAY_MOST = 100


def _operator(request: HttpRequest) -> support.Operator:
    return support.Operator.for_user(request.user)


def _too_many(request: HttpRequest, queryset, *, most: int, what: str, doing: str, verb: str) -> bool:
    """A bulk action's selection above `most` is refused whole, said with the numbers: acting on
    some arbitrary part of it would leave the rest untouched while the page said the selection
    was done."""
    selected = queryset.count()
    if selected <= most:
        return False
    messages.error(
        request,
        f"{selected} {what} selected: {doing} takes at most {most} at a time, so nothing was "
        f"done. Narrow the selection (a filter, or one page of the list) and {verb} again.",
    )
    return True


# --- bookings ----------------------------------------------------------------


admin.site.unregister(Booking)


@admin.register(Booking)
class SupportBookingAdmin(PaymentConsoleMixin, BookingAdmin):
    change_form_template = "admin/reconciliation/booking_change_form.html"
    change_list_template = "admin/reconciliation/booking_change_list.html"
    actions = ["force_sync_selected"]
    # The partner's reservation id is the partner side's: searched here, above both apps.
    search_fields = (*BookingAdmin.search_fields, "=partner_reservations__partner_ref")
    search_help_text = "Booking reference, the partner's reservation id, or the customer's email."

    # Permission hooks for actions (`allowed_permissions`) and buttons.
    def has_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(support.ACTIONS[support.SYNC]["permission"])

    def get_urls(self):
        wrap = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("needs-attention/", wrap(self.needs_attention_view), name=f"{prefix}_needs_attention"),
            path("state-machine/", wrap(self.state_machine_view), name=f"{prefix}_state_machine"),
            path(
                "<path:object_id>/support/<str:action>/",
                wrap(self.support_action_view),
                name=f"{prefix}_support_action",
            ),
            path("<path:object_id>/timeline.json", wrap(self.timeline_json_view), name=f"{prefix}_timeline"),
            *super().get_urls(),
        ]

    # --- the booking page ------------------------------------------------------------------------
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        booking = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if booking is not None and self.has_view_permission(request, booking):
            operator = _operator(request)
            situation = support.Situation(booking)  # each action's refusal, as its preview says it
            extra.update(
                timeline=timeline_display(rows_for(booking_timeline(booking), request.user)),
                reservations=list(
                    booking.partner_reservations.select_related("partner").order_by("first_seen_at", "id")
                ),
                support_actions=[
                    {
                        "name": name,
                        "title": spec["title"],
                        "allowed": operator.can(spec["permission"]),
                        "refusal": support.refusal(name, situation),
                        "url": reverse("admin:bookings_booking_support_action", args=[booking.pk, name]),
                    }
                    for name, spec in support.ACTIONS.items()
                ],
                timeline_json_url=reverse("admin:bookings_booking_timeline", args=[booking.pk]),
            )
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _booking_or_404(self, request: HttpRequest, object_id: str) -> Booking:
        booking = self.get_object(request, object_id)
        if booking is None:
            raise Http404("No such booking.")
        if not self.has_view_permission(request, booking):
            raise PermissionDenied
        return booking

    def timeline_json_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The same timeline for scripts and support tooling (staff session, view permission)."""
        return JsonResponse(booking_timeline_json(self._booking_or_404(request, object_id), request.user))

    def support_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """GET: the preview and a confirm form. POST: perform it (once per token), then back."""
        if action not in support.ACTIONS:
            raise Http404("No such support action.")
        booking = self._booking_or_404(request, object_id)
        operator = _operator(request)
        if not operator.can(support.ACTIONS[action]["permission"]):
            raise PermissionDenied
        change_url = reverse("admin:bookings_booking_change", args=[booking.pk])
        if request.method == "POST":
            form = SupportActionForm(request.POST, action=action, outcomes=[])
            if form.is_valid():
                title = support.ACTIONS[action]["title"]
                run = functools.partial(
                    support.support_action_run,
                    action,
                    booking_id=booking.pk,
                    operator=operator,
                    token=form.cleaned_data["token"],
                    note=form.cleaned_data.get("note", ""),
                    outcome=form.cleaned_data.get("outcome", ""),
                    expected_fee=form.cleaned_data.get("expected_fee"),
                )

                def told(result: support.ActionResult) -> str:
                    moved = result.from_state != result.to_state
                    transition = f" ({result.from_state} → {result.to_state})" if moved else ""
                    return f"{booking.reference}: {title}{transition}. {result.message}"

                response = run_confirmed(request, run, title=title, back_to=change_url, told=told, form=form)
                if response is not None:
                    return response
            # Nothing was done: the preview as it stands now (a cancel refused for its fee: the new fee).
            shown = support.preview(action, booking, live=False, token=token_to_keep(form))
            form.show_outcomes(shown.outcomes)
            show_token(form, shown.token)
            if shown.money is not None:
                show_previewed(form, expected_fee=f"{shown.money.fee:.2f}")
        else:
            shown = support.preview(action, booking)
            initial = {"token": shown.token}
            if shown.money is not None:
                initial["expected_fee"] = f"{shown.money.fee:.2f}"
            form = SupportActionForm(initial=initial, action=action, outcomes=shown.outcomes)
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
        }
        return TemplateResponse(request, "admin/reconciliation/support_action.html", context)

    # --- bulk actions --------------------------------------------------------------------------
    @admin.action(description="Force a partner sync of the selected bookings", permissions=["sync"])
    def force_sync_selected(self, request: HttpRequest, queryset):
        """Safe in bulk (a sync only asks and applies); confirmed on a page with a one-time token.
        A selection above BULK_SYNC_MOST is refused whole (`_too_many`)."""
        if _too_many(
            request, queryset, most=BULK_SYNC_MOST, what="bookings", doing="a bulk sync", verb="sync"
        ):
            return None
        bookings = list(queryset.select_related("partner"))
        if request.POST.get("confirm") == "yes":
            token = request.POST.get("token", "")
            operator = _operator(request)
            batch = [support.target_key(booking) for booking in bookings]
            queued = waiting = skipped = 0
            for booking in bookings:
                try:
                    result = support.support_sync(
                        booking_id=booking.pk, operator=operator, token=token, batch=batch
                    )
                except ApplicationError as exc:
                    messages.error(request, f"{booking.reference}: {exc.message}")
                    continue
                if not result.performed:
                    skipped += 1
                    if not result.queued:  # requested by this confirmation, still owed
                        messages.warning(request, f"{booking.reference}: {result.message}")
                elif result.queued:
                    queued += 1
                else:
                    waiting += 1
            if queued or not waiting:
                messages.success(request, f"Sync queued for {queued} booking(s).")
            if waiting:
                messages.warning(
                    request,
                    f"Sync requested for {waiting} booking(s), {support.NOT_QUEUED}",
                )
            if skipped:
                messages.warning(
                    request, f"{skipped} already requested by this confirmation; nothing more was done."
                )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Force a partner sync",
            "opts": self.opts,
            "bookings": bookings,
            "token": support.new_token(),
            "action_name": "force_sync_selected",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/reconciliation/bulk_sync_confirm.html", context)

    # --- pages -------------------------------------------------------------------------------------
    def needs_attention_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        partner_code = request.GET.get("partner") or ""
        partner = Partner.objects.filter(code=partner_code).first() if partner_code else None
        reason = request.GET.get("reason") or ""
        urgency = request.GET.get("urgency") or ""
        now = timezone.now()
        rows = needs_attention_queue(
            partner=partner, urgent={"urgent": True, "later": False}.get(urgency), now=now
        )
        if reason:
            rows = rows.filter(attention_reason=reason)
        bookings = list(rows[:500])
        context = {
            **self.admin_site.each_context(request),
            "title": "Needs attention",
            "opts": self.opts,
            "bookings": [
                {
                    "booking": b,
                    "age": now - b.status_changed_at,
                    "url": reverse("admin:bookings_booking_change", args=[b.pk]),
                }
                for b in bookings
            ],
            "summary": needs_attention_summary(now=now),
            "urgent_until": urgent_until(now),
            "open_orphans": sum(c.open for c in open_orphans_by_partner().values()),
            "reason": reason,
            "urgency": urgency,
            "partner_code": partner_code,
            "truncated": len(bookings) == 500,
        }
        return TemplateResponse(request, "admin/reconciliation/needs_attention.html", context)

    def state_machine_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        svg, drawn_by = diagram.state_machine_svg()
        context = {
            **self.admin_site.each_context(request),
            "title": "Booking state machine",
            "opts": self.opts,
            "svg": mark_safe(svg),  # built here from our own state names, each escaped
            "drawn_by": drawn_by,
            "transitions": diagram.transition_table(),
        }
        return TemplateResponse(request, "admin/reconciliation/state_machine.html", context)


# --- partners ----------------------------------------------------------------


admin.site.unregister(Partner)


@admin.register(Partner)
class SupportPartnerAdmin(PartnerAdmin):
    change_list_template = "admin/reconciliation/partner_change_list.html"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("health/", wrap(self.health_view), name="partners_partner_health"),
            path("<path:object_id>/deliveries/", wrap(self.feed_view), name="partners_partner_feed"),
            *super().get_urls(),
        ]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Partner health (last hour)",
            "opts": self.opts,
            "rows": partner_health(),
            "now": timezone.now(),
        }
        return TemplateResponse(request, "admin/reconciliation/partner_health.html", context)

    def feed_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The partner's webhook deliveries, refused ones included (marked), newest first."""
        partner = self.get_object(request, object_id)
        if partner is None:
            raise Http404("No such partner.")
        if not self.has_view_permission(request, partner):
            raise PermissionDenied
        show = request.GET.get("show", "")
        if show not in FILTERS:
            show = ""
        try:
            before = int(request.GET["before"]) if request.GET.get("before") else None
        except ValueError:
            before = None
        rows = partner_feed(partner, show=show, before=before)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Webhook deliveries: {partner.code}",
            "opts": self.opts,
            "partner": partner,
            "rows": rows,
            "show": show,
            "filters": list(FILTERS),
            "older": rows[-1].delivery.pk if len(rows) == FEED_PAGE else None,
        }
        return TemplateResponse(request, "admin/reconciliation/partner_feed.html", context)


# --- the timeline's stored rows -------------------------------------------------------------


admin.site.unregister(BookingEvent)


class _EventChangeList(ChangeList):
    """The list (and its search results) with each row's words as the viewer may see them."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = [event_for(event, request.user) for event in self.result_list]


@admin.register(BookingEvent)
class SupportBookingEventAdmin(BookingEventAdmin):
    """The rows themselves, under the booking page's rule: the provider's ids are `(hidden)` to
    whoever may not see them (docs/console.md), on the list, its search results and each row."""

    def get_changelist(self, request: HttpRequest, **kwargs):
        return _EventChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        event = super().get_object(request, object_id, from_field)
        return event_for(event, request.user) if event is not None else None


# --- stored webhooks ----------------------------------------------------------------


admin.site.unregister(InboundEvent)


@admin.register(InboundEvent)
class SupportInboundEventAdmin(InboundEventAdmin):
    actions = ["reverify_selected", "replay_selected"]

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(support.REPLAY_PERMISSION)

    @admin.action(description="Re-verify the signature of the selected webhooks", permissions=["replay"])
    def reverify_selected(self, request: HttpRequest, queryset):
        """A selection above REVERIFY_MOST is refused whole (`_too_many`)."""
        if _too_many(
            request, queryset, most=REVERIFY_MOST, what="webhooks", doing="re-verifying", verb="re-verify"
        ):
            return None
        for event in queryset.select_related("partner"):
            ok = support.inbound_event_reverify(event)
            messages.add_message(
                request,
                messages.SUCCESS if ok else messages.WARNING,
                f"Webhook #{event.pk} ({event.event_id or 'no id'}): "
                + ("signature verifies." if ok else "signature does NOT verify."),
            )

    @admin.action(
        description="Replay the selected webhooks (re-verify, then process again)", permissions=["replay"]
    )
    def replay_selected(self, request: HttpRequest, queryset):
        """Confirmed on a page listing each webhook with its check; a selection above REPLAY_MOST is
        refused whole, on the page and on the confirm (`_too_many`)."""
        if _too_many(request, queryset, most=REPLAY_MOST, what="webhooks", doing="a replay", verb="replay"):
            return None
        events = list(queryset.select_related("partner", "booking"))
        if request.POST.get("confirm") == "yes":
            token = request.POST.get("token", "")
            operator = _operator(request)
            batch = [support.target_key(event) for event in events]
            for event in events:
                try:
                    result = support.support_replay_inbound(
                        event_id=event.pk, operator=operator, token=token, batch=batch
                    )
                except ApplicationError as exc:
                    messages.error(request, f"Webhook #{event.pk}: {exc.message}")
                    continue
                messages.add_message(
                    request,
                    messages.SUCCESS if result.performed else messages.WARNING,
                    f"Webhook #{event.pk}: {result.message}",
                )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Replay stored webhooks",
            "opts": self.opts,
            # What the replay would do, by its own rule (`inbound_event_replay_refusal`).
            "events": [
                {
                    "event": e,
                    "verifies": support.inbound_event_reverify(e),
                    "refusal": support.inbound_event_replay_refusal(e),
                }
                for e in events
            ],
            "token": support.new_token(),
            "action_name": "replay_selected",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/reconciliation/replay_confirm.html", context)
