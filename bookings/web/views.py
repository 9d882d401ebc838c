"""The customer web client: thin views over the same selectors and services as the API.

Each view parses (a form), calls one selector or service, and presents. A customer reaches only
their own quotes and bookings: every read goes through the customer-scoped selectors, so another
customer's booking is a 404 like a missing one. Pages with a booking's state are never cached, so
that Back shows the booking as it is now.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django_htmx.http import HttpResponseClientRefresh

from bookings import customer_view, selectors, services
from bookings.cancelling import at_partner, cancel_money, stay_policy
from bookings.models import Actor, Booking, Quote
from bookings.pricing import offer_unavailable, start_has_passed
from bookings.states import did_not_go_ahead
from bookings.web.forms import BookForm, CancelForm, PasswordResetForm, SignUpForm, StayForm
from config.errors import ApplicationError, NotFound
from config.methods import READS, allow

PAGE_SIZE = 10
# `login()` must name a backend when several are configured (the brute-force guard is one).
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _missing_is_404(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc

    return wrapped


def _posted(request: HttpRequest) -> QueryDict | None:
    """The form data of a POST (bound even when empty, so that it is validated), else None."""
    return request.POST if request.method == "POST" else None


def _page(request: HttpRequest, items) -> Page:
    return Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))


def booking_key(quote: Quote) -> str:
    """The Idempotency-Key of booking this quote when the page's script made none (it runs
    nowhere, or not yet): the same for every retry of its Book button, whatever the browser."""
    return f"quote-{quote.pk}"


# --- offers and quotes ------------------------------------------------------------------------
@allow("GET")
def offer_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.bookable_offers())
    return render(request, "web/offers/list.html", {"page": page})


@login_required
@allow("GET", "POST")
def offer_stay(request: HttpRequest, offer_id: int) -> HttpResponse:
    """Choose dates and guests; the price is locked in a quote."""
    offer = get_object_or_404(selectors.bookable_offers(), pk=offer_id)
    form = StayForm(_posted(request), capacity=offer.capacity, price_unit=offer.price_unit)
    status = HTTPStatus.OK
    if request.method == "POST":
        if form.is_valid():
            try:
                quote = services.quote_create(customer=request.user, offer_id=offer.pk, **form.stay())
            except ApplicationError as exc:
                form.add_application_error(exc)
            else:
                return redirect("web:quote", quote_id=quote.pk)
        status = HTTPStatus.BAD_REQUEST
    return render(request, "web/offers/stay.html", {"offer": offer, "form": form}, status=status)


def _quote_page(request: HttpRequest, quote: Quote, form: BookForm, status: int = HTTPStatus.OK):
    booking = selectors.customer_booking_of_quote(customer=request.user, quote_id=quote.pk)
    # Told as the customer is shown it; one that did not go ahead offers a new price for the same
    # stay (the quote books once): the offer page's own form, filled in, posted in one click.
    booking_ended = booking is not None and _did_not_go_ahead(booking)
    now = timezone.now()
    context = {
        "quote": quote,
        "booking": booking,
        "booking_ended": booking_ended,
        "stay_again": _stay_of(quote) if booking_ended else None,
        # Its dates passed since: the same stay cannot be priced again (the quote service's rule),
        # so the offer's page is where new dates are chosen.
        "dates_passed": booking_ended and start_has_passed(quote.start_date, now=now),
        "form": form,
        # What cancelling will cost, told before Book (and beside the card it would come from).
        "cancellation": stay_policy(quote).terms(at=now),
        # A price still held for an offer withdrawn since is not offered to Book.
        "unavailable": offer_unavailable(quote.offer),
    }
    return render(request, "web/quotes/detail.html", context, status=status)


def _stay_of(quote: Quote) -> StayForm:
    """The offer page's form, holding the quote's stay: a new quote of it is the offer page's."""
    initial = {
        "start_date": quote.start_date,
        "end_date": quote.end_date,
        "days": (quote.end_date - quote.start_date).days,  # a day offer's form asks for its days
        "guests": quote.guests,
    }
    return StayForm(initial=initial, capacity=quote.offer.capacity, price_unit=quote.offer.price_unit)


@login_required
@never_cache
@allow("GET")
@_missing_is_404
def quote_detail(request: HttpRequest, quote_id: UUID) -> HttpResponse:
    """The price, how long it holds, and the one Book button."""
    quote = selectors.customer_quote(customer=request.user, quote_id=quote_id)
    return _quote_page(request, quote, BookForm())


@login_required
@allow("GET", "POST")
@_missing_is_404
def quote_book(request: HttpRequest, quote_id: UUID) -> HttpResponse:
    """Book, as `POST /api/v1/bookings` with the quote: one booking however often it is sent
    (the attempt's key, and one booking per quote whatever the key).

    A GET is where the login sends a customer whose session ended before they clicked Book
    (`next` is this URL, the POST's form is gone): back to the quote's page, to book from there.
    """
    if request.method in READS:  # a HEAD books nothing either
        return redirect("web:quote", quote_id=quote_id)
    quote = selectors.customer_quote(customer=request.user, quote_id=quote_id)
    form = BookForm(request.POST)
    if not form.is_valid():
        return _quote_page(request, quote, form, status=HTTPStatus.BAD_REQUEST)
    try:
        created = services.booking_create(
            customer=request.user,
            request=services.BookingRequest(
                offer_id=quote.offer_id,
                start_date=quote.start_date,
                end_date=quote.end_date,
                guests=quote.guests,
                quote_id=quote.pk,
                payment_method=form.cleaned_data["payment_method"],
            ),
            idempotency_key=form.cleaned_data["idempotency_key"] or booking_key(quote),
            page_attempt=True,
        )
    except ApplicationError as exc:
        form.add_application_error(exc)
        return _quote_page(request, quote, form, status=exc.http_status)
    return redirect("web:booking", reference=created.booking.reference)


# --- bookings ---------------------------------------------------------------------------------
def _did_not_go_ahead(booking: Booking) -> bool:
    """As the customer is shown it (the quote's page and the booking's use the one rule)."""
    return did_not_go_ahead(
        customer_status=booking.customer_status, customer_message=booking.customer_message
    )


@login_required
@never_cache
@allow("GET")
def booking_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.customer_bookings(customer=request.user))
    return render(request, "web/bookings/list.html", {"page": page})


def _progress_context(progress: selectors.BookingProgress) -> dict[str, object]:
    timing = None
    if progress.awaits_partner_confirmation:  # else how long the partner takes is beside the point
        timing = selectors.partner_confirmation_times(partner_id=progress.booking.partner_id)
    booking = progress.booking
    # Only a booking that did not go ahead offers its dates page again, and only while the offer
    # can still be booked: withdrawn or its partner paused, that page is a 404.
    return {
        "booking": booking,
        "progress": progress,
        "awaited": customer_view.awaited(booking),
        "timing": timing,
        "poll_after_s": settings.BOOKING_POLL_AFTER_S,
        "offer_bookable": _did_not_go_ahead(booking) and not offer_unavailable(booking.offer),
    }


@login_required
@never_cache
@allow("GET")
@_missing_is_404
def booking_detail(request: HttpRequest, reference: str) -> HttpResponse:
    """The booking's progress: its status in words, the steps so far, what happens next."""
    progress = selectors.customer_booking_progress(customer=request.user, reference=reference)
    return render(request, "web/bookings/detail.html", _progress_context(progress))


@never_cache
@allow("GET")
@_missing_is_404
def booking_status(request: HttpRequest, reference: str) -> HttpResponse:
    """The booking page's status, steps and poller, for the page's poll (htmx) to swap in.

    `seen` is the version the page shows: while it is still current the answer is only the next
    poller, so that the page's live region announces nothing new. The poll stops once the
    customer is no longer waiting for news.
    """
    if not request.user.is_authenticated:
        return HttpResponseClientRefresh()  # the full page then asks to log in again
    if not request.htmx:
        return redirect("web:booking", reference=reference)
    progress = selectors.customer_booking_progress(customer=request.user, reference=reference)
    context = _progress_context(progress)
    context["changed"] = request.GET.get("seen") != progress.version
    response = render(request, "web/bookings/status_update.html", context)
    if progress.awaiting_news:
        response["Retry-After"] = str(settings.BOOKING_POLL_AFTER_S)
    return response


@login_required
@never_cache
@allow("GET", "POST")
@_missing_is_404
def booking_cancel(request: HttpRequest, reference: str) -> HttpResponse:
    """What cancelling will do, then the cancellation itself."""
    booking = selectors.customer_booking(customer=request.user, reference=reference)
    form = CancelForm(_posted(request))
    status = HTTPStatus.OK
    if request.method == "POST" and not form.is_valid():
        status = HTTPStatus.BAD_REQUEST
    elif request.method == "POST":
        try:
            services.booking_request_cancel(
                booking_id=booking.pk,
                actor=Actor.CUSTOMER,
                actor_label=request.user.get_username(),
                expected_fee=form.cleaned_data["expected_fee"],
            )
        except ApplicationError as exc:
            form.add_application_error(exc)
            status = exc.http_status
            # Shown again as it stands now (a refused fee: the new one, which the form sends back).
            booking = selectors.customer_booking(customer=request.user, reference=reference)
        else:
            return redirect("web:booking", reference=booking.reference)
    # What cancelling does at the partner: whether they were ever asked for it, and still hold it.
    context = {"booking": booking, "form": form, "at_partner": at_partner(booking)}
    if booking.customer_may_cancel:
        # Told before the customer confirms: what they get back, what is kept and why.
        context["money"] = cancel_money(booking, at=timezone.now())
    return render(request, "web/bookings/cancel.html", context, status=status)


# --- accounts ---------------------------------------------------------------------------------
@allow("GET", "POST")
def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(_posted(request))
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=PASSWORD_BACKEND)
        messages.success(request, f"Your account is ready. You are logged in as {user.get_username()}.")
        if url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
            return redirect(next_url)
        return redirect("web:offers")
    status = HTTPStatus.BAD_REQUEST if form.errors else HTTPStatus.OK
    return render(request, "web/account/signup.html", {"form": form, "next": next_url}, status=status)


class _FormErrorsAre400:
    """Django's auth views answer a refused form with 200; ours, like the API, with 400."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        response.status_code = HTTPStatus.BAD_REQUEST
        return response


class LoginView(_FormErrorsAre400, auth_views.LoginView):
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("web:offers")


class PasswordResetView(_FormErrorsAre400, auth_views.PasswordResetView):
    form_class = PasswordResetForm
    subject_template_name = "email/password_reset_subject.txt"
    email_template_name = "email/password_reset.txt"
    html_email_template_name = "email/password_reset.html"
    success_url = reverse_lazy("web:password_reset_done")


class PasswordResetConfirmView(_FormErrorsAre400, auth_views.PasswordResetConfirmView):
    success_url = reverse_lazy("web:password_reset_complete")
