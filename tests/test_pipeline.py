"""The main job's comparison: both budget rules, the compute control and IWM+SR, on the smoke preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firsthand import InvalidInputError, UnknownNameError
from firsthand.artifacts import load_records, read_manifest
from firsthand.pipeline import get_preset, run
from firsthand.stats import steps_per_epoch


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    preset = get_preset(
        "smoke", methods=("il", "iwm", "sr", "iwm+sr"), budgets=("matched", "paper"), compute_control=True, jobs=2
    )  # two processes side by side: the CLI's smoke test covers one
    return out, run(preset, out)


def test_every_method_under_both_rules_and_the_compute_control(results: tuple[Path, dict]) -> None:
    out, res = results
    labels = set(res["results"])
    assert labels == {"random", "il", "il-compute", "iwm", "iwm-paper", "sr", "sr-paper", "iwm+sr", "iwm+sr-paper"}
    steps = {label: read_manifest(out / "train" / f"{label}-seed0", "train")["count"] for label in labels - {"random"}}
    il = steps["il"]
    assert steps["iwm"] == steps["sr"] == steps["iwm+sr"] == il  # matched: IL's budget
    one_iwm_epoch = steps_per_epoch(len(load_records(out / "data" / "iwm")), 8)  # smoke: batch 8
    assert steps["iwm-paper"] == one_iwm_epoch + il  # paper: a world-model epoch, then IL's budget
    assert steps["sr-paper"] > il and steps["iwm+sr-paper"] == one_iwm_epoch + steps["sr-paper"]
    assert steps["il-compute"] == max(steps.values())  # IL for as long as the longest method
    for label in labels - {"random"}:  # every row states its steps and tokens
        cell = res["results"][label]["id_test"]
        assert cell["train_steps"] == steps[label] and cell["train_tokens"] > 0
    assert res["results"]["iwm-paper"]["id_test"]["train_tokens"] > res["results"]["il"]["id_test"]["train_tokens"]


def test_the_report_shows_compute_and_both_comparisons(results: tuple[Path, dict]) -> None:
    out, res = results
    text = (out / "results.md").read_text()
    assert "| optimizer steps | training tokens |" in text
    assert "| IWM (paper budget) |" in text and "| IL, equal compute |" in text and "| IWM+SR |" in text
    assert "Difference from IL in points" in text
    assert "Difference from IL trained for as many steps as the longest method" in text
    assert set(res["versus_il_compute"]) == set(res["results"]) - {"random", "il", "il-compute"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["budgets"] == ["matched", "paper"] and saved["config"]["compute_control"] is True


def test_unknown_methods_and_budgets_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="valid budgets: matched, paper"):
        get_preset("smoke", budgets=("equal",))
    with pytest.raises(UnknownNameError, match="iwm\\+sr"):
        get_preset("smoke", methods=("il", "rl"))
    with pytest.raises(InvalidInputError, match="compute control"):
        from firsthand.stages.train import TrainConfig, plan_budget

        plan_budget("sr", 10, 10, TrainConfig(steps=5))


def test_a_run_refuses_writers_its_model_cannot_be() -> None:
    with pytest.raises(InvalidInputError, match="STaR's rationales need a policy model that writes language"):
        get_preset("smoke", methods=("il", "star"))
    with pytest.raises(InvalidInputError, match="--reflector policy need a policy model"):
        get_preset("smoke", reflector="policy")
    preset = get_preset("smoke", model="smollm2-135m", methods=("il", "sr", "star"), reflector="policy", base_url=None)
    assert preset.writer.reflector == "policy"
    from firsthand.pipeline import _writer

    assert _writer(preset, "sr").reflector == "smollm2-135m" == _writer(preset, "star").reflector
    assert _writer(get_preset("smoke"), "sr").reflector == "template"
