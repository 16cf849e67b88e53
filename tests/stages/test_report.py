"""Reports: pooled table, paired comparison with IL, per-seed spread, the chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firsthand.artifacts import write_json_atomic
from firsthand.pipeline import get_preset
from firsthand.stages.evaluate import EpisodeResult, episode_records, summarize
from firsthand.stages.report import write_report

TASKS = [f"t{i}" for i in range(10)]


def _evaluate(out: Path, method: str, seed: int, split: str, won: set[str]) -> dict:
    results = [EpisodeResult(t, t in won, 3, 0, t not in won) for t in TASKS]
    summary = {"method": method, "seed": seed, "split": split, **summarize(results)}
    write_json_atomic(
        out / "eval" / f"{method}-seed{seed}-{split}.json", {"summary": summary, "episodes": episode_records(results)}
    )
    return summary


def test_report_pairs_methods_on_the_same_episodes_and_shows_each_seed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = []
    for seed in (0, 1):
        for split in ("id_test", "ood_test"):
            rows.append(_evaluate(tmp_path, "il", seed, split, {"t0", "t1", "t2", "t3"}))
            # IWM wins what IL wins plus t4 (seed 0) or loses t3 (seed 1): +1 and -1 of 10 episodes.
            iwm = {"t0", "t1", "t2", "t3", "t4"} if seed == 0 else {"t0", "t1", "t2"}
            rows.append(_evaluate(tmp_path, "iwm", seed, split, iwm))
            rows.append(_evaluate(tmp_path, "random", seed, split, set()))
    preset = get_preset("quickstart", seeds=(0, 1), eval_episodes=10)
    results = write_report(tmp_path, preset, rows)

    iwm = results["versus_il"]["iwm"]["id_test"]
    assert iwm["episodes"] == 20 and iwm["difference"] == pytest.approx(0.0)
    assert iwm["ci_low"] < 0 < iwm["ci_high"]
    assert "random" not in results["versus_il"] and "il" not in results["versus_il"]
    assert results["results"]["iwm"]["id_test"]["seeds"]["0"]["success"] == pytest.approx(0.5)

    text = (tmp_path / "results.md").read_text()
    assert "| IWM | +0.0 (" in text  # the paired comparison
    assert "| IWM | id_test | 50.0 | 30.0 | 40.0 +- 14.1 |" in text  # each seed, then mean +- sd
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["versus_il"] == results["versus_il"]
