"""The reward head on the project page: what it is doing to the queue (or why not yet), the
judgments it disagrees with most, and its settings for managers."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from annotate.access import get_project_for_manager

from .models import RewardHead
from .reward_head import head_for, label_noise, status_of

LIMITS = {"refit_every": (1, 100000), "min_judgments": (2, 100000), "members": (1, 32)}


def head_panel(request, project):
    """On the project page (managers): the head's status and settings."""
    return render_to_string("training/_head_panel.html", {
        "project": project, "head": status_of(project), "noise": label_noise(project, limit=5)}, request=request)


def parse_head_settings(data, head: RewardHead) -> tuple[dict, dict]:
    """Validated values from a form or a JSON body: (values, errors by field)."""
    values, errors = {}, {}
    for name, (low, high) in LIMITS.items():
        if name not in data or data[name] in ("", None):
            continue
        try:
            value = int(data[name])
        except (TypeError, ValueError):
            errors[name] = "must be a whole number"
            continue
        if not low <= value <= high:
            errors[name] = f"must be between {low} and {high}"
        else:
            values[name] = value
    if "enabled" in data:
        raw = data["enabled"]
        values["enabled"] = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "on", "yes")
    return values, errors


def apply_head_settings(head: RewardHead, values: dict) -> RewardHead:
    with transaction.atomic():
        for name, value in values.items():
            setattr(head, name, value)
        if values.get("enabled") is False:
            head.status, head.message = RewardHead.Status.OFF, "Off: the queue keeps its current order."
        elif values.get("enabled") and head.status == RewardHead.Status.OFF:
            head.status, head.message, head.judgments_seen = RewardHead.Status.WAITING, "Turned on: refits soon.", 0
        head.save()
    return head


@login_required
@require_POST
def head_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    head = head_for(project)
    data = request.POST.dict()
    data["enabled"] = "enabled" in request.POST
    values, errors = parse_head_settings(data, head)
    if errors:
        messages.error(request, "Reward head: " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in errors.items()))
    else:
        apply_head_settings(head, values)
        messages.success(request, "Reward head settings saved.")
    return redirect("project", slug=slug)
