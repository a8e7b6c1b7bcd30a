"""Every page in the real Chromium at 1366 px and 390 px (and dark at 390 px): no sideways scroll,
44 px targets on the phone, and zero axe-core violations (axe-core is vendored in
tests/assets/axe-core, injected by Playwright). Then what only a browser shows: a job page's poll
that leaves Config open, keys that leave scrolling alone, the dialogue opened at its end, Skip
without a console error, the slug that follows the name, removing a member, the copy box."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from annotate.models import Comparison, Membership, Project, Prompt
from training.models import Job

from .pages_data import LONG_DIALOGUE, build
from .test_browser import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "assets" / "axe-core" / "axe.min.js"
PHONE, DESKTOP = 390, 1366
# Controls a finger must hit; links inside running text are exempt (WCAG 2.5.5's inline exception).
TARGETS = "button, .button, input:not([type=hidden]):not([type=checkbox]):not([type=radio]), select, textarea, " \
          "summary, .topbar a, label.check, fieldset label"


@contextmanager
def browser_for(live_server, user=None, *, width=DESKTOP, height=900, scheme="light"):
    """A Chromium page logged in as `user` (the session made by Django's test client)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (.ci/run does it)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    cookies = []
    if user is not None:
        client = Client()
        client.force_login(user)
        cookies = [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        context.add_cookies(cookies)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        yield page
        browser.close()


def check_page(page, url: str, width: int, rules: list[str] | None = None) -> list[str]:
    """What is wrong with the page at `url`: sideways scroll, small targets, axe violations (of
    every rule, or only of `rules`)."""
    page.goto(url)
    page.wait_for_load_state("load")
    problems = []
    wider = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if wider > 0:
        problems.append(f"scrolls sideways by {wider} px")
    if width <= PHONE:
        small = page.evaluate("""selector => [...document.querySelectorAll(selector)]
            .filter(e => e.offsetParent !== null && !e.closest('.visually-hidden'))
            .map(e => [e, e.getBoundingClientRect()]).filter(([e, r]) => r.height < 43.5 && r.width > 0)
            .map(([e, r]) => `${e.tagName.toLowerCase()} "${(e.name || e.textContent).trim().slice(0, 30)}" ${Math.round(r.height)} px`)""",
                              TARGETS)
        problems += [f"target under 44 px: {s}" for s in small]
    page.add_script_tag(path=str(AXE))
    options = {"resultTypes": ["violations"], **({"runOnly": rules} if rules else {})}
    violations = page.evaluate("""async options => (await axe.run(document, options)).violations
        .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`)""", options)
    problems += [f"axe {v}" for v in violations]
    return [f"{url.split('//', 1)[1].split('/', 1)[1]} @ {width} px: {p}" for p in problems]


@pytest.fixture
def site(demo_pairs, rubric_project, users):
    """The demo pairs with a rubric, instructions, judgments, jobs, models and a round."""
    made = build(demo_pairs, users)
    get_user_model().objects.filter(pk=users["owner"].pk).update(is_staff=True)
    made["split"] = made["judged"][0]
    return made


def owner_pages(slug: str, made: dict) -> list[str]:
    return ["/", "/projects/new/", "/tokens/", f"/p/{slug}/", f"/p/{slug}/annotate/", f"/p/{slug}/import/",
            f"/p/{slug}/comparisons/?sort=priority", f"/p/{slug}/comparisons/{made['split']}/",
            f"/p/{slug}/export/?format=trl-preference&votes=weighted", f"/p/{slug}/jobs/",
            f"/p/{slug}/jobs/{made['rm_job'].pk}/", f"/p/{slug}/jobs/{made['dpo_job'].pk}/",
            f"/p/{slug}/jobs/{made['pipeline'].pk}/", f"/p/{slug}/jobs/{made['generate'].pk}/",
            f"/p/{slug}/models/", f"/p/{slug}/models/{made['rm'].pk}/", f"/p/{slug}/models/{made['dpo'].pk}/",
            f"/p/{slug}/members/", f"/p/{slug}/members/?remove={made['annotator_id']}", f"/p/{slug}/settings/",
            f"/p/{slug}/review/", f"/p/{slug}/leaderboard/", "/p/no-such-project/"]


# The dark theme changes colours only: its pass checks contrast alone (a full axe run is seconds a page).
@pytest.mark.parametrize(("width", "scheme", "rules"), [(DESKTOP, "light", None), (PHONE, "light", None),
                                                        (PHONE, "dark", ["color-contrast"])])
def test_every_page_fits_the_screen_and_passes_axe(site, demo_pairs, users, live_server, width, scheme, rules):
    """Not covered: the Django admin and the Swagger UI (/api/v1/docs/), which are third-party pages."""
    site["annotator_id"] = users["annotator"].pk
    problems = []
    with browser_for(live_server, users["owner"], width=width, scheme=scheme) as page:
        for path in owner_pages(demo_pairs.slug, site):
            problems += check_page(page, live_server.url + path, width, rules)
    with browser_for(live_server, users["annotator"], width=width, scheme=scheme) as page:
        for path in (f"/p/{demo_pairs.slug}/annotate/", f"/p/{demo_pairs.slug}/settings/"):  # the last one: 403
            problems += check_page(page, live_server.url + path, width, rules)
    with browser_for(live_server, None, width=width, scheme=scheme) as page:
        problems += check_page(page, live_server.url + "/login/", width, rules)
    assert problems == []


def test_a_running_jobs_poll_leaves_config_and_result_open(site, demo_pairs, users, live_server):
    step = site["step_dpo"]
    with browser_for(live_server, users["manager"]) as page:
        page.goto(f"{live_server.url}/p/{demo_pairs.slug}/jobs/{step.pk}/")
        page.click("#job-config summary")
        page.click("#job-result summary")
        Job.objects.filter(pk=step.pk).update(progress=0.75, message="step 6/8")
        page.wait_for_function("document.getElementById('job-live').textContent.includes('step 6/8')")
        assert page.locator("#job-config").get_attribute("open") is not None
        assert page.locator("#job-result").get_attribute("open") is not None
        Job.objects.filter(pk=step.pk).update(status="succeeded", progress=1.0, message="succeeded",
                                              result={"heldout_margin_after": 0.3, "heldout_accuracy_after": 0.75})
        page.wait_for_function("document.getElementById('job-status').textContent.trim() === 'succeeded'")
        page.wait_for_function("!document.querySelector('[hx-trigger]')")  # polling stopped
        assert page.locator("#job-config").get_attribute("open") is not None
        assert "heldout_accuracy_after" in page.locator("#job-result-json").inner_text()
        assert page.locator("#evaluation").is_visible()
        assert page.console_errors == []
        connection.close()  # the writes above went through a connection of the event loop's own


@pytest.fixture
def long_dialogues(demo_pairs, users):
    """Two open comparisons whose prompts are long dialogues; everything else retired."""
    keep = list(Comparison.objects.filter(project=demo_pairs).order_by("id").values_list("pk", flat=True)[:2])
    Comparison.objects.filter(project=demo_pairs).exclude(pk__in=keep).update(status="retired")
    Prompt.objects.filter(comparisons__pk__in=keep).update(messages=LONG_DIALOGUE)
    return demo_pairs


def test_the_dialogue_opens_at_its_end_and_arrows_keep_scrolling(long_dialogues, users, live_server):
    with browser_for(live_server, users["annotator"], width=PHONE, height=700) as page:
        page.goto(f"{live_server.url}/p/{long_dialogues.slug}/annotate/")
        box = page.evaluate("""() => { const p = document.querySelector('.prompt');
            const last = document.querySelector('.turn.answering').getBoundingClientRect();
            const r = p.getBoundingClientRect();
            return {overflows: p.scrollHeight > p.clientHeight, lastInView: last.bottom <= r.bottom + 1 && last.top >= r.top - 1}; }""")
        assert box == {"overflows": True, "lastInView": True}

        page.keyboard.press("ArrowDown")  # the page scrolls: the arrow scrolls it, and chooses nothing
        page.wait_for_function("window.scrollY > 0")
        assert page.locator('input[name="choice"]:checked').count() == 0
        page.keyboard.press("3")
        assert page.locator('input[name="choice"][value="tie"]').is_checked()

        first = page.locator("#workspace").get_attribute("data-comparison")
        page.keyboard.press("s")
        page.wait_for_function("prev => document.getElementById('workspace').dataset.comparison !== prev", arg=first)
    assert page.console_errors == []


def test_the_slug_follows_the_name_until_edited(project, users, live_server):
    get_user_model().objects.filter(pk=users["owner"].pk).update(is_staff=True)
    with browser_for(live_server, users["owner"]) as page:
        page.goto(f"{live_server.url}/projects/new/")
        page.fill("input[name=name]", "Helpfulness Study – Round 2!")
        assert page.input_value("input[name=slug]") == "helpfulness-study-round-2"
        page.fill("input[name=slug]", "helpful-2")
        page.fill("input[name=name]", "Helpfulness study, second round")
        assert page.input_value("input[name=slug]") == "helpful-2"
        page.click("button.primary")
        page.wait_for_url("**/p/helpful-2/")
    assert Project.objects.get(slug="helpful-2").name == "Helpfulness study, second round"


def test_removing_a_member_asks_first_and_the_password_box_copies(project, users, live_server):
    users["owner"].is_staff = True  # only staff make site accounts (tests/test_security.py)
    users["owner"].save()
    with browser_for(live_server, users["owner"]) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        page.goto(f"{live_server.url}/p/{project.slug}/members/")
        page.click('a[aria-label="Remove annotator2"]')
        assert page.locator("#confirm-remove").is_visible()
        assert Membership.objects.filter(project=project, user=users["annotator2"]).exists()
        page.click("#confirm-remove-button")
        page.wait_for_selector("text=Member removed.")

        page.fill("input[name=username]", "newcomer")
        page.check("input[name=create]")
        page.click("form button.primary")
        page.wait_for_selector("#new-password")
        password = page.input_value("#new-password")
        page.click('button[data-copy="new-password"]')
        page.wait_for_selector('button[data-copy="new-password"]:has-text("Copied")')
        copied = page.evaluate("navigator.clipboard.readText()")
        connection.close()  # the membership check above went through the event loop's own connection
    assert not Membership.objects.filter(project=project, user=users["annotator2"]).exists()
    assert copied == password and get_user_model().objects.get(username="newcomer").check_password(password)


def test_select_all_and_set_priority_on_a_page_of_comparisons(demo_pairs, users, live_server):
    with browser_for(live_server, users["manager"]) as page:
        page.goto(f"{live_server.url}/p/{demo_pairs.slug}/comparisons/?sort=oldest")
        page.check('input[data-check-all="ids"]')
        page.select_option("select[name=action]", "priority")
        page.fill("#bulk input[name=priority]", "3")
        page.click("#bulk button")
        page.wait_for_selector("text=Priority of 50 comparisons set to 3.")
    first_fifty = Comparison.objects.filter(project=demo_pairs).order_by("id")[:50]
    assert {c.priority for c in first_fifty} == {3.0}
    assert Comparison.objects.filter(project=demo_pairs, priority=3.0).count() == 50
