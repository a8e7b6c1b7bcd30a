"""TRL's RewardTrainer, taught Prefloop's losses and rubric heads.

The dataset arrives tokenized (`chosen_ids`, `rejected_ids`) with per-pair `margin` and `tie`, and,
for a rubric model, per-side rubric targets and masks. The collator carries those through; the
loss is one of `rewards.losses`; the model's first output is the reward, the others one per
rubric criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from .losses import pairwise_loss, rubric_loss

EXTRA_COLUMNS = ("margin", "tie", "rubric_chosen", "rubric_rejected", "rubric_mask_chosen", "rubric_mask_rejected")


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """TRL's collator (pads chosen then rejected into one batch) plus ties and rubric targets."""

    def torch_call(self, examples):
        output = super().torch_call(examples)
        if "tie" in examples[0]:
            output["tie"] = torch.tensor([bool(e["tie"]) for e in examples])
        if "rubric_chosen" in examples[0]:
            for key in ("rubric_chosen", "rubric_rejected", "rubric_mask_chosen", "rubric_mask_rejected"):
                output[key] = torch.tensor([e[key] for e in examples], dtype=torch.float)
        return output


class PrefloopRewardTrainer(RewardTrainer):
    def __init__(self, *args, loss: str = "bt", label_smoothing: float = 0.1, tie_threshold: float = 1.0,
                 rubric_weight: float = 1.0, **kwargs):
        self.pairwise = {"loss": loss, "label_smoothing": label_smoothing, "tie_threshold": tie_threshold}
        self.rubric_weight = rubric_weight
        model = kwargs["model"]
        outputs = model.config.num_labels
        model.config.num_labels = 1  # TRL insists on one output; ours past the first are rubric heads
        try:
            super().__init__(*args, **kwargs)
        finally:
            model.config.num_labels = outputs

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", *EXTRA_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        logits = outputs.logits
        chosen, rejected = torch.chunk(logits, chunks=2)
        delta = chosen[:, 0] - rejected[:, 0]
        tie = inputs.get("tie")
        loss = pairwise_loss(delta, margin=inputs.get("margin"), tie=tie, **self.pairwise)
        if "rubric_chosen" in inputs and logits.shape[-1] > 1:
            rubric = rubric_loss(chosen[:, 1:], inputs["rubric_chosen"], inputs["rubric_mask_chosen"])
            rubric = rubric + rubric_loss(rejected[:, 1:], inputs["rubric_rejected"], inputs["rubric_mask_rejected"])
            loss = loss + self.rubric_weight * rubric
            self._metrics[mode]["rubric_mse"].append(rubric.item() / 2)
        with torch.no_grad():
            non_tie = torch.ones_like(delta, dtype=torch.bool) if tie is None else ~tie.bool()
            if non_tie.any():
                self._metrics[mode]["accuracy"].append((delta[non_tie] > 0).float().mean().item())
                self._metrics[mode]["margin"].append(delta[non_tie].mean().item())
            self._metrics[mode]["mean_reward"].append(logits[:, 0].mean().item())
        return (loss, outputs) if return_outputs else loss
