"""Reward functions for GRPO: small picklable callables with the signature TRL's GRPOTrainer calls,
`(prompts, completions, **kwargs) -> list[float]`, where `kwargs` carries the dataset's other
columns repeated per completion: `reference` (a reference response for the prompt) and
`reward_prompt` (the prompt as the reward model was trained to read it: GRPO hands the policy chat
messages, but a prompt the project stored as plain text was plain text to the reward model).

    >>> LengthTarget(target_words=3)(["p"], ["one two three four five six"])
    [0.0]
    >>> Clip(LengthTarget(target_words=4), low=0.2, high=0.9)(["p", "p"], ["a b c d", "a"])
    [0.9, 0.25]
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from .text import render_response


def _text(completion) -> str:
    return render_response(completion) if isinstance(completion, list) else str(completion)


def _prompt_key(prompt) -> str:
    return repr(prompt)


def reward_prompts(prompts, kwargs) -> list:
    """What a reward model reads as the prompts: the `reward_prompt` column when the dataset has
    one, else the prompts TRL passes (which GRPO has turned into chat messages).

    >>> reward_prompts([[{"role": "user", "content": "Hi?"}]], {"reward_prompt": ["Hi?"]})
    ['Hi?']
    """
    return list(kwargs.get("reward_prompt") or prompts)


class RewardModelReward:
    """A reward model (or ensemble): mean minus `uncertainty_penalty` × spread, so GRPO is not
    paid for responses the members disagree on (a guard against reward hacking)."""

    __name__ = "reward_model"

    def __init__(self, checkpoint_dir: str | Path, uncertainty_penalty: float = 0.0, batch_size: int = 16):
        self.checkpoint_dir = str(checkpoint_dir)
        self.uncertainty_penalty = uncertainty_penalty
        self.batch_size = batch_size
        self._model = None

    def __getstate__(self):  # picklable: the model is loaded again where it runs
        return {**self.__dict__, "_model": None}

    def model(self):
        if self._model is None:
            from .scoring import RewardModel

            self._model = RewardModel(self.checkpoint_dir)
        return self._model

    def scores(self, prompts, responses) -> list[float]:
        scores = self.model().score(list(prompts), [_text(r) for r in responses], self.batch_size)
        return (scores.mean - self.uncertainty_penalty * scores.spread).tolist()

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.scores(reward_prompts(prompts, kwargs), completions)


class PairwiseWinRate:
    """Pref-GRPO: each completion's reward is the share of the other completions for the same
    prompt that it beats under `judge` (ties count half): bounded, and blind to the judge's scale.

    >>> PairwiseWinRate(LengthTarget(target_words=2))(["p", "p", "p"], ["a b", "a", "a b c d e f"])
    [1.0, 0.5, 0.0]
    """

    __name__ = "pairwise_winrate"

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        scores = self.judge(prompts, completions, **kwargs)
        groups: dict[str, list[int]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            groups[_prompt_key(prompt)].append(index)
        rewards = [0.0] * len(completions)
        for members in groups.values():
            for i in members:
                others = [j for j in members if j != i]
                if not others:
                    rewards[i] = 0.5
                    continue
                wins = sum(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0 for j in others)
                rewards[i] = wins / len(others)
        return rewards


class _Shaped:
    def __init__(self, base):
        self.base = base

    def reference_scores(self, prompts, kwargs) -> list[float]:
        references = kwargs.get("reference")
        if references is None:
            raise ValueError(f"{self.__name__} shaping needs a `reference` response per prompt in the dataset")
        if hasattr(self.base, "scores"):
            return self.base.scores(reward_prompts(prompts, kwargs), references)
        return self.base(prompts, references, **{k: v for k, v in kwargs.items() if k != "reference"})


class PAR(_Shaped):
    """Preference As Reward: σ(r − r_ref), the reward centred on a reference response's reward and
    bounded in (0, 1), which blunts the gains a policy gets from exploiting the reward model."""

    __name__ = "par"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        rewards = self.base(prompts, completions, **kwargs)
        reference = self.reference_scores(prompts, kwargs)
        return [1 / (1 + math.exp(-(r - ref))) for r, ref in zip(rewards, reference, strict=True)]


class Delta(_Shaped):
    """r − r_ref: only improvement over the reference response counts."""

    __name__ = "delta"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        rewards = self.base(prompts, completions, **kwargs)
        reference = self.reference_scores(prompts, kwargs)
        return [r - ref for r, ref in zip(rewards, reference, strict=True)]


class Clip:
    """Clips the reward into [low, high]."""

    __name__ = "clip"

    def __init__(self, base, low: float = -1.0, high: float = 1.0):
        self.base, self.low, self.high = base, low, high

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [min(self.high, max(self.low, r)) for r in self.base(prompts, completions, **kwargs)]


class LengthPenalty:
    """−scale × how far the response's length (characters) is past `max_chars`; 0 within it.

    >>> LengthPenalty(max_chars=5, scale=1.0)(["p", "p"], ["abc", "abcdefghij"])
    [0.0, -1.0]
    """

    __name__ = "length_penalty"

    def __init__(self, max_chars: int = 1000, scale: float = 1.0):
        self.max_chars, self.scale = max_chars, scale

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [-self.scale * max(0, len(_text(c)) - self.max_chars) / self.max_chars + 0.0 for c in completions]


class LengthTarget:
    """A toy verifiable reward: 1 at exactly `target_words` words, falling linearly to 0."""

    __name__ = "length_target"

    def __init__(self, target_words: int = 20):
        self.target_words = target_words

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        out = []
        for completion in completions:
            words = len(_text(completion).split())
            out.append(max(0.0, 1 - abs(words - self.target_words) / self.target_words))
        return out


class ContainsKeyword:
    """A toy verifiable reward: 1 when the response contains `keyword` (case-insensitive)."""

    __name__ = "contains_keyword"

    def __init__(self, keyword: str = "please"):
        self.keyword = keyword.lower()

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [1.0 if self.keyword in _text(c).lower() else 0.0 for c in completions]


BASE_REWARDS = {"reward_model": RewardModelReward, "length_target": LengthTarget, "length_penalty": LengthPenalty,
                "contains_keyword": ContainsKeyword}
SHAPING = {"none": None, "par": PAR, "delta": Delta, "clip": Clip}
