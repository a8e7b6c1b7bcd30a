"""`manage.py create_api_token`: make a personal API token and print it once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotate.tokens import create_token


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it once (only its digest is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive.")
        _, secret = create_token(user, name)
        self.stdout.write(secret)
