"""A reviewer settles a disputed comparison with the keyboard alone, in the real Chromium, and
the decision is read back from the database with the votes kept."""

import pytest
from django.contrib.auth import get_user_model

from annotate.actions import do_set_member
from annotate.importing import ParsedRow, import_rows
from annotate.models import Comparison, Judgment, Settlement

from .test_browser import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def disputed(project, users):
    rows = [ParsedRow(prompt_text=f"How do I stay safe {i}?", prompt_messages=None,
                      responses=[(f"Be careful {i}.", "model-x"), (f"Lock the door and tell a friend {i}.", "model-y")],
                      pairs=[(0, 1, None)]) for i in range(2)]
    import_rows(project, rows, labels="ignore")
    calm, disputed = Comparison.objects.filter(project=project).order_by("id")
    Judgment.objects.create(project=project, comparison=calm, annotator=users["annotator"], choice="a",
                            strength="clear", shown_left="a")
    Judgment.objects.create(project=project, comparison=disputed, annotator=users["annotator"], choice="a",
                            strength="clear", shown_left="a", rationale="Shorter is better.")
    Judgment.objects.create(project=project, comparison=disputed, annotator=users["annotator2"], choice="b",
                            strength="decisive", shown_left="b", rationale="B gives real advice.")
    get_user_model().objects.create_user("judge", password="correct horse battery")
    do_set_member(project, "judge", "reviewer")
    return disputed


def test_a_reviewer_settles_a_disputed_comparison_with_the_keyboard(project, disputed, live_server):
    with chromium_page() as page:
        page.goto(f"{live_server.url}/login/?next=/p/{project.slug}/review/")
        page.keyboard.type("judge")
        page.keyboard.press("Tab")
        page.keyboard.type("correct horse battery")
        page.keyboard.press("Enter")
        page.wait_for_selector("#review[data-comparison]")
        shown = int(page.locator("#review").get_attribute("data-comparison"))
        votes = page.locator("#votes").inner_text()
        assert "Shorter is better." in votes and "B gives real advice." in votes
        assert "model-x" not in page.content()
        page.keyboard.press("n")
        page.keyboard.type("B is safer advice.")
        page.keyboard.press("Escape")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        # settled: the next comparison (the undisputed one) is shown
        page.wait_for_function("prev => { const r = document.getElementById('review');"
                               " return r && r.dataset.comparison && r.dataset.comparison !== String(prev); }",
                               arg=shown)
        assert "settled: B is better" in page.content()

    assert shown == disputed.pk
    disputed.refresh_from_db()
    assert disputed.settled_choice == "b"
    settlement = Settlement.objects.get(comparison=disputed)
    assert (settlement.reviewer.username, settlement.note) == ("judge", "B is safer advice.")
    assert Judgment.objects.filter(comparison=disputed).count() == 2
