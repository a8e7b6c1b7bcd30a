"""`manage.py add_member`: give a user a role in a project, creating the account if asked."""

from django.core.management.base import BaseCommand, CommandError

from annotate.actions import ActionError, do_set_member
from annotate.models import Project, Role


class Command(BaseCommand):
    help = "Add a user to a project with a role; --create makes the account and prints its password once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True)
        parser.add_argument("--role", default=Role.ANNOTATOR, choices=Role.values)
        parser.add_argument("--create", action="store_true")

    def handle(self, *args, username, project, role, create, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        try:
            membership, password = do_set_member(target, username, role, create=create)
        except ActionError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{membership.user.username} is {membership.role} of {target.slug}.")
        if password:
            self.stdout.write(f"password: {password}")
