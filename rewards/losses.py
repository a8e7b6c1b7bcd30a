"""Pairwise reward-model losses on Δ = r(chosen) − r(rejected).

    >>> import torch
    >>> delta = torch.tensor([2.0, -1.0])
    >>> round(pairwise_loss(delta, "bt").item(), 4)
    0.7201
    >>> round(pairwise_loss(delta, "bt_margin", margin=torch.tensor([1.0, 0.0])).item(), 4)
    0.8133
    >>> round(pairwise_loss(torch.tensor([0.0]), "tie_aware", tie=torch.tensor([True])).item(), 4)
    0.7719
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOSSES = ("bt", "bt_margin", "label_smoothing", "tie_aware")


def pairwise_loss(
    delta: torch.Tensor,
    loss: str = "bt",
    *,
    margin: torch.Tensor | None = None,
    tie: torch.Tensor | None = None,
    label_smoothing: float = 0.1,
    tie_threshold: float = 1.0,
) -> torch.Tensor:
    """Mean loss over the batch.

    bt               Bradley–Terry: −log σ(Δ).
    bt_margin        −log σ(Δ − m), m from judgment strength and agreement (Llama 2's margin loss).
    label_smoothing  −(1−ε) log σ(Δ) − ε log σ(−Δ): a noisy label costs less (conservative BT).
    tie_aware        Rao–Kupper: P(win) = σ(Δ − θ), P(tie) = 1 − σ(Δ − θ) − σ(−Δ − θ); ties are
                     trained toward Δ ≈ 0 instead of being dropped.
    Ties (tie=True) count only in tie_aware; the other losses ignore them. Computed in float32
    (the result is float32 too), so bf16 model outputs keep their gradient.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    # In float32 whatever the model's dtype: in bf16, σ(Δ − θ) rounds to 1 once Δ − θ > ~6.2, and
    # 1 − σ − σ cancels to 0 (the old form then clamped and lost the tie's gradient).
    delta = delta.float()
    margin = margin.float() if margin is not None else None
    non_tie = torch.ones_like(delta, dtype=torch.bool) if tie is None else ~tie.bool()
    if loss == "tie_aware":
        win = -F.logsigmoid(delta - tie_threshold)
        # log(1 − σ(Δ − θ) − σ(−Δ − θ)) in closed form: log σ(θ + Δ) + log σ(θ − Δ) + log(1 − e^(−2θ)).
        # No difference of probabilities to cancel and no clamp, so a tie far from Δ = 0 keeps its pull.
        theta = torch.as_tensor(tie_threshold, dtype=delta.dtype, device=delta.device)
        tied = -(F.logsigmoid(theta + delta) + F.logsigmoid(theta - delta) + torch.log1p(-torch.exp(-2 * theta)))
        per_pair = torch.where(non_tie, win, tied)
        return per_pair.mean()
    if loss == "bt":
        per_pair = -F.logsigmoid(delta)
    elif loss == "bt_margin":
        per_pair = -F.logsigmoid(delta - (margin if margin is not None else 0.0))
    elif loss == "label_smoothing":
        per_pair = -(1 - label_smoothing) * F.logsigmoid(delta) - label_smoothing * F.logsigmoid(-delta)
    else:
        raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    weights = non_tie.float()
    return (per_pair * weights).sum() / weights.sum().clamp_min(1.0)


def rubric_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared error between rubric outputs (through a sigmoid) and scores scaled to
    [0, 1]; criteria nobody scored are masked out.

    >>> import torch
    >>> round(rubric_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
    0.25
    """
    import torch

    error = (torch.sigmoid(predicted) - target) ** 2 * mask
    return error.sum() / mask.sum().clamp_min(1.0)
