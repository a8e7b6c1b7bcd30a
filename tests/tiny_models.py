"""Models small enough that a job using them costs a second: a one-layer BERT with MiniLM's
tokenizer and a fresh head, as a reward-model checkpoint registered in a project (untrained: its
scores mean nothing, but a score job on it does all a real one does) or as a `base_model` path
that makes a reward-model job train in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings


def tiny_bert(folder: Path) -> Path:
    """A one-layer BERT classifier (one output) and MiniLM's tokenizer, saved in `folder`."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, set_seed

    from rewards.backbones import minilm_path

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_reward_model(directory: Path) -> Path:
    """A reward-model checkpoint directory (one tiny member), as the reward-model runner writes one."""
    from rewards.scoring import MANIFEST

    tiny_bert(directory / "member_0")
    (directory / MANIFEST).write_text(json.dumps({"kind": "reward_model", "base_model": "tiny-bert",
                                                  "members": ["member_0"], "max_length": 64, "criteria": []}))
    return directory


def tiny_reward_checkpoint(project, name: str = "tiny-rm"):
    from training.models import Checkpoint

    relative = Path("checkpoints") / project.slug / name
    tiny_reward_model(Path(settings.MEDIA_ROOT) / relative)
    return Checkpoint.objects.create(project=project, kind=Checkpoint.Kind.REWARD_MODEL, name=name,
                                     base_model="tiny-bert", path=str(relative))
