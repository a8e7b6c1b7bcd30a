from annotate.markdown import render_markdown


def test_code_blocks_survive_and_raw_html_is_inert():
    html = render_markdown("```python\nprint('<b>hi</b>')\n```\n\n<iframe src=x></iframe> <b>bold?</b>")
    assert '<pre><code class="language-python">' in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "<iframe" not in html and "<b>" not in html
    assert "&lt;iframe" in html


def test_links_are_kept_but_cannot_run_script_or_leak_referrer():
    html = render_markdown("[docs](https://example.org/x) and [bad](javascript:alert(1))")
    assert 'href="https://example.org/x"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert "href=\"javascript" not in html


def test_line_breaks_and_lists_render_as_models_write_them():
    html = render_markdown("Steps:\n1. Mix\n2. Bake")
    assert "<ol>" in html and "<li>Mix</li>" in html
