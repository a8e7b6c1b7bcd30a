"""GPU figures, each against a baseline measured in the same run (under 10 minutes on one GPU):

    ./prefloop bench gpu [--parts dpo,grpo,generate,score] [--require-vllm] [--cpu-full]

1. DPO training tokens/s: Prefloop's runner (SmolLM2-135M-Instruct, LoRA) against a plain TRL
   script with the same model, data, LoRA and arguments. Tokens: prompt + chosen and prompt +
   rejected, as the trainer reads them (capped at max_length), over train_runtime.
2. GRPO generated tokens/s: the runner against a plain GRPOTrainer script, same settings and
   reward (answer in 20 words); completion tokens over train_runtime.
3. Generation tokens/s: vLLM against transformers' `generate` through the generate runner.
4. Reward-model scoring pairs/s on the GPU against the CPU (MiniLM with a reward head).
Also: the tie-aware loss keeps its gradient for bf16 inputs (computed in float32).

Prints a table and a RESULT json line; exits 1 if a path failed. Without CUDA it says plainly that
no GPU is present, runs a quick CPU smoke (the loss check, scoring and transformers generation at
toy sizes; --cpu-full: every path at toy sizes) and exits 0 unless the smoke failed.
"""

import argparse
import gc
import gzip
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFLOOP_MODEL_CACHE", str(REPO / "var" / "models"))
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parts", default="dpo,grpo,generate,score")
parser.add_argument("--require-vllm", action="store_true", help="count a missing vllm as a failed path")
parser.add_argument("--cpu-full", action="store_true", help="without a GPU: every path at toy sizes")
args = parser.parse_args()

import torch  # noqa: E402

from rewards.backbones import minilm_path, smollm2_path  # noqa: E402
from rewards.devices import device, precision  # noqa: E402

GPU = torch.cuda.is_available()
parts = set(args.parts.split(","))
if not GPU:
    print("No GPU is present (torch.cuda.is_available() is False): no GPU figure is measured here. "
          + ("Running every path at toy sizes on the CPU." if args.cpu_full else
             "Running a quick CPU smoke (loss, scoring, transformers generation); --cpu-full for every path."))
    if not args.cpu_full:
        parts &= {"generate", "score"}
else:
    print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; "
          f"precision {precision()}; torch {torch.__version__}")
SIZE = {  # GPU sizes, and toy sizes for a CPU run
    "dpo": dict(max_steps=40, batch_size=8, max_length=512) if GPU else dict(max_steps=2, batch_size=2, max_length=96),
    "grpo": dict(max_steps=12, prompts_per_step=4, num_generations=8, max_completion_length=128) if GPU else
    dict(max_steps=1, prompts_per_step=2, num_generations=2, max_completion_length=12),
    "generate": dict(prompts=128, max_new_tokens=128, batch_size=32) if GPU else
    dict(prompts=4, max_new_tokens=12, batch_size=4),
    "score": dict(pairs=4000, cpu_pairs=256, batch_size=128) if GPU else dict(pairs=48, cpu_pairs=48, batch_size=16),
}
WORK = Path(tempfile.mkdtemp(prefix="prefloop-gpu-bench-"))
rows, failures, results = [], [], {}


def release():
    gc.collect()
    if GPU:
        torch.cuda.empty_cache()


def record(path, ours, baseline, unit, ours_name="Prefloop", baseline_name="baseline"):
    ratio = f"{ours / baseline:.2f}×" if ours and baseline else "-"
    rows.append((path, f"{ours:,.0f} {unit}" if ours else "-", ours_name,
                 f"{baseline:,.0f} {unit}" if baseline else "-", baseline_name, ratio))
    results[path] = {"ours": ours, "baseline": baseline, "unit": unit}


def attempt(name, function):
    try:
        function()
    except Exception as exc:  # a failed path is reported and counted; the others still run
        traceback.print_exc()
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        rows.append((name, "FAILED", "", "", "", ""))
    release()


# --- data: the 300 HH-RLHF pairs shipped with the demo, split into prompt / chosen / rejected ----------
def hh_pairs():
    pairs = []
    with gzip.open(REPO / "annotate" / "demo" / "hh-rlhf-harmless-sample.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            cut = row["chosen"].rfind("\n\nAssistant:")
            prompt = row["chosen"][:cut].replace("\n\nHuman: ", "", 1).strip()
            if cut > 0 and row["rejected"][:cut] == row["chosen"][:cut]:
                pairs.append({"prompt": prompt, "chosen": row["chosen"][cut + 13:].strip(),
                              "rejected": row["rejected"][cut + 13:].strip()})
    return pairs


PAIRS = hh_pairs()
SNAPSHOT = WORK / "pairs.jsonl"
SNAPSHOT.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
PROMPTS = WORK / "prompts.jsonl"
PROMPTS.write_text("".join(json.dumps({"prompt": p["prompt"]}) + "\n" for p in PAIRS))
SMOLLM2 = smollm2_path()


class Recorder:
    """A runner Reporter that keeps the trainer's logged numbers."""

    def __init__(self):
        self.metrics = {}

    def progress(self, *a, **k):
        pass

    def log(self, *a):
        pass

    def should_stop(self):
        return False

    def checkpoint(self):
        pass

    def metric(self, step, name, value):
        self.metrics.setdefault(name, []).append(value)


def lora():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def load_plain():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.bfloat16 if precision() == "bf16" else
                                                 torch.float32).to(device())
    return tokenizer, model


# --- 0. the tie-aware loss in bf16 --------------------------------------------------------------------
def loss_check():
    from rewards.losses import pairwise_loss

    delta = torch.tensor([7.0, 0.5], dtype=torch.bfloat16, requires_grad=True)
    pairwise_loss(delta, "tie_aware", tie=torch.tensor([True, True])).backward()
    if not (delta.grad is not None and torch.isfinite(delta.grad.float()).all() and delta.grad[0] > 0):
        raise AssertionError(f"no usable gradient for a bf16 tie: {delta.grad}")
    rows.append(("tie-aware loss, bf16 inputs", f"gradient {float(delta.grad[0]):.3f}", "float32 math", "", "", "ok"))


attempt("tie-aware loss", loss_check)


# --- 1. DPO -------------------------------------------------------------------------------------------
def dpo():
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    from rewards.devices import trainer_precision
    from training.runners.dpo import DPOConfig, split_by_prompt, train_dpo
    from training.runners.policy import as_completion, as_messages

    size = SIZE["dpo"]
    config = DPOConfig.from_dict({**size, "learning_rate": 1e-4, "beta": 0.1, "eval_fraction": 0.1, "seed": 0})
    tokenizer, _ = load_plain()
    train, _ = split_by_prompt(PAIRS, config.eval_fraction, config.seed)

    def pair_tokens(pair):
        prompt = tokenizer.apply_chat_template(as_messages(pair["prompt"]), add_generation_prompt=True)
        prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        return sum(min(config.max_length, len(prompt) + len(tokenizer(pair[side])["input_ids"]) + 1)
                   for side in ("chosen", "rejected"))

    tokens = config.max_steps * config.batch_size * sum(pair_tokens(p) for p in train) / len(train)

    recorder = Recorder()
    train_dpo(SNAPSHOT, WORK / "dpo-prefloop", config, reporter=recorder)
    ours = tokens / recorder.metrics["train/train_runtime"][-1]
    release()

    set_seed(config.seed)
    tokenizer, model = load_plain()
    data = Dataset.from_list([{"prompt": as_messages(p["prompt"]), "chosen": as_completion(p["chosen"]),
                               "rejected": as_completion(p["rejected"])} for p in train])
    trl_args = TRLConfig(output_dir=str(WORK / "dpo-plain"), per_device_train_batch_size=config.batch_size,
                         learning_rate=config.learning_rate, max_steps=config.max_steps, beta=config.beta,
                         max_length=config.max_length, truncation_mode="keep_end", save_strategy="no",
                         report_to=[], logging_steps=1, seed=config.seed, disable_tqdm=True, warmup_steps=0.1,
                         **trainer_precision())
    trainer = DPOTrainer(model=model, args=trl_args, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora())
    baseline = tokens / trainer.train().metrics["train_runtime"]
    record("DPO training tokens/s", ours, baseline, "tok/s", "runner", "plain TRL script")


if "dpo" in parts:
    attempt("DPO", dpo)


# --- 2. GRPO ------------------------------------------------------------------------------------------
def grpo():
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    from rewards.devices import trainer_precision
    from rewards.functions import LengthTarget
    from training.runners.grpo import GRPOConfig, _held_out, load_prompts, train_grpo
    from training.runners.policy import as_messages

    size = SIZE["grpo"]
    config = GRPOConfig.from_dict({**size, "rewards": ["length_target"], "length_target_words": 20,
                                   "learning_rate": 1e-4, "eval_prompts": 4, "seed": 0, "beta": 0.04})

    def generated(lengths):
        return sum(lengths) * config.prompts_per_step * config.num_generations

    recorder = Recorder()
    train_grpo(PROMPTS, WORK / "grpo-prefloop", config, reporter=recorder)
    ours = generated(recorder.metrics["train/completions/mean_length"]) / recorder.metrics["train/train_runtime"][-1]
    release()

    set_seed(config.seed)
    tokenizer, model = load_plain()
    tokenizer.padding_side = "left"
    train, _ = _held_out(load_prompts(PROMPTS), config.eval_prompts, config.seed)
    data = Dataset.from_list([{"prompt": as_messages(r["prompt"])} for r in train])
    trl_args = TRLConfig(output_dir=str(WORK / "grpo-plain"), learning_rate=config.learning_rate,
                         max_steps=config.max_steps, per_device_train_batch_size=config.prompts_per_step *
                         config.num_generations, num_generations=config.num_generations,
                         max_completion_length=config.max_completion_length, temperature=config.temperature,
                         beta=config.beta, seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
                         disable_tqdm=True, **trainer_precision())
    trainer = GRPOTrainer(model=model, reward_funcs=[LengthTarget(config.length_target_words)], args=trl_args,
                          train_dataset=data, processing_class=tokenizer, peft_config=lora())
    runtime = trainer.train().metrics["train_runtime"]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    record("GRPO generated tokens/s", ours, generated(lengths) / runtime, "tok/s", "runner", "plain TRL script")


if "grpo" in parts:
    attempt("GRPO", grpo)


# --- 3. generation ------------------------------------------------------------------------------------
def generation():
    from training.runners.generate import GenerateConfig, generate_answers, vllm_available

    size = SIZE["generate"]
    prompts = [(i, p["prompt"]) for i, p in enumerate(PAIRS[: size["prompts"]])]
    config = {"max_new_tokens": size["max_new_tokens"], "batch_size": size["batch_size"], "temperature": 0.7}
    plain = generate_answers("smollm2", prompts, WORK / "gen-transformers.jsonl",
                             GenerateConfig.from_dict({**config, "backend": "transformers"}))
    release()
    if not vllm_available():
        reason = "no GPU" if not GPU else "vllm is not installed (pip install -e '.[gpu]')"
        rows.append(("generation tokens/s", f"vLLM skipped: {reason}", "", f"{plain['tokens_per_second']:,.0f} tok/s",
                     "transformers", "-"))
        results["generation tokens/s"] = {"ours": None, "baseline": plain["tokens_per_second"]}
        if GPU and args.require_vllm:
            raise RuntimeError(reason)
        return
    fast = generate_answers("smollm2", prompts, WORK / "gen-vllm.jsonl",
                            GenerateConfig.from_dict({**config, "backend": "vllm"}))
    # the engine is torn down after the answers: a second one must build on the freed memory
    again = generate_answers("smollm2", prompts[:8], WORK / "gen-vllm-again.jsonl",
                             GenerateConfig.from_dict({**config, "backend": "vllm"}))
    assert again["answers"] == 8
    record("generation tokens/s", fast["tokens_per_second"], plain["tokens_per_second"], "tok/s", "vLLM",
           "transformers")


if "generate" in parts:
    attempt("generation", generation)


# --- 4. reward-model scoring --------------------------------------------------------------------------
def scoring():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewards.scoring import MANIFEST, RewardModel

    size = SIZE["score"]
    folder = WORK / "rm"
    AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1).save_pretrained(folder / "member_0")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder / "member_0")
    (folder / MANIFEST).write_text(json.dumps({"kind": "reward_model", "members": ["member_0"], "max_length": 256,
                                               "criteria": []}))
    texts = (PAIRS * (size["pairs"] // len(PAIRS) + 1))[: size["pairs"]]

    def pairs_per_second(where, count):
        model = RewardModel(folder, device=where)
        subset = texts[:count]
        model.score([p["prompt"] for p in subset[:32]], [p["chosen"] for p in subset[:32]])  # warm-up
        started = time.perf_counter()
        model.score([p["prompt"] for p in subset], [p["chosen"] for p in subset], size["batch_size"])
        model.score([p["prompt"] for p in subset], [p["rejected"] for p in subset], size["batch_size"])
        return count / (time.perf_counter() - started)

    cpu = pairs_per_second("cpu", size["cpu_pairs"])
    ours = pairs_per_second(device(), size["pairs"]) if GPU else cpu
    record("reward-model scoring pairs/s", ours, cpu, "pairs/s", device(), "cpu")


if "score" in parts:
    attempt("scoring", scoring)

print()
print("| path | Prefloop | | baseline | | ratio |")
print("| --- | --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
print("RESULT " + json.dumps({"gpu": GPU, "results": results, "failures": failures}))
if failures:
    print("FAILED: " + "; ".join(failures))
    sys.exit(1)
