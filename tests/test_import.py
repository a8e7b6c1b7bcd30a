"""Import: every format from the real shared data, idempotence, and all-or-nothing refusal."""

import csv
import gzip
import io
import json

import pytest

from annotate.importing import IMPORTED_USERNAME, ImportFailed, import_path, import_stream, parse_hh
from annotate.models import Candidate, Comparison, ImportBatch, Judgment, Prompt, content_hash

from .conftest import ALPACA_JUDGMENTS, HH_DEV, shared_file

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def counts(project):
    return (
        Prompt.objects.filter(project=project).count(),
        Candidate.objects.filter(prompt__project=project).count(),
        Comparison.objects.filter(project=project).count(),
        Judgment.objects.filter(project=project).count(),
    )


def alpaca_rows(n=None, model="falcon-7b-instruct"):
    path = shared_file(ALPACA_JUDGMENTS / f"{model}_vs_text_davinci_003.jsonl")
    with open(path) as handle:
        rows = [json.loads(line) for line in handle]
    return rows[:n] if n else rows


def as_bytes(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode("utf-8"))


def test_hh_dialogues_become_chat_prompts_and_labelled_pairs(project):
    result = import_path(project, shared_file(HH_DEV), format="auto", batch_size=500)

    assert result.format == "hh"
    assert result.rows == 1600
    assert result.judgments_added == result.comparisons_added == Comparison.objects.filter(project=project).count()
    assert result.comparisons_added >= 1590  # a handful of prompts repeat with the same pair
    project.refresh_from_db()
    assert project.conversational
    # Spot-check the label: the judged winner is the chosen dialogue's last assistant turn.
    with gzip.open(HH_DEV, "rt") as handle:
        first = json.loads(handle.readline())
    parsed = parse_hh(first)
    chosen = Candidate.objects.get(prompt__project=project, text=parsed.responses[0][0],
                                   prompt__content_hash=content_hash(parsed.prompt_messages))
    judgment = Judgment.objects.select_related("comparison__candidate_a", "comparison__candidate_b",
                                               "comparison__prompt").get(comparison__prompt=chosen.prompt)
    winner = judgment.comparison.candidate_a if judgment.choice == "a" else judgment.comparison.candidate_b
    loser = judgment.comparison.candidate_b if judgment.choice == "a" else judgment.comparison.candidate_a
    assert winner == chosen
    assert first["chosen"].endswith(winner.text)
    assert first["rejected"].endswith(loser.text)
    prompt = judgment.comparison.prompt
    assert prompt.messages[0]["role"] == "user"
    assert prompt.messages[-1]["role"] == "user"
    assert first["chosen"].startswith("\n\nHuman: " + prompt.messages[0]["content"])
    assert Judgment.objects.filter(project=project).exclude(annotator__username=IMPORTED_USERNAME).count() == 0


def test_reimporting_the_same_file_adds_nothing(project):
    path = shared_file(HH_DEV)
    import_path(project, path, batch_size=400)
    before = counts(project)

    again = import_path(project, path, batch_size=700)

    assert counts(project) == before
    assert (again.prompts_added, again.candidates_added, again.comparisons_added, again.judgments_added) == (0, 0, 0, 0)
    assert ImportBatch.objects.filter(project=project).count() == 2


def test_an_empty_model_answer_is_a_response_not_an_error(project):
    """gpt35_turbo_instruct answered instruction 409 with nothing; the pair still imports."""
    path = shared_file(ALPACA_JUDGMENTS / "gpt35_turbo_instruct_vs_text_davinci_003.jsonl")
    result = import_path(project, path)
    assert result.rows == 805
    assert Candidate.objects.filter(prompt__project=project, text="").count() == 1


def test_alpaca_eval_judgments_keep_generators_and_skip_undecided(project):
    rows = alpaca_rows()
    decided = sum(1 for r in rows if r["preference"] in (1, 2, 1.0, 2.0))
    path = ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"

    result = import_path(project, path)

    assert result.format == "alpaca_eval"
    assert result.judgments_added == decided
    sources = set(Candidate.objects.filter(prompt__project=project).values_list("source", flat=True))
    assert sources == {"text_davinci_003", "falcon-40b-instruct"}
    # The stored choice points at the response the file preferred.
    row = next(r for r in rows if r["preference"] == 2)
    judgment = Judgment.objects.get(project=project, comparison__prompt__text=row["instruction"])
    winner = judgment.comparison.candidate_a if judgment.choice == "a" else judgment.comparison.candidate_b
    assert winner.text == row["output_2"]


def test_csv_pairs_with_quotes_and_newlines(project):
    rows = alpaca_rows(40)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "prompt", "response_a", "response_b", "preference", "source_a"])
    writer.writeheader()
    for r in rows:
        writer.writerow({"id": r["id"], "prompt": r["instruction"], "response_a": r["output_1"],
                         "response_b": r["output_2"], "preference": {1: "a", 2: "b"}.get(r["preference"], ""),
                         "source_a": r["generator_1"]})

    result = import_stream(project, as_bytes(buffer.getvalue()), filename="pairs.csv")

    assert result.format == "pairs"
    assert result.rows == 40
    assert Prompt.objects.get(project=project, external_id="0").text == rows[0]["instruction"]
    assert any("\n" in c.text for c in Candidate.objects.filter(prompt__project=project))


def test_json_array_and_gzip_jsonl_give_the_same_rows(project, users):
    rows = [{"prompt": r["instruction"], "response_a": r["output_1"], "response_b": r["output_2"],
             "preference": r["preference"]} for r in alpaca_rows(30)]
    array = json.dumps(rows, indent=2)
    jsonl = "\n".join(json.dumps(r) for r in rows)

    from_array = import_stream(project, as_bytes(array), filename="rows.json")
    from_gzip = import_stream(project, io.BytesIO(gzip.compress(jsonl.encode())), filename="rows.jsonl.gz")

    assert from_array.rows == from_gzip.rows == 30
    assert from_array.comparisons_added == 30
    assert from_gzip.comparisons_added == 0  # the same content, whatever the container


def test_candidates_are_paired_into_every_comparison(project):
    models = ["gpt4_1106_preview", "llama-2-7b-chat-hf", "text_davinci_003"]
    outputs = {}
    for model in models:
        with open(shared_file(ALPACA_JUDGMENTS.parent / "outputs" / f"{model}.jsonl")) as handle:
            outputs[model] = [json.loads(line) for line in handle][:10]
    lines = [
        json.dumps({"prompt": outputs[models[0]][i]["instruction"],
                    "responses": [{"text": outputs[m][i]["output"], "source": m} for m in models]})
        for i in range(10)
    ]

    result = import_stream(project, as_bytes("\n".join(lines)))

    assert result.format == "candidates"
    assert result.candidates_added == 30
    assert result.comparisons_added == 30  # 3 pairs per prompt
    assert result.judgments_added == 0
    assert set(Comparison.objects.filter(project=project).values_list("status", flat=True)) == {"open"}


def test_trl_conversational_rows_make_a_chat_project(project):
    row = {"prompt": [{"role": "user", "content": "Name a prime number."}],
           "chosen": [{"role": "assistant", "content": "7"}],
           "rejected": [{"role": "assistant", "content": "8"}]}

    result = import_stream(project, as_bytes(json.dumps(row)))

    project.refresh_from_db()
    assert project.conversational
    assert result.judgments_added == 1
    assert Prompt.objects.get(project=project).messages == row["prompt"]


def test_gold_labels_become_known_answers_not_votes(project):
    result = import_stream(project, as_bytes("\n".join(json.dumps(r) for r in alpaca_rows(20))), labels="gold")

    assert result.judgments_added == 0
    gold = Comparison.objects.filter(project=project, origin="gold")
    assert gold.count() == sum(1 for r in alpaca_rows(20) if r["preference"] in (1, 2))
    assert set(gold.values_list("gold_choice", flat=True)) <= {"a", "b"}
    assert set(gold.values_list("status", flat=True)) == {"open"}


def test_a_bad_row_names_line_and_field_and_writes_nothing(project):
    lines = [json.dumps({"prompt": r["instruction"], "response_a": r["output_1"], "response_b": r["output_2"]})
             for r in alpaca_rows(10)]
    lines[6] = json.dumps({"prompt": "What?", "response_a": "This."})

    with pytest.raises(ImportFailed) as failure:
        import_stream(project, as_bytes("\n".join(lines)), batch_size=2)  # 3 batches written before

    assert "line 7" in str(failure.value)
    assert "response_b" in str(failure.value)
    assert counts(project) == (0, 0, 0, 0)
    assert not ImportBatch.objects.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a", "response_a": "b", "response_b": "c"}\n{"prompt": "x", broken\n', "line 2: not valid JSON"),
        ('{"prompt": "a", "response_a": "b", "response_b": "c", "preference": "maybe"}', "field 'preference'"),
        ('{"prompt": 5, "response_a": "b", "response_b": "c"}', "field 'prompt': must be text"),
        ('{"question": "a", "answer": "b"}', "Accepted formats: pairs"),
        ('[{"prompt": "a", "response_a": "b", "response_b": "c"}, 3]', "record 2: expected a JSON object"),
        ("prompt,response_a\nhello,there\n", "field 'response_b'"),
        ("", "empty"),
        ('{"chosen": "no dialogue here", "rejected": "nor here"}', "not an HH dialogue"),
    ],
)
def test_malformed_files_are_refused_with_a_reason(project, content, expected):
    with pytest.raises(ImportFailed) as failure:
        import_stream(project, as_bytes(content))
    assert expected in str(failure.value)
    assert counts(project) == (0, 0, 0, 0)


def test_unknown_format_lists_the_accepted_ones(project):
    with pytest.raises(ImportFailed) as failure:
        import_stream(project, as_bytes("{}"), format="xml")
    assert "pairs, hh, alpaca_eval, candidates" in str(failure.value)


def test_import_command_reports_counts_and_refuses_bad_files(project, tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": r["instruction"], "response_a": r["output_1"],
                                          "response_b": r["output_2"], "preference": r["preference"]})
                              for r in alpaca_rows(25)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response_a": "a", "response_b": "b"}\n{"prompt": "p2"}\n')
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("import_data", str(good), "--project", project.slug, stdout=out)
    assert "25 rows (pairs)" in out.getvalue()
    with pytest.raises(CommandError, match="line 2, field 'response_a': is missing"):
        call_command("import_data", str(bad), "--project", project.slug)
    with pytest.raises(CommandError, match="Accepted formats: auto, pairs"):
        call_command("import_data", str(good), "--project", project.slug, "--format", "tsv")

