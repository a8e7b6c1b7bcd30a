"""Panels other apps add to the project page (the training side adds rounds and win rates), so
the annotation app shows them without importing those apps."""

from collections.abc import Callable

from django.utils.safestring import SafeString

_PANELS: list[Callable] = []


def register(render: Callable) -> Callable:
    """`render(request, project) -> SafeString | None`."""
    if render not in _PANELS:
        _PANELS.append(render)
    return render


def render_panels(request, project) -> list[SafeString]:
    return [html for html in (render(request, project) for render in _PANELS) if html]
