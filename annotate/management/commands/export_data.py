"""`manage.py export_data`: write a project's judgments as a dataset file (annotate.export's formats),
with progress on stderr (a bar on a terminal, plain lines otherwise)."""

import json
import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate import export as exporting
from annotate.models import Project
from annotate.progress import CommandProgress


class Command(BaseCommand):
    help = ("Export a project's judgments as a dataset TRL and Hugging Face datasets read directly. "
            "The last line printed is JSON with the path, the row count and the version (sha256 of the content); "
            "progress goes to stderr: a bar on a terminal, plain lines otherwise.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--format", required=True, help=", ".join(exporting.EXPORT_FORMATS))
        parser.add_argument("--votes", default="majority", help=", ".join(exporting.VOTE_MODES))
        parser.add_argument("--ties", default="drop", help=", ".join(exporting.TIE_MODES))
        parser.add_argument("--since-id", type=int)
        parser.add_argument("--round", type=int)
        parser.add_argument("--origin")
        parser.add_argument("--min-trust", type=float, help="leave out annotators whose trust is below this (0-1)")
        parser.add_argument("--exclude-flagged", action="store_true", help="leave out noise flags and flagged annotators")
        parser.add_argument("--settled-only", action="store_true", help="only comparisons a reviewer settled")
        parser.add_argument("--out", help="Where to copy the file (default: print the stored file's path).")
        parser.add_argument("--gzip", action="store_true")
        parser.add_argument("--parquet", action="store_true")

    def handle(self, *args, project, format, votes, ties, since_id, round, origin, out, gzip, parquet, min_trust,
               exclude_flagged, settled_only, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        try:
            options_ = exporting.ExportOptions(format=format, votes=votes, ties=ties, since_id=since_id, round=round,
                                               origin=origin, min_trust=min_trust, exclude_flagged=exclude_flagged,
                                               settled_only=settled_only)
        except exporting.ExportError as exc:
            raise CommandError(str(exc)) from None
        with CommandProgress(exporting.judgment_rows(target, options_), f"exporting {project} ({format})",
                             stream=self.stderr, unit="judgments") as progress:
            exported = exporting.write_export(target, options_, seen=progress.advance)
            progress.update(progress.total)  # a reused file is read from nowhere: done all the same
        path = exported.path
        if parquet:
            path = exporting.parquet_copy(exported)
        elif gzip:
            path = exporting.gzip_copy(exported)
        if out:
            shutil.copyfile(path, out)
            path = Path(out)
        self.stdout.write(json.dumps({"path": str(path), "rows": exported.rows,
                                      "version": f"sha256:{exported.version}", "format": format}))
