"""The generation service: a policy's answers (and its parent's) become candidates, comparisons
of round N in the queue, and the records that say which side is new (`RoundPair`) and which
checkpoint wrote each response (`GeneratedCandidate`), all in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from annotate.importing import ParsedRow, import_rows
from annotate.models import Candidate, Comparison, Prompt, content_hash

from .models import Checkpoint, GeneratedCandidate, Job, RoundPair


@dataclass
class Enqueued:
    comparisons_added: int
    candidates_added: int


def answer_key(answer: dict) -> tuple[int, int]:
    return answer["prompt_id"], answer["sample"]


def enqueue_answers(job: Job, prompts: list[Prompt], round_number: int, policy: Checkpoint, new_answers: list[dict],
                    parent: Checkpoint | None = None, parent_answers: list[dict] | None = None,
                    priorities: dict[tuple[int, int], float] | None = None) -> Enqueued:
    """Each new answer becomes a candidate; with the parent's answer to the same prompt and sample,
    a round comparison (priority from `priorities`, keyed by (prompt id, sample)). All or nothing;
    a re-run adds no duplicates."""
    by_prompt = {p.pk: p for p in prompts}
    others = {answer_key(a): a["text"] for a in parent_answers or []}
    priorities = priorities or {}
    rows, roles = [], []
    for answer in new_answers:
        prompt = by_prompt[answer["prompt_id"]]
        responses = [(answer["text"], policy.name)]
        pair = []
        other = others.get(answer_key(answer))
        if other is not None:
            responses.append((other, parent.name))
            pair = [(0, 1, None)]
        rows.append(ParsedRow(prompt.text, prompt.messages, responses, pair,
                              priority=priorities.get(answer_key(answer), 0.0), origin=Comparison.Origin.ROUND,
                              round=round_number, item=len(rows)))
        roles.append((prompt.pk, answer["text"], other))
    with transaction.atomic():  # all answers and comparisons, or none
        launched_by = job.created_by or (job.parent.created_by if job.parent_id else None)
        result, _ = import_rows(job.project, rows, labels="ignore", user=launched_by, filename=f"job {job.pk}",
                                format="generate")
        for prompt_id, new_text, parent_text in roles:
            sides = {}
            for text, checkpoint, role in ((new_text, policy, "new"), (parent_text, parent, "parent")):
                if text is None or checkpoint is None:
                    continue
                sides[role] = Candidate.objects.get(prompt_id=prompt_id, content_hash=content_hash(text))
                GeneratedCandidate.objects.get_or_create(candidate=sides[role], defaults={
                    "checkpoint": checkpoint, "job": job, "round": round_number, "role": role})
            if len(sides) == 2 and sides["new"].pk != sides["parent"].pk:
                low, high = sorted((sides["new"].pk, sides["parent"].pk))
                comparison = Comparison.objects.filter(candidate_a_id=low, candidate_b_id=high).first()
                if comparison is None:
                    continue
                RoundPair.objects.get_or_create(comparison=comparison, defaults={
                    "new_candidate": sides["new"], "policy": policy, "parent": parent, "job": job,
                    "round": comparison.round or round_number})
    return Enqueued(result.comparisons_added, result.candidates_added)
