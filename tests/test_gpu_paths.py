"""What the GPU path rests on, checked where there is no GPU: the tie-aware loss keeps its gradient
for bf16 inputs; device and precision come from one place; vLLM engines are held one at a time;
DPO / GRPO configs that ask for several GPUs are validated before queueing, refused by a worker
without them, and an `accelerate launch` of a run really happens (on the CPU, one process)."""

import json
from pathlib import Path

import pytest
import torch

from rewards.losses import pairwise_loss
from training.runners.base import ConfigError, RunFailed
from training.runners.distributed import launch_command
from training.runners.dpo import DPOConfig, train_dpo
from training.runners.generate import EngineSlot
from training.runners.grpo import GRPOConfig


def test_the_tie_aware_loss_keeps_its_gradient_for_bf16_inputs():
    tie = torch.tensor([True, True, True])
    low = torch.tensor([8.0, 0.5, -30.0], dtype=torch.bfloat16, requires_grad=True)
    loss = pairwise_loss(low, "tie_aware", tie=tie)
    loss.backward()
    full = torch.tensor([8.0, 0.5, -30.0], requires_grad=True)
    pairwise_loss(full, "tie_aware", tie=tie).backward()

    assert loss.dtype == torch.float32
    assert torch.isfinite(low.grad.float()).all() and low.grad.dtype == torch.bfloat16
    # A tie pulls Δ toward 0 from either side, even far out, as in float32.
    assert low.grad[0] > 0 and low.grad[1] > 0 and low.grad[2] < 0
    assert torch.allclose(low.grad.float(), full.grad, rtol=2e-2)

    # The former form, 1 − σ(Δ − θ) − σ(−Δ − θ) clamped, in bf16: the gradient of a tie at Δ = 8 is gone.
    old = torch.tensor([8.0], dtype=torch.bfloat16, requires_grad=True)
    p_tie = 1 - torch.sigmoid(old - 1.0) - torch.sigmoid(-old - 1.0)
    (-torch.log(p_tie.clamp_min(1e-6))).sum().backward()
    assert old.grad[0] == 0


def test_the_other_losses_compute_in_float32_and_keep_their_values():
    delta = torch.tensor([2.0, -1.0], dtype=torch.bfloat16)
    assert pairwise_loss(delta, "bt").dtype == torch.float32
    assert round(pairwise_loss(delta.float(), "bt").item(), 4) == 0.7201
    margin = torch.tensor([1.0, 0.0], dtype=torch.bfloat16)
    assert round(pairwise_loss(delta, "bt_margin", margin=margin).item(), 3) == 0.813


def test_device_and_precision_are_chosen_in_one_place(monkeypatch):
    from rewards import devices
    from training.runners import base

    assert base.device is devices.device and base.use_bf16 is devices.use_bf16
    monkeypatch.setenv("PREFLOOP_DEVICE", "cpu")
    assert devices.precision() == "fp32" and devices.load_dtype() == torch.float32
    assert devices.trainer_precision() == {"bf16": False, "fp16": False, "use_cpu": True}


def test_one_vllm_engine_at_a_time():
    events, alive = [], []

    def build(key):
        alive.append(key)
        assert len(alive) == 1, "two engines at once"
        events.append(f"build {key}")
        return f"engine {key}"

    def teardown(engine):
        alive.pop()
        events.append(f"teardown {engine}")

    slot = EngineSlot(build, teardown)
    assert slot.get("new") == "engine new" and slot.get("new") == "engine new"
    assert slot.get("parent") == "engine parent"
    slot.release()
    slot.release()
    assert events == ["build new", "teardown engine new", "build parent", "teardown engine parent"]
    assert alive == []


@pytest.mark.parametrize("config_class", [DPOConfig, GRPOConfig])
@pytest.mark.parametrize(("values", "field", "words"), [
    ({"num_processes": 0}, "num_processes", "between 1"),
    ({"num_processes": 65}, "num_processes", "between 1"),
    ({"num_processes": "two"}, "num_processes", "whole number"),
    ({"accelerate_config": "ds.yaml"}, "accelerate_config", "absolute path"),
    ({"accelerate_config": "/etc/accelerate/ds.txt"}, "accelerate_config", ".yaml"),
])
def test_launch_fields_are_validated(config_class, values, field, words):
    with pytest.raises(ConfigError) as refused:
        config_class.from_dict(values)
    assert refused.value.field == field and words in refused.value.message


def test_the_api_refuses_a_bad_launch_config_before_queueing(project, api_for):
    from training.models import Job

    client = api_for("owner")
    refused = client.post("/api/v1/jobs/", {"project": project.slug, "kind": "dpo",
                                            "config": {"num_processes": 0}}, format="json")
    assert refused.status_code == 400 and "config.num_processes" in refused.json()
    in_round = client.post("/api/v1/jobs/", {"project": project.slug, "kind": "round",
                                             "config": {"method": "grpo", "grpo": {"accelerate_config": "x.yaml"}}},
                           format="json")
    assert in_round.status_code == 400 and "grpo.accelerate_config" in json.dumps(in_round.json())
    assert not Job.objects.exists()


def test_the_launch_command_runs_this_module_once_per_gpu(tmp_path):
    command = launch_command("dpo", tmp_path / "request.json", 4)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4" and "--multi_gpu" in command
    assert command[-4:] == ["-m", "training.runners.launched", "dpo", str(tmp_path / "request.json")]
    with_file = launch_command("grpo", tmp_path / "r.json", 1, "/etc/accelerate/zero2.yaml")
    assert with_file[with_file.index("--config_file") + 1] == "/etc/accelerate/zero2.yaml"
    assert "--multi_gpu" not in with_file  # the file says how


def preference_pairs(path: Path, count: int = 24) -> Path:
    rows = [{"prompt": f"Say something kind about the number {i}.", "chosen": f"{i} is a fine number.",
             "rejected": f"{i} is awful."} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_worker_without_the_gpus_asked_for_refuses_the_run(tmp_path):
    with pytest.raises(RunFailed, match="asks for 2 GPUs; this worker has 0"):
        train_dpo(preference_pairs(tmp_path / "pairs.jsonl"), tmp_path / "out", DPOConfig.from_dict({"num_processes": 2}))
    with pytest.raises(RunFailed, match="does not exist on this worker"):
        train_dpo(preference_pairs(tmp_path / "pairs.jsonl"), tmp_path / "out",
                  DPOConfig.from_dict({"accelerate_config": str(tmp_path / "missing.yaml")}))


def tiny_policy(folder: Path) -> Path:
    """A one-layer Llama with SmolLM2's tokenizer and chat template: DPO on it takes seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    from rewards.backbones import smollm2_path

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Recorder:
    def __init__(self):
        self.progress_seen, self.metrics, self.lines = [], {}, []

    def progress(self, fraction, message=""):
        self.progress_seen.append((fraction, message))

    def metric(self, step, name, value):
        self.metrics.setdefault(name, []).append(value)

    def log(self, line):
        self.lines.append(line)

    def should_stop(self):
        return False

    def checkpoint(self):
        pass


@pytest.mark.ml
def test_a_dpo_run_relaunches_itself_through_accelerate(tmp_path):
    accelerate_config = tmp_path / "cpu.yaml"
    accelerate_config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
                                 "num_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n")
    config = DPOConfig.from_dict({"base_model": str(tiny_policy(tmp_path / "policy")), "max_steps": 2,
                                  "batch_size": 2, "max_length": 64, "min_pairs": 4, "eval_fraction": 0.25,
                                  "threads": 1, "accelerate_config": str(accelerate_config)})
    recorder = Recorder()
    result = train_dpo(preference_pairs(tmp_path / "pairs.jsonl"), tmp_path / "out", config, reporter=recorder)

    assert any("accelerate.commands.launch" in line for line in recorder.lines)
    assert result.metrics["steps"] == 2 and "heldout_margin_after" in result.metrics
    assert recorder.progress_seen[-1] == (1.0, "done") and recorder.metrics.get("train/loss")
    assert (tmp_path / "out" / "prefloop.json").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / ".launch").exists()
