"""Sets up the rounds bench's own instance (run by bench/rounds.py in a child process, with the
instance's environment): migrate, a manager with an API token, the project with the pool imported
with its labels hidden, and simulated annotators. Reads the pool (JSON list of {prompt,
prompt_text, chosen, rejected}) on stdin; prints {"slug", "token", "annotators": [token, ...]}."""

import hashlib
import io
import json
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from annotate.importing import ParsedRow, import_rows  # noqa: E402
from annotate.models import Membership, Project  # noqa: E402
from annotate.tokens import create_token  # noqa: E402

SLUG = "loop-bench"
count = int(sys.argv[1])
pool = json.load(sys.stdin)
call_command("migrate", verbosity=0)
manager = get_user_model().objects.create_user("bench-manager", password=None, is_staff=True)
project = Project.objects.create(slug=SLUG, name="Loop bench (simulated annotators)", votes_wanted=1)
Membership.objects.create(project=project, user=manager, role="owner")
rows = []
for index, pair in enumerate(pool):
    # Which response comes first is the hash's choice, not the label's.
    swap = hashlib.sha256(pair["chosen"].encode()).digest()[0] % 2
    responses = [(pair["rejected"], ""), (pair["chosen"], "")] if swap else [(pair["chosen"], ""), (pair["rejected"], "")]
    messages = pair["prompt"] if isinstance(pair["prompt"], list) else None
    rows.append(ParsedRow(pair["prompt_text"], messages, responses, [(0, 1, None)], item=index))
result, _ = import_rows(project, rows, labels="ignore", user=manager, filename="loop-bench pool")
_, token = create_token(manager, "loop bench")
made = io.StringIO()
with redirect_stdout(made):
    call_command("simulated_annotators", SLUG, count=count, prefix="sim")
annotators = [a["token"] for a in json.loads(made.getvalue())["annotators"]]
print(json.dumps({"slug": SLUG, "token": token, "annotators": annotators, "comparisons": result.comparisons_added}))
