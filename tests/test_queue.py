"""The queue and the judging actions: order, leases, sides, idempotence, undo, skip, races."""

import io
import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from annotate.actions import (
    ActionError,
    JudgmentInput,
    NotFound,
    NotHeld,
    do_create_project,
    do_set_member,
    do_skip,
    do_submit_judgment,
    do_undo_last_judgment,
)
from annotate.importing import import_stream
from annotate.models import Comparison, Judgment, Lease, Skip
from annotate.queue import next_comparison_for

pytestmark = pytest.mark.both_databases


def judge(project, user, choice="left", **extra):
    lease = next_comparison_for(project, user)
    assert lease is not None, "the queue ran dry"
    result = do_submit_judgment(project, user, JudgmentInput(lease.comparison_id, choice, **extra))
    return lease, result


@pytest.mark.django_db
def test_highest_priority_first_then_random_among_equals(demo_pairs, users):
    project = demo_pairs
    ids = list(Comparison.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    Comparison.objects.filter(id__in=ids[:3]).update(priority=5.0)
    Comparison.objects.filter(id=ids[10]).update(priority=9.0)

    order = [judge(project, users["annotator"])[0].comparison_id for _ in range(40)]

    assert order[0] == ids[10]
    assert set(order[1:4]) == set(ids[:3])
    rest = order[4:]
    assert rest != sorted(rest), "equal priorities should come in random, not insertion, order"


@pytest.mark.django_db
def test_a_reload_returns_the_held_comparison_with_the_same_sides(demo_pairs, users):
    first = next_comparison_for(demo_pairs, users["annotator"])
    again = next_comparison_for(demo_pairs, users["annotator"])

    assert again.comparison_id == first.comparison_id
    assert again.shown_left == first.shown_left
    assert Lease.objects.filter(annotator=users["annotator"]).count() == 1


@pytest.mark.django_db
def test_a_held_comparison_is_not_offered_to_anyone_else_until_it_expires(demo_pairs, users):
    held = next_comparison_for(demo_pairs, users["annotator"])
    other = next_comparison_for(demo_pairs, users["annotator2"])
    assert other.comparison_id != held.comparison_id

    do_submit_judgment(demo_pairs, users["annotator2"], JudgmentInput(other.comparison_id, "tie"))
    later = timezone.now() + timedelta(seconds=3600)
    taken_over = next_comparison_for(demo_pairs, users["annotator2"], now=later)
    assert taken_over.comparison_id == held.comparison_id  # abandoned work comes back

    with pytest.raises(NotHeld):
        do_submit_judgment(demo_pairs, users["annotator"], JudgmentInput(held.comparison_id, "left"))
    assert not Judgment.objects.filter(annotator=users["annotator"]).exists()


@pytest.mark.django_db
def test_votes_wanted_gathers_distinct_annotators_then_closes(project, users):
    project.votes_wanted = 2
    project.save()
    rows = [{"prompt": f"Question {i}?", "response_a": f"Yes {i}", "response_b": f"No {i}"} for i in range(3)]
    import_stream(project, io.BytesIO("\n".join(map(json.dumps, rows)).encode()))

    for _ in range(3):
        judge(project, users["annotator"])
    assert next_comparison_for(project, users["annotator"]) is None  # judged each once already
    for _ in range(3):
        judge(project, users["annotator2"], "right", strength="decisive")

    assert set(Comparison.objects.filter(project=project).values_list("status", "votes")) == {("complete", 2)}
    assert next_comparison_for(project, users["manager"]) is None


@pytest.mark.django_db
def test_sides_are_drawn_per_assignment_and_the_choice_is_mapped_back(demo_pairs, users):
    shown = Counter()
    for _ in range(120):
        lease, result = judge(demo_pairs, users["annotator"], "left")
        shown[lease.shown_left] += 1
        judgment = result.judgment
        assert judgment.shown_left == lease.shown_left
        assert judgment.choice == lease.shown_left  # "left" is whichever candidate was shown left
    assert 30 <= shown["a"] <= 90, shown


@pytest.mark.django_db
def test_a_double_click_or_retry_records_one_judgment(demo_pairs, users):
    lease = next_comparison_for(demo_pairs, users["annotator"])
    data = JudgmentInput(lease.comparison_id, "right", strength="slight", rationale="shorter and safer")

    first = do_submit_judgment(demo_pairs, users["annotator"], data)
    second = do_submit_judgment(demo_pairs, users["annotator"], data)

    assert first.created and not second.created
    assert second.judgment.pk == first.judgment.pk
    assert Judgment.objects.filter(comparison_id=lease.comparison_id).count() == 1
    assert Comparison.objects.get(pk=lease.comparison_id).votes == 1


@pytest.mark.django_db
def test_judging_what_you_do_not_hold_or_another_projects_item_is_refused(demo_pairs, users):
    lease = next_comparison_for(demo_pairs, users["annotator"])
    other_project = do_create_project(users["outsider"], slug="other", name="Other")

    with pytest.raises(NotHeld) as not_held:
        do_submit_judgment(demo_pairs, users["annotator2"], JudgmentInput(lease.comparison_id, "left"))
    with pytest.raises(NotFound) as not_found:
        do_submit_judgment(other_project, users["annotator"], JudgmentInput(lease.comparison_id, "left"))

    assert not_held.value.status == 409 and not_found.value.status == 404
    assert not Judgment.objects.exists()
    assert Lease.objects.get(pk=lease.comparison_id).annotator == users["annotator"]


@pytest.mark.django_db
def test_undo_takes_the_judgment_back_and_returns_the_comparison(project, users, settings):
    import_stream(project, io.BytesIO(b'{"prompt": "2+2?", "response_a": "4", "response_b": "5"}'))
    lease, result = judge(project, users["annotator"], "left", strength="decisive")
    assert Comparison.objects.get(pk=lease.comparison_id).status == "complete"

    new_lease, undone = do_undo_last_judgment(project, users["annotator"])

    comparison = Comparison.objects.get(pk=lease.comparison_id)
    assert (comparison.status, comparison.votes) == ("open", 0)
    assert not Judgment.objects.exists()
    assert new_lease.comparison_id == lease.comparison_id and new_lease.shown_left == lease.shown_left
    assert undone.strength == "decisive"
    judge(project, users["annotator"], "right")
    settings.PREFLOOP_UNDO_SECONDS = 0
    with pytest.raises(ActionError, match="Nothing to undo"):
        do_undo_last_judgment(project, users["annotator"])
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
def test_skip_passes_the_comparison_to_others_only(demo_pairs, users):
    lease = next_comparison_for(demo_pairs, users["annotator"])
    Comparison.objects.filter(pk=lease.comparison_id).update(priority=100)

    do_skip(demo_pairs, users["annotator"], lease.comparison_id)

    assert next_comparison_for(demo_pairs, users["annotator"]).comparison_id != lease.comparison_id
    assert next_comparison_for(demo_pairs, users["annotator2"]).comparison_id == lease.comparison_id
    assert Skip.objects.filter(annotator=users["annotator"]).count() == 1
    with pytest.raises(NotHeld):
        do_skip(demo_pairs, users["annotator"], lease.comparison_id)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"choice": "middle"}, "choice"),
        ({"choice": "tie", "strength": "clear"}, "strength"),
        ({"choice": "left", "strength": "huge"}, "strength"),
        ({"choice": "left", "rubric": {"helpfulness": {"left": 9}}}, "rubric.helpfulness.left"),
        ({"choice": "left", "rubric": {"wit": {"left": 3}}}, "rubric.wit"),
        ({"choice": "left", "rubric": {"honesty": {"middle": 3}}}, "rubric.honesty"),
        ({"choice": "left", "rationale": "x" * 6000}, "rationale"),
    ],
)
def test_invalid_judgments_name_the_field_and_record_nothing(rubric_project, users, data, field):
    import_stream(rubric_project, io.BytesIO(b'{"prompt": "Hi", "response_a": "Hello!", "response_b": "Go away."}'))
    lease = next_comparison_for(rubric_project, users["annotator"])

    with pytest.raises(ActionError) as failure:
        do_submit_judgment(rubric_project, users["annotator"], JudgmentInput(lease.comparison_id, **data))

    assert field in failure.value.errors
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_rubric_scores_are_stored_per_stored_side(rubric_project, users):
    import_stream(rubric_project, io.BytesIO(b'{"prompt": "Hi", "response_a": "Hello!", "response_b": "Go away."}'))
    lease, result = judge(rubric_project, users["annotator"], "left",
                          rubric={"helpfulness": {"left": 5, "right": 1}, "honesty": {"left": 4}})

    left, right = lease.shown_left, "b" if lease.shown_left == "a" else "a"
    assert result.judgment.rubric_scores == {"helpfulness": {left: 5, right: 1}, "honesty": {left: 4}}


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_share_a_comparison(project, users):
    """Eight annotators in eight threads, each with its own database connection, race through 120
    comparisons: every comparison is handed out once, judged once, and none is lost."""

    rows = [{"prompt": f"Item {i}: which is kinder?", "response_a": f"Kind {i}", "response_b": f"Curt {i}"}
            for i in range(120)]
    import_stream(project, io.BytesIO("\n".join(map(json.dumps, rows)).encode()))
    annotators = [get_user_model().objects.create_user(f"racer{i}") for i in range(8)]
    for annotator in annotators:
        do_set_member(project, annotator.username, "annotator")
    handed_out: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(annotators))

    def work(annotator):
        try:
            start.wait()
            while True:
                lease = next_comparison_for(project, annotator)
                if lease is None:
                    return
                with lock:
                    handed_out.append(lease.comparison_id)
                do_submit_judgment(project, annotator, JudgmentInput(lease.comparison_id, "left"))
        except BaseException as exc:  # noqa: BLE001 -- reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(a,)) for a in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not failures, failures
    assert len(handed_out) == 120
    assert len(set(handed_out)) == 120, "a comparison was handed to two annotators"
    assert Judgment.objects.filter(project=project).count() == 120
    assert set(Comparison.objects.filter(project=project).values_list("votes", "status")) == {(1, "complete")}


@pytest.mark.django_db
def test_undo_never_takes_a_comparison_someone_else_now_holds(project, users):
    """Two votes wanted: after A judged, B leases the same pair; A's undo must leave B's lease alone."""
    import_stream(project, io.BytesIO(b'{"prompt": "2+2?", "response_a": "4", "response_b": "5"}'))
    Comparison.objects.update(votes_wanted=2)
    lease, _ = judge(project, users["annotator"], "left")
    held_by_b = next_comparison_for(project, users["annotator2"])
    assert held_by_b.comparison_id == lease.comparison_id

    with pytest.raises(NotHeld, match="Someone else is judging"):
        do_undo_last_judgment(project, users["annotator"])

    assert Lease.objects.get(pk=lease.comparison_id).annotator == users["annotator2"]
    assert Judgment.objects.filter(annotator=users["annotator"]).count() == 1
    do_submit_judgment(project, users["annotator2"], JudgmentInput(lease.comparison_id, "right"))
    assert Comparison.objects.get(pk=lease.comparison_id).votes == 2
