"""ScienceWorld adapter: the contract on all splits, plus what is specific to a JVM-backed simulator.

One JVM serves the whole module: the module fixture keeps an environment open, so every `make`
below attaches to the same JVM instead of starting its own (~3 s and ~1 GB each).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from firsthand import InvalidInputError, NoExpertError, make
from firsthand.envs.scienceworld import (
    LONG_TASK_TYPES,
    MAX_VARIATIONS,
    NO_MATCH,
    TASK_TYPES,
    ScienceWorldEnv,
    official_splits,
    split_variations,
)
from firsthand.replay import replay
from firsthand.testing import EnvContract

SHORT = "identify-life-stages-2:1"  # 14 expert steps; its rooms list animals in random order without the fix


@pytest.fixture(scope="module", autouse=True)
def env() -> Iterator[ScienceWorldEnv]:
    with ScienceWorldEnv("train") as e:
        e.reset(SHORT)  # starts the shared JVM
        yield e


def trace(env: ScienceWorldEnv, task: str, actions: list[str]) -> list[str]:
    observation, _ = env.reset(task)
    return [observation] + [env.step(action).observation for action in actions]


class TestScienceWorldContract(EnvContract):
    env_name = "scienceworld"
    tasks_per_split = 2
    snapshot_task = SHORT
    probe_stride = 20  # ~60 candidate actions: 3 probes, each restored (reload + replay) twice
    restore_repeats = 2


# -- splits and task ids --------------------------------------------------------------------------
def test_variation_table_and_split_formula_match_the_simulator(env: ScienceWorldEnv) -> None:
    server = env._simulator().server
    assert {t: server.getTaskMaxVariations(t) for t in MAX_VARIATIONS} == MAX_VARIATIONS
    assert sorted(server.getTaskNames()) == sorted(TASK_TYPES)
    for task_type in (
        "boil",
        "identify-life-stages-2",
        "lifespan-longest-lived",
        "chemistry-mix-paint-secondary-color",
    ):
        server.load(task_type, 0, "", False)
        official = (
            list(server.getVariationsTrain()),
            list(server.getVariationsDev()),
            list(server.getVariationsTest()),
        )
        assert official_splits(MAX_VARIATIONS[task_type]) == official, task_type
    env.reset(SHORT)


def test_splits_are_disjoint_and_follow_the_official_ranges() -> None:
    for task_type, n in MAX_VARIATIONS.items():
        train, dev, test = official_splits(n)
        ours = {s: set(split_variations(task_type, s)) for s in ("train", "id_test", "ood_test")}
        assert ours["train"] | ours["id_test"] == set(train) and not ours["train"] & ours["id_test"]
        assert ours["ood_test"] == set(test) and not set(dev) & set().union(*ours.values())
        assert len(ours["id_test"]) == len(train) // 5
    everything = {s: set(ScienceWorldEnv(s, task_types=TASK_TYPES).tasks()) for s in ("train", "id_test", "ood_test")}
    assert sum(map(len, everything.values())) == len(set().union(*everything.values()))


def test_tasks_interleave_types_in_a_fixed_order() -> None:
    env = ScienceWorldEnv("ood_test")
    first = env.tasks(len(env.task_types))
    assert [t.split(":")[0] for t in first] == list(env.task_types)
    assert env.tasks(50) == ScienceWorldEnv("ood_test").tasks(50)
    assert not LONG_TASK_TYPES & set(env.task_types)
    assert set(ScienceWorldEnv("train", task_types=TASK_TYPES).task_types) == set(TASK_TYPES)


@pytest.mark.parametrize("task", ["boil", "boil:x", "boiling:3", "boil:14"])
def test_bad_task_ids_are_quoted(env: ScienceWorldEnv, task: str) -> None:
    with pytest.raises(InvalidInputError, match=repr(task)):
        env.reset(task)  # boil:14 is a dev variation, in no split here
    env.reset(SHORT)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InvalidInputError, match="'cooking'"):
        ScienceWorldEnv("train", task_types=["cooking"])
    with pytest.raises(InvalidInputError, match="max_steps"):
        ScienceWorldEnv("train", max_steps=0)


# -- determinism ----------------------------------------------------------------------------------
def test_same_actions_same_observations_and_candidates_change_nothing(env: ScienceWorldEnv) -> None:
    env.reset(SHORT)
    actions = env.expert_actions()
    host = env._simulator().host
    plain = trace(env, SHORT, actions)
    observation, _ = env.reset(SHORT)
    probed = [observation]
    for action in actions:
        before = host.save()
        env.candidate_actions()
        assert host.save() == before  # the global random generator and object ids are put back
        probed.append(env.step(action).observation)
    assert probed == plain  # two loads, one with candidates asked at every state


def test_two_environments_interleaved_in_one_jvm_match_one_alone(env: ScienceWorldEnv) -> None:
    other_task = "find-animal:3"
    env.reset(other_task)
    other_actions = env.expert_actions()
    env.reset(SHORT)
    actions = env.expert_actions()
    alone = (trace(env, SHORT, actions), trace(env, other_task, other_actions))
    with ScienceWorldEnv("train") as second:
        a, b = [env.reset(SHORT)[0]], [second.reset(other_task)[0]]
        for i in range(max(len(actions), len(other_actions))):
            if i < len(actions):
                a.append(env.step(actions[i]).observation)
            if i < len(other_actions):
                b.append(second.step(other_actions[i]).observation)
        assert second._sim is not None and second._sim.host is env._sim.host  # one JVM
    assert (a, b) == alone


# -- episodes -------------------------------------------------------------------------------------
def test_expert_wins_on_a_sample_of_each_split() -> None:
    """Other types than the contract's first tasks (lifespan-*): paint mixing, thermometer, wiring."""
    for split, picks in (("train", (13,)), ("id_test", (9,)), ("ood_test", (4,))):
        env = make("scienceworld", split)
        tasks = env.tasks(20)
        for i in picks:
            env.reset(tasks[i])
            trajectory = replay(env, tasks[i], env.expert_actions())
            last = trajectory.steps[-1]
            assert last.won and last.terminated and not last.truncated and last.reward > 0
            assert all(s.valid_actions == [] for s in trajectory.steps)  # the open action space stays out of the files


def test_invalid_failure_and_truncation(env: ScienceWorldEnv) -> None:
    observation, info = env.reset(SHORT)
    assert observation.startswith("This ") and info["goal"].startswith("Your task is to")
    assert env.valid_actions() == []
    r = env.step("fly to the moon")
    assert r.observation == NO_MATCH and r.info["invalid"] and not r.terminated
    r = env.step("look around")
    assert not r.info["invalid"] and r.observation.startswith("This ")
    r = env.step("focus on air")  # focusing on the wrong thing fails the task
    assert r.terminated and not r.won and r.reward < 0 and r.info["score"] == -100
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("look around")
    short = ScienceWorldEnv("train", max_steps=2)
    with short:
        short.reset(SHORT)
        results = [short.step("look around") for _ in range(2)]
        assert results[-1].truncated and not results[-1].terminated and not results[0].truncated
        short.reset("find-animal:3")
        with pytest.raises(NoExpertError, match="max_steps"):
            short.expert_actions()


def test_candidate_actions_are_bounded_sorted_and_playable(env: ScienceWorldEnv) -> None:
    env.reset(SHORT)
    candidates = env.candidate_actions()
    assert candidates == sorted(set(candidates)) and 20 <= len(candidates) <= 150
    assert "reset task" not in candidates and not any(" air" in a or "agent" in a for a in candidates)
    assert not any(a.startswith("connect ") for a in candidates)  # no wiring in a biology task
    assert env.candidate_actions() == candidates
    snap = env.snapshot()
    outcomes = []
    for action in candidates[::8]:
        env.restore(snap)
        outcomes.append(env.step(action))
    # ~8% of ScienceWorld's own "valid" actions do not parse ("dunk cup containing ... into bowl")
    assert sum(r.info["invalid"] for r in outcomes) <= len(outcomes) // 3
    assert len({r.observation for r in outcomes}) >= len(outcomes) // 2  # alternatives lead to different places


def test_ambiguity_prompt_offers_numbers(env: ScienceWorldEnv) -> None:
    """Two identical seeds: the game asks which one, and the candidates are the option numbers."""
    task = "grow-plant:1"
    env.reset(task)
    actions = env.expert_actions()
    env.reset(task)
    for action in actions:
        r = env.step(action)
        if r.observation.startswith("Ambiguous request"):
            assert env.candidate_actions()[:2] == ["0", "1"]
            break
    else:
        pytest.fail(f"the expert of {task} met no ambiguity")
    env.reset(SHORT)


def test_snapshot_is_a_replayable_action_log(env: ScienceWorldEnv) -> None:
    env.reset(SHORT)
    actions = env.expert_actions()
    for action in actions[:4]:
        env.step(action)
    snap = env.snapshot()
    assert snap == ((SHORT, tuple(actions[:4])), 4, False)
    expected = env.step(actions[4]).observation
    env.step("look around")
    env.restore(snap)
    assert env.step(actions[4]).observation == expected


def test_last_close_stops_the_jvm() -> None:
    code = (
        "from firsthand.envs.scienceworld import ScienceWorldEnv\n"
        "a, b = ScienceWorldEnv('train'), ScienceWorldEnv('train')\n"
        "a.reset('lifespan-longest-lived:2'); b.reset('lifespan-longest-lived:2')\n"
        "proc = a._sim.host.proc\n"
        "a.close(); assert proc.poll() is None, 'closed while b still uses it'\n"
        "del b\n"  # garbage collection closes too
        "proc.wait(timeout=20); print('stopped')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "stopped", out.stderr[-2000:]
