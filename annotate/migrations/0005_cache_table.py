"""The database cache's table, so every process shares one cache (the API throttle) on the
embedded default; a no-op where the cache is Redis."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("annotate", "0004_webhook_delivery_next_attempt")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
