"""A project as a team would have it after a while, for the page tests: judged comparisons, a
reward model that loses to longer-wins, a DPO policy worse than its parent, a round people
judged against the new policy, a pipeline half way, and a generated import. Rows are written
directly (no worker runs): what is tested is how the pages show them."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from annotate.actions import JudgmentInput, do_submit_judgment
from annotate.models import Comparison, ImportBatch, Judgment
from annotate.queue import next_comparison_for
from training.models import Checkpoint, Job, JobMetric, RoundPair

RM_RESULT = {
    "pairs": 40, "train_pairs": 32, "held_out_pairs": 8, "train_loss": 0.66, "ensemble_size": 1,
    "eval_accuracy": 0.58, "eval_mean_spread": 0.0, "seconds": 12.5,
    "eval": {"accuracy": 0.58, "n": 8, "baselines": {"random": 0.5, "longer_wins": 0.62},
             "calibration": {"ece": 0.07, "brier": 0.24},
             "by_strength": {"clear": {"accuracy": 0.6, "n": 5}, "slight": {"accuracy": 0.5, "n": 3}}},
}
DPO_RESULT = {"train_pairs": 10, "held_out_pairs": 4, "steps": 8, "heldout_margin_before": 0.0,
              "heldout_margin_after": -0.021, "heldout_accuracy_after": 0.25, "heldout_logratio_chosen": -0.4,
              "heldout_logratio_rejected": -0.38, "final_loss": 0.69, "seconds": 30.1}
LONG_DIALOGUE = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "words " * 40}
                 for i in range(12)] + [{"role": "user", "content": "THE LAST QUESTION: which one is safer?"}]


def judge(project, user, count: int, choice: str = "left", **extra) -> list[int]:
    seen = []
    for _ in range(count):
        lease = next_comparison_for(project, user)
        do_submit_judgment(project, user, JudgmentInput(comparison_id=lease.comparison_id, choice=choice, **extra))
        seen.append(lease.comparison_id)
    return seen


def build(project, users) -> dict:
    """Fills `project` (the demo pairs, owner/manager/annotators) and returns what it made."""
    judged = judge(project, users["annotator"], 14, rationale="Safer and kinder.", ms_spent=4200)
    # A second vote that disagrees on three of them (written directly: the queue would not offer them).
    for comparison_id in judged[:3]:
        first = Judgment.objects.get(comparison_id=comparison_id)
        Judgment.objects.create(project=project, comparison_id=comparison_id, annotator=users["annotator2"],
                                choice="b" if first.choice == "a" else "a", strength="slight", shown_left="a",
                                ms_spent=2500)
    Comparison.objects.filter(pk__in=judged[:3]).update(votes=2)

    now = timezone.now()
    owner = users["owner"]
    rm_job = Job.objects.create(project=project, kind="reward_model", status="succeeded", queue="cpu", progress=1.0,
                                message="succeeded", result=RM_RESULT, created_by=owner, started_at=now,
                                finished_at=now, config={"max_steps": 10})
    JobMetric.objects.bulk_create(
        [JobMetric(job=rm_job, step=s, name="train/loss", value=0.7 - s * 0.01) for s in range(1, 11)]
        + [JobMetric(job=rm_job, step=10, name="train/train_runtime", value=11.2),
           JobMetric(job=rm_job, step=10**6, name="eval_accuracy", value=0.58)])
    rm = Checkpoint.objects.create(project=project, kind="reward_model", name=f"rm-{project.slug}-job{rm_job.pk}",
                                   base_model="minilm", path="checkpoints/x/rm", job=rm_job, metrics=RM_RESULT)
    base = Checkpoint.objects.create(project=project, kind="policy", name="smollm2 (base)", base_model="smollm2",
                                     path="")
    dpo_job = Job.objects.create(project=project, kind="dpo", status="succeeded", queue="gpu", progress=1.0,
                                 message="succeeded", result={**DPO_RESULT, "parent": base.pk}, created_by=owner,
                                 started_at=now, finished_at=now, config={"max_steps": 8})
    JobMetric.objects.bulk_create([JobMetric(job=dpo_job, step=s, name="train/loss", value=0.69) for s in range(1, 9)])
    dpo = Checkpoint.objects.create(project=project, kind="policy", name=f"dpo-{project.slug}-job{dpo_job.pk}",
                                    base_model="smollm2", path="checkpoints/x/dpo", parent=base, job=dpo_job,
                                    metrics=DPO_RESULT)

    # Round 1: six comparisons of the new policy against its parent; people chose the parent.
    round_ids = list(Comparison.objects.filter(project=project, votes=0).order_by("id").values_list("pk", flat=True)[:6])
    Comparison.objects.filter(pk__in=round_ids).update(origin="round", round=1, priority=1.0)
    for comparison in Comparison.objects.filter(pk__in=round_ids):
        RoundPair.objects.create(comparison=comparison, new_candidate_id=comparison.candidate_a_id, policy=dpo,
                                 parent=base, round=1)
    for _ in range(6):
        lease = next_comparison_for(project, users["manager"])
        side = "right" if lease.shown_left == "a" else "left"  # the parent's side (b)
        do_submit_judgment(project, users["manager"], JudgmentInput(comparison_id=lease.comparison_id, choice=side))

    pipeline = Job.objects.create(project=project, kind="round", status="running", queue="default", progress=0.33,
                                  message="step 2/3: dpo", created_by=users["manager"],
                                  started_at=now - timedelta(minutes=5), result={"round": 2},
                                  config={"method": "dpo"})
    step_rm = Job.objects.create(project=project, kind="reward_model", status="succeeded", queue="cpu", progress=1.0,
                                 message="succeeded", parent=pipeline, result=RM_RESULT, started_at=now,
                                 finished_at=now)
    step_dpo = Job.objects.create(project=project, kind="dpo", status="running", queue="gpu", progress=0.5,
                                  message="step 4/8", parent=pipeline, started_at=now, heartbeat_at=now)
    generate = Job.objects.create(project=project, kind="generate", status="succeeded", queue="gpu", progress=1.0,
                                  message="succeeded", created_by=users["manager"], started_at=now, finished_at=now,
                                  result={"round": 1, "answers": 12, "comparisons_added": 6, "backend": "transformers",
                                          "tokens_per_second": 41.5, "mean_answer_tokens": 38.0},
                                  config={"round": 1})
    ImportBatch.objects.create(project=project, filename=f"job {generate.pk}", sha256="0" * 64, format="generate",
                               rows=6, prompts_added=0, candidates_added=12, comparisons_added=6)
    return {"judged": judged, "rm_job": rm_job, "rm": rm, "base": base, "dpo_job": dpo_job, "dpo": dpo,
            "pipeline": pipeline, "step_rm": step_rm, "step_dpo": step_dpo, "generate": generate,
            "round_ids": round_ids}
