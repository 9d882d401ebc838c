"""Inserting rows that belong together in one statement."""

from __future__ import annotations

from contextlib import nullcontext

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Field, Model
from django.db.models.sql import InsertQuery


def insert_together(*objs: Model, using: str = DEFAULT_DB_ALIAS, savepoint: bool = True) -> None:
    """Insert new model instances all or none: on PostgreSQL in one statement, one round trip.

    `save()` inside `atomic()` costs BEGIN, an INSERT per row and COMMIT: four round trips for
    two rows, each waking the database backend and psycopg. On PostgreSQL the rows go in one
    statement (data-modifying CTEs), atomic without a transaction block; inside an open one, a
    savepoint keeps a failed insert (a unique violation the caller answers) from aborting the
    caller's transaction, as a nested `atomic()` would. `savepoint=False` spares its two round
    trips to a caller that answers no failure (its transaction ends on any). Foreign keys are
    checked once the whole statement is done (Django's are deferred to the commit), so a row may
    reference another row of the same call.

    Like `QuerySet.bulk_create`, it calls no `save()` and sends no model signals: it is for
    models whose saving is their fields' defaults alone. Other databases save each row in
    `atomic()`.
    """
    connection = connections[using]
    nested = connection.in_atomic_block
    if connection.vendor != "postgresql":
        with transaction.atomic(using=using) if savepoint or not nested else nullcontext():
            for obj in objs:
                obj.save(force_insert=True, using=using)
        return

    quote = connection.ops.quote_name
    ctes: list[str] = []
    params: list[object] = []
    returning_aliases: list[str] = []
    returned: list[tuple[Model, Field]] = []
    columns: list[str] = []
    for index, obj in enumerate(objs):
        alias = f"row{index}"
        sql, row_params, returning = _insert_sql(obj, using)
        ctes.append(f"{alias} AS ({sql})")
        params.extend(row_params)
        if returning:
            returning_aliases.append(alias)
        for field in returning:
            returned.append((obj, field))
            columns.append(f"{alias}.{quote(field.column)}")
    # A data-modifying CTE runs to completion whether or not the outer query reads it.
    select = f"SELECT {', '.join(columns)} FROM {', '.join(returning_aliases)}" if columns else "SELECT 1"
    statement = f"WITH {', '.join(ctes)} {select}"

    guard = transaction.atomic(using=using) if savepoint and nested else nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    for (obj, field), value in zip(returned, row if returned else (), strict=True):
        setattr(obj, field.attname, value)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using


def _insert_sql(obj: Model, using: str) -> tuple[str, tuple[object, ...], list[Field]]:
    """The INSERT that `obj.save()` would run, with RETURNING of what the database assigns."""
    meta = obj._meta
    if obj.pk is None:
        obj.pk = meta.pk.get_pk_value_on_save(obj)
    fields = [
        field
        for field in meta.local_concrete_fields
        if not field.generated and (obj.pk is not None or field is not meta.auto_field)
    ]
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj])
    compiler = query.get_compiler(using=using)
    returning = list(meta.db_returning_fields)
    compiler.returning_fields = returning
    [(sql, params)] = compiler.as_sql()
    return sql, tuple(params), returning
