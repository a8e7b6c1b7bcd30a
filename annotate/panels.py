"""What other apps add to the project page without the annotation app importing them: panels
(the training side adds rounds and win rates) and origins of imports (comparisons a policy round
generated name their job and who launched it)."""

from collections.abc import Callable

from django.utils.safestring import SafeString

_PANELS: list[Callable] = []
_IMPORT_ORIGINS: list[Callable] = []


def register(render: Callable) -> Callable:
    """`render(request, project) -> SafeString | None`."""
    if render not in _PANELS:
        _PANELS.append(render)
    return render


def render_panels(request, project) -> list[SafeString]:
    return [html for html in (render(request, project) for render in _PANELS) if html]


def register_import_origin(describe: Callable) -> Callable:
    """`describe(project, batches) -> {batch id: {"label", "url", "by"}}` for the batches it knows."""
    if describe not in _IMPORT_ORIGINS:
        _IMPORT_ORIGINS.append(describe)
    return describe


def describe_imports(project, batches) -> None:
    """Sets `origin` on each batch a registered app recognised (None on the others)."""
    found: dict = {}
    for describe in _IMPORT_ORIGINS:
        found.update(describe(project, batches) or {})
    for batch in batches:
        batch.origin = found.get(batch.pk)
