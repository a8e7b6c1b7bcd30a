"""Who may see what: each helper answers 404 or 403 in one place, so no view repeats the rules."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Project


def get_project_for_member(request, slug: str) -> tuple[Project, Membership]:
    """The project and the caller's membership; 404 for non-members, so a project's existence
    does not leak to outsiders."""
    membership = (
        Membership.objects.select_related("project")
        .filter(project__slug=slug, user_id=request.user.pk)
        .first()
    )
    if membership is None:
        raise Http404("No such project.")
    return membership.project, membership


def get_project_for_manager(request, slug: str) -> tuple[Project, Membership]:
    project, membership = get_project_for_member(request, slug)
    if not membership.can_manage:
        raise PermissionDenied("Only the project's owners and managers can do this.")
    return project, membership


def client_ip(request) -> str | None:
    """The client's address for login throttling: PREFLOOP_CLIENT_IP_HEADER behind a reverse proxy
    (its first entry), else the socket's."""
    from django.conf import settings

    header = settings.PREFLOOP_CLIENT_IP_HEADER
    forwarded = request.META.get(header, "") if header else ""
    return forwarded.split(",")[0].strip() or request.META.get("REMOTE_ADDR")
