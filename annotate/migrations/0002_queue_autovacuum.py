"""PostgreSQL only: vacuum and analyze the queue's tables early.

Every judgment moves a comparison out of the partial queue index and every lease is written and
deleted; with the default thresholds (20% of a table) a 1,000,000-row queue collects ~200,000
dead index entries at the head of the index before autovacuum visits, and each claim walks them.
"""

from django.db import migrations

TUNE = """
ALTER TABLE annotate_comparison SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 2000,
                                     autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE annotate_lease SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 500);
ALTER TABLE annotate_judgment SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 500);
"""
RESET = """
ALTER TABLE annotate_comparison RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
                                       autovacuum_analyze_scale_factor);
ALTER TABLE annotate_lease RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE annotate_judgment RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
"""


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TUNE)


def reset(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESET)


class Migration(migrations.Migration):
    dependencies = [("annotate", "0001_initial")]
    operations = [migrations.RunPython(tune, reset)]
