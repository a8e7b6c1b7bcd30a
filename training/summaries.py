"""What a finished job or a model's metrics mean, for the pages: the evaluation as a table beside
its baselines (random, longer-wins, the parent policy), warnings when a model does worse than a
baseline. Plain functions of dicts: no database."""

from __future__ import annotations

from dataclasses import dataclass, field

# A metric logged at this step or later is a final value, not a point of a curve.
FINAL_STEP = 10**6


@dataclass
class Evaluation:
    title: str
    columns: list[str]
    rows: list[list[str]]
    warnings: list[str] = field(default_factory=list)
    table_id: str = "evaluation"


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _percent(value) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _interval(metrics: dict, name: str, show=_f) -> str:
    """"; 95% interval low–high" from `<name>_low` / `<name>_high`, or nothing when not measured."""
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    return "" if low is None or high is None else f"; 95% interval {show(low)} to {show(high)}"


def reward_model_warnings(metrics: dict) -> list[str]:
    evaluation = metrics.get("eval") or {}
    accuracy = evaluation.get("accuracy", metrics.get("eval_accuracy"))
    if accuracy is None:
        return []
    baselines = evaluation.get("baselines") or {}
    out = []
    random, longer = baselines.get("random", 0.5), baselines.get("longer_wins")
    if accuracy <= random:
        out.append(f"No better than random: held-out accuracy {_f(accuracy)} against {_f(random, 2)} for a coin "
                   "flip. Do not train a policy on it; collect more judgments or check their agreement.")
    elif longer is not None and accuracy < longer:
        out.append(f"Worse than “the longer response wins”: held-out accuracy {_f(accuracy)} against "
                   f"{_f(longer)}. It may have learned little beyond length.")
    elif evaluation.get("n"):
        from .stats import wilson

        low, high = wilson(accuracy * evaluation["n"], int(evaluation["n"]))
        if low <= random:  # a round trusted one at 0.514 on 35 pairs (docs/benchmarks.md, "Does a round learn?")
            out.append(f"Not credibly better than random: held-out accuracy {_f(accuracy)} on {evaluation['n']} "
                       f"pairs, 95% interval {_f(low)}–{_f(high)}. What it prefers may be noise; judge more "
                       "pairs before trusting it.")
    return out


def dpo_warnings(metrics: dict) -> list[str]:
    before, after = metrics.get("heldout_margin_before", 0.0), metrics.get("heldout_margin_after")
    accuracy = metrics.get("heldout_accuracy_after")
    out = []
    if after is not None and after <= before:
        out.append(f"Worse than its parent: the held-out margin did not rise ({_f(before)} before, {_f(after)} "
                   "after), so it does not prefer the chosen responses more than the policy it started from.")
    elif accuracy is not None and accuracy <= 0.5:
        out.append(f"No better than random on held-out pairs: it prefers the chosen response on "
                   f"{_percent(accuracy)} of them.")
    return out


def grpo_warnings(metrics: dict) -> list[str]:
    before, after = metrics.get("heldout_reward_before"), metrics.get("heldout_reward_after")
    if before is None or after is None or after >= before:
        return []
    return [f"Worse than its parent: the held-out mean reward fell from {_f(before)} to {_f(after)}."]


def expert_iteration_warnings(metrics: dict) -> list[str]:
    out = []
    first, final = metrics.get("first_loss"), metrics.get("final_loss")
    if first is not None and final is not None and final >= first:
        out.append(f"Learned nothing: the fine-tuning loss did not fall ({_f(first)} at the start, {_f(final)} at "
                   "the end).")
    before, after = metrics.get("reward_before_same_prompts"), metrics.get("reward_after")
    if before is not None and after is not None and after <= before:
        out.append(f"Worse than its parent by its own reward model: a sample scores {_f(after)} on average, the "
                   f"parent's {_f(before)}.")
    return out


def round_warnings(steps: list) -> list[str]:
    """What went wrong in a round's steps, each named: a reward model below its baselines, a
    policy worse than its parent. The round still ran; this is what it says about itself."""
    out = []
    for step in steps:
        out += [f"{step.get_kind_display()} (job #{step.pk}): {w}" for w in warnings_of(step.result)]
    return out


def round_warning(row: dict) -> str | None:
    """A round whose new policy people preferred less often than its parent."""
    if not row.get("judgments") or row.get("win_rate") is None or row["win_rate"] >= 0.5:
        return None
    if row.get("high") is not None and row["high"] < 0.5:
        return (f"People preferred the parent: the new policy won {_percent(row['win_rate'])} "
                f"(95% interval {_percent(row['low'])}–{_percent(row['high'])}).")
    return (f"The new policy wins {_percent(row['win_rate'])} so far, below its parent; not yet certain "
            f"(95% interval up to {_percent(row['high'])}).")


def evaluation_of(metrics: dict | None) -> Evaluation | None:
    """The table for a job's result or a checkpoint's metrics, recognised by what they hold."""
    metrics = metrics or {}
    if metrics.get("eval"):
        return _reward_model(metrics)
    if "heldout_margin_after" in metrics:
        return _dpo(metrics)
    if "heldout_reward_after" in metrics:
        return _grpo(metrics)
    if "comparisons_added" in metrics and "steps" not in metrics:
        return _generate(metrics)
    if "answers_kept" in metrics:
        return _expert_iteration(metrics)
    if metrics.get("round_warnings"):
        return Evaluation("Round", ["", "value", ""], [["warnings", _f(len(metrics["round_warnings"])), ""]],
                          list(metrics["round_warnings"]))
    if "scored" in metrics:
        return Evaluation("Scoring", ["", "value", ""], [["responses scored", _f(metrics["scored"]), ""],
                                                         ["mean reward", _f(metrics.get("mean_score")), ""]])
    return None


def _reward_model(metrics: dict) -> Evaluation:
    e = metrics["eval"]
    rows = [["reward model", _f(e.get("accuracy")), f"pairwise accuracy on {e.get('n', '?')} held-out pairs"]]
    parts = {"fine_tuned": "fine-tuned part", "embedding_head": "embedding-head part"}
    rows += [[parts.get(name, name), _f(value), "the same pairs, this part alone (the model averages the two)"]
             for name, value in (metrics.get("eval_parts") or {}).items()]
    rows += [["random", _f((e.get("baselines") or {}).get("random")), "baseline"],
            ["longer response wins", _f((e.get("baselines") or {}).get("longer_wins")), "baseline"]]
    calibration = e.get("calibration") or {}
    if calibration:
        rows.append(["calibration", _f(calibration.get("ece")),
                     f"expected calibration error (Brier {_f(calibration.get('brier'))})"])
    for strength, row in (e.get("by_strength") or {}).items():
        rows.append([strength, _f(row.get("accuracy")), f"accuracy on {row.get('n')} pairs judged {strength}"])
    if metrics.get("eval_mean_spread") is not None:
        rows.append(["ensemble spread", _f(metrics["eval_mean_spread"]), "mean disagreement of the members"])
    return Evaluation("Held-out evaluation", ["", "value", "what it is"], rows, reward_model_warnings(metrics))


def _dpo(m: dict) -> Evaluation:
    held_out = m.get("held_out_pairs", "?")
    evaluated = f"{m['heldout_eval_pairs']} of {held_out}" if m.get("heldout_eval_pairs") is not None else held_out
    rows = [
        ["held-out margin", _f(m.get("heldout_margin_before", 0.0)), _f(m.get("heldout_margin_after")),
         "log-ratio of chosen over rejected, against the parent (0 before: the policy is its own reference)"
         + _interval(m, "heldout_margin")],
        ["held-out accuracy", "–", _percent(m.get("heldout_accuracy_after")),
         f"pairs where the chosen response gains more than the rejected one ({evaluated} held-out pairs "
         f"evaluated; before training every pair is a tie){_interval(m, 'heldout_accuracy', _percent)}"],
        ["moved from parent, chosen", "0.000", _f(m.get("heldout_logratio_chosen")),
         "mean log π/π_parent on held-out chosen responses (a KL proxy)"],
        ["moved from parent, rejected", "0.000", _f(m.get("heldout_logratio_rejected")),
         "the same on rejected responses"],
        ["final loss", "–", _f(m.get("final_loss")), f"{m.get('steps', '?')} steps on {m.get('train_pairs', '?')} pairs"],
    ]
    return Evaluation("Held-out preference (DPO)", ["", "before: the parent", "after: this policy", ""],
                      rows, dpo_warnings(m))


def _grpo(m: dict) -> Evaluation:
    rows = [
        ["held-out mean reward", _f(m.get("heldout_reward_before")), _f(m.get("heldout_reward_after")),
         f"on {m.get('held_out_prompts', '?')} held-out prompts"],
        ["training reward", _f(m.get("train_reward_first")), _f(m.get("train_reward_last")),
         "first and last training step"],
        ["KL from the reference", "0.000", _f(m.get("kl_last")), "at the last step"],
        ["completion length", "–", _f(m.get("completion_length_last"), 1), "mean tokens at the last step"],
    ]
    return Evaluation("Held-out reward (GRPO)", ["", "before: the parent", "after: this policy", ""],
                      rows, grpo_warnings(m))


def _expert_iteration(m: dict) -> Evaluation:
    rows = [["answers kept", "–", _f(m.get("answers_kept")), f"the reward model's best of {m.get('n', '?')} per prompt"],
            ["reward gain of best-of-n", "–", _f(m.get("reward_gain_best_of_n")), "best answer over the mean sample"],
            ["reward of a sample", _f(m.get("reward_before_same_prompts", m.get("reward_before"))),
             _f(m.get("reward_after")), "mean reward-model score of the policy's own samples"],
            ["fine-tuning loss", _f(m.get("first_loss")), _f(m.get("final_loss")), f"{m.get('steps', '?')} steps"],
            ["answer length", "–", _f(m.get("mean_answer_tokens"), 1), "tokens, of the kept answers"]]
    return Evaluation("Expert iteration", ["", "before: the parent", "after: this policy", ""], rows,
                      expert_iteration_warnings(m))


def _generate(m: dict) -> Evaluation:
    rows = [["round", _f(m.get("round")), ""], ["answers", _f(m.get("answers")), "new policy and parent"],
            ["comparisons added", _f(m.get("comparisons_added")), "new policy against its parent, in the queue"],
            ["backend", _f(m.get("backend")), ""],
            ["tokens per second", _f(m.get("tokens_per_second"), 1), ""],
            ["mean answer length", _f(m.get("mean_answer_tokens"), 1), "tokens"]]
    return Evaluation("Generation", ["", "value", ""], rows)


def warnings_of(metrics: dict | None) -> list[str]:
    evaluation = evaluation_of(metrics)
    return evaluation.warnings if evaluation else []
