"""Pages and htmx fragments. Each view: fetch through an access helper, check, act, render."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import browse, stats
from . import export as exporting
from .access import get_project_for_manager, get_project_for_member
from .actions import (
    MAX_CRITERIA,
    ActionError,
    JudgmentInput,
    criteria_from_rows,
    do_create_project,
    do_mark_gold_from_votes,
    do_remove_member,
    do_reopen_comparisons,
    do_retire_comparisons,
    do_set_gold,
    do_set_member,
    do_set_priority,
    do_skip,
    do_submit_judgment,
    do_undo_last_judgment,
    do_update_project,
    undoable_judgment,
)
from .importing import FORMATS, LABEL_MODES, ImportFailed, import_stream
from .limits import upload_limit_message
from .markdown import render_markdown
from .models import (
    ApiToken,
    Choice,
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
from .panels import describe_imports, render_panels
from .queue import next_comparison_for
from .serializers import ExportQuerySerializer
from .tokens import create_token, revoke_token

NEW_ACCOUNT_SESSION_KEY = "prefloop:new-account"

KEYS = [
    ("1  ←", "left response is better"),
    ("2  →", "right response is better"),
    ("3  ↓", "tie"),
    ("← → ↓", "choose only while they would scroll nothing; 1 2 3 always do"),
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
        "remaining": stats.remaining_for_queue(project),
        "queue_left": stats.queue_left_for(project, request.user),
        "queue_left_cap": stats.QUEUE_LEFT_CAP,
        "can_undo": undoable_judgment(project, request.user) is not None,
        "undo_seconds": settings.PREFLOOP_UNDO_SECONDS,
    }
    totals = stats.annotator_totals(project, request.user)
    context.update(done_by_me=totals["total"], done_today=totals["today"])
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


def wants_simulated(request: HttpRequest) -> bool:
    """`?include_simulated=1`: the project page's figures count simulated annotators too."""
    return request.GET.get("include_simulated", "") in ("1", "true")


@login_required
@require_GET
def project_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = get_project_for_member(request, slug)
    if not membership.can_manage:
        return redirect("annotate", slug=slug)
    imports = list(ImportBatch.objects.filter(project=project).select_related("created_by")[:10])
    describe_imports(project, imports)
    simulated = wants_simulated(request)
    context = {
        "project": project,
        "membership": membership,
        "counts": stats.project_counts(project),
        "include_simulated": simulated,
        "annotators": stats.annotator_progress(project, include_simulated=simulated),
        "agreement": stats.agreement(project, include_simulated=simulated),
        "imports": imports,
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
    """Add, change and remove members. Removing asks first (`?remove=ID` shows the question); a new
    account's password is kept in the session for the one page view that shows it."""
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
                messages.success(request, f"{member.user.username} is now {member.role}.")
                if password:
                    request.session[NEW_ACCOUNT_SESSION_KEY] = {"project": project.pk, "username": member.user.username,
                                                         "password": password}
            return redirect("members", slug=slug)
        except (ActionError, ValueError) as exc:
            error, status = getattr(exc, "message", str(exc)), 400
    members = list(project.memberships.select_related("user").order_by("role", "user__username"))
    owners = sum(1 for m in members if m.role == Role.OWNER)
    for m in members:
        m.removable = not (m.role == Role.OWNER and owners == 1)
    confirm = next((m for m in members if str(m.user_id) == request.GET.get("remove") and m.removable), None)
    new_account = request.session.pop(NEW_ACCOUNT_SESSION_KEY, None)
    if new_account and new_account.get("project") != project.pk:
        new_account = None
    return render(request, "annotate/members.html",
                  {"project": project, "members": members, "roles": Role.choices, "error": error,
                   "confirm": confirm, "new_account": new_account}, status=status)


CRITERION_FIELDS = ("key", "label", "scale_min", "scale_max", "description", "required")


def _criteria_rows(post) -> list[dict]:
    """The rubric rows of the settings form, as typed; a row marked for removal is left out."""
    try:
        count = min(int(post.get("criteria-count", "0")), MAX_CRITERIA + 10)
    except ValueError:
        count = 0
    rows = []
    for index in range(count):
        if post.get(f"criteria-{index}-delete"):
            continue
        rows.append({name: post.get(f"criteria-{index}-{name}", "") for name in CRITERION_FIELDS})
    return rows


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Name, votes wanted, instructions (with a markdown preview) and the rubric, one row per
    criterion. "Preview" re-renders without saving, for browsers without JavaScript."""
    project, _ = get_project_for_manager(request, slug)
    form = {"name": project.name, "instructions": project.instructions, "votes_wanted": str(project.votes_wanted)}
    rows = [{"key": c.key, "label": c.label, "scale_min": c.scale_min, "scale_max": c.scale_max,
             "description": c.description, "required": c.required} for c in project.criteria.all()]
    error, status = None, 200
    if request.method == "POST":
        form = {k: request.POST.get(k, "") for k in form}
        rows = _criteria_rows(request.POST)
        if not request.POST.get("preview"):
            try:
                do_update_project(
                    project, name=form["name"].strip() or project.name, instructions=form["instructions"],
                    votes_wanted=_int_field(form["votes_wanted"], "votes wanted", 1, 50),
                    criteria=criteria_from_rows(rows),
                )
            except ActionError as exc:
                error, status = exc.message, 400
            else:
                messages.success(request, "Settings saved.")
                return redirect("project", slug=slug)
    blank = {name: "" for name in CRITERION_FIELDS}
    rows = [*rows, blank] if not rows or any(rows[-1].get(k) for k in ("key", "label")) else rows
    return render(request, "annotate/settings.html",
                  {"project": project, "form": form, "rows": rows, "error": error, "blank": blank,
                   "preview": render_markdown(form["instructions"], breaks=False)}, status=status)


@login_required
@require_POST
def instructions_preview(request: HttpRequest, slug: str) -> HttpResponse:
    """The instructions as annotators will see them (sanitised markdown), for the live preview."""
    get_project_for_manager(request, slug)
    return render(request, "annotate/_instructions_preview.html",
                  {"preview": render_markdown(request.POST.get("instructions", ""), breaks=False)})


BULK_ACTIONS = {"retire": "Retire", "reopen": "Reopen", "priority": "Set priority", "gold": "Mark gold (majority vote)"}


def _bulk_action(project: Project, post) -> str:
    """Carry out one bulk action on the selected comparisons; returns what to tell the manager."""
    ids, action = post.getlist("ids"), post.get("action", "")
    if action == "retire":
        return f"Retired {do_retire_comparisons(project, ids)} comparisons."
    if action == "reopen":
        return f"Reopened {do_reopen_comparisons(project, ids)} comparisons."
    if action == "priority":
        changed = do_set_priority(project, ids, post.get("priority", "").strip())
        return f"Priority of {changed} comparisons set to {post.get('priority').strip()}."
    if action == "gold":
        marked, undecided = do_mark_gold_from_votes(project, ids)
        text = f"Marked {marked} comparisons gold from their majority vote."
        if undecided:
            text += f" {len(undecided)} had no majority (no votes, or a draw) and were left as they were."
        return text
    raise ActionError(f"Choose an action: {', '.join(BULK_ACTIONS)}.")


@login_required
@require_http_methods(["GET", "POST"])
def comparisons_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Managers browse every comparison (search, filters, sorting, cursor pages) and act on a
    selection. Model sources are shown: managers run the experiment; annotators never get here."""
    project, _ = get_project_for_manager(request, slug)
    filters = browse.Filters.from_query(request.GET)
    error, status = None, 200
    if request.method == "POST":
        try:
            messages.success(request, _bulk_action(project, request.POST))
        except ActionError as exc:
            error, status = exc.message, 400
        else:
            query = filters.query_string(cursor=filters.cursor or None)
            return redirect(reverse("comparisons", args=[slug]) + (f"?{query}" if query else ""))
    page = browse.page_of(project, filters)
    context = {"project": project, "page": page, "filters": filters, "error": error, "actions": BULK_ACTIONS,
               "next_query": filters.query_string(cursor=page.next_cursor) if page.next_cursor else None,
               "first_query": filters.query_string(), **browse.choices_for(project)}
    return render(request, "annotate/comparisons.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def comparison_page(request: HttpRequest, slug: str, comparison_id: int) -> HttpResponse:
    """One comparison with every vote: who, what they chose and saw left, strength, rubric scores,
    rationale and time spent; retire or reopen it, set its priority and its gold answer."""
    project, _ = get_project_for_manager(request, slug)
    comparison = get_object_or_404(Comparison.objects.select_related("prompt", "candidate_a", "candidate_b"),
                                   project=project, pk=comparison_id)
    error, status = None, 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "gold":
                do_set_gold(project, comparison.pk, request.POST.get("gold") or None)
                messages.success(request, "Gold answer saved.")
            else:
                messages.success(request, _bulk_action(project, _single(request.POST, comparison.pk)))
        except ActionError as exc:
            error, status = exc.message, exc.status
        else:
            return redirect("comparison", slug=slug, comparison_id=comparison.pk)
    judgments = list(comparison.judgments.select_related("annotator").order_by("created_at", "id"))
    criteria = list(project.criteria.all())
    for judgment in judgments:
        judgment.rubric_rows = [(c.label, (judgment.rubric_scores or {}).get(c.key, {}).get("a"),
                                 (judgment.rubric_scores or {}).get(c.key, {}).get("b")) for c in criteria]
    lease = Lease.objects.filter(comparison=comparison).select_related("annotator").first()
    return render(request, "annotate/comparison.html", {
        "project": project, "comparison": comparison, "judgments": judgments, "criteria": criteria,
        "lease": lease, "skips": comparison.skips.count(), "error": error, "choices": Choice.choices,
        "back": request.GET.get("back", "")}, status=status)


def _single(post, comparison_id: int):
    """The detail page's form as a bulk action on its one comparison."""
    data = QueryDict(mutable=True)
    data.setlist("ids", [str(comparison_id)])
    data["action"] = post.get("action", "")
    data["priority"] = post.get("priority", "")
    return data


EXPORT_HELP = {
    "trl-preference": "prompt, chosen, rejected (and margin with weighted votes): TRL's RewardTrainer and DPOTrainer",
    "trl-unpaired": "prompt, completion, label: TRL's KTOTrainer (ties are dropped)",
    "rubric": "prompt, response and one column per rubric criterion (mean score)",
    "raw": "every judgment with annotator, sources, strength, rubric, rationale, shown side and time spent",
}


@login_required
@require_GET
def export_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The API's export from a form: the same formats and options, the row count and content
    version shown before the download (counting writes the file; the download then reuses it)."""
    project, _ = get_project_for_manager(request, slug)
    context = {"project": project, "formats": EXPORT_HELP, "origins": Comparison.Origin.choices,
               "query": request.GET, "result": None, "errors": None}
    if "format" in request.GET:
        query = ExportQuerySerializer(data=request.GET)
        if not query.is_valid():
            context["errors"] = {name: " ".join(str(m) for m in problems) for name, problems in query.errors.items()}
        else:
            q = query.validated_data
            options = exporting.ExportOptions(format=q["format"], votes=q["votes"], ties=q["ties"],
                                              since_id=q.get("since_id"), round=q.get("round"),
                                              origin=q.get("origin"))
            exported = exporting.write_export(project, options)
            params = {k: v for k, v in request.GET.items() if v not in ("", None)}
            context["result"] = {"rows": exported.rows, "version": exported.version,
                                 "url": reverse("api-export", args=[slug]) + "?" + urlencode(params)}
    template = "annotate/_export_result.html" if request.htmx else "annotate/export.html"
    return render(request, template, context, status=400 if context["errors"] else 200)


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
