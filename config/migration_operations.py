"""Migration operations for a database that serves a running site while it migrates.

A release migrates while the site runs (README, "A release"). A plain `CREATE INDEX` holds a lock
that blocks every write to its table until the index is built: on a table of millions of webhook
deliveries or payments, the bookings and deliveries of those minutes wait. `AddIndexLive` builds
it CONCURRENTLY on PostgreSQL (writes go on; it takes longer), and as usual elsewhere (SQLite has
one writer at a time anyway).

PostgreSQL refuses CONCURRENTLY inside a transaction: a migration using it sets `atomic = False`
and holds nothing else, so that a build that fails (its lock wait timed out, the connection
dropped) leaves nothing half done but an invalid index, which the next `migrate` drops and builds
again.
"""

from __future__ import annotations

from django.db import migrations


class AddIndexLive(migrations.AddIndex):
    """`AddIndex`, built without blocking the table's writes on PostgreSQL (see the module)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        with schema_editor.connection.cursor() as cursor:
            # A build that failed before left its index invalid (unused, but in the way of a new one).
            cursor.execute(
                "SELECT 1 FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
                "WHERE pg_class.relname = %s AND NOT pg_index.indisvalid",
                [self.index.name],
            )
            if cursor.fetchone():
                schema_editor.execute(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(self.index.name)}"
                )
        schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        schema_editor.remove_index(model, self.index, concurrently=True)

    def describe(self) -> str:
        return f"{super().describe()}, concurrently on PostgreSQL"
