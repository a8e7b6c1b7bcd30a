"""`manage.py import_data`: import a file into a project (annotate.importing), creating the project if
asked; progress on stderr (a bar on a terminal, plain lines otherwise)."""

import json
import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotate.importing import FORMATS, LABEL_MODES, ImportFailed, import_stream
from annotate.models import Project
from annotate.progress import CommandProgress, ReadProgress


class Command(BaseCommand):
    help = ("Import prompts, responses, comparisons and labels from a JSON, JSONL or CSV file (gzip allowed). "
            "Progress goes to stderr: a bar on a terminal, plain lines otherwise.")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--project", required=True, help="Slug of the project to import into.")
        parser.add_argument("--format", default="auto", help=f"auto (default) or one of: {', '.join(FORMATS)}.")
        parser.add_argument("--labels", default="judgments", help=f"What labels in the file become: {', '.join(LABEL_MODES)}.")
        parser.add_argument("--create", action="store_true", help="Create the project if it does not exist.")
        parser.add_argument("--owner", help="Username of the owner when --create makes the project.")

    def handle(self, *args, path, project, format, labels, create, owner, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            if not create:
                raise CommandError(f"No project with slug {project!r} (add --create to make it).")
            from annotate.actions import ActionError, do_create_project

            user = get_user_model().objects.filter(username=owner).first() if owner else None
            if owner and user is None:
                raise CommandError(f"No user named {owner!r}.")
            try:
                target = do_create_project(user, slug=project, name=project) if user else Project.objects.create(
                    slug=project, name=project
                )
            except ActionError as exc:
                raise CommandError(exc.message) from None
        try:
            raw = open(path, "rb")  # noqa: SIM115 -- closed below, after the import
        except (FileNotFoundError, IsADirectoryError):
            raise CommandError(f"No file at {path}.") from None
        try:
            size = os.fstat(raw.fileno()).st_size
            with CommandProgress(size, f"importing {os.path.basename(path)}", stream=self.stderr, unit="B",
                                 scale=True) as progress:
                # Bytes read from the file (compressed, if gzipped): the importer streams it once.
                result = import_stream(target, ReadProgress(raw, progress), filename=str(path), format=format,
                                       labels=labels)
        except ImportFailed as exc:
            raise CommandError(str(exc)) from None
        finally:
            raw.close()
        rate = result.rows / result.seconds if result.seconds else 0
        self.stdout.write(
            f"{result.rows} rows ({result.format}) in {result.seconds:.2f} s ({rate:,.0f} rows/s): "
            f"{result.prompts_added} prompts, {result.candidates_added} responses, "
            f"{result.comparisons_added} comparisons, {result.judgments_added} labels added; "
            f"{result.rows_skipped} skipped."
        )
        self.stdout.write(json.dumps(result.as_dict()))
