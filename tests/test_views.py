"""Every page tried by owner, manager, annotator, outsider and anonymous; blindness; sanitising;
uploads; the htmx and the plain-form paths of judging."""

import gzip
import io
import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from annotate.importing import import_path, import_stream
from annotate.models import Comparison, ImportBatch, Judgment, Lease

from .conftest import ALPACA_JUDGMENTS, shared_file

pytestmark = pytest.mark.django_db

MANAGE_PAGES = ["project", "import", "members", "settings", "comparisons"]


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def comparison_on_page(html: str) -> int:
    return int(re.search(r'name="comparison" value="(\d+)"', html).group(1))


@pytest.fixture
def alpaca_project(project):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"),
                labels="ignore")
    return project


@pytest.mark.parametrize("page", MANAGE_PAGES)
def test_management_pages_by_role(project, users, page):
    url = reverse(page, args=[project.slug])
    assert login(users["owner"]).get(url).status_code == 200
    assert login(users["manager"]).get(url).status_code == 200
    annotator = login(users["annotator"]).get(url)
    assert annotator.status_code == (302 if page == "project" else 403)
    if page == "project":
        assert annotator["Location"] == reverse("annotate", args=[project.slug])
    assert login(users["outsider"]).get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page


def test_annotation_page_by_role(demo_pairs, users):
    url = reverse("annotate", args=[demo_pairs.slug])
    for name in ("owner", "manager", "annotator"):
        response = login(users[name]).get(url)
        assert response.status_code == 200
        assert b'id="workspace"' in response.content
    assert login(users["outsider"]).get(url).status_code == 404
    assert not Lease.objects.filter(annotator=users["outsider"]).exists()
    assert Client().get(url)["Location"].startswith(reverse("login"))


def test_home_lists_only_my_projects(project, users):
    assert b"Demo" in login(users["annotator"]).get("/").content
    assert b"Demo" not in login(users["outsider"]).get("/").content


def test_annotators_never_see_which_model_wrote_what(alpaca_project, users):
    client = login(users["annotator"])
    url = reverse("annotate", args=[alpaca_project.slug])
    pages = []
    for _ in range(5):
        html = client.get(url).content.decode()
        pages.append(html)
        pages.append(client.post(reverse("submit", args=[alpaca_project.slug]),
                                 {"comparison": comparison_on_page(html), "choice": "left"},
                                 HTTP_HX_REQUEST="true").content.decode())
    pages.append(client.post(reverse("undo", args=[alpaca_project.slug]), HTTP_HX_REQUEST="true").content.decode())
    for html in pages:
        for name in ("falcon-40b-instruct", "text_davinci_003"):
            assert name not in html
    # Managers, who run the experiment, do see sources.
    assert b"falcon-40b-instruct" in login(users["manager"]).get(reverse("comparisons", args=[alpaca_project.slug])).content


def test_user_text_is_rendered_sanitised(project, users):
    row = {
        "prompt": "Show me <script>alert('prompt')</script> and [a link](javascript:alert(1))",
        "response_a": "Here:\n\n```html\n<script>alert('code')</script>\n```\n\n<img src=x onerror=alert(1)>",
        "response_b": "**Bold** text with <b onclick=alert(2)>raw html</b>",
    }
    import_stream(project, io.BytesIO(json.dumps(row).encode()))

    html = login(users["annotator"]).get(reverse("annotate", args=[project.slug])).content.decode()

    assert "<script>alert" not in html
    assert "onerror" not in html.replace("onerror=alert(1)&gt;", "")  # only as escaped text
    assert "<img" not in html
    assert "href=\"javascript:" not in html
    assert "&lt;script&gt;alert(&#x27;prompt&#x27;)&lt;/script&gt;" in html or "&lt;script&gt;alert('prompt')" in html
    assert '<pre><code class="language-html">&lt;script&gt;' in html  # code blocks kept, inert
    assert "<strong>Bold</strong>" in html
    assert "<b onclick" not in html


def test_htmx_submit_swaps_in_the_next_comparison(demo_pairs, users):
    client = login(users["annotator"])
    first = comparison_on_page(client.get(reverse("annotate", args=[demo_pairs.slug])).content.decode())

    response = client.post(reverse("submit", args=[demo_pairs.slug]),
                           {"comparison": first, "choice": "right", "strength": "decisive", "ms_spent": "4200",
                            "rationale": "Refuses the harmful part"},
                           HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="workspace"')  # a fragment, not a page
    assert "<html" not in html
    assert comparison_on_page(html) != first
    assert '<strong id="done-count">1</strong>' in html
    judgment = Judgment.objects.get(annotator=users["annotator"])
    assert (judgment.strength, judgment.rationale) == ("decisive", "Refuses the harmful part")
    assert judgment.ms_spent <= 4200


def test_plain_form_submit_works_without_javascript(demo_pairs, users):
    client = login(users["annotator"])
    first = comparison_on_page(client.get(reverse("annotate", args=[demo_pairs.slug])).content.decode())

    response = client.post(reverse("submit", args=[demo_pairs.slug]), {"comparison": first, "choice": "tie"})

    assert response.status_code == 302
    assert response["Location"] == reverse("annotate", args=[demo_pairs.slug])
    assert Judgment.objects.get(annotator=users["annotator"]).choice == "tie"
    assert comparison_on_page(client.get(response["Location"]).content.decode()) != first


def test_a_form_error_keeps_the_comparison_and_what_was_typed(rubric_project, users):
    import_stream(rubric_project, io.BytesIO(b'{"prompt": "Hi", "response_a": "Hello!", "response_b": "Go away."}'))
    client = login(users["annotator"])
    cid = comparison_on_page(client.get(reverse("annotate", args=[rubric_project.slug])).content.decode())

    response = client.post(reverse("submit", args=[rubric_project.slug]),
                           {"comparison": cid, "choice": "left", "rubric-helpfulness-left": "7",
                            "rationale": "keep me"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    html = response.content.decode()
    assert "outside 1–5" in html
    assert comparison_on_page(html) == cid
    assert "keep me" in html
    assert not Judgment.objects.exists()


def test_judging_a_comparison_not_held_is_refused_with_409(demo_pairs, users):
    holder = login(users["annotator"])
    cid = comparison_on_page(holder.get(reverse("annotate", args=[demo_pairs.slug])).content.decode())

    response = login(users["annotator2"]).post(reverse("submit", args=[demo_pairs.slug]),
                                               {"comparison": cid, "choice": "left"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 409
    assert b"Nothing was recorded" in response.content
    assert not Judgment.objects.exists()
    assert Lease.objects.get(pk=cid).annotator == users["annotator"]


def test_outsiders_cannot_judge_or_skip(demo_pairs, users):
    cid = comparison_on_page(login(users["annotator"]).get(reverse("annotate", args=[demo_pairs.slug])).content.decode())
    outsider = login(users["outsider"])
    for action in ("submit", "skip", "undo"):
        response = outsider.post(reverse(action, args=[demo_pairs.slug]), {"comparison": cid, "choice": "left"})
        assert response.status_code == 404
    assert not Judgment.objects.exists()
    assert Lease.objects.get(pk=cid).annotator == users["annotator"]


def test_posts_without_a_csrf_token_are_refused(demo_pairs, users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["annotator"])
    cid = comparison_on_page(client.get(reverse("annotate", args=[demo_pairs.slug])).content.decode())
    assert client.post(reverse("submit", args=[demo_pairs.slug]), {"comparison": cid, "choice": "left"}).status_code == 403
    assert not Judgment.objects.exists()


def test_skip_and_undo_over_htmx(demo_pairs, users):
    client = login(users["annotator"])
    url = reverse("annotate", args=[demo_pairs.slug])
    first = comparison_on_page(client.get(url).content.decode())
    after_skip = client.post(reverse("skip", args=[demo_pairs.slug]), {"comparison": first}, HTTP_HX_REQUEST="true")
    second = comparison_on_page(after_skip.content.decode())
    assert second != first
    client.post(reverse("submit", args=[demo_pairs.slug]), {"comparison": second, "choice": "left", "strength": "slight"},
                HTTP_HX_REQUEST="true")

    undone = client.post(reverse("undo", args=[demo_pairs.slug]), HTTP_HX_REQUEST="true").content.decode()

    assert comparison_on_page(undone) == second
    assert re.search(r'value="left" required checked', undone)
    assert re.search(r'value="slight" checked', undone)
    assert not Judgment.objects.exists()


def test_upload_imports_a_file_and_shows_the_counts(project, users):
    with open(shared_file(ALPACA_JUDGMENTS / "llama-2-7b-chat-hf_vs_text_davinci_003.jsonl")) as handle:
        rows = [json.loads(line) for line in handle][:50]
    payload = gzip.compress("\n".join(json.dumps(r) for r in rows).encode())
    upload = io.BytesIO(payload)
    upload.name = "llama.jsonl.gz"

    response = login(users["manager"]).post(reverse("import", args=[project.slug]), {"file": upload, "format": "auto"},
                                            follow=True)

    assert response.status_code == 200
    assert b"Imported 50 rows (alpaca_eval)" in response.content
    assert Comparison.objects.filter(project=project).count() == 50
    assert ImportBatch.objects.get(project=project).created_by == users["manager"]


def test_upload_of_a_bad_file_names_the_problem_and_writes_nothing(project, users):
    upload = io.BytesIO(b'{"prompt": "a", "response_a": "b", "response_b": "c"}\n{"prompt": "d", "response_b": ""}\n')
    upload.name = "bad.jsonl"

    response = login(users["owner"]).post(reverse("import", args=[project.slug]), {"file": upload})

    assert response.status_code == 400
    assert b"line 2, field &#x27;response_a&#x27;: is missing" in response.content
    assert not Comparison.objects.exists()


def test_upload_over_the_size_limit_is_refused(project, users, settings):
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 1000
    upload = io.BytesIO(b'{"prompt": "a", "response_a": "b", "response_b": "c"}\n' * 100)
    upload.name = "big.jsonl"

    response = login(users["owner"]).post(reverse("import", args=[project.slug]), {"file": upload})

    assert response.status_code == 413  # stopped as it streamed (tests/test_security.py)
    assert b"limit is 1000 bytes" in response.content
    assert not Comparison.objects.exists()


def test_upload_with_an_unknown_format_lists_the_accepted_ones(project, users):
    upload = io.BytesIO(b'{"prompt": "a", "response_a": "b", "response_b": "c"}')
    upload.name = "x.jsonl"
    response = login(users["owner"]).post(reverse("import", args=[project.slug]), {"file": upload, "format": "yaml"})
    assert response.status_code == 400
    assert b"Accepted formats: auto, pairs, hh, alpaca_eval, candidates" in response.content


def test_settings_change_votes_and_rubric(demo_pairs, users):
    client = login(users["owner"])
    response = client.post(reverse("settings", args=[demo_pairs.slug]), {
        "name": "Renamed", "instructions": "Be *kind*.", "votes_wanted": "3", "criteria-count": "3",
        "criteria-0-key": "helpfulness", "criteria-0-label": "Helpfulness", "criteria-0-scale_min": "1",
        "criteria-0-scale_max": "7", "criteria-0-description": "Does it help?",
        "criteria-1-key": "safety", "criteria-1-label": "Safety", "criteria-1-scale_min": "0", "criteria-1-scale_max": "2",
        "criteria-2-key": "", "criteria-2-label": "",  # the blank row the form always offers
    })
    assert response.status_code == 302
    demo_pairs.refresh_from_db()
    assert demo_pairs.votes_wanted == 3
    assert list(demo_pairs.criteria.values_list("key", "scale_min", "scale_max")) == [("helpfulness", 1, 7), ("safety", 0, 2)]
    assert set(Comparison.objects.filter(project=demo_pairs).values_list("votes_wanted", flat=True)) == {3}

    bad = client.post(reverse("settings", args=[demo_pairs.slug]), {"name": "x", "votes_wanted": "2",
                                                                   "criteria-count": "1", "criteria-0-key": "Bad Key"})
    assert bad.status_code == 400
    assert b"Rubric row 1: key" in bad.content and b'value="Bad Key"' in bad.content
    demo_pairs.refresh_from_db()
    assert demo_pairs.votes_wanted == 3


def test_members_page_adds_an_annotator_with_a_new_account(project, users):
    users["manager"].is_staff = True  # only staff make site accounts (tests/test_security.py)
    users["manager"].save()
    manager = login(users["manager"])
    response = manager.post(reverse("members", args=[project.slug]),
                            {"username": "newbie", "role": "annotator", "create": "1"}, follow=True)
    password = re.search(rb'<input id="new-password" readonly value="([^"]{12,})"', response.content).group(1)
    assert b'data-copy="new-password"' in response.content
    assert password not in manager.get(reverse("members", args=[project.slug])).content  # shown once
    assert get_user_model().objects.get(username="newbie").check_password(password.decode())
    assert project.memberships.filter(user__username="newbie", role="annotator").exists()
    refused = login(users["manager"]).post(reverse("members", args=[project.slug]),
                                           {"username": "annotator", "role": "owner"})
    assert refused.status_code == 400
    assert not project.memberships.filter(user__username="annotator", role="owner").exists()


def test_project_page_shows_counts_progress_and_agreement_in_constant_queries(demo_pairs, users,
                                                                               django_assert_max_num_queries):
    for name in ("annotator", "annotator2"):
        client = login(users[name])
        for _ in range(5):
            cid = comparison_on_page(client.get(reverse("annotate", args=[demo_pairs.slug])).content.decode())
            client.post(reverse("submit", args=[demo_pairs.slug]), {"comparison": cid, "choice": "left"})
    owner = login(users["owner"])

    # 14 for the page and its rounds panel, 6 for the quality panel (one read of the judgments), the
    # reward head's panel and the round warnings: a fixed number, whatever the number of annotators
    with django_assert_max_num_queries(26):
        response = owner.get(reverse("project", args=[demo_pairs.slug]))

    html = response.content.decode()
    assert "annotator2" in html
    assert re.search(r"<td>annotator</td><td class=\"num\">5</td>", html)


def test_annotation_page_costs_a_fixed_number_of_queries(demo_pairs, users, django_assert_max_num_queries):
    client = login(users["annotator"])
    client.get(reverse("annotate", args=[demo_pairs.slug]))
    with django_assert_max_num_queries(12):
        html = client.get(reverse("annotate", args=[demo_pairs.slug])).content.decode()
    cid = comparison_on_page(html)
    with django_assert_max_num_queries(22):
        client.post(reverse("submit", args=[demo_pairs.slug]), {"comparison": cid, "choice": "left"},
                    HTTP_HX_REQUEST="true")
