"""Policy figures on CPU: SmolLM2-135M-Instruct + LoRA, short runs.

    ./prefloop bench policy [--dpo-steps 20] [--grpo-steps 24] [--skip-job] [--parts dpo,grpo,generate]

1. DPO on AlpacaEval pairs (../shared/data; the preferred answer as chosen; by default GPT-4
   Turbo vs text-davinci-003, where the annotator preferred one side 97% of the time: a signal 40
   pairs can carry), through the runner: the held-out chosen-minus-rejected log-ratio margin before
   and after.
2. Orchestration overhead: a DPO job on a real Celery worker (launch to registered checkpoint)
   against the runner called directly (1.) and against a plain TRL script with the same settings
   and data (load, DPOTrainer, train, save; no held-out evaluation).
3. GRPO with a toy verifiable reward (answer in 12 words), through the runner: held-out mean reward
   before and after, and the train reward over steps.
4. Generation throughput with transformers' `generate`: one prompt at a time against batches of 8.
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
DATA = REPO / "var" / "bench" / "policy"
SHARED = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dpo-steps", type=int, default=20)
parser.add_argument("--grpo-steps", type=int, default=24)
parser.add_argument("--skip-job", action="store_true")
parser.add_argument("--parts", default="dpo,grpo,generate", help="which of dpo (with the job unless --skip-job), "
                    "grpo, generate to run")
parser.add_argument("--pairs", default="gpt4_1106_preview_vs_text_davinci_003.jsonl",
                    help="an AlpacaEval judgments file in ../shared/data/alpaca_eval/judgments")
args = parser.parse_args()

shutil.rmtree(DATA, ignore_errors=True)
DATA.mkdir(parents=True)
os.environ.update(PREFLOOP_DATA_DIR=str(DATA), DATABASE_URL=f"sqlite:///{DATA / 'db.sqlite3'}",
                  CELERY_BROKER_URL="filesystem://", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                  PREFLOOP_MODEL_CACHE=str(REPO / "var" / "models"))
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
from training.runners.base import set_threads  # noqa: E402
from training.runners.dpo import DPOConfig, train_dpo  # noqa: E402
from training.runners.generate import GenerateConfig, generate_answers  # noqa: E402
from training.runners.grpo import GRPOConfig, train_grpo  # noqa: E402
from training.snapshots import make_snapshot, snapshot_path  # noqa: E402

results = {}
project = Project.objects.create(slug="alpaca", name=f"AlpacaEval {args.pairs}")
import_path(project, SHARED / "alpaca_eval" / "judgments" / args.pairs)
snapshot = make_snapshot(project, "trl-preference")
print(f"snapshot: {snapshot.rows} preference pairs")
dpo = {"max_steps": args.dpo_steps, "batch_size": 2, "max_length": 256, "learning_rate": 2e-4, "beta": 0.1,
       "eval_fraction": 0.05, "seed": 0, "threads": 0}

parts = set(args.parts.split(","))
with open(SHARED / "alpaca_eval" / "instructions.jsonl") as handle:
    rows = [json.loads(line) for line in handle][:64]

# 1. DPO through the runner
if "dpo" in parts:
    started = time.perf_counter()
    result = train_dpo(snapshot_path(snapshot), DATA / "dpo", DPOConfig.from_dict(dpo))
    runner_seconds = time.perf_counter() - started
    m = result.metrics
    print(f"DPO, {m['steps']} steps: held-out margin {m['heldout_margin_before']:+.3f} → {m['heldout_margin_after']:+.3f} "
          f"on {m['heldout_eval_pairs']} of {m['held_out_pairs']} held-out pairs (95% interval {m['heldout_margin_low']:+.3f} "
          f"to {m['heldout_margin_high']:+.3f}); held-out accuracy {m['heldout_accuracy_after']:.2f}; {runner_seconds:.0f} s")
    results["dpo"] = {**m, "runner_seconds": runner_seconds}

# 2. the same as a plain TRL script, and as a job on a worker
PLAIN = r'''
import json, sys, time
started = time.perf_counter()
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
torch.set_num_threads(max(1, (__import__("os").cpu_count() or 2) - 1))
path, snapshot, out, steps = sys.argv[1:5]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
rows = [json.loads(line) for line in open(snapshot)]
data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                           "chosen": [{"role": "assistant", "content": r["chosen"]}],
                           "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
args = DPOConfig(output_dir=out + "/t", per_device_train_batch_size=2, learning_rate=2e-4, max_steps=int(steps),
                 beta=0.1, max_length=256, truncation_mode="keep_end", save_strategy="no", report_to=[],
                 bf16=False, use_cpu=True, gradient_checkpointing=False, disable_tqdm=True, seed=0,
                 logging_steps=1, warmup_steps=0.1)
trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
trainer.train()
trainer.model.merge_and_unload().save_pretrained(out + "/model")
print(json.dumps({"seconds": time.perf_counter() - started}))
'''
if "dpo" in parts and not args.skip_job:
    from rewards.backbones import smollm2_path

    script = DATA / "plain_dpo.py"
    script.write_text(PLAIN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), smollm2_path(), str(snapshot_path(snapshot)),
                           str(DATA / "plain"), str(args.dpo_steps)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    plain_seconds = time.perf_counter() - started
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,cpu,gpu",
                               "--pool", "solo", "--loglevel", "WARNING", "--logfile", str(DATA / "worker.log")],
                              cwd=REPO, env=os.environ.copy(), start_new_session=True)
    time.sleep(8)
    try:
        started = time.perf_counter()
        job = jobs.launch(project, "dpo", dpo)
        while not job.finished:
            time.sleep(0.2)
            job.refresh_from_db()
        job_seconds = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    if job.status != Job.Status.SUCCEEDED:
        sys.exit(f"job failed: {job.error}")
    print(f"plain TRL script: {plain_seconds:.0f} s (process start to saved model); runner called here: "
          f"{runner_seconds:.0f} s; DPO job: {job_seconds:.0f} s (launch to registered checkpoint)")
    print(f"job vs the runner called directly (orchestration: snapshot, queue, worker, registration): "
          f"{job_seconds / runner_seconds - 1:+.1%}")
    print(f"job vs the plain TRL script (orchestration plus the held-out evaluation the script skips): "
          f"{job_seconds / plain_seconds - 1:+.1%}")
    results["overhead"] = {"plain_seconds": plain_seconds, "job_seconds": job_seconds,
                           "runner_seconds": runner_seconds}

# 3. GRPO with a toy verifiable reward
if "grpo" in parts:
    prompts = DATA / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": r["instruction"]}) for r in rows) + "\n")
    grpo = {"rewards": ["length_target"], "length_target_words": 12, "max_steps": args.grpo_steps, "prompts_per_step": 2,
            "num_generations": 4, "max_completion_length": 32, "eval_prompts": 16, "learning_rate": 1e-3, "beta": 0.04,
            "seed": 0, "threads": 0}


    class Rewards:
        def __init__(self):
            self.train = []

        def progress(self, *a, **k):
            pass

        def log(self, *a):
            pass

        def should_stop(self):
            return False

        def checkpoint(self):
            pass

        def metric(self, step, name, value):
            if name == "train/reward":
                self.train.append(round(value, 3))


    recorder = Rewards()
    started = time.perf_counter()
    result = train_grpo(prompts, DATA / "grpo", GRPOConfig.from_dict(grpo), reporter=recorder)
    m = result.metrics
    print(f"GRPO, {m['steps']} steps, reward = answer in 12 words: held-out mean reward {m['heldout_reward_before']:.3f} → "
          f"{m['heldout_reward_after']:.3f}; train reward by step {recorder.train}; KL {m['kl_last']}; "
          f"{time.perf_counter() - started:.0f} s")
    results["grpo"] = {**m, "train_rewards": recorder.train}

# 4. generation throughput
if "generate" in parts:
    set_threads(0)
    pairs = [(i, r["instruction"]) for i, r in enumerate(rows[:16])]
    speeds = {}
    for batch in (1, 8):
        stats = generate_answers("smollm2", pairs, DATA / f"gen-{batch}.jsonl",
                                 GenerateConfig.from_dict({"batch_size": batch, "max_new_tokens": 64, "temperature": 0.7}))
        speeds[batch] = stats["tokens_per_second"]
        print(f"generate, batch {batch}: {stats['tokens_per_second']} tokens/s ({stats['answers']} answers, "
              f"{stats['tokens']} tokens)")
    print(f"batch 8 vs 1: {speeds[8] / speeds[1]:.2f}×")
    results["generate"] = speeds
print("RESULT " + json.dumps(results, default=str))
