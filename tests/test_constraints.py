"""The database itself refuses rows that break an invariant, whatever code writes them."""

import io

import pytest
from django.db import IntegrityError, transaction

from annotate.importing import import_stream
from annotate.models import Candidate, Comparison, Judgment, Prompt, content_hash

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


@pytest.fixture
def comparison(project):
    import_stream(project, io.BytesIO(b'{"prompt": "Capital of France?", "response_a": "Paris", "response_b": "Lyon"}'))
    return Comparison.objects.get(project=project)


def refused(**fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(**fields)


def test_one_judgment_per_annotator_per_comparison(comparison, users):
    base = {"project": comparison.project, "comparison": comparison, "annotator": users["annotator"]}
    Judgment.objects.create(**base, choice="a", strength="clear")
    refused(**base, choice="b", strength="slight")


@pytest.mark.parametrize("fields", [
    {"choice": "c"},
    {"choice": "tie", "strength": "clear"},
    {"choice": "a", "strength": "enormous"},
    {"choice": "a", "shown_left": "x"},
])
def test_judgment_values_are_checked(comparison, users, fields):
    refused(project=comparison.project, comparison=comparison, annotator=users["annotator"], **fields)


def test_a_pair_exists_once_in_canonical_order(comparison):
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(project=comparison.project, prompt=comparison.prompt,
                                  candidate_a=comparison.candidate_b, candidate_b=comparison.candidate_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(project=comparison.project, prompt=comparison.prompt,
                                  candidate_a=comparison.candidate_a, candidate_b=comparison.candidate_b)


def test_prompts_and_candidates_are_unique_by_content(comparison):
    prompt = comparison.prompt
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(project=prompt.project, text=prompt.text, content_hash=content_hash(prompt.text))
    with pytest.raises(IntegrityError), transaction.atomic():
        Candidate.objects.create(prompt=prompt, text="Paris", content_hash=content_hash("Paris"))


def test_votes_wanted_is_bounded(comparison):
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(votes_wanted=0)
