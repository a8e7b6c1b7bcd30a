"""What a policy job starts from: the prompts its reward model reads (as that model was trained on
them)."""

import io
import json

from annotate.importing import import_stream
from training.kinds.grpo import write_prompts
from training.snapshots import make_snapshot, snapshot_path


def import_rows(project, rows):
    import_stream(project, io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()), format="pairs")


def test_grpo_hands_each_prompt_as_the_reward_models_training_pairs_had_it(project, tmp_path):
    """A chat prompt makes the project conversational, and then its snapshots carry even a plain-text
    prompt as one user turn: GRPO's prompts file must say the same, or the reward model scores a
    prompt it never saw rendered that way."""
    import_rows(project, [
        {"prompt": "Name a fruit.", "response_a": "Apple.", "response_b": "Rock.", "preference": "a"},
        {"prompt": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hi."},
                    {"role": "user", "content": "Again."}], "response_a": "Hello!", "response_b": "No.",
         "preference": "a"},
    ])
    project.refresh_from_db()
    assert project.conversational
    snapshot = make_snapshot(project, "trl-preference")
    trained = [json.loads(line)["prompt"] for line in snapshot_path(snapshot).read_text().splitlines()]
    written = write_prompts(project, project.prompts.order_by("id"), {}, tmp_path / "prompts.jsonl")
    handed = [json.loads(line)["prompt"] for line in written.read_text().splitlines()]
    assert len(trained) == 2
    assert sorted(map(json.dumps, handed)) == sorted(map(json.dumps, trained))
