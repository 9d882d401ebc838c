"""Input and output serializers of the customer API.

Inputs only parse types and required fields; every business rule (dates, capacity, offer
availability, quotes) lives in `bookings.pricing` and `bookings.services`. Outputs present the
customer's view of a booking: the customer-facing `status` and `message` that
`bookings.customer_view` keeps under the honest-status contract, numbered by `status_version`,
never the internal state name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from bookings import customer_view
from bookings.cancelling import Outcome, cancel_money, money_words, offer_policy, stay_policy
from bookings.customer_money import money_shown
from bookings.dates import NotADate, parse_date
from bookings.models import Booking, Offer, PriceUnit, Quote
from bookings.pricing import GUESTS_REQUIRED, last_day, stay_dates
from bookings.states import CustomerMessage, CustomerMoney, CustomerStatus

# A database id fits a signed 64-bit integer; anything larger is not an id.
MAX_ID = 2**63 - 1
# A payment method as the provider names it.
PAYMENT_METHOD_PATTERN = r"^pm_[A-Za-z0-9_]+$"
UNKNOWN_FIELD = "Unknown field."


# --- errors ---------------------------------------------------------------------------------
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `not_cancellable`.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages (request fields or headers); present on validation errors.",
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API: `{"error": {"code", "message"}}`, `fields` on validation
    errors."""

    error = ErrorDetailSerializer()


# --- inputs ---------------------------------------------------------------------------------
class InputSerializer(serializers.Serializer):
    """Base of every customer API body: a field it does not declare is refused (400, `Unknown
    field.` under its name), with the other fields' errors. DRF drops such a field silently, so a
    misspelt `paymentMethod` would book an unpaid stay, and a `total_price` or `status` sent
    would look taken. Partner and payment webhooks are not read through this: partners add fields.
    """

    def to_internal_value(self, data: Any) -> Any:
        unknown = {}
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = {str(name): [UNKNOWN_FIELD] for name in data if name not in writable}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class InputSerializerExtension(OpenApiSerializerExtension):
    """The schema says so too: a request body of an `InputSerializer` has no other properties."""

    target_class = InputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


EXPECTED_FEE_HELP = (
    "The fee the customer was shown and agrees to: the booking's `if_cancelled.fee`, as read "
    "just before cancelling. If cancelling now would take more (the partner confirmed the "
    "booking, or the cut-off passed, since it was read), nothing is cancelled and the answer is "
    "`409 cancellation_fee_changed`: read the booking again, show its new `if_cancelled`, and "
    "cancel again with its `fee`. As much or less goes ahead. Optional: without it, the cancel "
    "takes the fee as it stands when it is asked, whatever was shown."
)


class BookingCancelInputSerializer(InputSerializer):
    """A cancel takes only the fee the customer was shown (`expected_fee`): any other field (a
    `reason`) would look recorded and is refused instead."""

    expected_fee = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, help_text=EXPECTED_FEE_HELP
    )


class CalendarDateField(serializers.DateField):
    """A date written `YYYY-MM-DD` and nothing else, by the pages' rule (`bookings.dates`): not
    DRF's ISO 8601 reading, which takes `20270301` and `2027-W09-1` too. One written as a date
    but missing from the calendar (2027-02-30) is refused as such, not as a wrong format."""

    def to_internal_value(self, value):
        try:
            return parse_date(value)
        except NotADate as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from None


class JsonIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: not DRF's reading, which takes `"1"`, `1.0`, `true` and
    strings of other scripts' digits (Arabic-Indic, fullwidth: Python's int() reads them) as 1, so
    that a client's bug books a stay it did not write. A JSON integer's digits are 0-9 (Python's
    reader takes no other)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StayInputSerializer(InputSerializer):
    offer = JsonIntegerField(
        min_value=1, max_value=MAX_ID, help_text='An offer id, a JSON integer (not `"1"`, not `1.0`).'
    )
    start_date = CalendarDateField(
        help_text=(
            "First night (a night offer) or first day (a day offer), written `YYYY-MM-DD` and "
            "nothing else (not `20270301`): a 400 otherwise."
        )
    )
    end_date = CalendarDateField(
        help_text=(
            "The day after the last night or day (`YYYY-MM-DD`, as `start_date`), after `start_date`: "
            "the departure day of a room; for a day offer, the day after its last day, so a one-day "
            "tour on 2027-04-01 is `start_date` 2027-04-01, `end_date` 2027-04-02."
        )
    )
    # A stay rule the field can check alone, so it is named with the other fields' errors.
    guests = JsonIntegerField(
        min_value=1,
        error_messages={"min_value": GUESTS_REQUIRED},
        help_text=(
            'Number of guests, a JSON integer (not `"2"`, not `2.0`), at least one (and at most the '
            "offer's capacity)."
        ),
    )


class QuoteCreateInputSerializer(StayInputSerializer):
    pass


class BookingCreateInputSerializer(StayInputSerializer):
    quote = serializers.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="A quote from `POST /quotes` locking the price; it must match the stay.",
    )
    payment_method = serializers.RegexField(
        PAYMENT_METHOD_PATTERN,
        required=False,
        min_length=4,
        max_length=255,
        help_text=(
            "The card to pay with, as the payment provider's card element names it (`pm_...`; "
            "test cards: `pm_card_visa`, `pm_card_chargeDeclined`, "
            "`pm_card_chargeDeclinedInsufficientFunds`, `pm_card_riskLevelElevated`, "
            "`pm_card_refundFail`: its refunds fail after they were made, `pm_card_processing`: "
            "its bank answers a moment after the provider, then holds it). Without "
            "it the booking takes no payment, as before payments existed."
        ),
    )


class BookingFilterSerializer(serializers.Serializer):
    status = serializers.MultipleChoiceField(
        choices=CustomerStatus.choices,
        required=False,
        allow_empty=False,
        help_text=(
            "Only bookings the customer currently sees with this status; repeat it for any of "
            "several (`?status=confirmed&status=cancelled`)."
        ),
    )


# --- outputs --------------------------------------------------------------------------------
class PartnerRefSerializer(serializers.Serializer):
    code = serializers.CharField()


OFFER_NAME_HELP = "The offer's name for customers; empty when it has none (the pages then show `product_id`)."
PRICE_UNIT_HELP = (
    "What the unit price is for: `night` (a room: each night of the stay) or `day` (a tour, an "
    "outing: each day). Either way a stay is priced by the days from `start_date` to `end_date` "
    '(the day after the last day), whatever the number of guests; the pages say "120.00 EUR a '
    'night", "45.00 EUR a day".'
)
NIGHTS_HELP = (
    "How many of the offer's price units the stay covers, the days from `start_date` to `end_date`: "
    "nights, or days for an offer priced by the day (`offer.price_unit`). Kept for the clients "
    "that read it; `units` is the same number under a name right for both."
)
UNITS_HELP = (
    "How many of the offer's price units (`offer.price_unit`) the stay covers: 2 nights, or 1 "
    "day for a one-day tour. Equal to `nights`."
)
END_DATE_HELP = (
    "The day after the stay's last night or day, as the stay is stored and sent to the partner: "
    "a room's departure day; for a day offer not a day of it (`last_day` is its last day)."
)
LAST_DAY_HELP = (
    "The stay's last night, or a day offer's last day (included): the day before `end_date`. "
    "A one-day tour's `last_day` is its `start_date`."
)
DATES_TEXT_HELP = (
    'The stay\'s dates as the pages and mails say them: "1 April 2027 to 3 April 2027 (2 nights)", '
    '"1 April 2027 (1 day)", "1 to 3 April 2027 (3 days)".'
)


class OfferRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    product_id = serializers.CharField()
    name = serializers.CharField(help_text=OFFER_NAME_HELP)
    price_unit = serializers.ChoiceField(choices=PriceUnit.choices, help_text=PRICE_UNIT_HELP)


class CancellationPolicyOutputSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="The policy in words, as the offers page says it.")
    free_cancellation_hours = serializers.IntegerField(
        min_value=0, help_text="Cancelling is free until this many hours before the start (00:00 UTC)."
    )
    fee_percent = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        help_text="From then on, this share of the price is the fee; `0.00`: cancelling is free.",
    )


class StayCancellationPolicyOutputSerializer(CancellationPolicyOutputSerializer):
    message = serializers.CharField(
        help_text=(
            "The policy for this stay in words, with its cut-off and fee, and when a fee is taken "
            "at all: the quote page's words before Book."
        )
    )
    free_until = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "When free cancellation ends for this stay (perhaps already past); null when cancelling is free."
        ),
    )
    fee = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text=(
            "The fee from `free_until` on, for this price. Only ever taken from a booking paid by "
            "card (`payment_method`), and only once the partner has confirmed it."
        ),
    )
    currency = serializers.CharField()


def _policy_fields(offer: Offer) -> dict[str, Any]:
    policy = offer_policy(offer)
    return {
        "message": policy.text,
        "free_cancellation_hours": policy.hours,
        "fee_percent": _PERCENT.to_representation(policy.fee_percent),
    }


class OfferOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    product_id = serializers.CharField()
    name = serializers.CharField(help_text=OFFER_NAME_HELP)
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)
    price_unit = serializers.ChoiceField(choices=PriceUnit.choices, help_text=PRICE_UNIT_HELP)
    currency = serializers.CharField()
    capacity = serializers.IntegerField()
    partner = PartnerRefSerializer()
    cancellation = serializers.SerializerMethodField(help_text="The offer's cancellation policy.")

    @extend_schema_field(CancellationPolicyOutputSerializer)
    def get_cancellation(self, offer: Offer) -> dict[str, Any]:
        return _policy_fields(offer)


class QuoteOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    offer = OfferRefSerializer()
    start_date = serializers.DateField()
    end_date = serializers.DateField(help_text=END_DATE_HELP)
    nights = serializers.SerializerMethodField(help_text=NIGHTS_HELP)
    units = serializers.SerializerMethodField(help_text=UNITS_HELP)
    last_day = serializers.SerializerMethodField(help_text=LAST_DAY_HELP)
    dates_text = serializers.SerializerMethodField(help_text=DATES_TEXT_HELP)
    guests = serializers.IntegerField()
    total_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    expires_at = serializers.DateTimeField()
    cancellation = serializers.SerializerMethodField(
        help_text="What cancelling a booking of this quote costs, under its offer's policy."
    )

    def get_nights(self, quote) -> int:
        return (quote.end_date - quote.start_date).days

    def get_units(self, quote) -> int:
        return (quote.end_date - quote.start_date).days

    @extend_schema_field(serializers.DateField())
    def get_last_day(self, quote) -> str:
        return _DATE.to_representation(last_day(quote.start_date, quote.end_date))

    def get_dates_text(self, quote) -> str:
        return stay_dates(quote.start_date, quote.end_date, quote.offer.price_unit)

    @extend_schema_field(StayCancellationPolicyOutputSerializer)
    def get_cancellation(self, quote: Quote) -> dict[str, Any]:
        policy = stay_policy(quote)
        return {
            **_policy_fields(quote.offer),
            "message": policy.terms(at=timezone.now()),
            "free_until": _DATETIME.to_representation(policy.cut_off),  # None stays None
            "fee": _PRICE.to_representation(policy.fee),
            "currency": policy.currency,
        }


class BookingLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    cancel = serializers.URLField(
        allow_null=True,
        help_text=(
            "Where to cancel this booking; null when there is nothing to cancel (already "
            "cancelling or cancelled, or failed), and while a cancel that did not complete is with "
            "our support team (`cancel_with_support`, or `disrupted_cancel_not_done` once the "
            "partner had confirmed it). Cancelling again is harmless: it answers 202 and changes "
            "nothing."
        ),
    )


STATUS_HELP = (
    "What the customer is shown (the honest-status contract):\n\n"
    "- `pending`: the partner's answer is not known yet, or the booking will not go ahead and "
    "we are making sure the partner releases what it may hold for it (`message_code` "
    "`releasing`);\n"
    "- `confirmed`: the partner confirmed the booking;\n"
    "- `failed`: the booking did not go ahead and nothing is held at the partner for it;\n"
    "- `cancelling`: a cancellation was asked for and the partner has not confirmed it yet "
    "(`message_code` `cancel_with_support`: it did not complete, and our support team is taking "
    "it up with the partner);\n"
    "- `cancelled`: the booking is cancelled and nothing is held at the partner for it;\n"
    "- `disrupted`: the partner confirmed the booking, then something went wrong with it: the "
    "partner cancelled, lost or changed it, or has not confirmed the customer's cancel "
    "(`disrupted_cancel_not_done`), or our support team is sorting out another problem; "
    "`message` says what happens next.\n\n"
    "Never backwards: once a booking was shown `confirmed` it is never `pending` again."
)


class MoneyOutputSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=CustomerMoney.choices,
        help_text=(
            "What happened to the customer's money, as the payment provider's truth says it: "
            "`authorizing` (asking the bank to hold it), `held` (held, not charged), "
            "`held_in_review` (held, not charged, and the provider placed the payment in review), "
            "`charge_unknown` (held, and a charge of it was asked for whose outcome is not known "
            "yet: it may or may not have been charged; `charging` says how much it asked for), "
            "`charged`, "
            "`partly_refunded`, `refunded`, `refund_failed` (a refund could not be made: the card "
            "refused it after it was made, or the provider refused it every time it was asked; "
            "`refund_failed` is owed still, and our support team gives it back; "
            "`refunded_outside` says what of it they paid back another way already), "
            "`refunded_outside` (the card refused a refund, and our support team paid all it owed "
            "back another way than to the card: nothing is owed), "
            "`released` (the hold was let go: not charged), `lapsed` (the hold ended at the "
            "provider: not charged), "
            "`release_refused` (nothing is owed, and the provider refused to let the hold go every "
            "time we asked: it ends when it lapses, by `lapses_at` at the latest, unless our "
            "support team releases it sooner; not charged), "
            "`declined` (by the card's bank), `method_refused` (the provider could not use the "
            "payment method: no bank was asked), `needs_action` (the payment needed a step from "
            "the customer, such as their bank's authentication, that we do not ask for), "
            "`not_charged`."
        ),
    )
    message = serializers.CharField(
        help_text=(
            "The same in words, with the amounts, as the booking's page says it. Once the booking "
            "is cancelled, with what the cancel does with the money: the fee kept and what is "
            "being refunded or released, from the cancel's confirmation on (a refund still to come "
            "is said before the provider makes it: `charged` is then not all there is to tell)."
        )
    )
    currency = serializers.CharField()
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, help_text="Asked for (held).")
    charging = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        allow_null=True,
        help_text="What a charge whose outcome is not known asked to take of the hold (null unless "
        "`charge_unknown`): the whole `amount`, or part of it (a cancellation fee), in which case no "
        "more than that can be charged and the rest of the hold is released, not charged.",
    )
    charged = serializers.DecimalField(max_digits=12, decimal_places=2)
    refunded = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="Given back to the card (a refund it refused is not)."
    )
    refund_failed = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text="A refund that could not be made (refused by the card after it was made, or by "
        "the provider every time it was asked): owed to the customer still (0 unless `refund_failed`).",
    )
    refunded_outside = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text="Owed after a refund the card refused, and paid back by our support team another way "
        "than to the card (a bank transfer): given back, not in `refunded`.",
    )
    lapses_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When a hold the provider would not release lapses at the latest, by the provider's "
        "word (null unless `release_refused`, or when the provider did not say).",
    )


class IfCancelledOutputSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=[outcome.value for outcome in Outcome],
        help_text=(
            "What cancelling now does to the money: `no_payment` (the booking takes none), "
            "`not_taken_yet` (the bank is still being asked to hold it: released if it does), "
            "`release` (the hold is let go: nothing charged), `release_or_refund` (a confirmed "
            "booking's hold, whose charge is due and may be out to the provider, or a charge asked "
            "for whose outcome is not known yet: all but the fee comes back, released if it was "
            "not charged, refunded if it was; `refund` and `released` say 0 until that is known), "
            "`full_refund`, `refund_less_fee`, "
            "`nothing_to_refund` (nothing was paid, or the fee is all of it), `refund_with_support` "
            "(a refund the card refused is owed: our support team settles the money, a cancel "
            "refunds nothing by itself; `fee` is the cancellation fee a cancel still fixes, kept "
            "from what was paid)."
        ),
    )
    message = serializers.CharField(
        help_text="The same in words, with the amounts: the cancel page's sentence."
    )
    why = serializers.CharField(
        help_text=(
            "Why it costs what it does: the offer's policy with its cut-off, in the cancel page's "
            "words; empty for a booking that takes no payment."
        )
    )
    currency = serializers.CharField()
    fee = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="The cancellation fee kept (or charged from the hold)."
    )
    refund = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="Refunded to the card, of what was paid."
    )
    released = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="Let go from the hold on the card: never charged."
    )
    cut_off = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "When free cancellation ends under the offer's policy (a confirmed booking cancelled "
            "from then on pays the fee); null for an offer without a fee or a booking that takes "
            "no payment."
        ),
    )


IF_CANCELLED_HELP = (
    "What cancelling this booking now would do to the customer's money, before they ask for it: "
    "the fee kept, what is refunded or released, and the cut-off that decides it (the same as "
    "the cancel page says, and the fee the cancel then fixes). Null when the booking cannot be "
    "cancelled (see `links.cancel`). Computed when answered: it changes at `cut_off` without "
    "`status_version` moving, so read it again without `If-None-Match` just before cancelling, "
    "and send its `fee` as the cancel's `expected_fee`: a cancel that would then take more is "
    "refused, not charged."
)


DEADLINE_HELP = (
    "While the booking waits for the partner to confirm it (`status` `pending`, `message_code` "
    "`received`, `submitting`, `partner_confirming`, `checking` or `taking_longer`): if the "
    "partner has not confirmed by then, the booking does not go ahead. Null whenever it does not "
    "apply, as the booking's page does not tell it then: once confirmed (nothing is left to meet), "
    "cancelling or cancelled, once it did not go ahead, while its payment is being confirmed (the "
    "partner is not asked before), and once our support team has it (`with_support`: support "
    "settles it). Always present; it was a time in every booking before, so a client must now take "
    'null as "no deadline applies".'
)


class BookingOutputSerializer(serializers.Serializer):
    reference = serializers.CharField()
    status = serializers.ChoiceField(
        source="customer_status", choices=CustomerStatus.choices, help_text=STATUS_HELP
    )
    message = serializers.CharField(
        source="customer_message_text", help_text="The status in words, for the customer."
    )
    message_code = serializers.ChoiceField(
        source="customer_message",
        choices=CustomerMessage.choices,
        help_text="The message's stable code, for clients that word it themselves.",
    )
    status_version = serializers.IntegerField(
        min_value=1,
        help_text=(
            "Grows by one with every change of what the customer is shown: `status`, `message` "
            "or `money` (its code or amounts, with no other change; also the `ETag` and the event "
            "id of the booking's stream): a client drops an update whose version is not higher "
            "than the one it shows."
        ),
    )
    offer = OfferRefSerializer()
    partner = PartnerRefSerializer()
    start_date = serializers.DateField()
    end_date = serializers.DateField(help_text=END_DATE_HELP)
    nights = serializers.IntegerField(help_text=NIGHTS_HELP)
    units = serializers.IntegerField(source="nights", help_text=UNITS_HELP)
    last_day = serializers.SerializerMethodField(help_text=LAST_DAY_HELP)
    dates_text = serializers.SerializerMethodField(help_text=DATES_TEXT_HELP)
    guests = serializers.IntegerField()
    total_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    deadline = serializers.SerializerMethodField(help_text=DEADLINE_HELP)
    money = serializers.SerializerMethodField(
        help_text="What happened to the customer's money; null for a booking that takes no payment."
    )
    if_cancelled = serializers.SerializerMethodField(help_text=IF_CANCELLED_HELP)
    links = serializers.SerializerMethodField()

    def to_representation(self, booking: Booking) -> dict[str, Any]:
        """The declared fields, written out: DRF would deep-copy and bind every declared field
        (and the nested serializers') for each booking, a tenth of a booking POST in the
        profile. The declared fields still define the schema; a test holds this output equal
        to DRF's generic rendering of them, and values go through the same field classes."""
        return {
            "reference": booking.reference,
            "status": str(booking.customer_status),
            "message": booking.customer_message_text,
            "message_code": str(booking.customer_message),
            "status_version": booking.status_version,
            "offer": {
                "id": booking.offer.id,
                "product_id": booking.offer.product_id,
                "name": booking.offer.name,
                "price_unit": str(booking.offer.price_unit),
            },
            "partner": {"code": booking.partner.code},
            "start_date": _DATE.to_representation(booking.start_date),
            "end_date": _DATE.to_representation(booking.end_date),
            "nights": booking.nights,
            "units": booking.nights,
            "last_day": self.get_last_day(booking),
            "dates_text": self.get_dates_text(booking),
            "guests": booking.guests,
            "total_price": _PRICE.to_representation(booking.total_price),
            "currency": booking.currency,
            "created_at": _DATETIME.to_representation(booking.created_at),
            "updated_at": _DATETIME.to_representation(booking.updated_at),
            "deadline": self.get_deadline(booking),
            "money": self.get_money(booking),
            "if_cancelled": self.get_if_cancelled(booking),
            "links": self.get_links(booking),
        }

    @extend_schema_field(serializers.DateField())
    def get_last_day(self, booking: Booking) -> str:
        return _DATE.to_representation(last_day(booking.start_date, booking.end_date))

    def get_dates_text(self, booking: Booking) -> str:
        return stay_dates(booking.start_date, booking.end_date, booking.offer.price_unit)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_deadline(self, booking: Booking) -> str | None:
        return _DATETIME.to_representation(customer_view.partner_deadline(booking))  # None stays None

    @extend_schema_field(MoneyOutputSerializer(allow_null=True))
    def get_money(self, booking: Booking) -> dict[str, str] | None:
        money = money_shown(booking)
        if money is None:
            return None
        unknown = money.code == CustomerMoney.CHARGE_UNKNOWN
        return {
            "code": money.code,
            "message": money_words(booking, money),
            "currency": money.currency,
            "amount": _PRICE.to_representation(money.amount),
            "charging": _PRICE.to_representation(money.charge_asked) if unknown else None,
            "charged": _PRICE.to_representation(money.charged),
            "refunded": _PRICE.to_representation(money.refunded),
            "refund_failed": _PRICE.to_representation(money.refund_failed),
            "refunded_outside": _PRICE.to_representation(money.refunded_outside),
            "lapses_at": _DATETIME.to_representation(money.lapses_at),  # None stays None
        }

    @extend_schema_field(IfCancelledOutputSerializer(allow_null=True))
    def get_if_cancelled(self, booking: Booking) -> dict[str, str | None] | None:
        if not booking.customer_may_cancel:
            return None
        told = cancel_money(booking, at=timezone.now())
        return {
            "outcome": str(told.outcome),
            "message": told.text,
            "why": told.why,
            "currency": told.currency,
            "fee": _PRICE.to_representation(told.fee),
            "refund": _PRICE.to_representation(told.refund),
            "released": _PRICE.to_representation(told.released),
            "cut_off": _DATETIME.to_representation(told.cut_off),  # None stays None
        }

    @extend_schema_field(BookingLinksSerializer)
    def get_links(self, booking: Booking) -> dict[str, str | None]:
        request = self.context["request"]
        detail = reverse("bookings-api:booking-detail", kwargs={"reference": booking.reference})
        cancel = reverse("bookings-api:booking-cancel", kwargs={"reference": booking.reference})
        return {
            "self": request.build_absolute_uri(detail),
            "cancel": request.build_absolute_uri(cancel) if booking.customer_may_cancel else None,
        }


# Unbound field instances: only their value formatting is used (BookingOutputSerializer).
_DATE = serializers.DateField()
_DATETIME = serializers.DateTimeField()
_PRICE = serializers.DecimalField(max_digits=12, decimal_places=2)
_PERCENT = serializers.DecimalField(max_digits=5, decimal_places=2)
