"""Sets up the rounds bench's own instance (run by bench/rounds.py in a child process, with the
instance's environment): migrate, a manager with an API token, the project with the pool imported
with its labels hidden, and simulated annotators. Reads the pool (JSON list of {prompt,
prompt_text, chosen, rejected}) on stdin; prints {"slug", "token", "annotators": [token, ...]}."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from annotate.actions import do_add_simulated_annotators  # noqa: E402
from annotate.importing import import_rows  # noqa: E402
from annotate.models import Membership, Project  # noqa: E402
from annotate.tokens import create_token  # noqa: E402
from bench.rounds import PROJECT, pool_rows  # noqa: E402

count = int(sys.argv[1])
pool = json.load(sys.stdin)
call_command("migrate", verbosity=0)
manager = get_user_model().objects.create_user("bench-manager", password=None, is_staff=True)
project = Project.objects.create(slug=PROJECT, name="Loop bench (simulated annotators)", votes_wanted=1)
Membership.objects.create(project=project, user=manager, role="owner")
result, _ = import_rows(project, pool_rows(pool), labels="ignore", user=manager, filename="loop-bench pool")
_, token = create_token(manager, "loop bench")
annotators = [secret for _, secret in do_add_simulated_annotators(project, count)]
print(json.dumps({"slug": PROJECT, "token": token, "annotators": annotators, "comparisons": result.comparisons_added}))
