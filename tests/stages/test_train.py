"""Training and evaluation: budgets, resumption, and a tiny model that actually learns."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from firsthand.artifacts import load_records
from firsthand.contract import InvalidInputError
from firsthand.inference.agents import ModelAgent, RandomAgent
from firsthand.models import TinyConfig, create_tiny
from firsthand.registry import make
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import build
from firsthand.stages.collect import collect
from firsthand.stages.evaluate import run_episodes, summarize
from firsthand.stages.train import TrainConfig, plan_budget, train


def test_every_method_gets_il_budget() -> None:
    config = TrainConfig(epochs=2, batch_size=16, budget="matched")
    il = plan_budget("il", 100, 0, config)
    assert il == [("expert", 14)]
    iwm = plan_budget("iwm", 100, 900, config)
    assert [k for k, _ in iwm] == ["iwm", "expert"] and sum(s for _, s in iwm) == 14 and iwm[0][1] == 7
    assert plan_budget("iwm", 100, 48, config) == [("iwm", 3), ("expert", 11)]  # one IWM epoch fits
    assert plan_budget("sr", 100, 100, config) == [("sr+expert", 14)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    collect("household", "train", 8, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=2))
    return {m: build(m, root / "branches", root / m) and root / m for m in ("il", "iwm", "sr")}


def _tiny(data: dict[str, Path], out: Path) -> Path:
    texts = (r["prompt"] + r["completion"] for m in data for r in load_records(data[m]))
    return create_tiny(texts, out, TinyConfig(hidden_size=64, intermediate_size=128, layers=2, heads=2))


@pytest.mark.slow
def test_iwm_resumes_after_its_first_stage(data: dict[str, Path], tmp_path: Path) -> None:
    base = _tiny(data, tmp_path / "base")
    config = TrainConfig(epochs=1, batch_size=8, budget="matched")
    first = train("iwm", data, base, tmp_path / "run", config)
    stages = first["stages"]
    assert [s["data"] for s in stages] == ["iwm", "expert"]
    il_budget = plan_budget("il", len(load_records(data["il"])), 0, config)[0][1]
    assert sum(s["steps"] for s in stages) == first["count"] == il_budget
    assert first["count"] == sum(
        s for _, s in plan_budget("iwm", len(load_records(data["il"])), len(load_records(data["iwm"])), config)
    )
    # Interrupt after stage 1: remove what stage 2 and the end wrote, then run again.
    stage1 = tmp_path / "run" / "stage1-iwm" / "stage.json"
    before = stage1.stat().st_mtime_ns
    (tmp_path / "run" / "manifest.json").unlink()
    shutil.rmtree(tmp_path / "run" / "stage2-expert")
    again = train("iwm", data, base, tmp_path / "run", config)
    assert stage1.stat().st_mtime_ns == before  # stage 1 was not redone
    assert again["count"] == first["count"] and (tmp_path / "run" / "model" / "config.json").exists()


@pytest.mark.slow
def test_a_train_manifest_hashes_the_weights_and_is_the_same_in_any_folder(
    data: dict[str, Path], tmp_path: Path
) -> None:
    config = TrainConfig(epochs=1, batch_size=8)
    first = train("il", data, _tiny(data, tmp_path / "a" / "base"), tmp_path / "a" / "run", config)
    assert "model/model.safetensors" in first["files"] and first["model"] == "model"
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copied run folder is the same finished run
    assert train("il", data, tmp_path / "b" / "base", tmp_path / "b" / "run", config) == first
    shutil.copytree(tmp_path / "a" / "base", tmp_path / "c" / "base")  # trained again elsewhere: same hash
    again = train("il", data, tmp_path / "c" / "base", tmp_path / "c" / "run", config)
    assert again["content_hash"] == first["content_hash"]
    with pytest.raises(InvalidInputError, match="finished train stage.*train.epochs: 1 there, 2 now"):
        train("il", data, tmp_path / "a" / "base", tmp_path / "a" / "run", TrainConfig(epochs=2, batch_size=8))


def test_the_model_carries_its_prompt_settings_and_progress_is_reported(data: dict[str, Path], tmp_path: Path) -> None:
    from contextlib import contextmanager

    from firsthand.artifacts import read_manifest, read_model_prompt
    from firsthand.prompts import PromptConfig

    bars: dict[str, list[int]] = {}

    @contextmanager
    def progress(description: str, total: int):  # noqa: ANN202
        bars[description] = [total]
        yield bars[description].append

    manifest = train("il", data, _tiny(data, tmp_path / "base"), tmp_path / "run", TrainConfig(epochs=1, batch_size=8),
                     progress=progress)  # fmt: skip
    built = read_manifest(data["il"], "build")["config"]["prompt"]
    assert read_model_prompt(tmp_path / "run" / manifest["model"]) == PromptConfig(**built)
    (total, *steps) = bars["train il seed 0"]
    assert total == manifest["count"] == sum(steps)


def test_completion_only_loss_masks_the_prompt(data: dict[str, Path], tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from firsthand.models import load
    from firsthand.stages.train import _conversational

    model, tokenizer = load(_tiny(data, tmp_path / "base"), for_training=True)
    records = load_records(data["il"])[:2]
    args = SFTConfig(
        output_dir=str(tmp_path / "o"),
        completion_only_loss=True,
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=1024,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(_conversational(records)), processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labelled = batch["input_ids"][0][batch["labels"][0] != -100]
    text = tokenizer.decode(labelled)
    assert text.startswith(records[0]["completion"]) and records[0]["prompt"][:40] not in text


def test_the_completion_loss_equals_trls_in_value_and_gradient(data: dict[str, Path], tmp_path: Path) -> None:
    """Scoring only labelled positions changes the work, not the loss: TRL's trainer is the reference."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from firsthand.models import load
    from firsthand.stages.train import _conversational, completion_trainer, sft_config

    records = load_records(data["sr"])[:4] + load_records(data["il"])[:4]  # long and short completions
    base = _tiny(data, tmp_path / "base")
    results = []
    for cls in (SFTTrainer, completion_trainer()):
        model, tokenizer = load(base, for_training=True)
        trainer = cls(
            model=model,
            args=sft_config(TrainConfig(batch_size=8), 1, tmp_path / cls.__name__),
            train_dataset=Dataset.from_list(_conversational(records)),
            processing_class=tokenizer,
        )
        trainer.model.train()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in trainer.model.parameters()]))
    (trl_loss, trl_grads), (loss, grads) = results
    assert loss == pytest.approx(trl_loss, rel=1e-5)
    for a, b in zip(trl_grads, grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_random_agent_and_summary() -> None:
    tasks = make("household", "id_test").tasks(6)
    results = run_episodes("household", "id_test", tasks, RandomAgent(0), batch_size=4, max_steps=5)
    assert [r.task for r in results] == tasks
    assert all(r.steps <= 5 and (r.won or r.truncated) for r in results)
    summary = summarize(results)
    assert summary["episodes"] == 6 and summary["invalid_rate"] == 0.0
    assert summary["ci_low"] <= summary["success"] <= summary["ci_high"]


def test_batched_and_single_episodes_agree(data: dict[str, Path], tmp_path: Path) -> None:
    agent = ModelAgent.from_path(_tiny(data, tmp_path / "base"), max_new_tokens=6)
    tasks = make("household", "id_test").tasks(3)
    batched = run_episodes("household", "id_test", tasks, agent, batch_size=3, max_steps=2)
    single = run_episodes("household", "id_test", tasks, agent, batch_size=1, max_steps=2)
    assert [r.actions for r in batched] == [r.actions for r in single]


def test_length_groups() -> None:
    from firsthand.inference.agents import MIN_GROUP, length_groups

    lengths = [170 + (i * 37) % 41 for i in range(50)]
    groups = length_groups(lengths, max_new_tokens=24)
    assert len(groups) == 50 // MIN_GROUP and sorted(i for g in groups for i in g) == list(range(50))
    assert all(len(g) >= MIN_GROUP for g in groups)
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths)  # similar lengths together: little padding in each call
    assert length_groups(lengths, max_new_tokens=200) == [list(range(50))]  # thoughts: one call
    assert length_groups(lengths[:31], max_new_tokens=24) == [list(range(31))]


def _inputs_at_various_states(split: str, n: int, prompt: Any) -> list[Any]:
    """Policy inputs 0-3 expert steps into each of the first `n` tasks: prompts of different lengths."""
    from firsthand.inference.agents import AgentInput
    from firsthand.prompts import policy_prompt

    env, inputs = make("household", split), []
    for j, task in enumerate(env.tasks(n)):
        observation, info = env.reset(task)
        history = []
        for action in env.expert_actions()[: j % 4]:
            history.append((observation, action))
            observation = env.step(action).observation
        inputs.append(AgentInput(policy_prompt(info["goal"], history, observation, [], prompt), []))
    return inputs


def test_response_prefix_starts_the_reply(data: dict[str, Path], tmp_path: Path) -> None:
    from firsthand.inference.agents import AgentInput

    plain = ModelAgent.from_path(_tiny(data, tmp_path / "base"), max_new_tokens=4)
    prefixed = ModelAgent.from_path(tmp_path / "base", max_new_tokens=4, response_prefix="Action: open")
    assert prefixed.render("p") == plain.render("p") + "Action: open"
    [reply] = prefixed.act([AgentInput("Goal: x", [])])
    assert reply.startswith("Action: open")
    # what follows the prefix is the model's continuation of exactly that text
    tokens = plain.tokenizer(plain.render("Goal: x") + "Action: open", return_tensors="pt", add_special_tokens=False)
    import torch

    with torch.inference_mode():
        pad = plain.tokenizer.pad_token_id
        out = plain.model.generate(**tokens, max_new_tokens=4, do_sample=False, pad_token_id=pad)
    continuation = plain.tokenizer.decode(out[0, tokens["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply == "Action: open" + continuation


@pytest.mark.slow
def test_policy_proposer_with_a_real_model(data: dict[str, Path], tmp_path: Path) -> None:
    """`branch --proposer policy` samples from a model; untrained proposals are refilled from valid actions."""
    model = _tiny(data, tmp_path / "base")
    experts = data["il"].parent / "experts"
    manifest = branch(experts, tmp_path / "b", BranchConfig(k=3, proposer="policy"), model=str(model))
    from firsthand.artifacts import load_branches

    trajectories, records = load_branches(tmp_path / "b")
    assert manifest["stats"]["refilled"] > 0 and manifest["stats"]["resync_mismatches"] == 0
    states = {(r.trajectory_id, r.step_index) for r in records}
    for key in states:
        alternatives = [r.action for r in records if (r.trajectory_id, r.step_index) == key and not r.expert]
        assert len(set(alternatives)) == len(alternatives) == 3
    assert {r.proposer for r in records} == {"policy"}


@pytest.mark.slow
def test_tiny_model_learns_to_beat_random_on_train_tasks(household_il: Path) -> None:
    """Learning test: IL on 10 household demonstrations (the `household_il` fixture), then play those tasks;
    random rarely wins them."""
    from firsthand.prompts import PromptConfig

    prompt = PromptConfig(history=2, show_valid_actions=False)
    tasks = make("household", "train").tasks(10)
    trained = summarize(
        run_episodes(
            "household",
            "train",
            tasks,
            ModelAgent.from_path(household_il),
            prompt=prompt,
            max_steps=12,
        )
    )
    random_agent = summarize(run_episodes("household", "train", tasks, RandomAgent(0), prompt=prompt, max_steps=12))
    assert trained["success"] >= 0.5 and trained["success"] >= random_agent["success"] + 0.3, (trained, random_agent)

    # Batched evaluation generates short replies in groups of similar prompt length: the trained model
    # answers 34 prompts that way exactly as it answers each alone.
    from firsthand.inference.agents import length_groups

    agent = ModelAgent.from_path(household_il, max_new_tokens=24)
    inputs = _inputs_at_various_states("train", 34, prompt)
    lengths = [len(agent.tokenizer(agent.render(x.prompt))["input_ids"]) for x in inputs]
    assert len(length_groups(lengths, agent.max_new_tokens)) == 2
    replies = agent.act(inputs)
    assert len(set(replies)) > 5
    assert replies == [agent.act([x])[0] for x in inputs]


@pytest.mark.slow
def test_walk_pretraining_learns_the_environment_language(tmp_path: Path) -> None:
    from firsthand.models import load, pretrain_on_walks, random_walks

    walks = random_walks("household", 6, 5, seed=0, tasks=3)
    assert len(walks) == 6 and all("\n> " in w for w in walks)
    assert walks == random_walks("household", 6, 5, seed=0, tasks=3)  # deterministic
    # each action in a walk was valid where it was taken: replaying it reproduces the transcript
    env = make("household", "train")
    env.reset(env.tasks(3)[0])
    lines = walks[0].split("\n> ")
    for chunk in lines[1:]:
        action, _, observation = chunk.partition("\n")
        assert env.step(action).observation == observation.split("\n> ")[0]
    shape = dict(hidden_size=64, intermediate_size=128, layers=2, heads=2)
    config = TinyConfig(
        **shape, walk_steps=25, walk_episodes=40, walk_tasks=10, walk_length=8, walk_batch=8, walk_learning_rate=3e-3
    )
    base = create_tiny(walks * 4, tmp_path / "base", TinyConfig(**shape))
    model, tokenizer = load(base, for_training=True)
    losses = pretrain_on_walks(model, tokenizer, "household", config)
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


@pytest.mark.slow
def test_two_processes_train_like_one(data: dict[str, Path], tmp_path: Path) -> None:
    """`firsthand train` under torchrun on 2 CPU processes (DDP over gloo, the code path of a multi-GPU
    `accelerate launch`): each process takes half of every batch, so the global batch, the step budget and
    the loss curve are those of one process; only the main process writes the stage and model files."""
    import json
    import os
    import subprocess
    import sys

    command = ["train", "--method", "iwm", "--expert-data", str(data["il"]), "--data", str(data["iwm"])]
    command += ["--epochs", "1", "--batch-size", "4", "--budget", "matched"]  # whole batches: one or two processes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "firsthand.cli", *command, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "firsthand.cli", *command, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("model: ") == 1  # printed by the main process only
    runs = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("one", "two")]
    assert [s["data"] for s in runs[1]["stages"]] == ["iwm", "expert"]
    assert runs[0]["count"] == runs[1]["count"]
    for a, b in zip(runs[0]["stages"], runs[1]["stages"], strict=True):
        assert a["steps"] == b["steps"] and (a["processes"], b["processes"]) == (1, 2)
        losses = [h["loss"] for h in a["loss_history"]], [h["loss"] for h in b["loss_history"]]
        assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / name / "model" / "model.safetensors") for name in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert (tensor - weights[1][name]).abs().max() < 1e-3, name


def test_batch_must_split_over_the_processes(data: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    from firsthand.contract import InvalidInputError

    with pytest.raises(InvalidInputError, match="batch_size 4 does not split over 3 processes"):
        train("il", data, tmp_path / "unused", tmp_path / "run", TrainConfig(batch_size=4))
    assert not (tmp_path / "run").exists()


def test_a_model_without_its_prompt_settings_is_refused_unless_the_prompt_is_chosen(
    data: dict[str, Path], tmp_path: Path
) -> None:
    from firsthand.prompts import PromptConfig
    from firsthand.stages.evaluate import model_prompt, thinks

    base = _tiny(data, tmp_path / "base")  # a model folder that `firsthand train` did not write
    with pytest.raises(InvalidInputError, match="does not carry the prompt settings.*--history N"):
        model_prompt(base)
    assert model_prompt(base, history=3) == PromptConfig(history=3)
    assert not thinks(base)


def test_a_tiny_model_folder_is_not_reused_with_another_shape(data: dict[str, Path], tmp_path: Path) -> None:
    base = _tiny(data, tmp_path / "base")
    assert _tiny(data, tmp_path / "base") == base  # the same settings: reused
    with pytest.raises(InvalidInputError, match="other settings.*layers: 2 there, 3 now"):
        create_tiny([], base, TinyConfig(hidden_size=64, intermediate_size=128, layers=3, heads=2))


def test_bf16_follows_the_cpus_flags_and_the_models_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch says "AVX512" on CPUs with AMX: the flags decide, and only models large enough to gain."""
    import torch

    from firsthand import device

    if Path("/proc/cpuinfo").exists():  # Linux: the real flags are read
        assert {"fpu", "sse2"} <= device.cpu_flags()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for flags, small, large in [
        ({"avx2", "avx512f"}, False, False),  # no native bf16: emulated, slower than fp32
        ({"avx512f", "avx512_bf16"}, False, True),
        ({"avx512f", "amx_bf16", "amx_tile"}, False, True),
    ]:
        monkeypatch.setattr(device, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert device.fast_bf16(500_000) is small and device.fast_bf16(135_000_000) is large
        assert device.fast_bf16() is large  # size unknown: decided by the CPU alone


def test_sr_mixed_set_begins_every_record_with_a_thought() -> None:
    """The expert records of SR's mixed set carry the placeholder thought, so the first token of every target
    is "Thought" and greedy decoding is not pulled to act before thinking; IL and IWM stay as built."""
    import random

    from firsthand.prompts import PLACEHOLDER_THOUGHT
    from firsthand.stages.train import TrainConfig, stage_examples

    records = {
        "il": [{"prompt": "p1", "completion": "Action: look"}],
        "sr": [{"prompt": "p1", "completion": "Thought: If I chose 'x', ... So I will look.\nAction: look"}],
    }
    mixed = stage_examples("sr+expert", 1, records, TrainConfig(), random.Random(0))
    assert all(r["completion"].startswith("Thought: ") for r in mixed) and len(mixed) == 2
    assert f"Thought: {PLACEHOLDER_THOUGHT}\nAction: look" in [r["completion"] for r in mixed]
    assert stage_examples("expert", 1, records, TrainConfig(), random.Random(0)) == records["il"]
    plain = stage_examples("sr+expert", 1, records, TrainConfig(placeholder_thought=False), random.Random(0))
    assert "Action: look" in [r["completion"] for r in plain]


@pytest.mark.slow
def test_validation_picks_the_best_checkpoint_and_stops_after_its_patience(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """IL measured on validation tasks (training tasks after the demonstrations) every 10 steps: the model it
    ends with is the best checkpoint's (measured again, it scores what was recorded for that step), and it
    stops after `patience` validations without a better one."""
    from firsthand.prompts import PromptConfig
    from firsthand.validation import validator

    collect("household", "train", 3, tmp_path / "vexperts", skip=8)  # the 8 demonstrations' tasks come first
    branch(tmp_path / "vexperts", tmp_path / "vbranches", BranchConfig(k=1))
    build("il", tmp_path / "vbranches", tmp_path / "vil")
    records = load_records(tmp_path / "vil")
    demos = {r["trajectory_id"] for r in load_records(data["il"])}
    tasks = make("household", "train").tasks(11)[8:]
    assert not demos & {r["trajectory_id"] for r in records}
    check = validator("household", records, tasks, PromptConfig(), max_steps=6, max_new_tokens=12)
    texts = (r["prompt"] + r["completion"] for m in data for r in load_records(data[m]))
    base = create_tiny(texts, tmp_path / "base", TinyConfig(hidden_size=128, intermediate_size=344, layers=2))
    config = TrainConfig(epochs=40, batch_size=8, learning_rate=3e-3, validate_every=10, patience=2)
    manifest = train("il", data, base, tmp_path / "run", config, validator=check)
    stage = manifest["stages"][0]
    measured = stage["validation"]
    best = max(measured, key=lambda m: m["selection"])
    assert stage["best_step"] == best["step"] == min(m["step"] for m in measured if m["selection"] == best["selection"])
    later = [m for m in measured if m["step"] > best["step"]]
    assert len(later) <= 2 and manifest["count"] == stage["steps"] == measured[-1]["step"]
    if stage["steps"] < stage["planned_steps"]:  # stopped early: exactly `patience` validations after the best
        assert len(later) == 2
    from firsthand.models import load

    again = check.measure(*load(tmp_path / "run" / "model"))
    assert again["selection"] == pytest.approx(best["selection"])
    assert manifest["config"]["validation"]["tasks"] == tasks
    assert best["accuracy"] > 0  # it learned something the validation states show: the choice was not a tie at 0
    # teacher-forced accuracy is what greedy decoding would write: the same verdict state by state
    from firsthand.inference.agents import AgentInput, ModelAgent
    from firsthand.validation import teacher_forced

    agent = ModelAgent(*load(tmp_path / "run" / "model"), max_new_tokens=24)
    agent.model.eval()
    forced = teacher_forced(agent, check.prompts, check.completions)
    replies = agent.act([AgentInput(p, []) for p in check.prompts])
    greedy = [reply == c for reply, c in zip(replies, check.completions, strict=True)]
    assert forced == greedy and any(forced) and not all(forced)


def test_auxiliary_batches_keep_il_steps_and_add_world_model_records(data: dict[str, Path]) -> None:
    """iwm-aux and actobs: IL's step count, every batch the expert records IL would see then as many world-model
    records weighted by lambda (actobs: the expert's own next observations only)."""
    import random

    from firsthand.stages.train import auxiliary_batches

    records = {kind: load_records(data[kind]) for kind in ("il", "iwm")}
    config = TrainConfig(epochs=1, batch_size=4, aux_weight=0.2)
    il_steps = plan_budget("il", len(records["il"]), 0, config)[0][1]
    assert plan_budget("iwm-aux", len(records["il"]), len(records["iwm"]), config) == [("expert+iwm-aux", il_steps)]
    assert plan_budget("actobs", len(records["il"]), len(records["iwm"]), config) == [("expert+actobs", il_steps)]
    steps = len(records["il"]) // 4 + 2  # more than an epoch of the expert data
    batches = auxiliary_batches(records, "expert_transition", steps, config, random.Random(0))
    assert len(batches) == steps * 8
    for step in range(steps):
        batch = batches[8 * step : 8 * step + 8]
        assert [r["weight"] for r in batch] == [1.0] * 4 + [0.2] * 4
        assert all(r["completion"].startswith("Action: ") for r in batch[:4])
        assert all(r["kind"] == "expert_transition" for r in batch[4:])
    expert = [r["prompt"] + r["completion"] for r in batches if r["weight"] == 1.0]
    n = len(records["il"])
    assert sorted(expert[:n]) == sorted(r["prompt"] + r["completion"] for r in records["il"])  # epoch by epoch


def test_the_auxiliary_loss_weights_each_record_linearly(data: dict[str, Path], tmp_path: Path) -> None:
    """loss(lambda) = (expert tokens' CE + lambda x world-model tokens' CE) / all tokens, and weights of 1 give the
    unweighted loss: checked against the same batch with the records switched on and off."""
    import torch
    from datasets import Dataset

    from firsthand.models import load
    from firsthand.stages.train import _conversational, _with_weights, completion_trainer, sft_config

    records = load_records(data["il"])[:2] + load_records(data["iwm"])[:2]
    model, tokenizer = load(_tiny(data, tmp_path / "base"), for_training=True)
    trainer = completion_trainer()(
        model=model,
        args=sft_config(TrainConfig(batch_size=4), 1, tmp_path / "o"),
        train_dataset=Dataset.from_list(_conversational([{**r, "weight": 1.0} for r in records])),
        processing_class=tokenizer,
    )
    collate = _with_weights(trainer.data_collator)
    examples = [trainer.train_dataset[i] for i in range(4)]
    assert "weight" in examples[0]  # the column survives TRL's preparation

    def loss(weights: list[float] | None) -> float:
        batch = collate([{**e, "weight": w} for e, w in zip(examples, weights or [1.0] * 4, strict=True)])
        if weights is None:
            batch.pop("weight")
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, dict(batch)).item()

    expert, world = loss([1, 1, 0, 0]), loss([0, 0, 1, 1])
    assert loss([1, 1, 0.3, 0.3]) == pytest.approx(expert + 0.3 * world, rel=1e-5)
    assert loss([1, 1, 1, 1]) == pytest.approx(loss(None), rel=1e-6)


@pytest.mark.slow
def test_iwm_aux_trains_in_il_steps(data: dict[str, Path], tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=4, aux_weight=0.05)
    manifest = train("iwm-aux", data, _tiny(data, tmp_path / "base"), tmp_path / "run", config)
    il_steps = plan_budget("il", len(load_records(data["il"])), 0, config)[0][1]
    assert manifest["count"] == il_steps and manifest["stages"][0]["data"] == "expert+iwm-aux"
    assert manifest["stages"][0]["epochs"] == pytest.approx(il_steps * 4 / len(load_records(data["il"])))
