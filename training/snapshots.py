"""Dataset snapshots: the export frozen into a file named by its content, with its watermark."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.db.models import Max

from annotate.export import ExportOptions, write_export
from annotate.models import Comparison, Judgment, Project

from .models import DatasetSnapshot


def make_snapshot(project: Project, format: str = "raw", **options) -> DatasetSnapshot:
    """Freeze the project's judgments up to now. The same data gives the same snapshot."""
    watermark = Judgment.objects.filter(project=project).aggregate(top=Max("id"))["top"] or 0
    exported = write_export(project, ExportOptions(format=format, until_id=watermark, **options))
    folder = Path(settings.MEDIA_ROOT) / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{exported.version}.jsonl"
    if not target.exists():
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")  # one per writer
        try:
            os.link(exported.path, partial)
        except OSError:
            shutil.copyfile(exported.path, partial)
        os.replace(partial, target)
    judgments = Judgment.objects.filter(project=project, id__lte=watermark).exclude(
        comparison__status=Comparison.Status.RETIRED)
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project, sha256=exported.version,
        defaults={"path": str(target.relative_to(settings.MEDIA_ROOT)), "format": format,
                  "options": exported.options, "rows": exported.rows, "judgment_watermark": watermark,
                  "judgments": judgments.count(), "comparisons": judgments.values("comparison_id").distinct().count()},
    )
    return snapshot


def snapshot_path(snapshot: DatasetSnapshot) -> Path:
    return Path(settings.MEDIA_ROOT) / snapshot.path
