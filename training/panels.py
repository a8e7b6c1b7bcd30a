"""The training side's panel on the project page: rounds, their win rates, the Next round button."""

from django.db.models import Count, Q
from django.template.loader import render_to_string

from annotate.models import Comparison

from .models import Checkpoint, Job
from .stats import round_win_rates


def rounds_panel(request, project):
    """On the project page: the loop, round by round, and the button that starts the next one."""
    rounds = {row["round"]: row for row in round_win_rates(project)}
    queued = (Comparison.objects.filter(project=project, origin=Comparison.Origin.ROUND).values("round")
              .annotate(total=Count("id"), open=Count("id", filter=Q(status="open"))).order_by("round"))
    rows = [{"round": q["round"], "comparisons": q["total"], "open": q["open"], **rounds.get(q["round"], {})}
            for q in queued]
    latest = Job.objects.filter(project=project, kind=Job.Kind.ROUND).first()
    reward = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL).first()
    scored = reward.scores.count() if reward else 0
    return render_to_string("training/_rounds_panel.html", {
        "project": project, "rows": rows, "latest": latest, "reward": reward, "scored": scored}, request=request)
