from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from firsthand import InvalidInputError, UnknownNameError, make
from firsthand.artifacts import load_branches, load_trajectories, read_manifest
from firsthand.contract import Branch
from firsthand.envs.household import HouseholdEnv
from firsthand.stages.branch import (
    BranchConfig,
    PolicyProposer,
    ProposalContext,
    branch,
    branch_trajectory,
    effective_shard_size,
    new_stats,
)
from firsthand.stages.collect import collect


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experts")
    collect("household", "train", 24, out)
    return out


def _records(directory: Path) -> list[Branch]:
    return load_branches(directory)[1]


def test_k_distinct_alternatives_with_true_next_states(experts: Path, tmp_path: Path) -> None:
    manifest = branch(experts, tmp_path / "b", BranchConfig(k=4, shard_size=5))
    records = _records(tmp_path / "b")
    trajectories = {t.id: t for t in load_trajectories(experts)}
    states = {(r.trajectory_id, r.step_index) for r in records}
    assert len(states) == sum(len(t.steps) for t in trajectories.values()) == manifest["stats"]["states"]
    env = make("household", "train")
    for tid, i in states:
        here = [r for r in records if (r.trajectory_id, r.step_index) == (tid, i)]
        step = trajectories[tid].steps[i]
        alternatives = [r.action for r in here if not r.expert]
        assert len(alternatives) == len(set(alternatives)) == 4
        assert step.action not in alternatives and set(alternatives) <= set(step.valid_actions)
        [expert] = [r for r in here if r.expert]
        assert expert.action == step.action and expert.next_observation == step.next_observation
        for r in here:  # the recorded outcome is what really happens: replay from scratch and check
            replayed = replay_prefix(env, trajectories[tid].task, trajectories[tid].actions[:i])
            assert replayed == step.observation == r.observation
            assert env.step(r.action).observation == r.next_observation
    assert manifest["count"] == len(records) == 5 * len(states)
    assert manifest["stats"]["resync_mismatches"] == 0


def replay_prefix(env: HouseholdEnv, task: str, actions: list[str]) -> str:
    observation, _ = env.reset(task)
    for a in actions:
        observation = env.step(a).observation
    return observation


def test_snapshot_and_replay_modes_agree(experts: Path, tmp_path: Path) -> None:
    a = branch(experts, tmp_path / "s", BranchConfig(k=3, mode="snapshot"))
    b = branch(experts, tmp_path / "r", BranchConfig(k=3, mode="replay"))
    assert [r.to_dict() for r in _records(tmp_path / "s")] == [r.to_dict() for r in _records(tmp_path / "r")]
    assert a["stats"]["replayed_steps"] == 0 and b["stats"]["replayed_steps"] > 0


def test_at_least_ten_shards_so_progress_and_resumption_stay_fine(experts: Path, tmp_path: Path) -> None:
    assert [effective_shard_size(n, 16) for n in (1, 9, 10, 24, 27, 160, 400)] == [1, 1, 1, 2, 2, 16, 16]
    seen: list[int] = []
    manifest = branch(experts, tmp_path / "b", BranchConfig(k=1), on_progress=seen.append)  # 24, shard_size 16
    assert seen == [2] * 12 and len(list((tmp_path / "b").glob("branches-*.jsonl"))) == 12
    assert manifest["stats"]["trajectories"] == 24


def test_workers_do_not_change_the_records(experts: Path, tmp_path: Path) -> None:
    one = branch(experts, tmp_path / "one", BranchConfig(k=2, shard_size=4), workers=1)
    two = branch(experts, tmp_path / "two", BranchConfig(k=2, shard_size=4), workers=2)
    assert one["content_hash"] == two["content_hash"]


def test_interrupted_run_resumes_to_the_same_records(experts: Path, tmp_path: Path) -> None:
    full = branch(experts, tmp_path / "full", BranchConfig(k=3, shard_size=4))
    calls = 0

    def interrupt(n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        branch(experts, tmp_path / "cut", BranchConfig(k=3, shard_size=4), on_progress=interrupt)
    done = sorted(p.name for p in (tmp_path / "cut").glob("branches-*.jsonl"))
    assert len(done) == 2 and not (tmp_path / "cut" / "manifest.json").exists()
    resumed = branch(experts, tmp_path / "cut", BranchConfig(k=3, shard_size=4))
    assert resumed["content_hash"] == full["content_hash"] and resumed["count"] == full["count"]
    assert resumed["stats"] == full["stats"]


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_records(tmp_path: Path) -> None:
    collect("household", "train", 160, tmp_path / "e")
    cmd = [
        sys.executable,
        "-m",
        "firsthand.cli",
        "branch",
        "--experts",
        str(tmp_path / "e"),
        "--k",
        "8",
        "--shard-size",
        "1",
    ]
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while not list((tmp_path / "cut").glob("branches-*.jsonl")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (tmp_path / "cut" / "manifest.json").exists():
        pytest.skip("the run finished before it could be killed")
    subprocess.run([*cmd, "--out", str(tmp_path / "cut")], check=True, capture_output=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, capture_output=True)
    cut, full = read_manifest(tmp_path / "cut"), read_manifest(tmp_path / "full")
    assert cut["content_hash"] == full["content_hash"]
    assert not list((tmp_path / "cut").glob(".*.tmp"))


def test_fewer_valid_actions_than_k_is_counted(experts: Path, tmp_path: Path) -> None:
    manifest = branch(experts, tmp_path / "b", BranchConfig(k=200))
    assert manifest["stats"]["short_states"] == manifest["stats"]["states"]
    records = _records(tmp_path / "b")
    assert all(
        len({r.action for r in records if r.trajectory_id == "train-0" and r.step_index == i})
        == len(load_trajectories(experts)[0].steps[i].valid_actions)
        for i in range(3)
    )


class DriftingHousehold(HouseholdEnv):
    """A household whose restore lands in the wrong game every third time: the bug branching must catch."""

    calls = 0

    def restore(self, snapshot: Any) -> None:
        DriftingHousehold.calls += 1
        super().restore(snapshot)
        if DriftingHousehold.calls % 3 == 0:
            self.reset("train-999")


def test_out_of_sync_restores_are_detected_and_dropped(experts: Path) -> None:
    env = DriftingHousehold("train")
    stats = new_stats()
    from firsthand.stages.branch import UniformProposer

    trajectories = load_trajectories(experts)[:6]
    records = []
    for t in trajectories:
        records += branch_trajectory(env, t, UniformProposer(), BranchConfig(k=4), stats)
    assert stats["resync_mismatches"] > 0 and stats["dropped_states"] == stats["resync_mismatches"]
    clean = HouseholdEnv("train")
    for r in records:  # every record that was kept is true
        t = next(t for t in trajectories if t.id == r.trajectory_id)
        replay_prefix(clean, t.task, t.actions[: r.step_index])
        assert clean.step(r.action).observation == r.next_observation


class ScriptedSampler:
    def __init__(self, proposals: list[str]) -> None:
        self.proposals = proposals

    def sample_actions(self, contexts: list[ProposalContext], n: int) -> list[list[str]]:
        return [self.proposals[:n] for _ in contexts]


def test_policy_proposer_refills_invalid_and_duplicate_proposals() -> None:
    import random

    context = ProposalContext("goal", [], "obs", ["go to a 1", "go to b 1", "go to c 1", "look"], "go to a 1")
    sampler = ScriptedSampler(["go to a 1", "  go to  b 1", "go to b 1", "dance", "look"])
    chosen, refilled = PolicyProposer(sampler).propose(context, 3, random.Random(0))
    assert chosen[:2] == ["go to b 1", "look"] and len(set(chosen)) == 3 and "go to a 1" not in chosen
    assert refilled == 1


def test_policy_proposer_keeps_free_text_proposals_in_open_action_spaces() -> None:
    import random

    candidates = ["ls()", "pwd()", "cd(folder='a')"]  # a sample of what can be called, not all of it
    context = ProposalContext("goal", [], "obs", candidates, "ls()", open_actions=True)
    sampler = ScriptedSampler(["ls()", "mkdir(dir_name='b')", "", "mkdir(dir_name='b')", "pwd()"])
    chosen, refilled = PolicyProposer(sampler).propose(context, 3, random.Random(0))
    assert chosen == ["mkdir(dir_name='b')", "pwd()", "cd(folder='a')"]  # the third refilled from candidates
    assert refilled == 1


def test_bad_input(experts: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="--k must be at least 1"):
        branch(experts, tmp_path / "b", BranchConfig(k=0))
    with pytest.raises(UnknownNameError, match="'best'.*uniform"):
        branch(experts, tmp_path / "b", BranchConfig(proposer="best"))
    with pytest.raises(InvalidInputError, match="needs a policy model"):
        branch(experts, tmp_path / "b", BranchConfig(proposer="policy"))
    with pytest.raises(InvalidInputError, match="no manifest.json"):
        branch(tmp_path / "missing", tmp_path / "b", BranchConfig())
    with pytest.raises(InvalidInputError, match="'collect' directory"):
        branch(experts, tmp_path / "b2", BranchConfig(k=1))
        branch(tmp_path / "b2", tmp_path / "b3", BranchConfig(k=1))
    assert json.loads((experts / "manifest.json").read_text())["count"] == 24  # nothing lost


def test_finished_branching_is_refused_with_another_k_and_reused_after_a_move(tmp_path: Path) -> None:
    root = tmp_path / "run"
    collect("household", "train", 3, root / "e")
    first = branch(root / "e", root / "b", BranchConfig(k=2))
    with pytest.raises(InvalidInputError, match="finished branch stage.*branch.k: 2 there, 6 now"):
        branch(root / "e", root / "b", BranchConfig(k=6))
    moved = tmp_path / "moved"
    root.rename(moved)  # paths in configs are relative to the stage: the moved run is still the same run
    assert branch(moved / "e", moved / "b", BranchConfig(k=2)) == first


@pytest.mark.slow
def test_the_policy_proposer_renders_the_prompts_its_model_was_trained_on(tmp_path: Path) -> None:
    """A model folder's firsthand_prompt.json decides the proposer's prompts, not the default settings."""
    from dataclasses import asdict

    from firsthand.artifacts import write_model_prompt
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.prompts import PromptConfig
    from firsthand.stages.branch import ProposalContext, _load_sampler

    folder = create_tiny(["Goal: a\nAction: look"], tmp_path / "m", TinyConfig(layers=1, hidden_size=64, heads=2))
    planted = PromptConfig(history=0, show_valid_actions=False, restate_goal=False)
    write_model_prompt(folder, asdict(planted))
    sampler = _load_sampler(str(folder))
    seen: list = []
    generate = sampler.backend.generate
    sampler.backend.generate = lambda prompts, sampling, **kw: seen.extend(prompts) or generate(prompts, sampling)
    context = ProposalContext(
        goal="put a mug in desk.",
        history=[("You arrive.", "go to desk 1")],
        observation="A desk.",
        valid_actions=["look", "inventory"],
        expert_action="look",
    )
    sampler.sample_actions([context], 2)
    assert sampler.prompt == planted
    text = seen[0] if isinstance(seen[0], str) else seen[0][-1]["content"]
    assert "Valid actions:" not in text and "Recent steps:" not in text and text.endswith("What do you do next?")
