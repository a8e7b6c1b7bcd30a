"""What the policy runners (DPO, GRPO, generation) share: loading a causal LM with its chat
template, LoRA, prompts as chat messages, and saving a self-contained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from rewards.backbones import resolve as resolve_model

from .base import RunFailed, device, load_dtype

MANIFEST = "prefloop.json"


def as_messages(prompt) -> list[dict]:
    """A prompt as chat messages (plain text becomes one user turn)."""
    if isinstance(prompt, list):
        return [dict(m) for m in prompt]
    return [{"role": "user", "content": prompt}]


def as_completion(text) -> list[dict]:
    if isinstance(text, list):
        return [dict(m) for m in text]
    return [{"role": "assistant", "content": text}]


def manifest_of(model_name: str) -> dict | None:
    """The best-of-n manifest (`runners.best_of_n`) of a checkpoint directory, or None for an ordinary policy."""
    path = Path(str(model_name)) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("method") == "best_of_n" else None


def sampler_of(model_name: str) -> str:
    """What actually holds the weights: the sampler of a best-of-n policy, else the model itself."""
    manifest = manifest_of(model_name)
    return manifest["sampler"] if manifest else model_name


def model_path(name: str) -> str:
    path = resolve_model(sampler_of(name))
    if (path.startswith(("/", "./", "../", "~")) or Path(path).suffix) and not Path(path).expanduser().exists():
        raise RunFailed(f"The model path {path} does not exist. Give 'smollm2', an existing directory or a hub id.")
    return path


def load_policy(name: str, *, for_generation: bool = False):
    """Tokenizer and model (float32 on CPU, bf16 on a GPU that has it: rewards.devices decides)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype())
    except (OSError, ValueError) as exc:
        raise RunFailed(f"Could not load the model {name!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_generation:
        tokenizer.padding_side = "left"  # batched generation continues every row at its end
    if tokenizer.chat_template is None:
        raise RunFailed(f"The model {name!r} has no chat template; give an instruction-tuned model.")
    return tokenizer, model.to(device())


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


def check_prompt_lengths(tokenizer, prompts: list, limit: int, what: str) -> None:
    """Refuse prompts the model cannot read whole, naming the first and how many."""
    too_long = []
    for index, prompt in enumerate(prompts):
        ids = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        if len(ids) >= limit:
            too_long.append((index, len(ids)))
    if too_long:
        index, tokens = too_long[0]
        raise RunFailed(f"{len(too_long)} prompt(s) are longer than {what} ({limit} tokens); the first, #{index + 1}, "
                        f"has {tokens} tokens. Shorten or leave out those prompts, or use a model with a longer "
                        "context.")


def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def save_policy(model, tokenizer, output_dir: Path, manifest: dict) -> None:
    """A self-contained checkpoint: LoRA merged into the weights, tokenizer, manifest."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(output_dir)
    (output_dir / MANIFEST).write_text(json.dumps({"kind": "policy", **manifest}, indent=2, default=str))
