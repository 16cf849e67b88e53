"""A contract test mixin: each environment adapter's test is a subclass naming the environment.

class TestHousehold(EnvContract):
    env_name = "household"
"""

from __future__ import annotations

import pickle

import pytest

from firsthand import SPLITS, UnknownNameError, make
from firsthand.checks import check_env
from firsthand.experts import replay


class EnvContract:
    env_name: str = ""
    tasks_per_split: int = 3

    @pytest.mark.parametrize("split", SPLITS)
    def test_check_env_passes(self, split: str) -> None:
        assert check_env(make(self.env_name, split), tasks=self.tasks_per_split)

    def test_unknown_split_lists_valid_ones(self) -> None:
        with pytest.raises(UnknownNameError, match="id_test"):
            make(self.env_name, "validation")

    def test_snapshot_restore_is_repeatable(self) -> None:
        env = make(self.env_name, "train")
        task = env.tasks(1)[0]
        env.reset(task)
        if not env.snapshot_native:
            pytest.skip("replay-only environment")
        actions = env.expert_actions()
        for a in actions[: len(actions) // 2]:
            env.step(a)
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        # open action spaces (valid_actions() empty) probe their candidate actions instead
        probes = (env.valid_actions() or list(getattr(env, "candidate_actions", list)()))[:5]
        outcomes = set()
        for action in probes:
            for _ in range(4):
                env.restore(snap)
                r = env.step(action)
                outcomes.add((action, r.observation, r.reward, r.won))
        assert probes and len(outcomes) == len(probes)

    def test_expert_wins_on_every_split(self) -> None:
        for split in SPLITS:
            env = make(self.env_name, split)
            for task in env.tasks(self.tasks_per_split):
                env.reset(task)
                assert replay(env, task, env.expert_actions()).won
