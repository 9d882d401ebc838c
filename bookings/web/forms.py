"""Forms of the customer web client: they parse and present; the booking services decide.

Every rule about a stay (dates, capacity, the offer, the quote, whether a booking can still be
cancelled) is the services'. A service's `ApplicationError` is shown on the form that led to it,
each message beside its field and in the error summary, in the API's words.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.core.validators import RegexValidator

from bookings.dates import NotADate, parse_date
from bookings.models import PriceUnit
from bookings.pricing import AT_LEAST_ONE_DAY, too_far_ahead, too_long
from bookings.services import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from config import site_url
from config.errors import ApplicationError

# The API's (DRF's) words for input it cannot parse, so that both presentations say the same.
REQUIRED = "This field is required."
INVALID_INTEGER = "A valid integer is required."


class ServiceForm(forms.Form):
    """A form whose submission a booking service may still refuse."""

    def add_application_error(self, error: ApplicationError) -> None:
        """Put a service's refusal on the form: each field's messages beside that field, the rest
        (and a refusal naming no field) above the form."""
        if not error.fields:
            self.add_error(None, error.message)
        for name, messages in error.fields.items():
            name = self.field_told(name)
            self.add_error(name if name in self.fields else None, messages)

    def field_told(self, name: str) -> str:
        """The form's field where a service's error about its field `name` is told."""
        return name


class CalendarDateField(forms.DateField):
    """A date written `YYYY-MM-DD`, by the API's rule and in its words (`bookings.dates`); one
    written as a date but missing from the calendar (2027-02-30) is refused as such, not as a
    wrong format."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, date):  # a value set by our code, not typed
            return value
        try:
            return parse_date(value.strip() if isinstance(value, str) else value)  # typed: trimmed
        except NotADate as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from None


class GuestsField(forms.IntegerField):
    """A whole number typed in the digits 0-9 (a sign allowed, so that `-1` is told the stay's
    rule, as the API tells it): Django's IntegerField reads with Python's int(), which also
    takes other scripts' digits, `+2`, `1_0` (ten) and, after Django strips it, `1.0`. What the
    API takes, a JSON integer, is written so. Typed: trimmed."""

    def to_python(self, value):
        if isinstance(value, str) and value.strip() and not _WHOLE_NUMBER.fullmatch(value.strip()):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value.strip() if isinstance(value, str) else value)


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


class StayForm(ServiceForm):
    """The offer's dates page. A night offer asks for the day you arrive and the day you leave; a
    day offer (a tour) for its first day and how many days, so that a one-day tour is one day,
    not a start and an end a day apart. Either way the stay is the services' (`stay()`): its
    end date the day after the last day, as it is stored and sent to the partner."""

    start_date = CalendarDateField(
        label="Start date",
        help_text="The first day (or night) you book.",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"required": REQUIRED},
    )
    end_date = CalendarDateField(
        label="End date",
        help_text="The day you leave: 3 nights from 1 March end on 4 March.",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"required": REQUIRED},
    )
    guests = GuestsField(
        label="Guests",
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "class": "input-short"}),
        error_messages={"required": REQUIRED, "invalid": INVALID_INTEGER},
    )

    def __init__(self, *args, capacity: int, price_unit: str = PriceUnit.NIGHT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.price_unit = price_unit
        self.fields["guests"].help_text = f"Up to {capacity}."
        if price_unit == PriceUnit.DAY:
            start = self.fields["start_date"]
            start.label, start.help_text = "First day", "The day of the tour, or its first day."
            del self.fields["end_date"]
            self.fields["days"] = GuestsField(
                label="Number of days",
                help_text="1 for a single day; 3 from 1 March are 1, 2 and 3 March.",
                widget=forms.NumberInput(attrs={"inputmode": "numeric", "class": "input-short"}),
                error_messages={"required": REQUIRED, "invalid": INVALID_INTEGER},
            )
            self.order_fields(["start_date", "days", "guests"])

    def clean_days(self) -> int:
        days = self.cleaned_data["days"]
        if days < 1:
            raise forms.ValidationError(AT_LEAST_ONE_DAY, code="min_value")
        if days > settings.BOOKING_MAX_NIGHTS:  # the service's rule, told before a date overflows
            raise forms.ValidationError(too_long(PriceUnit.DAY), code="max_value")
        return days

    def clean(self) -> dict[str, object]:
        """A day offer's stay ends `days` after its first day: one past the calendar's last day
        (9999-12-31) is no date at all, and is told beside the first day in the service's words
        for a start that far ahead, never a server error."""
        data = super().clean()
        start, days = data.get("start_date"), data.get("days")
        if self.price_unit == PriceUnit.DAY and start is not None and days is not None:
            try:
                start + timedelta(days=days)
            except OverflowError:
                self.add_error("start_date", forms.ValidationError(too_far_ahead(), code="max_value"))
        return data

    def stay(self) -> dict[str, object]:
        """The stay as the services take it: `start_date`, `end_date` (exclusive), `guests`."""
        data = self.cleaned_data
        if self.price_unit == PriceUnit.DAY:
            end_date = data["start_date"] + timedelta(days=data["days"])
        else:
            end_date = data["end_date"]
        return {"start_date": data["start_date"], "end_date": end_date, "guests": data["guests"]}

    def field_told(self, name: str) -> str:
        """A day offer's form has no end date: what the services say of it is said of its days."""
        return "days" if name == "end_date" and "days" in self.fields else name


class CancelForm(ServiceForm):
    """The cancel's one button, with the fee the page showed (`cancelling.fee_told`), as the
    API's `expected_fee`: the service refuses a cancel that would now take more. The page writes
    it from the preview it shows, never from what was posted: a page shown again after a refusal
    carries the new fee. A form without it (a page from before it was sent) cancels at the fee
    as it stands, as an API client's cancel without one does."""

    expected_fee = forms.DecimalField(
        label="Cancellation fee shown",
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        widget=forms.HiddenInput,
    )


_KEY_FORMAT = f"Use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."


# The payment provider's test cards (its card element's ids): where a real deployment puts the
# provider's card element, the customer pages of the sandbox offer these, one for each way the
# sandbox's cards behave (tests/payments/test_web.py holds the list to the sandbox's).
TEST_CARDS = [
    ("", "No card: nothing is taken now"),
    ("pm_card_visa", "Test card Visa 4242: authorized"),
    ("pm_card_chargeDeclined", "Test card Visa 0002: declined"),
    ("pm_card_chargeDeclinedInsufficientFunds", "Test card Visa 9995: declined, insufficient funds"),
    ("pm_card_riskLevelElevated", "Test card Visa 9235: authorized, placed in review"),
    ("pm_card_refundFail", "Test card Visa 5126: authorized; refunds to it fail later"),
    ("pm_card_processing", "Test card Visa 1881: the bank answers late, then authorized"),
]


class BookForm(ServiceForm):
    """Book: the attempt's Idempotency-Key, which the page's script makes and keeps (web.js);
    empty when no script ran. The API's rules for the key apply, in its words. The card to pay
    with is the API's `payment_method`."""

    idempotency_key = forms.CharField(
        label="Booking attempt",
        required=False,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        validators=[RegexValidator(IDEMPOTENCY_KEY_PATTERN, message=_KEY_FORMAT)],
        error_messages={"max_length": _KEY_FORMAT},
        widget=forms.HiddenInput(attrs={"data-attempt-key": ""}),
    )
    payment_method = forms.ChoiceField(
        label="Card",
        required=False,
        choices=TEST_CARDS,
        help_text="We ask your bank to hold the price before we send your booking to the partner, "
        "and charge it only once the partner confirms.",
    )


class SignUpForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        email = self.fields["email"]
        email.required = True
        email.help_text = "We send a link here if you forget your password."
        email.widget.attrs["autocomplete"] = "email"

    def clean_email(self) -> str:
        """One account per address, whatever its case: the booking mails and password resets of
        an account go to its address, so a second account on someone's address would send that
        person a stranger's bookings (and one reset mail per account)."""
        email = self.cleaned_data["email"].strip()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this email address exists already: log in, or reset its password.",
                code="email_taken",
            )
        return email


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Django's, with the mail's link on SITE_URL as every mail's (config/site_url.py): Django
    builds it from the request's Host, any of ALLOWED_HOSTS (an internal name, an instance's
    address), and whoever reaches a process by such a name would have the link point there."""

    def save(self, **kwargs) -> None:
        scheme, domain = site_url.scheme_and_domain()
        super().save(**{**kwargs, "domain_override": domain, "use_https": scheme == "https"})
