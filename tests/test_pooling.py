"""A study run one seed per part: the parts' results.json files pool into the tables of the run of all seeds."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from firsthand import InvalidInputError
from firsthand.pipeline import get_preset, run
from firsthand.pooling import pool_runs
from firsthand.stages.report import episode_wins, outcome_wins, outcomes, pool

POOLED = ("results", "versus_il", "evaluations", "outcomes", "failures")


@pytest.mark.slow
def test_parts_of_one_seed_each_pool_into_the_run_of_both_seeds(tmp_path: Path) -> None:
    preset = get_preset("smoke", methods=("il", "iwm"), budgets=("matched",), train_episodes=6, jobs=1)
    preset = replace(preset, splits=("id_test",))
    both = run(replace(preset, seeds=(0, 1)), tmp_path / "both")
    parts = []
    for seed in (0, 1):
        run(replace(preset, seeds=(seed,)), tmp_path / f"run-{seed}")
        kept = tmp_path / "kept" / f"seed-{seed}"  # what a study keeps of a part: its results.json alone
        kept.mkdir(parents=True)
        shutil.copy(tmp_path / f"run-{seed}" / "results.json", kept)
        parts.append(kept)

    pooled = pool_runs(parts, tmp_path / "pooled")

    assert pooled["seeds"] == [0, 1] and set(pooled["results"]["il"]["id_test"]["seeds"]) == {"0", "1"}
    read_back = outcome_wins(pooled["outcomes"], "score")
    for seed in (0, 1):  # every episode's outcome, as the run of both seeds' evaluation files hold it
        assert read_back("iwm", seed, "id_test") == episode_wins(tmp_path / "both", "score")("iwm", seed, "id_test")
    for key in POOLED:
        assert pooled[key] == both[key], key
    assert (tmp_path / "pooled" / "results.md").read_text() == (tmp_path / "both" / "results.md").read_text()
    assert pooled["pooled_from"] == {str(parts[0]): [0], str(parts[1]): [1]}


def _part(folder: Path, **settings: object) -> Path:
    """A finished part as pooling reads it: its results.json (settings, seeds, outcomes)."""
    config = {**asdict(get_preset("smoke")), **settings}
    folder.mkdir(parents=True)
    results = {"config": config, "seeds": list(config["seeds"]), "outcomes": {"tasks": {}, "won": {}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_parts_with_other_settings_or_the_same_seed_are_refused(tmp_path: Path) -> None:
    first = _part(tmp_path / "a", seeds=[0])
    with pytest.raises(InvalidInputError, match=r"eval_episodes: 4 in '.*/a', 9 in '.*/b'"):
        pool_runs([first, _part(tmp_path / "b", seeds=[1], eval_episodes=9)], tmp_path / "out")
    with pytest.raises(InvalidInputError, match="seed 0 is in both"):
        pool_runs([first, _part(tmp_path / "c", seeds=[0])], tmp_path / "out")
    with pytest.raises(InvalidInputError, match="holds no results.json"):
        pool_runs([first, tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(InvalidInputError, match="is one of the runs"):
        pool_runs([first], first)


def test_outcomes_carry_what_seed_and_task_intervals_need(tmp_path: Path) -> None:
    """Outcomes written compactly read back the same, and give the interval over seeds and tasks."""
    from firsthand.layout import RunLayout

    layout, rows = RunLayout(tmp_path), []
    for seed, won in ((0, [1, 0, 1, 1]), (1, [0, 0, 1, 0])):
        path = layout.eval_file("il", seed, "id_test", "greedy")
        path.parent.mkdir(parents=True, exist_ok=True)
        episodes = [{"task": f"t{i}", "won": bool(w)} for i, w in enumerate(won)]
        path.write_text(json.dumps({"episodes": episodes}))
        rows.append(
            {"method": "il", "seed": seed, "split": "id_test", "wins": sum(won), "episodes": 4}
            | {"mean_steps": 5.0, "invalid_rate": 0.0, "success": sum(won) / 4, "ci_low": 0.0, "ci_high": 1.0}
        )
    played = outcomes(tmp_path, rows)
    assert played["tasks"] == {"id_test": ["t0", "t1", "t2", "t3"]}
    assert played["won"]["greedy"]["il"] == {"0": {"id_test": "1011"}, "1": {"id_test": "0010"}}
    assert outcome_wins(played)("il", 1, "id_test") == episode_wins(tmp_path)("il", 1, "id_test")
    assert outcome_wins(played)("il", 2, "id_test") is None
    from_files, from_outcomes = pool(rows, episode_wins(tmp_path)), pool(rows, outcome_wins(played))
    assert from_outcomes == from_files and from_files["il"]["id_test"]["interval"] == "seeds_and_tasks"
