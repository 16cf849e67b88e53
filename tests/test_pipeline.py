"""The main job's comparison: IL's budget chosen on validation (auto), the other rules beside it, each method's
compute control, IWM+SR and both decision modes, on the smoke preset."""

from __future__ import annotations

import json
from dataclasses import replace
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
        "smoke",
        methods=("il", "iwm", "sr", "iwm+sr", "iwm-aux"),
        budgets=("auto", "matched", "paper"),
        compute_control=True,
        jobs=2,
    )  # two processes side by side: the CLI's smoke test covers one
    return out, run(replace(preset, aux_weights=(0.05, 1.0)), out)


def test_every_method_from_il_validated_budget_and_its_compute_control(results: tuple[Path, dict]) -> None:
    out, res = results
    methods = {f"{m}{rule}" for m in ("iwm", "sr", "iwm+sr") for rule in ("", "-matched", "-paper")}
    grid = {"iwm-aux"}  # trained once per lambda, reported at the one validation chose
    manifests = {
        label: read_manifest(out / "train" / f"{label}-seed0", "train")
        for label in set(res["results"]) - {"random"} - grid
    }
    steps = {label: m["count"] for label, m in manifests.items()}
    il = manifests["il"]["stages"][0]
    budget = il["best_step"]  # IL's budget: the step its validation chose, within what it trained
    assert il["validation"] and budget <= il["steps"] <= il["planned_steps"]
    assert budget == min(
        v["step"] for v in il["validation"] if v["selection"] == max(x["selection"] for x in il["validation"])
    )
    one_iwm_epoch = steps_per_epoch(len(load_records(out / "data" / "iwm")), 8)  # smoke: batch 8
    assert steps["iwm"] == one_iwm_epoch + budget  # auto: the paper's rule from the validated budget
    assert steps["iwm-matched"] == steps["sr-matched"] == steps["iwm+sr-matched"] == budget
    assert steps["sr"] > budget and steps["iwm+sr"] == one_iwm_epoch + steps["sr"]
    epochs_budget = steps_per_epoch(len(load_records(out / "data" / "il")), 8)  # paper: IL's fixed epoch (smoke: 1)
    assert steps["iwm-paper"] == one_iwm_epoch + epochs_budget
    for label in methods:  # validated rules pick their checkpoint; paper trains its fixed budget, unvalidated
        assert ("validation" in manifests[label]["config"]) == (not label.endswith("-paper")), label
        cell = res["results"][label]["id_test"]
        assert cell["train_steps"] == steps[label] and cell["checkpoint_step"] <= steps[label]
        control = res["compute_of"][label]["0"]  # IL of exactly the method's steps in seed 0, no validation
        assert control == f"il-steps{steps[label]}" and steps[control] == steps[label]
        assert "validation" not in manifests[control]["config"]
    assert set(res["versus_il_compute"]) == set(res["versus_il"]) == methods | grid


def test_the_auxiliary_weight_is_chosen_on_validation(results: tuple[Path, dict]) -> None:
    """iwm-aux trains once per lambda of the grid; the point its validation scored best is the one evaluated
    and reported, and the choice with every point's score is in results.json and results.md."""
    out, res = results
    points = {w: read_manifest(out / "train" / f"iwm-aux-w{w}-seed0", "train") for w in ("0.05", "1")}
    scores = {w: max(v["selection"] for v in m["stages"][-1]["validation"]) for w, m in points.items()}
    choice = res["aux_weights"]["iwm-aux"]["0"]
    assert choice["validation"] == scores
    best = max(scores.values())
    assert choice["chosen"] == min(float(w) for w, v in scores.items() if v == best)  # ties: the smaller lambda
    il_steps = read_manifest(out / "train" / "il-seed0", "train")["stages"][0]["best_step"]
    assert all(m["count"] == il_steps for m in points.values())  # world modeling takes no imitation step
    assert all(m["config"]["train"]["aux_weight"] == float(w) for w, m in points.items())
    cell = res["results"]["iwm-aux"]["id_test"]
    assert cell["train_steps"] == il_steps
    assert sorted(p.name for p in (out / "eval").glob("iwm-aux*")) == [
        "iwm-aux-seed0-id_test.json",
        "iwm-aux-seed0-ood_test.json",
    ]
    row = json.loads((out / "eval" / "iwm-aux-seed0-id_test.json").read_text())["summary"]
    assert row["aux_weight"] == choice["chosen"]
    assert f"- IWM, auxiliary loss, seed 0: lambda {choice['chosen']:g}" in (out / "results.md").read_text()


def test_the_report_shows_compute_both_comparisons_and_both_decision_modes(results: tuple[Path, dict]) -> None:
    out, res = results
    text = (out / "results.md").read_text()
    assert "| optimizer steps | checkpoint step | training tokens |" in text
    assert "| IWM (paper budget) |" in text and "| IWM (matched budget) |" in text and "| IWM+SR |" in text
    assert "Difference from IL in points" in text and "detectable (id_test)" in text
    assert "Difference from IL trained for the same optimizer steps" in text and "| IL, " in text
    assert "the likeliest valid action" in text
    score = res["evaluations"]["score"]
    assert set(score["pooled"]) == set(res["results"]) and set(score["compared"]) == set(res["versus_il"])
    for label in set(res["results"]) - {"random"}:  # scoring chooses among valid actions: never an invalid one
        assert score["pooled"][label]["id_test"]["invalid_rate"] == 0.0
        assert (out / "eval-score" / f"{label}-seed0-id_test.json").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["budgets"] == ["auto", "matched", "paper"] and saved["config"]["compute_control"] is True


def test_unknown_methods_and_budgets_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="valid budgets: auto, paper, matched"):
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


def test_each_seed_has_its_own_compute_control() -> None:
    """Under auto the seeds' validated budgets differ, so each method's compute control is the IL run of its
    step count in its own seed."""
    from firsthand.layout import Label
    from firsthand.pipeline import Training, _compute_of
    from firsthand.stages.train import TrainConfig

    def t(label: str, seed: int, steps: int) -> Training:
        parsed = Label.parse(label)
        return Training(parsed, seed, parsed.method, TrainConfig(), [("expert", steps)])

    runs = [t("il", 0, 30), t("sr", 0, 70), t("il-steps70", 0, 70), t("il", 1, 20), t("sr", 1, 50)]
    runs.append(t("il-steps50", 1, 50))
    assert _compute_of(runs) == {"sr": {"0": "il-steps70", "1": "il-steps50"}}


def test_a_low_data_arm_is_added_to_a_finished_run(tmp_path: Path) -> None:
    """`arms` runs the same comparison on the first N demonstrations in out/demos-N; added to a finished run,
    it resumes that run instead of refusing its settings."""
    preset = get_preset("smoke", methods=("il",), evaluations=("greedy",), train_episodes=8)
    first = run(preset, tmp_path)
    assert "arms" not in first
    with_arm = run(replace(preset, arms=(4,)), tmp_path)
    arm = tmp_path / "demos-4"
    assert json.loads((arm / "preset.json").read_text())["train_episodes"] == 4
    assert read_manifest(arm / "experts", "collect")["count"] == 4
    assert set(with_arm["arms"]) == {"4"} and "il" in with_arm["arms"]["4"]
    assert json.loads((tmp_path / "results.json").read_text())["arms"] == with_arm["arms"]
    assert "# The arm at 4 demonstrations" in (tmp_path / "results.md").read_text()
    with pytest.raises(InvalidInputError, match="--arms 8"):
        get_preset("smoke", train_episodes=8, arms=(8,))


def test_settings_added_later_keep_old_runs_resumable() -> None:
    from firsthand.artifacts import config_differences

    saved = {"seeds": [0], "train": {"epochs": 1}}
    assert config_differences(saved, {**saved, "select_by": "success"}) == []
    assert config_differences(saved, {**saved, "select_by": "accuracy"}) == [("select_by", None, "accuracy")]
    assert config_differences(saved, {**saved, "other": 1}) == [("other", None, 1)]


def test_a_run_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    from dataclasses import asdict

    preset = get_preset("smoke")
    (tmp_path / "preset.json").write_text(json.dumps({**asdict(preset), "seeds": [5]}))
    with pytest.raises(InvalidInputError, match=r"seeds: \[5\] there, \[0\] now"):
        run(preset, tmp_path)
