from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest
import textworld_express

from firsthand import InvalidInputError, NoExpertError, UnknownNameError, make
from firsthand.contract import normalize
from firsthand.envs.textworld_express import (
    GAMES,
    SEEDS_PER_SPLIT,
    UNKNOWN_ACTION,
    Snapshot,
    TextWorldExpressEnv,
    parse_task,
)
from firsthand.replay import replay
from firsthand.testing import EnvContract


class TestTextWorldExpressContract(EnvContract):
    env_name = "textworld-express"


@pytest.fixture(scope="module")
def env() -> Iterator[TextWorldExpressEnv]:
    """One JVM for the module's own tests (each JVM costs about a second to start)."""
    e = make("textworld-express", "train")
    assert isinstance(e, TextWorldExpressEnv)
    yield e
    e.close()


def test_expert_wins_on_every_game_of_every_split(env: TextWorldExpressEnv) -> None:
    won: dict[str, set[str]] = {}
    for split in ("train", "id_test", "ood_test"):
        env.split = split  # tasks() depends on the split alone; playing does not
        for task in env.tasks(2 * len(GAMES)):
            env.reset(task)
            trajectory = replay(env, task, env.expert_actions())
            last = trajectory.steps[-1]
            assert trajectory.won and last.terminated and not last.truncated, task
            assert trajectory.steps[0].action != "look around"  # the gold path's idle first step is dropped
            won.setdefault(split, set()).add(parse_task(task).game)
    env.split = "train"
    assert won == {split: set(GAMES) for split in ("train", "id_test", "ood_test")}


def test_splits_are_official_seeds_and_disjoint(env: TextWorldExpressEnv) -> None:
    by_split = {split: make("textworld-express", split).tasks() for split in ("train", "id_test", "ood_test")}
    assert all(len(tasks) == SEEDS_PER_SPLIT * len(GAMES) for tasks in by_split.values())
    assert not set(by_split["train"]) & set(by_split["id_test"])
    seeds = {split: {parse_task(t).seed for t in tasks} for split, tasks in by_split.items()}
    folds = {split: {parse_task(t).fold for t in tasks} for split, tasks in by_split.items()}
    assert folds == {"train": {"train"}, "id_test": {"train"}, "ood_test": {"test"}}
    server = env._server("coin")
    assert seeds["train"] == set(server.getSeedsTrain())  # the engine's official seed lists
    assert seeds["ood_test"] == set(server.getSeedsTest())
    assert not seeds["id_test"] & (set(server.getSeedsTrain()) | set(server.getSeedsDev()) | set(server.getSeedsTest()))


def test_games_are_the_backends() -> None:
    assert set(GAMES) <= set(textworld_express.GAME_NAMES)


def test_tasks_interleave_games_deterministically() -> None:
    env = make("textworld-express", "id_test")
    assert env.tasks(9) == [f"{g}-train-1000" for g in GAMES] + ["cookingworld-train-1001"]
    assert env.tasks(5) == env.tasks(9)[:5]
    only = make("textworld-express", "ood_test", games="simonsays,coin")
    assert only.tasks(4) == ["simonsays-test-20000", "coin-test-20000", "simonsays-test-20001", "coin-test-20001"]
    with pytest.raises(UnknownNameError, match="'chess'.*cookingworld"):
        make("textworld-express", "train", games=["chess"])


def test_games_chosen_in_the_name_reach_every_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--env textworld-express:games=...`: collection's spawned workers build the same restricted split."""
    from firsthand.artifacts import load_trajectories
    from firsthand.stages.collect import collect

    name = "textworld-express:games=simonsays,twc"
    manifest = collect(name, "train", 4, tmp_path / "e", workers=2, shard_size=2)
    assert manifest["config"]["env"] == name and manifest["count"] == 4
    assert [t.task for t in load_trajectories(tmp_path / "e")] == [
        "simonsays-train-0", "twc-train-0", "simonsays-train-1", "twc-train-1",
    ]  # fmt: skip


def test_goal_reads_as_an_infinitive(env: TextWorldExpressEnv) -> None:
    for task in env.tasks(len(GAMES)):
        _, info = env.reset(task)
        assert info["goal"] and not info["goal"].startswith(("Your", "You")), info["goal"]
        assert "  " not in info["goal"]
    _, info = env.reset("coin-train-0")
    assert info["goal"] == "search the environment and find the coin. Once you find the coin, take it."


def test_invalid_action_changes_nothing(env: TextWorldExpressEnv) -> None:
    observation, _ = env.reset("twc-train-3")
    valid = env.valid_actions()
    assert valid == sorted(set(valid)) and "look around" in valid
    r = env.step("dance   wildly")
    assert r.observation == UNKNOWN_ACTION and r.info["invalid"]
    assert (r.reward, r.terminated, r.truncated, r.won) == (0.0, False, False, False)
    assert env.valid_actions() == valid
    assert env.step("look around").observation == observation
    assert env.snapshot() == (Snapshot("twc-train-3", ("look around",)), 2, False)  # refused ones are not replayed


def test_wrong_answer_terminates_as_lost(env: TextWorldExpressEnv) -> None:
    env.reset("simonsays-train-0")
    expert = env.expert_actions()
    wrong = next(a for a in env.valid_actions() if a != expert[0])
    r = env.step(wrong)
    assert r.terminated and not r.won and not r.truncated and r.reward < 0
    with pytest.raises(InvalidInputError, match="reset"):
        env.step(expert[0])


def test_reward_is_score_progress(env: TextWorldExpressEnv) -> None:
    env.reset("mapreader-train-0")
    trajectory = replay(env, "mapreader-train-0", env.expert_actions())
    rewards = [s.reward for s in trajectory.steps]
    assert sum(rewards) == pytest.approx(1.0) and 0 < max(rewards) < 1  # partial credit for taking the coin


def test_snapshot_restores_across_tasks_and_pickling(env: TextWorldExpressEnv) -> None:
    task = "cookingworld-train-5"
    env.reset(task)
    expert = env.expert_actions()
    middle = len(expert) // 2
    for a in expert[:middle]:
        env.step(a)
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    valid = env.valid_actions()
    expected = env.step(expert[middle])
    for alternative in valid[:3]:  # wander off, then come back
        env.restore(snap)
        env.step(alternative)
    env.reset("sorting-train-1")  # another game entirely
    env.restore(snap)
    assert env.valid_actions() == valid
    again = env.step(expert[middle])
    assert (normalize(again.observation), again.reward, again.won) == (
        normalize(expected.observation),
        expected.reward,
        expected.won,
    )
    for a in expert[middle + 1 :]:
        r = env.step(a)
    assert r.won
    with pytest.raises(InvalidInputError, match="snapshot"):
        env.restore(("cookingworld-train-5", ()))


def test_same_actions_same_observations_in_another_jvm(env: TextWorldExpressEnv) -> None:
    """Branching workers run in other processes: generation must not depend on the JVM."""
    runs = []
    for e in (env, make("textworld-express", "train")):
        observation, _ = e.reset("twc-train-7")
        actions = e.expert_actions()
        trace = [observation] + [e.step(a).observation for a in actions]
        runs.append((actions, trace))
        if e is not env:
            e.close()
    assert runs[0] == runs[1]


def test_expert_skips_gold_path_actions_the_engine_refuses() -> None:
    """With the engine's default CookingWorld parameters, seed 6's gold path opens an open cupboard."""
    with TextWorldExpressEnv("train", games="cookingworld", game_params={"cookingworld": ""}) as e:
        e.reset("cookingworld-train-6")
        server = e._server("cookingworld")
        server.generateNewGameJSON(6, "train", True)
        gold = list(server.getGoldActionSequence())
        e.reset("cookingworld-train-6")
        expert = e.expert_actions()
        assert len(expert) < len(gold) - 1
        assert replay(e, "cookingworld-train-6", expert).won


def test_truncation_and_expert_longer_than_max_steps() -> None:
    with TextWorldExpressEnv("train", max_steps=3) as e:
        e.reset("peckingorder-train-0")
        results = [e.step("inventory") for _ in range(3)]
        assert results[-1].truncated and not results[-1].terminated and not results[-1].won
        with pytest.raises(InvalidInputError, match="reset"):
            e.step("inventory")
        e.reset("peckingorder-train-0")
        with pytest.raises(NoExpertError, match="max_steps=3"):
            e.expert_actions()


def test_expert_needs_a_fresh_reset(env: TextWorldExpressEnv) -> None:
    env.reset("arithmetic-train-2")
    env.step("inventory")
    with pytest.raises(NoExpertError, match="reset"):
        env.expert_actions()


def test_bad_inputs_say_how_to_fix_them() -> None:
    e = make("textworld-express", "train")
    with pytest.raises(InvalidInputError, match="'coin-17'.*<game>-<fold>-<seed>"):
        e.reset("coin-17")
    with pytest.raises(InvalidInputError, match="'chess-train-1'"):
        e.reset("chess-train-1")
    with pytest.raises(InvalidInputError, match="call reset"):
        e.step("look around")
    with pytest.raises(UnknownNameError, match="'go'"):
        make("textworld-express", "train", game_params={"go": ""})
    with pytest.raises(InvalidInputError, match="max_steps"):
        make("textworld-express", "train", max_steps=0)
    assert e._gateway is None  # nothing above needed the JVM
    with TextWorldExpressEnv("train", game_params={"coin": "numLocations=40"}) as bad:
        with pytest.raises(InvalidInputError, match="numLocations=40.*less than or equal to 11"):
            bad.reset("coin-train-0")


def test_close_stops_the_jvm_and_reuse_starts_another() -> None:
    e = make("textworld-express", "train", games="simonsays")
    e.reset(e.tasks(1)[0])
    proc = e._gateway.java_process
    e.close()
    assert proc.poll() is not None
    e.close()  # twice is fine
    observation, _ = e.reset(e.tasks(1)[0])
    assert observation.startswith("Simon says")
    e.close()
