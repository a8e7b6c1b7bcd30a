"""The leaderboard page and its plot (every member of the project)."""

from __future__ import annotations

import io

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotate.access import get_project_for_member

from .leaderboard import JUDGES, leaderboard


def _judges(request) -> str:
    value = request.GET.get("judges", "human")
    return value if value in JUDGES else "human"


@login_required
@require_GET
def leaderboard_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = get_project_for_member(request, slug)
    judges = _judges(request)
    board = leaderboard(project, judges)
    ranked = [r for r in board["rows"] if r["rating"] is not None]
    return render(request, "training/leaderboard.html", {
        "project": project, "membership": membership, "board": board, "ranked": ranked,
        "unranked": [r for r in board["rows"] if r["rating"] is None], "judges": judges})


@login_required
@require_GET
def leaderboard_plot(request: HttpRequest, slug: str) -> HttpResponse:
    """Ratings with their 95% intervals, best on top, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    project, _ = get_project_for_member(request, slug)
    rows = [r for r in leaderboard(project, _judges(request))["rows"] if r["rating"] is not None][::-1]
    figure, axis = plt.subplots(figsize=(6.4, 0.9 + 0.38 * max(len(rows), 1)), dpi=100)
    if rows:
        ys = range(len(rows))
        ratings = [r["rating"] for r in rows]
        low = [r["rating"] - (r["ci_low"] if r["ci_low"] is not None else r["rating"]) for r in rows]
        high = [(r["ci_high"] if r["ci_high"] is not None else r["rating"]) - r["rating"] for r in rows]
        axis.errorbar(ratings, list(ys), xerr=[low, high], fmt="o", color="#2456d3", ecolor="#8aa4e6", capsize=3)
        axis.set_yticks(list(ys), [f"{r['source'][:40]} ({r['battles']})" for r in rows], fontsize=8)
        axis.axvline(1000, color="grey", linewidth=0.8, linestyle="--")
    else:
        axis.text(0.5, 0.5, "no battles yet", ha="center", va="center", transform=axis.transAxes)
        axis.set_yticks([])
    axis.set_xlabel("rating (Elo scale) with 95% bootstrap interval; battles in brackets", fontsize=8)
    axis.grid(alpha=0.3, axis="x")
    axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "no-store"
    return response
