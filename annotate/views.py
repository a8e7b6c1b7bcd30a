"""Pages and htmx fragments. Each view: fetch through an access helper, check, act, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import stats
from .access import get_project_for_manager, get_project_for_member
from .actions import (
    ActionError,
    JudgmentInput,
    do_create_project,
    do_remove_member,
    do_set_member,
    do_skip,
    do_submit_judgment,
    do_undo_last_judgment,
    do_update_project,
    parse_criteria,
    undoable_judgment,
)
from .importing import FORMATS, LABEL_MODES, ImportFailed, import_stream
from .limits import upload_limit_message
from .models import (
    ApiToken,
    Comparison,
    ImportBatch,
    Judgment,
    Lease,
    Membership,
    Project,
    Role,
    Side,
    Strength,
)
from .panels import render_panels
from .queue import next_comparison_for
from .tokens import create_token, revoke_token

KEYS = [
    ("1  ←", "left response is better"),
    ("2  →", "right response is better"),
    ("3  ↓", "tie"),
    ("Q W E", "slightly / clearly / decisively"),
    ("R", "score the rubric (Tab moves, Esc leaves)"),
    ("N", "write a rationale (Esc leaves)"),
    ("Enter", "submit"),
    ("S", "skip"),
    ("U", "undo the last judgment"),
    ("?", "show or hide these keys"),
]


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user).select_related("project").order_by("project__name")
    )
    return render(request, "annotate/home.html", {"memberships": memberships})


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff accounts create projects.")
    form = {"slug": "", "name": "", "votes_wanted": "1", "instructions": ""}
    error = None
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in form}
        try:
            votes = _int_field(form["votes_wanted"], "votes wanted", 1, 50)
            project = do_create_project(
                request.user, slug=form["slug"], name=form["name"], instructions=form["instructions"],
                votes_wanted=votes,
            )
        except ActionError as exc:
            error = exc.message
        else:
            return redirect("project", slug=project.slug)
    return render(request, "annotate/project_new.html", {"form": form, "error": error},
                  status=400 if error else 200)


def _int_field(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ActionError(f"{name.capitalize()} must be a whole number.", {name: "not a number"}) from None
    if not low <= value <= high:
        raise ActionError(f"{name.capitalize()} must be between {low} and {high}.", {name: "out of range"})
    return value


# --- annotation --------------------------------------------------------------------------------


def _workspace_context(request, project: Project, lease: Lease | None, *, errors=None, values=None, notice=None):
    context = {
        "project": project,
        "lease": lease,
        "errors": errors or {},
        "values": values or {},
        "notice": notice,
        "strengths": Strength.choices,
        "criteria": list(project.criteria.all()),
        "done_by_me": Judgment.objects.filter(project=project, annotator=request.user).count(),
        "remaining": stats.remaining_for_queue(project),
        "can_undo": undoable_judgment(project, request.user) is not None,
        "undo_seconds": settings.PREFLOOP_UNDO_SECONDS,
    }
    if lease is not None:
        comparison = lease.comparison
        a, b = comparison.candidate_a, comparison.candidate_b
        context["left"], context["right"] = (a, b) if lease.shown_left == Side.A else (b, a)
        context["prompt"] = comparison.prompt
    return context


def _render_workspace(request, project, lease, *, status=200, **extra):
    template = "annotate/_workspace.html" if request.htmx else "annotate/annotate.html"
    context = _workspace_context(request, project, lease, **extra)
    if not request.htmx:
        context["keys"] = KEYS
    return render(request, template, context, status=status)


@login_required
@require_GET
def annotate(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_member(request, slug)
    lease = next_comparison_for(project, request.user)
    return _render_workspace(request, project, lease)


def _judgment_input(post, criteria) -> tuple[JudgmentInput, dict[str, str]]:
    errors: dict[str, str] = {}
    try:
        comparison_id = int(post.get("comparison", ""))
    except ValueError:
        comparison_id = 0
        errors["comparison"] = "The form lost track of its comparison; reload the page."
    rubric: dict[str, dict[str, int]] = {}
    for criterion in criteria:
        for side in ("left", "right"):
            raw = post.get(f"rubric-{criterion.key}-{side}", "").strip()
            if raw == "":
                continue
            try:
                rubric.setdefault(criterion.key, {})[side] = int(raw)
            except ValueError:
                errors[f"rubric.{criterion.key}.{side}"] = f"{criterion.label}: {raw!r} is not a whole number."
    ms_raw = post.get("ms_spent", "").strip()
    ms_spent = int(ms_raw) if ms_raw.isdigit() else None
    choice = post.get("choice", "")
    strength = post.get("strength") or None
    if choice == "tie":
        strength = None
    data = JudgmentInput(
        comparison_id=comparison_id,
        choice=choice,
        strength=strength,
        rubric=rubric,
        rationale=post.get("rationale", ""),
        ms_spent=ms_spent,
    )
    return data, errors


@login_required
@require_POST
def submit(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_member(request, slug)
    criteria = list(project.criteria.all())
    data, errors = _judgment_input(request.POST, criteria)
    try:
        if errors:
            raise ActionError("; ".join(errors.values()), errors)
        do_submit_judgment(project, request.user, data, criteria)
    except ActionError as exc:
        if exc.status == 400:  # same comparison again, with the errors and what was entered
            lease = next_comparison_for(project, request.user)
            return _render_workspace(request, project, lease, status=400, errors=exc.errors or {"form": exc.message},
                                     values=request.POST)
        lease = next_comparison_for(project, request.user)
        return _render_workspace(request, project, lease, status=exc.status, notice=exc.message)
    if not request.htmx:
        return redirect("annotate", slug=project.slug)
    return _render_workspace(request, project, next_comparison_for(project, request.user))


@login_required
@require_POST
def skip(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_member(request, slug)
    notice = None
    status = 200
    try:
        do_skip(project, request.user, int(request.POST.get("comparison", "0") or 0))
    except (ActionError, ValueError) as exc:
        notice, status = getattr(exc, "message", "Nothing to skip."), getattr(exc, "status", 400)
    if not request.htmx and status == 200:
        return redirect("annotate", slug=project.slug)
    return _render_workspace(request, project, next_comparison_for(project, request.user), status=status,
                             notice=notice)


@login_required
@require_POST
def undo(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_member(request, slug)
    try:
        lease, judgment = do_undo_last_judgment(project, request.user)
    except ActionError as exc:
        lease = next_comparison_for(project, request.user)
        return _render_workspace(request, project, lease, status=exc.status, notice=exc.message)
    if not request.htmx:
        return redirect("annotate", slug=project.slug)
    lease = next_comparison_for(project, request.user)  # reloads the comparison with its texts
    return _render_workspace(request, project, lease, values=_values_of(judgment, lease),
                             notice="Undone: your judgment was removed. Judge it again.")


def _values_of(judgment: Judgment, lease: Lease) -> dict[str, str]:
    """The undone judgment as form values, so the annotator edits rather than starts over."""
    to_shown = {lease.shown_left: "left", ("b" if lease.shown_left == "a" else "a"): "right"}
    values = {"choice": "tie" if judgment.choice == "tie" else to_shown[judgment.choice],
              "strength": judgment.strength or "", "rationale": judgment.rationale}
    for key, scores in (judgment.rubric_scores or {}).items():
        for side, score in scores.items():
            values[f"rubric-{key}-{to_shown[side]}"] = str(score)
    return values


# --- project management --------------------------------------------------------------------------


@login_required
@require_GET
def project_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = get_project_for_member(request, slug)
    if not membership.can_manage:
        return redirect("annotate", slug=slug)
    context = {
        "project": project,
        "membership": membership,
        "counts": stats.project_counts(project),
        "annotators": stats.annotator_progress(project),
        "agreement": stats.agreement(project),
        "imports": ImportBatch.objects.filter(project=project).select_related("created_by")[:10],
        "panels": render_panels(request, project),
    }
    return render(request, "annotate/project.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    context = {"project": project, "formats": FORMATS, "label_modes": LABEL_MODES,
               "max_mb": settings.PREFLOOP_MAX_UPLOAD_BYTES // (1024 * 1024)}
    if request.method == "GET":
        return render(request, "annotate/import.html", context)
    upload = request.FILES.get("file")  # streamed by annotate.limits.LimitedUploadHandler
    fmt = request.POST.get("format", "auto")
    labels = request.POST.get("labels", "judgments")
    error = None
    if getattr(request, "upload_too_large", False):
        context.update(error=upload_limit_message(), chosen_format=fmt, chosen_labels=labels)
        return render(request, "annotate/import.html", context, status=413)
    if upload is None:
        error = "Choose a file to upload."
    else:
        try:
            result = import_stream(project, upload.file, filename=upload.name, format=fmt, labels=labels,
                                   user=request.user)
        except ImportFailed as exc:
            error = str(exc)
        else:
            messages.success(
                request,
                f"Imported {result.rows} rows ({result.format}) in {result.seconds:.1f} s: "
                f"{result.prompts_added} prompts, {result.candidates_added} responses, "
                f"{result.comparisons_added} comparisons and {result.judgments_added} labels added."
                + (f" {result.labels_not_applied} labels not applied: " + "; ".join(result.notes[:5])
                   if result.labels_not_applied else ""),
            )
            return redirect("project", slug=project.slug)
    context.update(error=error, chosen_format=fmt, chosen_labels=labels)
    return render(request, "annotate/import.html", context, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def members_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = get_project_for_manager(request, slug)
    error = None
    status = 200
    if request.method == "POST":
        try:
            if request.POST.get("remove"):
                do_remove_member(project, int(request.POST["remove"]), actor=membership)
                messages.success(request, "Member removed.")
            else:
                member, password = do_set_member(
                    project, request.POST.get("username", "").strip(), request.POST.get("role", Role.ANNOTATOR),
                    create=bool(request.POST.get("create")), actor=membership,
                )
                text = f"{member.user.username} is now {member.role}."
                if password:
                    text += f" New account — password (shown once): {password}"
                messages.success(request, text)
            return redirect("members", slug=slug)
        except (ActionError, ValueError) as exc:
            error, status = getattr(exc, "message", str(exc)), 400
    members = project.memberships.select_related("user").order_by("role", "user__username")
    return render(request, "annotate/members.html",
                  {"project": project, "members": members, "roles": Role.choices, "error": error}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    criteria_text = "\n".join(
        f"{c.key} | {c.label} | {c.scale_min}-{c.scale_max} | {c.description}".rstrip(" |")
        for c in project.criteria.all()
    )
    form = {"name": project.name, "instructions": project.instructions,
            "votes_wanted": str(project.votes_wanted), "criteria": criteria_text}
    error = None
    if request.method == "POST":
        form = {k: request.POST.get(k, "") for k in form}
        try:
            do_update_project(
                project, name=form["name"].strip() or project.name, instructions=form["instructions"],
                votes_wanted=_int_field(form["votes_wanted"], "votes wanted", 1, 50),
                criteria=parse_criteria(form["criteria"]),
            )
        except ActionError as exc:
            error = exc.message
        else:
            messages.success(request, "Settings saved.")
            return redirect("project", slug=slug)
    return render(request, "annotate/settings.html", {"project": project, "form": form, "error": error},
                  status=400 if error else 200)


@login_required
@require_GET
def comparisons_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Managers browse the latest comparisons with their votes (model sources shown: managers
    run the experiment, annotators never reach this page)."""
    project, _ = get_project_for_manager(request, slug)
    status = request.GET.get("status", "")
    rows = Comparison.objects.filter(project=project)
    if status in Comparison.Status.values:
        rows = rows.filter(status=status)
    rows = rows.select_related("prompt", "candidate_a", "candidate_b").order_by("-id")[:50]
    return render(request, "annotate/comparisons.html",
                  {"project": project, "rows": rows, "status": status, "statuses": Comparison.Status.values,
                   "project_url": reverse("project", args=[slug])})


@login_required
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    """Personal API tokens: create (the secret is shown once) and revoke."""
    new_secret = None
    if request.method == "POST":
        if request.POST.get("revoke"):
            token = ApiToken.objects.filter(pk=request.POST["revoke"], user=request.user).first()
            if token is not None:
                revoke_token(token)
                messages.success(request, f"Token {token.name} revoked.")
            return redirect("tokens")
        _, new_secret = create_token(request.user, request.POST.get("name", "").strip())
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "annotate/tokens.html", {"tokens": tokens, "new_secret": new_secret})
