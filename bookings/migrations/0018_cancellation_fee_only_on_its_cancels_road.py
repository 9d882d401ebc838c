from django.db import migrations
from django.db.models import Q

# The cancel's road: asked, done, or with support on the way (from either). A booking the partner
# took back after confirming it came from `confirmed`, never from a cancel.
_ON_THE_ROAD = ("cancel_requested", "cancelled", "needs_attention")
_TAKEN_BACK = ("partner_cancelled_confirmed", "partner_lost_reservation")


def drop_fees_left_behind(apps, schema_editor):
    """A fee fixed by a cancel that did not complete, left on a booking that was then confirmed
    again, failed or sent again, is owed by nothing: cancelled later (after the partner took it
    back), the payment side would have kept it though the customer was told a full refund. The
    transitions drop it from now on (`Booking._cancel_dropped`); this drops what they left."""
    Booking = apps.get_model("bookings", "Booking")
    left = Q(cancellation_fee__isnull=False) & (
        ~Q(status__in=_ON_THE_ROAD) | Q(status="needs_attention", attention_reason__in=_TAKEN_BACK)
    )
    Booking.objects.filter(left).update(cancellation_fee=None)


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0017_offer_price_unit"),
    ]

    operations = [
        migrations.RunPython(drop_fees_left_behind, migrations.RunPython.noop),
    ]
