"""Scoring with a trained reward model (one member or an ensemble): the mean over members is the
reward, their spread (standard deviation) the uncertainty downstream selection uses. Scores on
the GPU when the process has one (rewards.devices), in bf16 autocast where the GPU supports it.

A checkpoint may also hold an embedding head (the runner's `embedding_head`): a Bradley–Terry
head on frozen MiniLM embeddings of the response. Its reward and the members' mean are averaged
(both are log-odds of the same preference), and the spread is taken over the members and the
head together."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .devices import device as default_device
from .devices import use_bf16
from .embeddings import Encoder, response_text
from .text import encode, prepare_tokenizer, reward_input

MANIFEST = "prefloop.json"


@dataclass
class Scores:
    mean: np.ndarray  # [n] reward
    spread: np.ndarray  # [n] standard deviation across members and head (0 for one member alone)
    rubric: np.ndarray | None = None  # [n, criteria] mean rubric outputs in the criteria's scale
    parts: dict[str, np.ndarray] | None = None  # with an embedding head: each part's reward


class RewardModel:
    """A checkpoint directory written by the reward-model runner; on `device` (default: the GPU
    when there is one, else the CPU)."""

    def __init__(self, directory: str | Path, device: str | None = None):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.directory} is not a reward-model checkpoint (no {MANIFEST})")
        self.manifest = json.loads(manifest_path.read_text())
        self.max_length = int(self.manifest["max_length"])
        self.criteria = self.manifest.get("criteria", [])
        self.device = device = device or default_device()
        # Weights stay float32; on a bf16 GPU the forward pass runs in bf16 autocast.
        self.autocast = device.startswith("cuda") and use_bf16()
        members = self.manifest["members"]
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(self.directory / members[0]))
        self.models = []
        for member in members:
            model = AutoModelForSequenceClassification.from_pretrained(self.directory / member)
            model.to(device).eval()
            self.models.append(model)
        head = self.manifest.get("head")
        self.head = None
        if head:
            self.head = (Encoder(head["encoder"], int(head["max_length"]), device),
                         np.load(self.directory / head["file"]).astype(np.float32))

    def score(self, prompts: list, responses: list, batch_size: int = 32) -> Scores:
        """Rewards for (prompt, response) pairs, in input order. Batches are formed by length so
        little compute goes to padding (3× faster than file order on long-tailed texts)."""
        ids = [encode(self.tokenizer, reward_input(p, r), self.max_length) for p, r in zip(prompts, responses,
                                                                                            strict=True)]
        order = np.argsort([len(x) for x in ids], kind="stable")
        outputs = np.zeros((len(self.models), len(ids), self._outputs()), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode(), torch.autocast("cuda" if self.autocast else "cpu", dtype=torch.bfloat16,
                                                    enabled=self.autocast):
            for start in range(0, len(ids), batch_size):
                batch = order[start:start + batch_size]
                longest = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, index in enumerate(batch):
                    input_ids[row, : len(ids[index])] = torch.tensor(ids[index])
                    mask[row, : len(ids[index])] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                for m, model in enumerate(self.models):
                    logits = model(input_ids=input_ids, attention_mask=mask).logits.float().cpu().numpy()
                    outputs[m, batch] = logits
        rewards = outputs[:, :, 0]
        mean, spread, parts = rewards.mean(axis=0), rewards.std(axis=0), None
        if self.head is not None:
            encoder, weights = self.head
            head = encoder.embed([response_text(p, r) for p, r in zip(prompts, responses, strict=True)]) @ weights
            parts = {"fine_tuned": mean, "embedding_head": head}
            mean, spread = (mean + head) / 2, np.vstack([rewards, head[None]]).std(axis=0)
        rubric = None
        if self.criteria:
            low = np.array([c["scale_min"] for c in self.criteria], dtype=np.float32)
            high = np.array([c["scale_max"] for c in self.criteria], dtype=np.float32)
            rubric = low + (high - low) / (1 + np.exp(-outputs[:, :, 1:].mean(axis=0)))
        return Scores(mean=mean, spread=spread, rubric=rubric, parts=parts)

    def _outputs(self) -> int:
        return 1 + len(self.criteria)
