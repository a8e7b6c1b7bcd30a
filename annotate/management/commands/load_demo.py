"""`manage.py load_demo`: the first-run admin account and the HH-RLHF demo project."""

from django.core.management.base import BaseCommand

from annotate.demo import ensure_admin, load_demo


class Command(BaseCommand):
    help = "Create the admin account (first run only) and load the HH-RLHF demo project. Safe to repeat."

    def handle(self, *args, **options):
        admin, password = ensure_admin()
        project = load_demo(admin)
        open_count = project.comparisons.filter(status="open").count()
        self.stdout.write(f"demo project: {project.slug} ({open_count} comparisons open)")
        self.stdout.write(f"login: {admin.get_username()} / {password or '(the password you set)'}")
