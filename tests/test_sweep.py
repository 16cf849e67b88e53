"""Sweeps: branch subsets, the points' settings, the table and plot, and a sweep run and resumed end to end."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from firsthand import InvalidInputError, UnknownNameError
from firsthand.artifacts import load_branches, read_manifest
from firsthand.models import TinyConfig, tiny_parameters
from firsthand.pipeline import get_preset
from firsthand.stages.branch import BranchConfig, branch, subset
from firsthand.stages.collect import collect
from firsthand.sweep import Sweep, sweep, sweep_markdown, sweep_plot, width_config


@pytest.fixture(scope="module")
def branched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("branched")
    collect("household", "train", 6, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=4))
    return root


def test_a_subset_keeps_the_first_trajectories_and_the_first_k_alternatives(branched: Path, tmp_path: Path) -> None:
    trajectories, branches = load_branches(branched / "branches")
    manifest = subset(branched / "branches", tmp_path / "sub", trajectories=4, k=2)
    kept, sub = load_branches(tmp_path / "sub")
    assert [t.id for t in kept] == [t.id for t in trajectories[:4]]
    ids = {t.id for t in kept}
    expected = []  # written out plainly: per state, alternatives in their order, then the expert's transition
    for t in kept:
        for i in range(len(t.steps)):
            state = [b for b in branches if b.trajectory_id == t.id and b.step_index == i]
            expected += [b for b in state if not b.expert][:2] + [b for b in state if b.expert]
    assert sub == expected
    assert {b.trajectory_id for b in sub} == ids
    per_state = Counter((b.trajectory_id, b.step_index) for b in sub if not b.expert)
    assert max(per_state.values()) == 2
    assert manifest["config"]["branch"]["k"] == 2 and manifest["config"]["trajectories"] == 4
    assert manifest["stats"]["states"] == sum(len(t.steps) for t in kept)
    # the experts it names are the source's, seen from the subset's folder
    assert (tmp_path / "sub" / manifest["config"]["experts"] / "manifest.json").is_file()
    # finished: asked again with the same settings it is read, not rewritten; with others it is refused
    assert subset(branched / "branches", tmp_path / "sub", trajectories=4, k=2)["created"] == manifest["created"]
    with pytest.raises(InvalidInputError, match="other settings"):
        subset(branched / "branches", tmp_path / "sub", trajectories=3, k=2)


def test_a_subset_outside_the_source_is_refused(branched: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="k from 1 to 4"):
        subset(branched / "branches", tmp_path / "a", k=8)
    with pytest.raises(InvalidInputError, match="1 to 6 trajectories"):
        subset(branched / "branches", tmp_path / "b", trajectories=7)


def test_tiny_parameters_counts_the_real_model(tmp_path: Path) -> None:
    from firsthand.models import create_tiny

    for config in (TinyConfig(layers=1, vocab_size=512), width_config(TinyConfig(layers=2, vocab_size=512), 96)):
        folder = tmp_path / f"w{config.hidden_size}"
        create_tiny(["go to desk 1", "take pen 1 from desk 1"], folder, config)
        from transformers import AutoModelForCausalLM

        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]  # what the tokenizer learned
        assert vocab < config.vocab_size
        assert AutoModelForCausalLM.from_pretrained(folder).num_parameters() == tiny_parameters(config, vocab)
    assert width_config(TinyConfig(), 256).intermediate_size == 688  # the default's MLP ratio, 344 / 128


def test_points_take_their_value() -> None:
    preset = get_preset("smoke")
    assert Sweep("demos", (0.5,), preset).point(0.5, 12)[1].train_episodes == 6
    assert Sweep("k", (1, 2), preset).largest().k == 2
    name, point = Sweep("width", (64,), preset).point(64, 12)
    assert name == "width-64" and point.tiny.hidden_size == 64 and point.tiny.intermediate_size == 172


@pytest.mark.parametrize(
    ("axis", "values", "message"),
    [
        ("size", (1,), "valid axes: demos, k, width"),
        ("demos", (0.5, 1.5), "in \\(0, 1\\]; got 1.5"),
        ("demos", (0.01,), "keeps none"),
        ("k", (1, 1), "distinct"),
        ("k", (2.5,), "whole numbers"),
        ("width", (66,), "not divisible by the tiny model's 4 attention heads"),
    ],
)
def test_bad_sweeps_are_refused_before_any_work(axis: str, values: tuple, message: str, tmp_path: Path) -> None:
    error = UnknownNameError if axis == "size" else InvalidInputError
    with pytest.raises(error, match=message):
        sweep(Sweep(axis, values, get_preset("smoke")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _cell(success: float) -> dict:
    return {"success": success, "ci_low": success / 2, "ci_high": (1 + success) / 2, "episodes": 50}


def test_the_table_and_plot_show_every_point_and_method(tmp_path: Path) -> None:
    points = [
        {
            "value": v,
            "name": f"demos-{v:g}",
            "trajectories": int(150 * v),
            "k": 8,
            "parameters": 658048,
            "results": {
                "random": {"id_test": _cell(0.0)},
                "il": {"id_test": _cell(0.1 * i), "ood_test": _cell(0.05 * i)},
                "sr-paper": {"id_test": _cell(0.2), "ood_test": _cell(0.3)},
                "il-compute": {"id_test": _cell(0.25), "ood_test": _cell(0.3)},
            },
            "versus_il": {"sr-paper": {"id_test": {"difference": 0.1, "ci_low": -0.05, "ci_high": 0.2}}},
            "versus_il_compute": {"sr-paper": {"ood_test": {"difference": -0.02, "ci_low": -0.1, "ci_high": 0.06}}},
        }
        for i, v in enumerate((0.125, 0.5, 1.0))
    ]
    splits = ["id_test", "ood_test"]
    summary = {"axis": "demos", "env": "household", "seeds": [0, 1], "splits": splits, "points": points}
    text = sweep_markdown(summary)
    row = "| 0.125 (18) | SR (paper budget) | 20.0 (10.0-60.0) | 30.0 (15.0-65.0) | +10.0 (-5.0 to +20.0) | - |"
    assert row in text
    assert "| 1 (150) | IL | 20.0 (10.0-60.0) | 10.0 (5.0-55.0) | - | - |" in text
    assert "Random" not in text
    assert "| 0.5 (75) | SR (paper budget) | - | -2.0 (-10.0 to +6.0) |" in text  # against IL of equal compute
    sweep_plot(summary, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_runs_resumes_and_refuses_other_settings(smoke_sweep: tuple) -> None:
    spec, out, summary = smoke_sweep
    assert [p["name"] for p in summary["points"]] == ["k-1", "k-2"]
    for point, k in zip(summary["points"], (1, 2), strict=True):
        folder = out / "points" / point["name"]
        assert read_manifest(folder / "branches", "branch")["config"]["branch"]["k"] == k
        assert json.loads((folder / "preset.json").read_text())["k"] == k
        assert set(point["results"]) == {"random", "il", "iwm", "sr"}  # IL trains for the validated budget
    # the k = 1 point's world-model data holds one alternative per state, the k = 2 point's two
    iwm = [read_manifest(out / "points" / f"k-{k}" / "data" / "iwm", "build")["count"] for k in (1, 2)]
    assert iwm[1] > iwm[0]
    assert (out / "sweep.md").read_text().count("| IWM |") == 2 and (out / "sweep.png").is_file()
    assert 'href="points/k-2/report.html"' in (out / "report.html").read_text()  # the sweep's page links each point's
    trained = read_manifest(out / "points" / "k-2" / "train" / "iwm-seed0", "train")["created"]
    assert sweep(spec, out)["points"] == summary["points"]  # resumed: every stage read back, nothing retrained
    assert read_manifest(out / "points" / "k-2" / "train" / "iwm-seed0", "train")["created"] == trained
    # values dropped (the largest K too): the remaining point is read back, not redone
    assert sweep(Sweep("k", (2,), spec.preset), out)["points"] == summary["points"][1:]
    assert sweep(Sweep("k", (1,), spec.preset), out)["points"] == summary["points"][:1]
    assert read_manifest(out / "points" / "k-2" / "train" / "iwm-seed0", "train")["created"] == trained
    with pytest.raises(InvalidInputError, match="holds a sweep with other settings"):
        sweep(Sweep("k", (1, 2), replace(spec.preset, eval_episodes=3)), out)
    with pytest.raises(InvalidInputError, match="already holds a finished branch stage made with other settings"):
        sweep(Sweep("k", (1, 4), spec.preset), out)  # more alternatives than were branched: branch again elsewhere
