"""No index that another index already provides: every insert pays for each index on its table."""

from __future__ import annotations

from django.apps import apps
from django.db import models
from django.test.utils import isolate_apps

OUR_APPS = ("bookings", "partners", "reconciliation")


def _leading_fields(model: type[models.Model]) -> set[str]:
    """The first field of every full (not partial) multi-column index or unique constraint."""
    leading = set()
    for index in model._meta.indexes:
        if len(index.fields) > 1 and index.condition is None:
            leading.add(index.fields[0].lstrip("-"))
    for constraint in model._meta.constraints:
        full = isinstance(constraint, models.UniqueConstraint) and constraint.condition is None
        if full and len(constraint.fields) > 1:
            leading.add(constraint.fields[0])
    return leading


def test_no_single_column_index_is_covered_by_a_composite_one():
    redundant = [
        f"{model._meta.label}.{field.name}"
        for app in OUR_APPS
        for model in apps.get_app_config(app).get_models()
        for field in model._meta.local_fields
        if field.db_index and not field.unique and field.name in _leading_fields(model)
    ]

    assert redundant == []


@isolate_apps("bookings")  # the probe model stays out of the real registry
def test_the_check_sees_a_covered_foreign_key():
    class Probe(models.Model):
        parent = models.ForeignKey("bookings.Booking", on_delete=models.CASCADE)
        at = models.DateTimeField()

        class Meta:
            app_label = "bookings"
            indexes = [models.Index(fields=["parent", "at"], name="probe_parent_at")]

        def __str__(self) -> str:
            return str(self.pk)

    assert Probe._meta.get_field("parent").db_index
    assert "parent" in _leading_fields(Probe)
