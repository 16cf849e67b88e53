"""Every data stage on every real environment: collect -> branch -> build IL, IWM and SR.

The adapters' own tests check the contract; this checks that the stages compose on each of them
(task ids, observations and actions of each environment flow through the records and prompts).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firsthand.artifacts import load_branches, load_records
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import BuildConfig, build
from firsthand.stages.collect import collect

REAL_ENVS = ("bfcl", "textworld-express", "textworld-cooking", "scienceworld", "tau-retail")
LOCKBOX = f"{Path(__file__).resolve().parents[2] / 'examples' / 'lockbox.py'}:make_env"


@pytest.mark.parametrize("env", ["household", LOCKBOX, *REAL_ENVS], ids=["household", "lockbox", *REAL_ENVS])
def test_data_stages_compose(env: str, tmp_path: Path) -> None:
    """Also: SR's template reflection is kept at every state with alternatives, on every environment (a
    template whose quoted observations repeat a line must not fail the filters meant for model-written text)."""
    episodes = 2 if env in REAL_ENVS else 8
    manifest = collect(env, "train", episodes, tmp_path / "experts")
    assert manifest["stats"]["won"] == episodes
    branch(tmp_path / "experts", tmp_path / "branches", BranchConfig(k=2))
    trajectories, branches = load_branches(tmp_path / "branches")
    states = sum(len(t.steps) for t in trajectories)
    experts = [b for b in branches if b.expert]
    assert len(experts) == states, "every expert state is branched (none dropped as out of sync)"
    assert any(not b.expert and b.next_observation != b.observation for b in branches)
    counts, stats = {}, {}
    for method in ("il", "iwm", "sr"):
        stats[method] = build(method, tmp_path / "branches", tmp_path / method, BuildConfig())["stats"]
        records = load_records(tmp_path / method)
        counts[method] = len(records)
        assert all(r["prompt"] and r["completion"] for r in records)
    assert counts["il"] == states
    assert counts["iwm"] >= states  # expert transitions plus the alternatives
    with_alternatives = len({(b.trajectory_id, b.step_index) for b in branches if not b.expert})
    assert counts["sr"] == with_alternatives, stats["sr"]  # no template reflection was dropped
    assert not [k for k in stats["sr"] if "_filtered_" in k] and not (tmp_path / "sr" / "dropped.jsonl").exists()


def test_random_baseline_in_an_open_action_space() -> None:
    """bfcl has no valid-action list: the random agent draws from candidate actions, and invalid
    actions are counted from the environment's own verdict (info["invalid"])."""
    from firsthand.inference.agents import RandomAgent
    from firsthand.registry import make
    from firsthand.stages.evaluate import run_episodes

    tasks = make("bfcl", "id_test").tasks(3)
    results = run_episodes("bfcl", "id_test", tasks, RandomAgent(0), batch_size=3, max_steps=4)
    actions = [a for r in results for a in r.actions]
    assert len(actions) == 12 and "look" not in actions
    assert all("(" in a and a.endswith(")") for a in actions)  # calls, as the candidates are
    broken = run_episodes("bfcl", "id_test", tasks[:1], _Fixed("not a call ("), max_steps=2)
    assert broken[0].invalid_actions == 2


class _Fixed:
    name = "fixed"
    wants_candidates = False

    def __init__(self, action: str) -> None:
        self.action = action

    def act(self, inputs: list) -> list[str]:
        return [f"Action: {self.action}" for _ in inputs]
