"""Markdown for user-supplied text (prompts, responses, instructions), rendered safely.

markdown-it-py parses CommonMark with raw HTML turned off, so `<script>` in a response shows as
text; nh3 (ammonia) then cleans the output against an allow-list as a second wall. The same text
is rendered once per process while it stays among the recent ones (a response shows in several
comparisons, and the annotation page renders a comparison for the GET and again after a submit).
"""

from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_ALLOWED_TAGS = {
    "p", "br", "hr", "pre", "code", "blockquote", "em", "strong", "del", "s", "a", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"},
                       "th": {"style"}, "td": {"style"}, "ol": {"start"}}


@lru_cache(maxsize=2)
def _parser(breaks: bool) -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": breaks}).enable("table").enable(
        "strikethrough"
    )


def render_markdown(text: str, *, breaks: bool = True) -> SafeString:
    """`breaks`: a single newline is a line break, as models write; off for hand-wrapped documents
    such as instructions."""
    text = text or ""
    return _render_cached(text, breaks) if len(text) <= CACHED_TEXT_CHARS else _render(text, breaks)


CACHED_TEXT_CHARS = 20_000  # bounds the cache: at most 2,048 texts of this size


def _render(text: str, breaks: bool) -> SafeString:
    html = _parser(breaks).render(text)
    cleaned = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )
    return mark_safe(cleaned)  # noqa: S308 -- sanitised by nh3 just above


# Keyed by the text (its hash); the output depends on nothing else, so a hit is exact.
_render_cached = lru_cache(maxsize=2048)(_render)
