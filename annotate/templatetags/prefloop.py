"""Template filters and tags of the pages: markdown, the project tabs, small formatting helpers."""

from django import template

from ..markdown import render_markdown

register = template.Library()

PROJECT_TABS = [("project", "Overview"), ("annotate", "Annotate"), ("import", "Import"),
                ("comparisons", "Comparisons"), ("review", "Review"), ("export", "Export"), ("jobs", "Jobs"),
                ("models", "Models"), ("leaderboard", "Leaderboard"), ("members", "Members"), ("settings", "Settings")]
# Pages below a tab (a job is under Jobs) mark that tab as the current one.
_TAB_OF_PAGE = {"comparison": "comparisons", "job": "jobs", "model": "models"}


@register.filter(name="markdown")
def markdown_filter(text):
    return render_markdown(text)


@register.filter
def markdown_document(text):
    return render_markdown(text, breaks=False)


@register.filter
def split_words(value: str) -> list[str]:
    return value.split()


@register.simple_tag
def rubric_value(values, key: str, side: str) -> str:
    return (values or {}).get(f"rubric-{key}-{side}", "")


@register.simple_tag(takes_context=True)
def current_tab(context) -> str:
    """The tab of the page being shown, and the tab list in the context for the template."""
    context["project_tabs"] = PROJECT_TABS
    match = getattr(context.get("request"), "resolver_match", None)
    name = match.url_name if match else ""
    return _TAB_OF_PAGE.get(name, name)


@register.filter
def percent(value, digits: int = 0) -> str:
    """0.734 → "73%"; None → "–"."""
    if value is None or value == "":
        return "–"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def seconds(milliseconds) -> str:
    """12345 (ms) → "12.3 s"; None → "–"."""
    if milliseconds is None or milliseconds == "":
        return "–"
    return f"{int(milliseconds) / 1000:.1f} s"
