"""The environment contract as pytest tests: an adapter's test file is a subclass naming the environment.

    from firsthand.testing import EnvContract

    class TestMyEnv(EnvContract):
        env_name = "my-env"            # a registered name, or "my_package.module:factory"

Shipped with the package (it needs pytest), so that an adapter written outside this repository is tested
by the same checks as the built-in ones (docs/adapters.md).
"""

from __future__ import annotations

import pickle

import pytest

from firsthand import SPLITS, UnknownNameError, make
from firsthand.checks import check_env
from firsthand.replay import replay


class EnvContract:
    env_name: str = ""
    tasks_per_split: int = 3
    snapshot_task: str | None = None
    """The task the snapshot test plays (default: the first train task)."""
    probe_stride: int = 1
    """The snapshot test probes every `probe_stride`-th action, at most `max_probes` of them, each
    `restore_repeats` times (replay-only environments restore slowly: probe fewer)."""
    max_probes: int = 5
    restore_repeats: int = 4

    @pytest.mark.parametrize("split", SPLITS)
    def test_check_env_passes(self, split: str) -> None:
        assert check_env(make(self.env_name, split), tasks=self.tasks_per_split)

    def test_unknown_split_lists_valid_ones(self) -> None:
        with pytest.raises(UnknownNameError, match="id_test"):
            make(self.env_name, "validation")

    def test_snapshot_restore_is_repeatable(self) -> None:
        """Native snapshots and replay-only ones (an action log) alike: restore, same action, same outcome."""
        env = make(self.env_name, "train")
        env.reset(self.snapshot_task or env.tasks(1)[0])
        actions = env.expert_actions()
        for a in actions[: len(actions) // 2]:
            env.step(a)
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        # open action spaces (valid_actions() empty) probe their candidate actions instead
        probes = (env.valid_actions() or env.candidate_actions())[:: self.probe_stride]
        probes = probes[: self.max_probes]
        outcomes = set()
        for action in probes:
            for _ in range(self.restore_repeats):
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
