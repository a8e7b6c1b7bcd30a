"""Does `exclude_flagged` protect a reward model from one bad annotator?

    ./prefloop bench noisy_labels [--steps 150] [--threads 2]

1. The 1,600 HH-RLHF harmlessness dev pairs (../shared/data) are imported into a fresh SQLite
   project with their labels as the oracle. 20% of them (by prompt hash) are held out: retired,
   never judged, and used only to score the trained models against the oracle. Of the rest, one
   in ten stays gold (the honeypots, gold share 10%); the others' labels are hidden.
2. Four simulated annotators judge the pool through the real queue and actions (one vote per
   comparison): three honest ones with 10% noise, and one who always picks the wrong answer, so
   about 25% of the pool's labels are flipped. Reading time is simulated by moving each lease's
   start back (40 characters a second plus 5-20 s).
3. Two reward models, same config and seed (MiniLM, BT loss, `--max-length` tokens (128), batch
   8, lr 5e-5, `--steps` steps): one on everything, one with `exclude_flagged=True`. Printed: who was
   flagged, how many judgments each snapshot kept, and each model's accuracy on the held-out
   pairs against the oracle, with a 95% Wilson interval.
"""

import argparse
import hashlib
import os
import random
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "var" / "bench" / "noisy"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=150)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--max-length", type=int, default=128)
args = parser.parse_args()

shutil.rmtree(DATA, ignore_errors=True)
DATA.mkdir(parents=True)
os.environ.update(PREFLOOP_DATA_DIR=str(DATA), DATABASE_URL=f"sqlite:///{DATA / 'db.sqlite3'}",
                  CELERY_BROKER_URL="filesystem://", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
sys.path.insert(0, str(REPO))
import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.models import F  # noqa: E402

call_command("migrate", verbosity=0)
from annotate.actions import JudgmentInput, do_create_project, do_set_member, do_submit_judgment  # noqa: E402
from annotate.importing import import_path  # noqa: E402
from annotate.models import Comparison, Lease, Role  # noqa: E402
from annotate.quality import annotator_statistics  # noqa: E402
from annotate.queue import next_comparison_for  # noqa: E402
from annotate.review import do_set_gold_share  # noqa: E402
from rewards.quality import wilson_interval  # noqa: E402
from rewards.scoring import RewardModel  # noqa: E402
from training.runners.reward_model import RewardModelConfig, train_reward_model  # noqa: E402
from training.snapshots import make_snapshot, snapshot_path  # noqa: E402

HH = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / \
    "harmless-base-test.dev.jsonl.gz"
User = get_user_model()
owner = User.objects.create_user("owner")
project = do_create_project(owner, slug="noisy", name="Noisy labels", votes_wanted=1)
result = import_path(project, HH, format="hh", labels="gold")
rows = list(Comparison.objects.filter(project=project).select_related("prompt", "candidate_a", "candidate_b"))
oracle = {c.id: c.gold_choice for c in rows}
held = [c for c in rows if int(hashlib.sha256(c.prompt.text.encode()).hexdigest()[:8], 16) / 16**8 < 0.2]
Comparison.objects.filter(id__in=[c.id for c in held]).update(status="retired")
pool = sorted(set(oracle) - {c.id for c in held})
Comparison.objects.filter(id__in=pool).exclude(id__in=pool[::10]).update(gold_choice=None, origin="imported")
do_set_gold_share(project, 0.1)
print(f"imported {result.rows} pairs: {len(pool)} in the pool ({len(pool[::10])} gold), {len(held)} held out")

annotators = {"honest1": 0.1, "honest2": 0.1, "honest3": 0.1, "flipper": 1.0}
users = {}
for name in annotators:
    users[name] = User.objects.create_user(name)
    do_set_member(project, name, Role.ANNOTATOR)
rng = random.Random(0)
texts = {c.id: c.candidate_a.text for c in rows}
started = time.perf_counter()
active = set(annotators)
while active:
    for name in sorted(active):
        lease = next_comparison_for(project, users[name])
        if lease is None:
            active.discard(name)
            continue
        c = lease.comparison
        correct = "left" if (oracle[c.id] == "a") == (lease.shown_left == "a") else "right"
        wrong = "right" if correct == "left" else "left"
        choice = wrong if rng.random() < annotators[name] else correct
        seconds = (len(c.candidate_a.text) + len(c.candidate_b.text)) / 40 + rng.uniform(5, 20)
        Lease.objects.filter(comparison_id=c.id).update(issued_at=F("issued_at") - timedelta(seconds=seconds))
        do_submit_judgment(project, users[name], JudgmentInput(c.id, choice, ms_spent=int(seconds * 1000)))
print(f"simulated judging: {time.perf_counter() - started:.0f} s")
for row in annotator_statistics(project):
    print(f"  {row['username']}: {row['judgments']} judgments, gold {row['gold_accuracy']} of {row['gold_count']}, "
          f"trust {row['trust']:.2f}, flags {row['reasons']}")

config = {"base_model": "minilm", "loss": "bt", "max_length": args.max_length, "batch_size": 8, "learning_rate": 5e-5,
          "max_steps": args.steps, "eval_fraction": 0.05, "seed": 0, "threads": args.threads, "min_pairs": 20}
model_prompts = [c.prompt.text for c in held]
held_oracle = [oracle[c.id] for c in held]
results = {}
for label, options in (("everything", {}), ("exclude_flagged", {"exclude_flagged": True})):
    snapshot = make_snapshot(project, "raw", **options)
    began = time.perf_counter()
    trained = train_reward_model(snapshot_path(snapshot), DATA / label, RewardModelConfig.from_dict(config))
    model = RewardModel(DATA / label)
    a = model.score(model_prompts, [c.candidate_a.text for c in held]).mean
    b = model.score(model_prompts, [c.candidate_b.text for c in held]).mean
    right = sum((x > y) == (gold == "a") for x, y, gold in zip(a, b, held_oracle, strict=True))
    low, high = wilson_interval(right, len(held))
    results[label] = right / len(held)
    print(f"{label}: snapshot {snapshot.judgments} judgments -> {snapshot.rows} rows kept "
          f"(options {dict((k, snapshot.options.get(k)) for k in ('min_trust', 'exclude_flagged', 'settled_only'))}); "
          f"{time.perf_counter() - began:.0f} s; held-out oracle accuracy {right / len(held):.3f} "
          f"[{low:.3f}, {high:.3f}] on {len(held)} pairs")
print(f"exclude_flagged - everything: {results['exclude_flagged'] - results['everything']:+.3f}")
