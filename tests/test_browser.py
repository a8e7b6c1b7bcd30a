"""A person logs in and judges with the keyboard alone, in the real Chromium; the judgments are
then read back from the database."""

import os
import shutil
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model

from annotate.actions import do_set_member
from annotate.models import Judgment, Skip

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("PREFLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page(width=1400, height=1000):
    """A page in the real Chromium. Database reads and writes belong outside this block: made
    while Playwright's event loop runs, they go through a connection of their own."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (.ci/run does it)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(15000)
        yield page
        browser.close()


def current_comparison(page) -> int:
    return int(page.locator("#workspace").get_attribute("data-comparison"))


def wait_for_new_comparison(page, previous: int) -> int:
    page.wait_for_function(
        "prev => { const w = document.getElementById('workspace');"
        " return w && w.dataset.comparison && w.dataset.comparison !== String(prev)"
        " && !document.querySelector('#judge button:disabled'); }",
        arg=previous,
    )
    return current_comparison(page)


@pytest.fixture
def keyboarder(rubric_project, demo_pairs):
    get_user_model().objects.create_user("keyboarder", password="correct horse battery")
    do_set_member(rubric_project, "keyboarder", "annotator")
    return rubric_project


def test_an_annotator_judges_with_the_keyboard_alone(keyboarder, live_server):
    with chromium_page() as page:
        first, second, third, fourth, fifth = judge_with_keys(page, live_server.url, keyboarder.slug)

    judgments = {j.comparison_id: j for j in Judgment.objects.filter(annotator__username="keyboarder")}
    assert set(judgments) == {first, second, third, fifth}
    left = judgments[first]
    assert (left.choice, left.strength) == (left.shown_left, "decisive")
    right = judgments[second]
    assert right.choice != right.shown_left and right.strength == "clear"
    tie = judgments[third]
    assert (tie.choice, tie.strength, tie.rationale) == ("tie", None, "Both refuse; neither helps.")
    assert tie.rubric_scores == {"helpfulness": {tie.shown_left: 4, "b" if tie.shown_left == "a" else "a": 2}}
    redone = judgments[fifth]
    assert redone.choice != redone.shown_left and redone.strength == "slight"
    assert all(j.ms_spent and j.ms_spent > 0 for j in judgments.values())
    assert Skip.objects.filter(annotator__username="keyboarder", comparison_id=fourth).exists()


def judge_with_keys(page, base_url: str, slug: str) -> tuple[int, ...]:
    """Log in and judge five comparisons with keys only; returns the comparison ids seen."""

    page.goto(f"{base_url}/login/?next=/p/{slug}/annotate/")
    page.keyboard.type("keyboarder")
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace[data-comparison]")
    assert page.locator("#keys").is_visible()
    page.evaluate("window.__noReload = true")

    # 1. Left, decisively.
    first = current_comparison(page)
    page.keyboard.press("1")
    page.keyboard.press("e")
    page.keyboard.press("Enter")
    second = wait_for_new_comparison(page, first)
    assert page.locator("#done-count").inner_text() == "1"

    # 2. Right with the arrow key, default strength.
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    third = wait_for_new_comparison(page, second)

    # 3. Tie, with rubric scores and a rationale typed in.
    page.keyboard.press("3")
    page.keyboard.press("r")
    page.keyboard.type("4")
    page.keyboard.press("Tab")
    page.keyboard.type("2")
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.keyboard.type("Both refuse; neither helps.")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    fourth = wait_for_new_comparison(page, third)

    # 4. Skip.
    page.keyboard.press("s")
    fifth = wait_for_new_comparison(page, fourth)

    # 5. Left, then undo, then right instead.
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    sixth = wait_for_new_comparison(page, fifth)
    page.keyboard.press("u")
    assert wait_for_new_comparison(page, sixth) == fifth
    assert page.locator('input[name="choice"][value="left"]').is_checked()
    page.keyboard.press("2")
    page.keyboard.press("q")
    page.keyboard.press("Enter")
    wait_for_new_comparison(page, fifth)

    assert page.evaluate("window.__noReload") is True, "the page reloaded instead of swapping"
    return first, second, third, fourth, fifth


def test_the_page_stacks_responses_on_a_narrow_screen(demo_pairs, users, live_server):
    with chromium_page(width=420, height=900) as page:
        page.goto(f"{live_server.url}/login/?next=/p/{demo_pairs.slug}/annotate/")
        page.fill("input[name=username]", "annotator")
        page.fill("input[name=password]", "pw-annotator")
        page.keyboard.press("Enter")
        page.wait_for_selector("#workspace[data-comparison]")
        left = page.locator("#response-left").bounding_box()
        right = page.locator("#response-right").bounding_box()
    assert right["y"] >= left["y"] + left["height"] - 1  # one above the other, not side by side


def test_api_docs_render_offline_in_chromium(users, live_server):
    """Swagger UI comes from the vendored sidecar package: with no network it still renders every
    operation of the schema."""
    with chromium_page() as page:
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{live_server.url}/login/?next=/api/v1/docs/")
        page.fill("input[name=username]", "owner")
        page.fill("input[name=password]", "pw-owner")
        page.keyboard.press("Enter")
        page.wait_for_selector(".opblock", timeout=20000)
        operations = page.locator(".opblock").count()
        title = page.locator(".info .title").inner_text()
    assert operations >= 20
    assert "Prefloop API" in title
    assert all(url.startswith(live_server.url) for url in requests), [u for u in requests if live_server.url not in u]
