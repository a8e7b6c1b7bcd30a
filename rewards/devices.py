"""Where models run and in which precision, chosen in one place for the whole process: CUDA when
present (or $PREFLOOP_DEVICE), else the CPU; bf16 on a GPU that supports it, fp16 mixed precision
on one that does not, float32 on the CPU. Runners read it through training/runners/base.py."""

from __future__ import annotations

import os


def device() -> str:
    """"cuda" when a GPU is there, else "cpu"; $PREFLOOP_DEVICE overrides (e.g. cuda:1, cpu)."""
    override = os.environ.get("PREFLOOP_DEVICE")
    if override:
        return override
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def precision() -> str:
    """"bf16", "fp16" (a GPU without bf16: mixed precision, float32 master weights) or "fp32"."""
    if not device().startswith("cuda"):
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def use_bf16() -> bool:
    return precision() == "bf16"


def load_dtype():
    """The dtype to load weights in: bf16 where training runs in bf16, else float32 (fp16 mixed
    precision keeps float32 weights and casts in autocast)."""
    import torch

    return torch.bfloat16 if use_bf16() else torch.float32


def trainer_precision() -> dict:
    """The transformers TrainingArguments flags for this precision."""
    chosen = precision()
    return {"bf16": chosen == "bf16", "fp16": chosen == "fp16", "use_cpu": chosen == "fp32" and device() == "cpu"}
