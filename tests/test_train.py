"""Training and evaluation: budgets, resumption, and a tiny model that actually learns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firsthand.branching import BranchConfig, branch
from firsthand.build import build, load_records
from firsthand.evaluate import ModelAgent, RandomAgent, run_episodes, summarize
from firsthand.experts import collect
from firsthand.models import TinyConfig, create_tiny
from firsthand.registry import make
from firsthand.train import TrainConfig, plan_budget, train


def test_every_method_gets_il_budget() -> None:
    config = TrainConfig(epochs=2, batch_size=16)
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


def test_iwm_resumes_after_its_first_stage(data: dict[str, Path], tmp_path: Path) -> None:
    base = _tiny(data, tmp_path / "base")
    config = TrainConfig(epochs=1, batch_size=8)
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


def test_completion_only_loss_masks_the_prompt(data: dict[str, Path], tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from firsthand.models import load
    from firsthand.train import _conversational

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
