"""Scoring with a trained reward model (one member or an ensemble): the mean over members is the
reward, their spread (standard deviation) the uncertainty downstream selection uses. Scores on
the GPU when the process has one (rewards.devices), in bf16 autocast where the GPU supports it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .devices import device as default_device
from .devices import use_bf16
from .text import encode, prepare_tokenizer, reward_input

MANIFEST = "prefloop.json"


@dataclass
class Scores:
    mean: np.ndarray  # [n] reward
    spread: np.ndarray  # [n] standard deviation across ensemble members (0 for one member)
    rubric: np.ndarray | None = None  # [n, criteria] mean rubric outputs in the criteria's scale


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
        rubric = None
        if self.criteria:
            low = np.array([c["scale_min"] for c in self.criteria], dtype=np.float32)
            high = np.array([c["scale_max"] for c in self.criteria], dtype=np.float32)
            rubric = low + (high - low) / (1 + np.exp(-outputs[:, :, 1:].mean(axis=0)))
        return Scores(mean=rewards.mean(axis=0), spread=rewards.std(axis=0), rubric=rubric)

    def _outputs(self) -> int:
        return 1 + len(self.criteria)
