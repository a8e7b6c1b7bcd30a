"""`manage.py simulated_annotators`: make simulated annotators of a project and print their tokens."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotate.actions import ActionError, do_add_simulated_annotators
from annotate.models import Project


class Command(BaseCommand):
    help = ("Make COUNT simulated annotators (PREFIX-1 … PREFIX-N, created once, kept after) of a project and print "
            'JSON {"annotators": [{"username", "token"}]}: each gets a new API token on every run.')

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--prefix", default="sim")

    def handle(self, *args, project, count, prefix, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        try:
            made = do_add_simulated_annotators(target, count, prefix)
        except ActionError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps({"annotators": [{"username": u, "token": t} for u, t in made]}))
