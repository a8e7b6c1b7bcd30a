"""Every write of the annotation side, each in one transaction and each the one place it happens."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .db import db_datetime, from_db_datetime, on_postgresql
from .models import (
    Choice,
    Comparison,
    Judgment,
    Lease,
    Membership,
    Project,
    Role,
    RubricCriterion,
    Side,
    Skip,
    Strength,
)
from .queue import lease_duration
from .tokens import create_token

MAX_RATIONALE = 5000
MAX_MS_SPENT = 24 * 3600 * 1000


class ActionError(Exception):
    """A request that cannot be carried out. `status` is the HTTP answer, `errors` field messages."""

    status = 400

    def __init__(self, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class NotHeld(ActionError):
    status = 409


class NotFound(ActionError):
    status = 404


@dataclass
class JudgmentInput:
    """A judgment as the annotator saw it: sides are `left` / `right`, mapped to a/b on the lease."""

    comparison_id: int
    choice: str  # left / right / tie
    strength: str | None = None
    rubric: dict[str, dict[str, int]] | None = None  # criterion key -> {"left": n, "right": n}
    rationale: str = ""
    ms_spent: int | None = None


@dataclass
class SubmitResult:
    judgment: Judgment
    created: bool


def _side(shown_left: str, shown: str) -> str:
    """Map a displayed side (left/right) to the stored one (a/b)."""
    other = Side.B if shown_left == Side.A else Side.A
    return shown_left if shown == "left" else other


def validate_judgment(project: Project, data: JudgmentInput, criteria: list[RubricCriterion]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if data.choice not in ("left", "right", "tie"):
        errors["choice"] = "Choose left, right or tie."
    if data.choice == "tie":
        if data.strength:
            errors["strength"] = "A tie has no strength."
    elif data.strength is not None and data.strength not in Strength.values:
        errors["strength"] = f"Strength must be one of {', '.join(Strength.values)}."
    rubric = data.rubric or {}
    known = {c.key: c for c in criteria}
    for key in rubric:
        if key not in known:
            errors[f"rubric.{key}"] = f"Unknown criterion {key!r}."
    for criterion in criteria:
        scores = rubric.get(criterion.key) or {}
        for side in ("left", "right"):
            value = scores.get(side)
            name = f"rubric.{criterion.key}.{side}"
            if value is None:
                if criterion.required:
                    errors[name] = f"{criterion.label}: score the {side} response."
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                errors[name] = f"{criterion.label}: the score must be a whole number."
            elif not criterion.scale_min <= value <= criterion.scale_max:
                errors[name] = f"{criterion.label}: {value} is outside {criterion.scale_min}–{criterion.scale_max}."
        extra = set(scores) - {"left", "right"}
        if extra:
            errors[f"rubric.{criterion.key}"] = f"Unknown side(s) {sorted(extra)}; use left and right."
    if len(data.rationale) > MAX_RATIONALE:
        errors["rationale"] = f"Keep the rationale under {MAX_RATIONALE} characters."
    if data.ms_spent is not None and not 0 <= data.ms_spent <= MAX_MS_SPENT:
        errors["ms_spent"] = "Time spent is out of range."
    return errors


NOT_HELD = ("You do not hold this comparison (its lease expired and went to someone else, or it was never "
            "yours). Nothing was recorded.")
RETIRED = "This comparison was retired by a manager. Nothing was recorded."


def _rubric_for(shown_left: str, rubric: dict | None) -> dict:
    mapped = {
        key: {_side(shown_left, side): value for side, value in scores.items() if value is not None}
        for key, scores in (rubric or {}).items()
    }
    return {key: scores for key, scores in mapped.items() if scores}


def _choice_for(shown_left: str, choice: str) -> str:
    return Choice.TIE if choice == "tie" else _side(shown_left, choice)


def do_submit_judgment(project: Project, annotator, data: JudgmentInput, criteria=None) -> SubmitResult:
    """Record one judgment for the comparison the annotator holds.

    The contract both versions keep (PostgreSQL: `_submit_on_postgresql`, one statement; SQLite:
    `_submit_on_sqlite`, the same steps in one write-locked transaction):
    - the judgment is stored only for a comparison whose lease the annotator holds, and that
      lease is released; left/right is mapped back to a/b through the sides the lease showed;
    - idempotent: a retried or double-clicked submit returns the judgment already recorded
      (`created=False`), one judgment per annotator per comparison, the vote counted once;
    - the comparison completes when its votes reach `votes_wanted`;
    - refused, with nothing recorded: NotHeld (409) for a comparison never held or whose lease
      went to someone else after it expired, or one a manager retired; NotFound (404) for one
      of another project; ActionError (400) naming each invalid field;
    - the comparison row is locked before the lease row, in the queue's order, so the two never
      deadlock; time spent is the page's timer, capped by how long the lease was held.
    Proof: tests/test_queue.py and tests/test_constraints.py (marked `both_databases`), which
    `./prefloop test` runs on both. Hand-written SQL: this runs once per judgment (see queue.py).
    """
    criteria = list(project.criteria.all()) if criteria is None else criteria
    errors = validate_judgment(project, data, criteria)
    if errors:
        raise ActionError("The judgment has errors: " + "; ".join(errors.values()), errors)
    strength = None if data.choice == "tie" else (data.strength or Strength.CLEAR)
    rationale = data.rationale.strip()
    now = timezone.now()
    if on_postgresql():
        judgment = _submit_on_postgresql(project, annotator, data, strength, rationale, now)
    else:
        judgment = _submit_on_sqlite(project, annotator, data, strength, rationale, now)
    if isinstance(judgment, SubmitResult):
        return judgment
    judgment.strength, judgment.rationale, judgment.created_at = strength, rationale, now
    return SubmitResult(judgment, created=True)


def _already_recorded_or_refuse(comparison_id: int, annotator) -> SubmitResult:
    existing = Judgment.objects.filter(comparison_id=comparison_id, annotator=annotator).first()
    if existing is None:
        raise NotHeld(NOT_HELD)
    return SubmitResult(existing, created=False)


# --- PostgreSQL: one statement -------------------------------------------------------------
# The whole submit in one round trip, autocommitted. The comparison row is locked first (the
# queue's order), the caller's lease deleted, the judgment inserted with its sides mapped through
# the lease, and the vote counted only if the insert happened.
SUBMIT_POSTGRES_SQL = """
WITH target AS (
    SELECT id, status FROM annotate_comparison
    WHERE id = %(comparison)s AND project_id = %(project)s
    FOR UPDATE
), released AS (
    DELETE FROM annotate_lease
    WHERE comparison_id = (SELECT id FROM target) AND annotator_id = %(user)s
    RETURNING shown_left, issued_at
), judged AS (
    INSERT INTO annotate_judgment (project_id, comparison_id, annotator_id, choice, strength, rubric_scores,
                                   rationale, shown_left, ms_spent, created_at)
    SELECT %(project)s, %(comparison)s, %(user)s,
           CASE r.shown_left WHEN 'a' THEN %(choice_if_a)s ELSE %(choice_if_b)s END,
           %(strength)s,
           CASE r.shown_left WHEN 'a' THEN %(rubric_if_a)s::jsonb ELSE %(rubric_if_b)s::jsonb END,
           %(rationale)s, r.shown_left,
           CASE WHEN %(client_ms)s::integer IS NULL THEN s.ms ELSE LEAST(%(client_ms)s::integer, s.ms + 1000) END,
           %(now)s
    FROM released r
    CROSS JOIN LATERAL (SELECT GREATEST(EXTRACT(EPOCH FROM (%(now)s - r.issued_at)) * 1000, 0)::integer AS ms) s
    WHERE (SELECT status FROM target) <> 'retired'
    ON CONFLICT (comparison_id, annotator_id) DO NOTHING
    RETURNING id, choice, rubric_scores, shown_left, ms_spent
), counted AS (
    UPDATE annotate_comparison
    SET votes = votes + 1,
        status = CASE WHEN status = 'open' AND votes + 1 >= votes_wanted THEN 'complete' ELSE status END
    WHERE id = %(comparison)s AND EXISTS (SELECT 1 FROM judged)
    RETURNING id
)
SELECT (SELECT status FROM target), (SELECT count(*) FROM released), (SELECT count(*) FROM counted),
       judged.id, judged.choice, judged.rubric_scores, judged.shown_left, judged.ms_spent
FROM (SELECT 1) AS one LEFT JOIN judged ON true"""


def _submit_on_postgresql(project, annotator, data, strength, rationale, now):
    params = {
        "comparison": data.comparison_id, "project": project.pk, "user": annotator.pk,
        "choice_if_a": _choice_for(Side.A, data.choice), "choice_if_b": _choice_for(Side.B, data.choice),
        "rubric_if_a": json.dumps(_rubric_for(Side.A, data.rubric)),
        "rubric_if_b": json.dumps(_rubric_for(Side.B, data.rubric)),
        "strength": strength, "rationale": rationale, "client_ms": data.ms_spent, "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(SUBMIT_POSTGRES_SQL, params)
        status, released, counted, judgment_id, choice, rubric, shown_left, ms_spent = cursor.fetchone()
    if status is None:
        raise NotFound("This comparison does not exist in this project.")
    if not released:
        return _already_recorded_or_refuse(data.comparison_id, annotator)
    if status == Comparison.Status.RETIRED:
        raise NotHeld(RETIRED)
    if judgment_id is None:  # judged already (an undo raced a retry): the first one stands
        return _already_recorded_or_refuse(data.comparison_id, annotator)
    return Judgment(id=judgment_id, project=project, comparison_id=data.comparison_id, annotator=annotator,
                    choice=choice, rubric_scores=json.loads(rubric) if isinstance(rubric, str) else rubric,
                    shown_left=shown_left, ms_spent=ms_spent)


# --- SQLite: step by step ------------------------------------------------------------------
# The same steps as separate statements in one transaction that holds SQLite's write lock.
LOCK_COMPARISON_SQL = "SELECT status, votes, votes_wanted FROM annotate_comparison WHERE id = %s AND project_id = %s"
INSERT_JUDGMENT_SQL = """
INSERT INTO annotate_judgment (project_id, comparison_id, annotator_id, choice, strength, rubric_scores, rationale,
                  shown_left, ms_spent, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (comparison_id, annotator_id) DO NOTHING
RETURNING id"""


def _submit_on_sqlite(project, annotator, data, strength, rationale, now):
    lock_sql = LOCK_COMPARISON_SQL + (" FOR UPDATE" if connection.features.has_select_for_update else "")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(lock_sql, [data.comparison_id, project.pk])
        comparison = cursor.fetchone()
        if comparison is None:
            raise NotFound("This comparison does not exist in this project.")
        status, votes, votes_wanted = comparison
        cursor.execute("DELETE FROM annotate_lease WHERE comparison_id = %s AND annotator_id = %s RETURNING shown_left, issued_at",
                       [data.comparison_id, annotator.pk])
        lease = cursor.fetchone()
        if lease is None:
            return _already_recorded_or_refuse(data.comparison_id, annotator)
        if status == Comparison.Status.RETIRED:
            raise NotHeld(RETIRED)
        shown_left, issued_at = lease[0], from_db_datetime(lease[1])
        rubric = _rubric_for(shown_left, data.rubric)
        choice = _choice_for(shown_left, data.choice)
        # The page's own timer is more exact, but can never exceed the time the lease was held.
        server_ms = max(int((now - issued_at).total_seconds() * 1000), 0)
        ms_spent = server_ms if data.ms_spent is None else min(data.ms_spent, server_ms + 1000)
        cursor.execute(INSERT_JUDGMENT_SQL, [
            project.pk, data.comparison_id, annotator.pk, choice, strength, json.dumps(rubric), rationale,
            shown_left, ms_spent, db_datetime(now),
        ])
        inserted = cursor.fetchone()
        if inserted is None:  # judged already (an undo raced a retry): the first one stands
            return _already_recorded_or_refuse(data.comparison_id, annotator)
        votes += 1
        if status == Comparison.Status.OPEN and votes >= votes_wanted:
            status = Comparison.Status.COMPLETE
        cursor.execute("UPDATE annotate_comparison SET votes = votes + 1, status = %s WHERE id = %s",
                       [status, data.comparison_id])
    return Judgment(id=inserted[0], project=project, comparison_id=data.comparison_id, annotator=annotator,
                    choice=choice, rubric_scores=rubric, shown_left=shown_left, ms_spent=ms_spent)


def do_skip(project: Project, annotator, comparison_id: int) -> None:
    """Pass on a held comparison: it goes back to the queue, not to this annotator."""
    with transaction.atomic():
        released = Lease.objects.filter(
            comparison_id=comparison_id, comparison__project=project, annotator=annotator
        ).delete()[0]
        if not released:
            raise NotHeld("You do not hold this comparison, so there is nothing to skip.")
        Skip.objects.get_or_create(comparison_id=comparison_id, annotator=annotator)


def undoable_judgment(project: Project, annotator, now=None) -> Judgment | None:
    now = now or timezone.now()
    window = timedelta(seconds=settings.PREFLOOP_UNDO_SECONDS)
    return (
        Judgment.objects.filter(project=project, annotator=annotator, created_at__gte=now - window)
        .order_by("-created_at", "-id")
        .first()
    )


def do_undo_last_judgment(project: Project, annotator) -> tuple[Lease, Judgment]:
    """Take back the annotator's last judgment (within the undo window) and hand its comparison
    back to them, same sides shown. Returns the new lease and the removed judgment's values."""
    now = timezone.now()
    with transaction.atomic():
        judgment = undoable_judgment(project, annotator, now)
        if judgment is None:
            raise ActionError(f"Nothing to undo: judgments can be undone for {settings.PREFLOOP_UNDO_SECONDS} s.")
        comparison = Comparison.objects.select_for_update().get(pk=judgment.comparison_id)
        # With more than one vote wanted, another annotator may hold it now: their lease stands.
        if Lease.objects.filter(comparison=comparison, expires_at__gt=now).exclude(annotator=annotator).exists():
            raise NotHeld("Someone else is judging this comparison now, so it cannot be undone; your judgment stands.")
        deleted = Judgment.objects.filter(pk=judgment.pk).delete()[0]
        if not deleted:
            raise ActionError("That judgment was already undone.")
        status = comparison.status
        if status == Comparison.Status.COMPLETE and comparison.votes - 1 < comparison.votes_wanted:
            status = Comparison.Status.OPEN
        Comparison.objects.filter(pk=comparison.pk).update(votes=F("votes") - 1, status=status)
        Lease.objects.filter(annotator=annotator, expires_at__gt=now, comparison__project=project).delete()
        lease = Lease(
            comparison=comparison,
            annotator=annotator,
            shown_left=judgment.shown_left or Side.A,
            issued_at=now,
            expires_at=now + lease_duration(),
        )
        Lease.objects.bulk_create(
            [lease], update_conflicts=True, unique_fields=["comparison"],
            update_fields=["annotator", "shown_left", "issued_at", "expires_at"],
        )
        return lease, judgment


# --- projects and members ------------------------------------------------------------------------

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def do_create_project(owner, *, slug: str, name: str, instructions: str = "", votes_wanted: int = 1) -> Project:
    if not _SLUG.match(slug or ""):
        raise ActionError("The slug must be lowercase letters, digits and dashes (at most 64).", {"slug": "invalid"})
    with transaction.atomic():
        try:
            with transaction.atomic():
                project = Project.objects.create(
                    slug=slug, name=name or slug, instructions=instructions, votes_wanted=votes_wanted,
                    created_by=owner,
                )
        except IntegrityError:
            raise ActionError(f"A project with the slug {slug!r} exists already.", {"slug": "taken"}) from None
        Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def _check_may_change(actor, target_role: str | None, new_role: str | None) -> None:
    """Only owners touch owners (make, change or remove one); `actor` None is the system (commands, tests)."""
    if actor is None or actor.role == Role.OWNER:
        return
    if Role.OWNER in (target_role, new_role):
        raise ActionError("Only an owner can make, change or remove an owner.", {"role": "owners only"})


def do_set_member(project: Project, username: str, role: str, *, create: bool = False,
                  actor: Membership | None = None) -> tuple[Membership, str | None]:
    """Add a member (or change their role). With `create`, a missing user is made with a random
    password, returned once to hand over; only staff make site accounts. `actor` is the member
    acting (None: the system): only owners make, change or remove owners."""
    if role not in Role.values:
        raise ActionError(f"Unknown role {role!r}; use one of {', '.join(Role.values)}.", {"role": "invalid"})
    User = get_user_model()
    password = None
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create:
                raise ActionError(f"No user named {username!r}.", {"username": "unknown"})
            if actor is not None and not actor.user.is_staff:
                raise ActionError("Only staff create site accounts; ask an administrator to make this user.",
                                  {"username": "unknown"})
            if not re.match(r"^[\w.@+-]{1,150}$", username):
                raise ActionError("Usernames are letters, digits and @.+-_ only.", {"username": "invalid"})
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username=username, password=password)
        membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
        _check_may_change(actor, membership.role if membership else None, role)
        if membership is None:
            return Membership.objects.create(project=project, user=user, role=role), password
        if membership.role != role:
            if membership.role == Role.OWNER and not project.memberships.filter(role=Role.OWNER).exclude(
                pk=membership.pk
            ).exists():
                raise ActionError("A project keeps at least one owner.", {"role": "last owner"})
            membership.role = role
            membership.save(update_fields=["role"])
    return membership, password


MAX_SIMULATED = 1000


def do_add_simulated_annotators(project: Project, count: int, prefix: str = "sim") -> list[tuple[str, str]]:
    """Make (or find) `count` simulated annotators, PREFIX-1 … PREFIX-N: accounts with no password,
    annotators of `project` marked simulated, each with a new API token (a token is shown once, so
    a run again makes new ones). Returns (username, token) pairs. Refuses a name that belongs to a
    real member or to an account with a password, rather than turning a person into a simulation."""
    if not 1 <= count <= MAX_SIMULATED:
        raise ActionError(f"The count must be from 1 to {MAX_SIMULATED}; it was {count}.", {"count": "out of range"})
    if not re.match(r"^[\w.@+-]{1,100}$", prefix or ""):
        raise ActionError("The prefix must be letters, digits and @.+-_ only (at most 100).", {"prefix": "invalid"})
    User = get_user_model()
    made = []
    with transaction.atomic():
        for number in range(1, count + 1):
            username = f"{prefix}-{number}"
            user, created = User.objects.get_or_create(username=username, defaults={"first_name": "Simulated"})
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            membership = Membership.objects.filter(project=project, user=user).first()
            if membership is None and user.has_usable_password() or membership is not None and not membership.simulated:
                where = f" and a member of {project.slug}" if membership else ""
                raise ActionError(f"{username} is a real account{where}; choose another prefix.", {"prefix": "taken"})
            membership, _ = Membership.objects.get_or_create(
                project=project, user=user, defaults={"role": Role.ANNOTATOR, "simulated": True})
            if membership.role != Role.ANNOTATOR:
                Membership.objects.filter(pk=membership.pk).update(role=Role.ANNOTATOR)
            made.append((username, create_token(user, "simulated annotator")[1]))
    return made


def do_remove_member(project: Project, user_id: int, *, actor: Membership | None = None) -> None:
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(project=project, user_id=user_id).first()
        if membership is None:
            raise ActionError("That user is not a member.")
        _check_may_change(actor, membership.role, None)
        if membership.role == Role.OWNER and project.memberships.filter(role=Role.OWNER).count() == 1:
            raise ActionError("A project keeps at least one owner.")
        Lease.objects.filter(annotator_id=user_id, comparison__project=project).delete()
        membership.delete()


MAX_CRITERIA = 50


def criteria_from_rows(rows: list[dict]) -> list[dict]:
    """Rubric criteria from the settings form's rows ({key, label, scale_min, scale_max,
    description, required}, as typed). Blank rows are dropped; an error names the row and field."""
    criteria = []
    for number, row in enumerate(rows, start=1):
        key = (row.get("key") or "").strip()
        label = (row.get("label") or "").strip()
        if not key and not label:
            continue
        if not re.match(r"^[a-z][a-z0-9_]{0,39}$", key):
            raise ActionError(f"Rubric row {number}: key {key!r} must start with a lowercase letter and hold only "
                              "lowercase letters, digits and underscores (at most 40).", {"criteria": f"row {number}"})
        try:
            low, high = int(row.get("scale_min") or 1), int(row.get("scale_max") or 5)
        except (TypeError, ValueError):
            raise ActionError(f"Rubric row {number} ({key}): the scale must be whole numbers.",
                              {"criteria": f"row {number}"}) from None
        if low >= high:
            raise ActionError(f"Rubric row {number} ({key}): the lowest score ({low}) must be below the highest "
                              f"({high}).", {"criteria": f"row {number}"})
        criteria.append({"key": key, "label": (label or key.replace("_", " ").capitalize())[:100],
                         "scale_min": low, "scale_max": high,
                         "description": (row.get("description") or "").strip()[:500],
                         "required": bool(row.get("required"))})
    if len(criteria) > MAX_CRITERIA:
        raise ActionError(f"At most {MAX_CRITERIA} rubric criteria.", {"criteria": "too many"})
    keys = [c["key"] for c in criteria]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ActionError(f"Rubric keys must be unique: {', '.join(duplicates)} appears more than once.",
                          {"criteria": "duplicate key"})
    return criteria


def do_update_project(project: Project, *, name: str, instructions: str, votes_wanted: int, criteria: list[dict]):
    """Change settings; a changed `votes_wanted` applies to comparisons still open. `criteria`
    replaces the rubric: each is {key, label?, description?, scale_min?=1, scale_max?=5, required?}."""
    criteria = [{"label": c["key"].replace("_", " ").capitalize(), "description": "", "scale_min": 1, "scale_max": 5,
                 "required": False, **{k: v for k, v in c.items() if v is not None}} for c in criteria]
    for criterion in criteria:
        if criterion["scale_min"] >= criterion["scale_max"]:
            raise ActionError(f"Criterion {criterion['key']!r}: scale_min must be below scale_max.",
                              {"criteria": f"{criterion['key']}: scale_min must be below scale_max"})
    if len({c["key"] for c in criteria}) != len(criteria):
        raise ActionError("Rubric keys must be unique.", {"criteria": "duplicate key"})
    with transaction.atomic():
        Project.objects.filter(pk=project.pk).update(name=name, instructions=instructions, votes_wanted=votes_wanted)
        if votes_wanted != project.votes_wanted:
            open_or_done = Comparison.objects.filter(project=project).exclude(status=Comparison.Status.RETIRED)
            open_or_done.filter(votes_wanted=project.votes_wanted).update(votes_wanted=votes_wanted)
            open_or_done.filter(votes__gte=F("votes_wanted")).update(status=Comparison.Status.COMPLETE)
            open_or_done.filter(votes__lt=F("votes_wanted")).update(status=Comparison.Status.OPEN)
        keep = [c["key"] for c in criteria]
        project.criteria.exclude(key__in=keep).delete()
        for position, criterion in enumerate(criteria):
            RubricCriterion.objects.update_or_create(
                project=project, key=criterion["key"], defaults={**criterion, "position": position}
            )
    project.refresh_from_db()
    return project


# --- managing comparisons ------------------------------------------------------------------------

MAX_BULK = 1000


def _own_comparisons(project: Project, ids) -> list[int]:
    try:
        wanted = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise ActionError("Comparison ids must be whole numbers.") from None
    if not wanted:
        raise ActionError("Select at least one comparison.")
    if len(wanted) > MAX_BULK:
        raise ActionError(f"At most {MAX_BULK} comparisons at once.")
    return list(Comparison.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True))


def do_retire_comparisons(project: Project, ids) -> int:
    """Take comparisons out of the queue; their votes stay. Leases on them end now."""
    with transaction.atomic():
        own = _own_comparisons(project, ids)
        Lease.objects.filter(comparison_id__in=own).delete()
        return Comparison.objects.filter(pk__in=own).exclude(status=Comparison.Status.RETIRED).update(
            status=Comparison.Status.RETIRED)


def do_reopen_comparisons(project: Project, ids) -> int:
    """Put retired comparisons back: open if they want more votes, complete if not."""
    with transaction.atomic():
        retired = Comparison.objects.filter(pk__in=_own_comparisons(project, ids), status=Comparison.Status.RETIRED)
        done = retired.filter(votes__gte=F("votes_wanted")).update(status=Comparison.Status.COMPLETE)
        return done + retired.update(status=Comparison.Status.OPEN)


def do_set_priority(project: Project, ids, priority) -> int:
    """Higher priority is judged sooner; equal priorities are drawn at random."""
    try:
        value = float(priority)
    except (TypeError, ValueError):
        raise ActionError(f"Priority {priority!r} is not a number.", {"priority": "not a number"}) from None
    if value != value or abs(value) > 1e9:
        raise ActionError("Priority must be a number between -1e9 and 1e9.", {"priority": "out of range"})
    with transaction.atomic():
        return Comparison.objects.filter(pk__in=_own_comparisons(project, ids)).update(priority=value)


def do_set_gold(project: Project, comparison_id: int, choice: str | None) -> None:
    """Set (or clear, with None) a comparison's known answer, which annotators are scored against."""
    if choice is not None and choice not in Choice.values:
        raise ActionError(f"Gold answer {choice!r} must be one of {', '.join(Choice.values)}.", {"gold": "invalid"})
    with transaction.atomic():
        if not Comparison.objects.filter(project=project, pk=comparison_id).update(gold_choice=choice):
            raise NotFound("This comparison does not exist in this project.")


def do_mark_gold_from_votes(project: Project, ids) -> tuple[int, list[int]]:
    """Make each comparison's majority vote its gold answer. Returns how many were marked and the
    ids left alone because their votes had no majority (none, or a draw)."""
    from collections import Counter

    with transaction.atomic():
        own = _own_comparisons(project, ids)
        votes: dict[int, Counter] = {pk: Counter() for pk in own}
        for comparison_id, choice in Judgment.objects.filter(comparison_id__in=own).values_list("comparison_id",
                                                                                               "choice"):
            votes[comparison_id][choice] += 1
        marked, undecided = 0, []
        for pk, tally in votes.items():
            ranked = tally.most_common(2)
            if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
                undecided.append(pk)
                continue
            marked += Comparison.objects.filter(pk=pk).update(gold_choice=ranked[0][0])
        return marked, undecided
