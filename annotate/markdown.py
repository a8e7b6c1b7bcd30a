"""Markdown for user-supplied text (prompts, responses, instructions), rendered safely.

markdown-it-py parses CommonMark with raw HTML turned off, so `<script>` in a response shows as
text; nh3 (ammonia) then cleans the output against an allow-list as a second wall.
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
    html = _parser(breaks).render(text or "")
    cleaned = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )
    return mark_safe(cleaned)  # noqa: S308 -- sanitised by nh3 just above
