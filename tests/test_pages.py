"""The pages as a new user finds them (issue 16): comparisons browsed and acted on, export with
its row count first, job pages that update only their live parts, evaluations beside their
baselines with warnings, pipelines with their steps, honest counts, and the smaller fixes."""

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotate.models import Comparison, Judgment, Membership
from training import hardware
from training.models import Job, JobMetric

from .pages_data import build, judge

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def made(demo_pairs, users):
    return build(demo_pairs, users)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setenv("PREFLOOP_DEVICE", "cpu")
    hardware.has_gpu.cache_clear()
    yield
    hardware.has_gpu.cache_clear()


# --- comparisons ---------------------------------------------------------------------------------


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', html)]


@pytest.mark.both_databases
def test_cursor_pages_walk_every_comparison_once_in_the_chosen_order(made, demo_pairs, users,
                                                                     django_assert_max_num_queries):
    client = login(users["manager"])
    url = reverse("comparisons", args=[demo_pairs.slug])
    seen, query, pages = [], "?sort=oldest", 0
    while query is not None:
        with django_assert_max_num_queries(12):
            html = client.get(url + query).content.decode()
        seen += ids_on(html)
        pages += 1
        found = re.search(r'href="\?([^"]*)" rel="next"', html)
        query = "?" + found.group(1).replace("&amp;", "&") if found else None
    everything = list(Comparison.objects.filter(project=demo_pairs).order_by("id").values_list("pk", flat=True))
    assert seen == everything and pages == 6  # 300 comparisons, 50 a page, none twice or missed
    by_priority = ids_on(client.get(url + "?sort=priority").content.decode())
    assert set(made["round_ids"]) <= set(by_priority[:6])  # the round's comparisons have priority 1


def test_search_reaches_the_responses_and_filters_combine(made, demo_pairs, users):
    client = login(users["manager"])
    url = reverse("comparisons", args=[demo_pairs.slug])
    for comparison in Comparison.objects.filter(project=demo_pairs).select_related("candidate_b", "prompt").order_by("-pk"):
        words = next((w for w in comparison.candidate_b.text.split() if len(w) > 7 and w.isalpha()
                      and w.lower() not in comparison.prompt.text.lower()), None)
        if words:
            break
    found = ids_on(client.get(url, {"q": words}).content.decode())
    assert comparison.pk in found
    assert all(words.lower() in (c.prompt.text + c.candidate_a.text + c.candidate_b.text).lower()
               for c in Comparison.objects.filter(pk__in=found).select_related("prompt", "candidate_a", "candidate_b"))

    split = ids_on(client.get(url, {"disagreement": "1"}).content.decode())
    assert sorted(split) == sorted(made["judged"][:3])
    round_one = ids_on(client.get(url, {"round": "1", "origin": "round", "status": "complete"}).content.decode())
    assert sorted(round_one) == sorted(made["round_ids"])
    assert ids_on(client.get(url, {"round": "1", "status": "open"}).content.decode()) == []
    odd = client.get(url, {"round": "one"})
    assert odd.status_code == 200 and b"is not a whole number" in odd.content


def test_the_flagged_filter_shows_comparisons_with_a_vote_against_a_strong_majority(demo_pairs, users):
    from django.contrib.auth import get_user_model

    from annotate.models import Judgment

    User = get_user_model()
    voters = [users["annotator"], users["annotator2"], users["manager"], User.objects.create_user("fourth")]
    disputed, calm = Comparison.objects.filter(project=demo_pairs).order_by("pk")[:2]
    for comparison, odd_choice in ((disputed, "b"), (calm, "a")):
        for voter in voters[:3]:
            Judgment.objects.create(project=demo_pairs, comparison=comparison, annotator=voter, choice="a",
                                    shown_left="a", ms_spent=20000)
        Judgment.objects.create(project=demo_pairs, comparison=comparison, annotator=voters[3], choice=odd_choice,
                                shown_left="a", ms_spent=20000)
    html = login(users["manager"]).get(reverse("comparisons", args=[demo_pairs.slug]), {"flagged": "1"}).content.decode()
    assert ids_on(html) == [disputed.pk]  # three votes for a, one for b: the b vote is flagged


@pytest.mark.both_databases
def test_bulk_actions_retire_prioritise_and_mark_gold_from_the_majority(made, demo_pairs, users):
    client = login(users["manager"])
    url = reverse("comparisons", args=[demo_pairs.slug]) + "?status=open"
    open_ids = list(Comparison.objects.filter(project=demo_pairs, status="open").values_list("pk", flat=True)[:4])

    response = client.post(url, {"ids": open_ids[:2], "action": "retire"})
    assert response.status_code == 302 and response["Location"].endswith("?status=open")
    assert set(Comparison.objects.filter(pk__in=open_ids[:2]).values_list("status", flat=True)) == {"retired"}
    client.post(url, {"ids": open_ids[2:], "action": "priority", "priority": "7.5"})
    assert set(Comparison.objects.filter(pk__in=open_ids[2:]).values_list("priority", flat=True)) == {7.5}
    refused = client.post(url, {"ids": open_ids[2:], "action": "priority", "priority": "lots"})
    assert refused.status_code == 400 and b"is not a number" in refused.content

    single_vote, split = made["judged"][5], made["judged"][0]
    done = client.post(url, {"ids": [single_vote, split], "action": "gold"}, follow=True).content.decode()
    assert "Marked 1 comparisons gold" in done and "1 had no majority" in done
    assert Comparison.objects.get(pk=single_vote).gold_choice == Judgment.objects.get(comparison_id=single_vote).choice
    assert Comparison.objects.get(pk=split).gold_choice is None
    other = Comparison.objects.exclude(project=demo_pairs).values_list("pk", flat=True)
    assert client.post(url, {"ids": [*other, 10**9], "action": "retire"}).status_code in (302, 400)
    assert login(users["annotator"]).post(url, {"ids": open_ids, "action": "reopen"}).status_code == 403


def test_the_detail_shows_every_vote_and_sets_the_gold_answer(made, demo_pairs, users):
    client = login(users["owner"])
    split = made["judged"][0]
    url = reverse("comparison", args=[demo_pairs.slug, split])
    html = client.get(url).content.decode()
    votes = re.search(r'<table class="list stack" id="votes">.*?</table>', html, re.S).group(0)
    assert ">annotator</td>" in votes and ">annotator2</td>" in votes
    first = Judgment.objects.get(comparison_id=split, annotator=users["annotator"])
    assert "Safer and kinder." in votes and "Slightly better" in votes
    assert f"{first.ms_spent / 1000:.1f} s" in votes and "2.5 s" in votes
    assert client.post(url, {"action": "gold", "gold": "tie"}).status_code == 302
    assert Comparison.objects.get(pk=split).gold_choice == "tie"
    assert "not gold" in client.get(url).content.decode()
    client.post(url, {"action": "retire"})
    assert Comparison.objects.get(pk=split).status == "retired"
    assert login(users["annotator"]).get(url).status_code == 403
    assert login(users["outsider"]).get(url).status_code == 404


def test_export_from_the_page_counts_the_rows_the_api_then_sends(made, demo_pairs, users):
    client = login(users["manager"])
    url = reverse("export", args=[demo_pairs.slug])
    html = client.get(url, {"format": "trl-preference", "votes": "all", "ties": "drop"}).content.decode()
    rows = int(re.search(r'<strong id="export-rows">(\d+)</strong>', html).group(1))
    download = re.search(r'id="export-download" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    response = client.get(download)
    assert response.status_code == 200 and int(response["X-Prefloop-Export-Rows"]) == rows
    assert len(b"".join(response.streaming_content).splitlines()) == rows == Judgment.objects.filter(
        project=demo_pairs).exclude(choice="tie").count()
    bad = client.get(url, {"format": "csv"})
    assert bad.status_code == 400 and "format:" in bad.content.decode()
    fragment = client.get(url, {"format": "raw"}, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="export-result"') and "<html" not in fragment


# --- annotation --------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_annotators_see_their_own_progress_and_an_open_count_read_now(demo_pairs, users):
    client = login(users["annotator"])
    url = reverse("annotate", args=[demo_pairs.slug])
    client.get(url)
    judge(demo_pairs, users["annotator"], 15)
    html = client.get(url).content.decode()
    assert '<strong id="done-today">15</strong>' in html and '<strong id="done-count">15</strong>' in html
    assert '<strong id="open-count">285</strong>' in html  # 300 − 15, not a cached 300
    assert '<strong id="queue-left">285</strong>' in html


def test_counts_stop_at_a_cap_so_a_large_queue_stays_cheap(demo_pairs, users, monkeypatch):
    from annotate import stats

    monkeypatch.setattr(stats, "QUEUE_LEFT_CAP", 100)
    html = login(users["annotator"]).get(reverse("annotate", args=[demo_pairs.slug])).content.decode()
    assert '<strong id="open-count">100+</strong>' in html and '<strong id="queue-left">100+</strong>' in html


def test_an_empty_queue_says_why_the_open_comparisons_are_not_yours(demo_pairs, users):
    Comparison.objects.filter(project=demo_pairs).exclude(pk__in=list(
        Comparison.objects.filter(project=demo_pairs).values_list("pk", flat=True)[:6])).update(status="retired")
    judge(demo_pairs, users["annotator2"], 6)
    Comparison.objects.filter(project=demo_pairs).exclude(status="retired").update(votes_wanted=2, status="open")
    html = login(users["annotator2"]).get(reverse("annotate", args=[demo_pairs.slug])).content.decode()
    assert "Nothing is left for you" in html and '<strong id="open-count">6</strong>' in html
    assert "you judged or skipped them" in html


def test_a_long_dialogue_marks_its_last_turn_as_the_one_answered(demo_pairs, users):
    from .pages_data import LONG_DIALOGUE

    prompt = Comparison.objects.filter(project=demo_pairs).first().prompt
    type(prompt).objects.filter(pk=prompt.pk).update(messages=LONG_DIALOGUE)
    Comparison.objects.filter(project=demo_pairs).exclude(prompt=prompt).update(status="retired")
    html = login(users["annotator"]).get(reverse("annotate", args=[demo_pairs.slug])).content.decode()
    last = re.findall(r'<div class="turn turn-(\w+)( answering)?">', html)
    assert last[-1] == ("user", " answering") and all(not a for _, a in last[:-1])
    assert "13 turns, opened at the last one" in html


# --- settings, members, pages ------------------------------------------------------------------


def test_the_instructions_preview_is_sanitised_markdown(project, users):
    url = reverse("instructions_preview", args=[project.slug])
    html = login(users["manager"]).post(url, {"instructions": "**Be kind** <script>alert(1)</script>"}).content
    assert b"<strong>Be kind</strong>" in html and b"<script>" not in html and b"&lt;script&gt;" in html
    assert login(users["annotator"]).post(url, {"instructions": "x"}).status_code == 403
    page = login(users["manager"]).post(reverse("settings", args=[project.slug]),
                                        {"name": "Demo", "votes_wanted": "1", "instructions": "*new*", "preview": "1",
                                         "criteria-count": "0"})
    assert page.status_code == 200 and b"<em>new</em>" in page.content
    project.refresh_from_db()
    assert project.instructions == ""  # previewed, not saved


def test_rubric_rows_add_change_and_remove_criteria(rubric_project, users):
    client = login(users["owner"])
    url = reverse("settings", args=[rubric_project.slug])
    html = client.get(url).content.decode()
    assert 'name="criteria-0-key" value="helpfulness"' in html and 'name="criteria-2-key" value=""' in html
    client.post(url, {"name": "Demo", "votes_wanted": "1", "instructions": "", "criteria-count": "3",
                      "criteria-0-key": "helpfulness", "criteria-0-label": "Helpful", "criteria-0-scale_min": "1",
                      "criteria-0-scale_max": "7", "criteria-0-required": "1",
                      "criteria-1-key": "honesty", "criteria-1-delete": "1",
                      "criteria-2-key": "tone", "criteria-2-scale_min": "0", "criteria-2-scale_max": "3"})
    rows = list(rubric_project.criteria.values_list("key", "label", "scale_min", "scale_max", "required"))
    assert rows == [("helpfulness", "Helpful", 1, 7, True), ("tone", "Tone", 0, 3, False)]
    bad = client.post(url, {"name": "Demo", "votes_wanted": "1", "criteria-count": "1", "criteria-0-key": "x",
                            "criteria-0-scale_min": "5", "criteria-0-scale_max": "5"})
    assert bad.status_code == 400 and b"Rubric row 1 (x): the lowest score (5) must be below" in bad.content


def test_removing_a_member_asks_first_and_the_last_owner_has_no_remove(project, users):
    client = login(users["owner"])
    url = reverse("members", args=[project.slug])
    html = client.get(url).content.decode()
    assert f'href="?remove={users["annotator"].pk}#confirm-remove"' in html
    assert f'?remove={users["owner"].pk}' not in html and "the last owner stays" in html
    assert 'id="confirm-remove"' not in html
    confirm = client.get(url, {"remove": users["annotator"].pk}).content.decode()
    assert "Remove annotator (annotator) from Demo?" in confirm
    assert 'id="confirm-remove"' not in client.get(url, {"remove": users["owner"].pk}).content.decode()
    client.post(url, {"remove": users["annotator"].pk})
    assert not Membership.objects.filter(project=project, user=users["annotator"]).exists()


def test_403_and_404_are_pages_of_the_site(project, users):
    missing = login(users["outsider"]).get(reverse("project", args=[project.slug]))
    assert missing.status_code == 404 and b"This page does not exist" in missing.content
    assert b'href="/"' in missing.content
    refused = login(users["annotator"]).get(reverse("settings", args=[project.slug]))
    assert refused.status_code == 403 and b"Only the project&#x27;s owners and managers can do this." in refused.content


def test_the_current_tab_is_marked(project, users):
    html = login(users["owner"]).get(reverse("members", args=[project.slug])).content.decode()
    assert re.findall(r'<a class="button[^"]*current"[^>]*aria-current="page">(\w+)</a>', html) == ["Members"]


# --- jobs ----------------------------------------------------------------------------------------


def test_a_running_jobs_poll_swaps_only_its_live_parts(made, demo_pairs, users):
    client = login(users["manager"])
    step = made["step_dpo"]
    url = reverse("job", args=[demo_pairs.slug, step.pk])
    page = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in page and 'id="job-config"' in page
    poll = client.get(url + "?points=0", HTTP_HX_REQUEST="true").content.decode()
    assert poll.startswith('<div id="job-live"') and 'hx-trigger="every 2s"' in poll
    for part in ("job-status", "job-outcome", "job-steps", "job-result-json", "log"):
        assert re.search(rf'id="{part}"[^>]*hx-swap-oob="true"', poll), part
    assert "job-config" not in poll and "<details" not in poll  # what the user opened is never replaced
    assert 'id="messages"' not in poll  # still running: the launch message stays

    Job.objects.filter(pk=step.pk).update(status="succeeded", progress=1.0, message="succeeded")
    done = client.get(url + "?points=0", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done and re.search(r'id="messages" role="status" hx-swap-oob="true"></div>', done)
    assert 'id="job-plots"' not in done  # the curves did not change: not reloaded


def test_curves_are_plotted_and_one_off_values_are_a_table(made, demo_pairs, users):
    client = login(users["manager"])
    html = client.get(reverse("job", args=[demo_pairs.slug, made["rm_job"].pk])).content.decode()
    plots = re.findall(r'plot\.png\?metric=([^&"]+)', html)
    assert plots == ["train/loss"]
    summary = re.search(r'<table class="list compact" id="run-summary">.*?</table>', html, re.S).group(0)
    assert "train/train_runtime" in summary and "eval_accuracy" in summary
    big = client.get(reverse("job_plot", args=[demo_pairs.slug, made["rm_job"].pk]), {"metric": "eval_accuracy"})
    assert big.status_code == 404  # a final value is not a curve
    assert "Held-out evaluation" in html and "longer response wins" in html


def test_models_worse_than_a_baseline_are_flagged_on_job_model_and_round(made, demo_pairs, users, cpu_only):
    client = login(users["manager"])
    dpo_page = client.get(reverse("job", args=[demo_pairs.slug, made["dpo_job"].pk])).content.decode()
    assert "Warning:</strong> Worse than its parent: the held-out margin did not rise" in dpo_page
    table = re.search(r'<table class="list" id="evaluation">.*?</table>', dpo_page, re.S).group(0)
    assert "before: the parent" in table and "-0.021" in table and "25.0%" in table
    assert "queue gpu (runs on CPU here)" in dpo_page
    model = client.get(reverse("model", args=[demo_pairs.slug, made["dpo"].pk])).content.decode()
    assert "Worse than its parent" in model
    rm = client.get(reverse("model", args=[demo_pairs.slug, made["rm"].pk])).content.decode()
    assert "Worse than “the longer response wins”: held-out accuracy 0.580 against 0.620" in rm
    models = client.get(reverse("models", args=[demo_pairs.slug])).content.decode()
    assert models.count("worse than its baseline") == 2
    project = client.get(reverse("project", args=[demo_pairs.slug])).content.decode()
    assert "Round 1:</strong> People preferred the parent: the new policy won 0.0%" in project
    assert "Worse than “the longer response wins”" in project


def test_a_pipeline_lists_its_steps_combines_their_progress_and_logs(made, demo_pairs, users):
    from training import jobs

    pipeline, step_rm = made["pipeline"], made["step_rm"]
    with open(jobs.log_path(step_rm), "w") as log:
        log.write("12:00:00 snapshot abc\n12:00:05 member 1: loading minilm\n")
    client = login(users["manager"])
    html = client.get(reverse("job", args=[demo_pairs.slug, pipeline.pk])).content.decode()
    assert 'value="0.5"' in html and "50%" in html  # (1 done + 0.5 running + 0 waiting) / 3
    steps = re.search(r'<ol class="steps">.*?</ol>', html, re.S).group(0)
    assert f'/jobs/{step_rm.pk}/">Reward model, job #{step_rm.pk}</a>' in steps
    assert f'DPO, job #{made["step_dpo"].pk}</a>' in steps and "Generate <span class=\"badge waiting\">" in steps
    assert "── step 1: Reward model" in html and "member 1: loading minilm" in html
    assert "Last log line: <code>12:00:05 member 1: loading minilm</code>" in html

    listing = client.get(reverse("jobs", args=[demo_pairs.slug])).content.decode()
    order = re.findall(r'<tr class="job-\w+( step)?">\s*<td[^>]*>(?:<span[^>]*>[^<]*</span>)*<a href="[^"]+">(\d+)</a>',
                       listing)
    position = [pk for _, pk in order].index(str(pipeline.pk))
    assert order[position + 1] == (" step", str(step_rm.pk)) and order[position + 2] == (" step",
                                                                                         str(made["step_dpo"].pk))


def test_the_project_page_says_each_status_once_and_names_generated_imports(made, demo_pairs, users):
    Job.objects.filter(pk=made["pipeline"].pk).update(status="succeeded", message="succeeded", progress=1.0)
    html = login(users["owner"]).get(reverse("project", args=[demo_pairs.slug])).content.decode()
    latest = re.search(r'<p id="latest-round">.*?</p>', html, re.S).group(0)
    assert re.sub(r"<[^>]+>", " ", latest).split().count("succeeded") == 1  # not "succeeded succeeded"
    imports = re.search(r'<table class="list stack" id="imports">.*?</table>', html, re.S).group(0)
    generate = made["generate"]
    assert f"round 1 answers, job #{generate.pk}" in imports and '<td data-label="By">manager</td>' in imports


def test_launch_forms_offer_choices_and_the_round_settings_as_fields(made, demo_pairs, users):
    client = login(users["manager"])
    html = client.get(reverse("jobs", args=[demo_pairs.slug])).content.decode()
    loss = re.search(r'<select id="reward_model-f-loss" name="loss"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="(\w+)"', loss) == ["bt", "bt_margin", "label_smoothing", "tie_aware"]
    assert re.search(r'<select id="round-f-method" name="method"', html)
    assert 'name="dpo.max_steps" value="8"' in html and 'name="dpo.json"' in html
    assert re.search(r'<select id="dpo-f-loss_type" name="loss_type"', html)
    assert re.search(r'name="rewards" value="pairwise_winrate"', html)

    response = client.post(reverse("jobs", args=[demo_pairs.slug]), {
        "kind": "round", "method": "dpo", "dpo.max_steps": "5", "dpo.batch_size": "2", "dpo.max_length": "256",
        "dpo.learning_rate": "0.0005", "dpo.min_pairs": "4", "dpo.json": '{"beta": 0.2}'})
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.filter(kind="round").order_by("-id").first()
    assert job.config["dpo"] == {"max_steps": 5, "batch_size": 2, "max_length": 256, "learning_rate": 0.0005,
                                 "min_pairs": 4, "beta": 0.2}
    assert job.config["train_reward_model"] is False  # an unticked box
    bad = client.post(reverse("jobs", args=[demo_pairs.slug]), {"kind": "round", "method": "dpo",
                                                               "dpo.json": "{max_steps: 5}"})
    assert bad.status_code == 400 and "Advanced settings of dpo: not valid JSON" in bad.content.decode()
    assert "{max_steps: 5}" in bad.content.decode()  # what was typed stays


def test_config_choices_match_what_the_configs_accept():
    from rewards.functions import BASE_REWARDS, SHAPING
    from rewards.losses import LOSSES
    from rewards.votes import VOTE_MODES
    from training.runners.dpo import DPO_LOSSES, DPOConfig
    from training.runners.grpo import GRPOConfig
    from training.runners.reward_model import RewardModelConfig

    def choices(config, name):
        return set(next(f for f in config.describe() if f["name"] == name)["choices"])

    assert choices(RewardModelConfig, "loss") == set(LOSSES)
    assert choices(RewardModelConfig, "votes") == set(VOTE_MODES)
    assert choices(DPOConfig, "loss_type") == set(DPO_LOSSES)
    assert choices(GRPOConfig, "shaping") == set(SHAPING)
    assert choices(GRPOConfig, "rewards") == {*BASE_REWARDS, "pairwise_winrate"}


def test_metrics_logged_once_are_not_curves(made):
    JobMetric.objects.create(job=made["dpo_job"], step=3, name="train/total_flos", value=1e12)
    from training.watch import metric_overview

    curves, summaries, points = metric_overview(made["dpo_job"])
    assert curves == ["train/loss"] and summaries == [("train/total_flos", 1e12)] and points == 9


def test_job_results_json_stays_valid(made, demo_pairs, users):
    html = login(users["manager"]).get(reverse("job", args=[demo_pairs.slug, made["rm_job"].pk])).content.decode()
    body = re.search(r'<pre class="json" id="job-result-json"[^>]*>(.*?)</pre>', html, re.S).group(1)
    assert json.loads(body.replace("&quot;", '"'))["eval_accuracy"] == 0.58
