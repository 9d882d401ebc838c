"""`config.integer_bounds`: on PostgreSQL, an integer parameter out of its column's range is
refused as PostgreSQL refuses it ("integer out of range", a DataError), not wrapped modulo 2**32
by psycopg's binary dumpers and stored as another number; values in range are stored as before,
and a lookup with a huge number still finds nothing without an error."""

from __future__ import annotations

import pytest
from django.db import DataError, connection, transaction
from django.db.models import BigIntegerField, IntegerField, SmallIntegerField

from partners.models import InboundEvent, Partner
from tests.factories import InboundEventFactory, PartnerFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="psycopg's binary integer parameters are PostgreSQL's; SQLite stores any 64-bit integer",
    ),
]

INT2_MAX, INT4_MAX, INT8_MAX = 2**15 - 1, 2**31 - 1, 2**63 - 1


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        pytest.param(Partner, "clock_skew_ms", 2**40, id="integer-2**40-wrapped-to-0"),
        pytest.param(Partner, "clock_skew_ms", 2**32 + 7, id="integer-wrapped-to-7"),
        pytest.param(Partner, "clock_skew_ms", -(2**31) - 1, id="integer-wrapped-to-max"),
        pytest.param(InboundEvent, "tries", 2**16 + 3, id="smallint-wrapped-to-3"),
    ],
)
def test_an_update_out_of_range_is_refused_and_stores_nothing(model, field, value):
    row = PartnerFactory() if model is Partner else InboundEventFactory()
    before = getattr(row, field)

    with pytest.raises(DataError, match=r"^(integer|smallint) out of range$"), transaction.atomic():
        model.objects.filter(pk=row.pk).update(**{field: value})

    row.refresh_from_db()
    assert getattr(row, field) == before


def test_a_create_out_of_range_is_refused_and_stores_nothing():
    with pytest.raises(DataError, match=r"^integer out of range$"), transaction.atomic():
        PartnerFactory(code="too-skewed", clock_skew_ms=2**32 + 7)

    assert not Partner.objects.filter(code="too-skewed").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (SmallIntegerField(), INT2_MAX + 1, "smallint out of range"),
        (IntegerField(), -(2**31) - 1, "integer out of range"),
        # psycopg's own bigint dumper raised an OverflowError, which Django does not wrap.
        (BigIntegerField(), INT8_MAX + 1, "bigint out of range"),
        (BigIntegerField(), -(2**64), "bigint out of range"),
    ],
)
def test_each_integer_type_is_refused_as_a_data_error(field, value, message):
    with pytest.raises(DataError, match=f"^{message}$") as raised, connection.cursor() as cursor:
        cursor.execute("SELECT %s", [field.get_db_prep_value(value, connection)])
    assert raised.value.__cause__.sqlstate == "22003"  # numeric_value_out_of_range, as PostgreSQL's


@pytest.mark.parametrize(
    ("field", "values"),
    [
        (SmallIntegerField(), [-(2**15), INT2_MAX, -1, 0, 1]),
        (IntegerField(), [-(2**31), INT4_MAX, -1, 0, 1]),
        (BigIntegerField(), [-(2**63), INT8_MAX, -1, 0, 1, 2**40]),
    ],
)
def test_values_in_range_round_trip_with_their_type(field, values):
    params = [field.get_db_prep_value(value, connection) for value in values]
    placeholders = ", ".join("%s" for _ in values)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join('pg_typeof(%s)::text' for _ in values)}", params)
        types = set(cursor.fetchone())
        cursor.execute(f"SELECT {placeholders}", params)
        assert list(cursor.fetchone()) == values
    assert types == {field.db_type(connection)}


def test_boundary_values_are_stored_through_the_orm():
    partner = PartnerFactory(clock_skew_ms=INT4_MAX)
    event = InboundEventFactory(tries=INT2_MAX)
    partner.refresh_from_db()
    event.refresh_from_db()
    assert (partner.clock_skew_ms, event.tries) == (INT4_MAX, INT2_MAX)

    Partner.objects.filter(pk=partner.pk).update(clock_skew_ms=-(2**31))
    partner.refresh_from_db()
    assert partner.clock_skew_ms == -(2**31)


def test_a_lookup_with_a_huge_number_still_finds_nothing_without_an_error():
    PartnerFactory(clock_skew_ms=0)  # what 2**40 wrapped to

    assert not Partner.objects.filter(clock_skew_ms=2**40).exists()
    assert not Partner.objects.filter(clock_skew_ms__gt=2**40).exists()
    assert Partner.objects.filter(clock_skew_ms__lt=2**40).count() == 1
    assert not Partner.objects.filter(pk=2**70).exists()
    assert not InboundEvent.objects.filter(tries=2**16).exists()
