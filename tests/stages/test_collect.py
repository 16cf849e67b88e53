from __future__ import annotations

import json
from pathlib import Path

import pytest

from firsthand import InvalidInputError, ReplayError, UnknownNameError, make
from firsthand.artifacts import load_trajectories, read_jsonl
from firsthand.replay import replay
from firsthand.stages.collect import collect


def test_collect_writes_verified_trajectories(tmp_path: Path) -> None:
    manifest = collect("household", "train", 30, tmp_path / "e", shard_size=8)
    assert manifest["stage"] == "collect" and manifest["count"] == 30
    assert manifest["content_hash"].startswith("sha256:") and "python" in manifest["versions"]
    trajectories = load_trajectories(tmp_path / "e")
    assert [t.task for t in trajectories] == [f"train-{i}" for i in range(30)]
    for t in trajectories:
        assert t.won and t.env == "household" and t.goal
        for a, b in zip(t.steps, t.steps[1:], strict=False):
            assert a.next_observation == b.observation
        assert all(s.action in s.valid_actions for s in t.steps)


def test_collect_twice_is_a_no_op(tmp_path: Path) -> None:
    first = collect("household", "train", 5, tmp_path / "e")
    assert collect("household", "train", 5, tmp_path / "e") == first


def test_collect_unknown_environment(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="'alfworld'.*household"):
        collect("alfworld", "train", 5, tmp_path / "e")


def _demo(task: str) -> dict:
    env = make("household", "train")
    env.reset(task)
    return {"task": task, "actions": env.expert_actions()}


def test_import_keeps_good_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    good = [_demo(f"train-{i}") for i in range(4)]
    invalid = dict(good[1], actions=["fly to the moon", *good[1]["actions"]])
    short = dict(good[2], actions=good[2]["actions"][:-1])
    lines = [
        json.dumps(good[0]),
        "{not json",
        json.dumps(invalid),
        json.dumps(short),
        json.dumps({"actions": ["look"]}),
        json.dumps(good[3]),
    ]
    source = tmp_path / "demos.jsonl"
    source.write_text("\n".join(lines) + "\n")
    manifest = collect("household", "train", 0, tmp_path / "e", source=source, shard_size=2)
    assert manifest["count"] == 2
    assert [t.task for t in load_trajectories(tmp_path / "e")] == ["train-0", "train-3"]
    assert all(t.source == "imported" for t in load_trajectories(tmp_path / "e"))
    rejected = {r["line"]: r["reason"] for r in map(json.loads, (tmp_path / "e" / "rejected.jsonl").open())}
    assert set(rejected) == {2, 3, 4, 5}
    assert "not valid JSON" in rejected[2]
    assert "'fly to the moon' is not valid" in rejected[3]
    assert "does not win" in rejected[4]
    assert '"task"' in rejected[5]


def test_import_full_trajectory_records_checks_observations(tmp_path: Path) -> None:
    collect("household", "train", 2, tmp_path / "e")
    records = [t.to_dict() for t in load_trajectories(tmp_path / "e")]
    records[1]["steps"][1]["observation"] = "You arrive somewhere else."
    source = tmp_path / "demos.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    manifest = collect("household", "train", 0, tmp_path / "i", source=source)
    assert manifest["count"] == 1
    assert "step 1: the recorded observation" in (tmp_path / "i" / "rejected.jsonl").read_text()


def test_missing_demonstration_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="nope.jsonl"):
        collect("household", "train", 0, tmp_path / "e", source=tmp_path / "nope.jsonl")


def test_replay_rejects_actions_after_the_end() -> None:
    env = make("household", "train")
    env.reset("train-1")
    actions = env.expert_actions()
    with pytest.raises(ReplayError, match="still to go"):
        replay(env, "train-1", [*actions, "look"])


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    collect("household", "train", 3, tmp_path / "e")
    (tmp_path / "e" / "manifest.json").unlink()  # pretend it was interrupted
    with pytest.raises(InvalidInputError, match="unfinished run with other settings.*episodes"):
        collect("household", "train", 4, tmp_path / "e")
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_a_finished_stage_is_not_reused_with_other_settings(tmp_path: Path) -> None:
    first = collect("household", "train", 3, tmp_path / "e")
    with pytest.raises(InvalidInputError, match="finished collect stage.*episodes: 3 there, 5 now"):
        collect("household", "train", 5, tmp_path / "e")
    with pytest.raises(InvalidInputError, match="split: 'train' there, 'id_test' now"):
        collect("household", "id_test", 3, tmp_path / "e")
    assert collect("household", "train", 3, tmp_path / "e") == first  # the same settings reuse it


def test_negative_episodes_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="--episodes must be at least 0.*-1"):
        collect("household", "train", -1, tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_a_damaged_shard_is_named_when_read(tmp_path: Path) -> None:
    collect("household", "train", 4, tmp_path / "e", shard_size=2)
    shard = tmp_path / "e" / "trajectories-00001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text(lines[0])  # cut at a line boundary: still valid JSONL, one record short
    with pytest.raises(InvalidInputError, match="trajectories-00001.jsonl.*differs from what the collect stage wrote"):
        load_trajectories(tmp_path / "e")
    shard.write_text(lines[0] + lines[1][:40] + "\n")  # cut inside a line
    with pytest.raises(InvalidInputError, match="trajectories-00001.jsonl' line 2 is not valid JSON"):
        list(read_jsonl(shard))
