"""Each judgment records the transaction that wrote it (PostgreSQL), so incremental readers can
follow commit order rather than id order (annotate/watermarks.py); webhooks remember a horizon."""

from django.db import migrations, models


def add_txid(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite: one writer at a time, ids commit in order
    schema_editor.execute(
        "ALTER TABLE annotate_judgment ADD COLUMN txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)"
    )
    schema_editor.execute("CREATE INDEX judgment_by_project_txid ON annotate_judgment (project_id, txid)")


def drop_txid(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE annotate_judgment DROP COLUMN txid")


class Migration(migrations.Migration):
    dependencies = [("annotate", "0005_cache_table")]

    operations = [
        migrations.RunPython(add_txid, drop_txid),
        migrations.AddField(
            model_name="webhook",
            name="last_judgment_txid",
            field=models.BigIntegerField(default=0),
        ),
    ]
