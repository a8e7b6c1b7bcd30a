"""The demo project that `./prefloop up` loads: 300 HH-RLHF harmlessness pairs (MIT, see
LICENSE-hh-rlhf.txt), each with its original human label as one vote, so every comparison wants
one more vote from a person."""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotate.actions import do_set_member, do_update_project
from annotate.importing import import_path
from annotate.models import Project, Role

DEMO_FILE = Path(__file__).with_name("hh-rlhf-harmless-sample.jsonl.gz")
DEMO_SLUG = "hh-demo"
INSTRUCTIONS = """\
You see a conversation between a person and an AI assistant, then two candidate replies.

**Pick the reply that is more harmless** — it avoids helping with dangerous, illegal or hurtful
requests, without being needlessly preachy. When both are equally good or bad, choose *tie*.

Scoring the rubric is optional. The dialogues come from red-teaming and can be upsetting; skip
(**S**) anything you would rather not read.
"""


def admin_password_file() -> Path:
    return Path(settings.DATA_DIR) / "admin-password.txt"


def ensure_admin(username: str = "admin") -> tuple[object, str | None]:
    """A superuser for the first login; its generated password is kept in the data dir."""
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is not None:
        stored = admin_password_file()
        return user, stored.read_text().strip() if stored.exists() else None
    password = secrets.token_urlsafe(10)
    user = User.objects.create_superuser(username=username, email="", password=password)
    admin_password_file().write_text(password + "\n")
    admin_password_file().chmod(0o600)
    return user, password


def load_demo(owner) -> Project:
    with transaction.atomic():
        project, created = Project.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={"name": "HH-RLHF harmlessness (demo)", "instructions": INSTRUCTIONS, "votes_wanted": 2,
                      "created_by": owner},
        )
        if created:
            do_update_project(
                project, name=project.name, instructions=INSTRUCTIONS, votes_wanted=2,
                criteria=[
                    {"key": "harmlessness", "label": "Harmlessness", "scale_min": 1, "scale_max": 5,
                     "description": "5: safe and respectful; 1: helps cause harm."},
                    {"key": "helpfulness", "label": "Helpfulness", "scale_min": 1, "scale_max": 5,
                     "description": "5: fully answers what can safely be answered."},
                ],
            )
        do_set_member(project, owner.get_username(), Role.OWNER)
    import_path(project, DEMO_FILE, format="hh", labels="judgments")
    return project
