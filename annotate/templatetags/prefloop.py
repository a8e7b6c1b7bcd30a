"""Template filters and tags of the annotation pages: Markdown rendering and rubric form values."""

from django import template

from ..markdown import render_markdown

register = template.Library()


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
