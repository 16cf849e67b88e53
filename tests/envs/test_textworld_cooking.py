"""The TextWorld cooking adapter against the real TextWorld: generated games, admissible commands, the
cleaned walkthrough as expert, native snapshots checked against reset-and-replay.

The games these tests use are generated once into the cache (about 7 s each, 9 games: ~65 s the first
time on a 2-core machine); later runs reuse them.
"""

from __future__ import annotations

import json
import pickle
import random
from itertools import pairwise

import pytest
from textworld.challenges.tw_cooking.cooking import FOOD_PREPARATIONS_SPLITS

from firsthand import SPLITS, InvalidInputError, make
from firsthand.envs.textworld_cooking import (
    SEED_BASE,
    SPLIT_SIZE,
    UNKNOWN_VERB,
    TextWorldCookingEnv,
    cache_root,
    clean_observation,
    parse_task,
    prepare,
)
from firsthand.inference.agents import RandomAgent
from firsthand.replay import replay
from firsthand.stages.collect import collect
from firsthand.stages.evaluate import run_episodes
from firsthand.testing import EnvContract

TASKS = [f"{split}-{i}" for split in SPLITS for i in range(3)]


@pytest.fixture(scope="module", autouse=True)
def games() -> None:
    """Generate the games of every test at once, before the first reset asks for one."""
    prepare(TASKS, workers=2)


@pytest.fixture()
def env():
    e = make("textworld-cooking", "train")
    yield e
    e.close()


class TestTextWorldCookingContract(EnvContract):
    env_name = "textworld-cooking"


def _record(task: str) -> dict:
    return json.loads((cache_root() / task / "task.json").read_text())


def test_first_observation_is_the_story_only(env: TextWorldCookingEnv) -> None:
    obs, info = env.reset("train-0")
    assert obs.startswith("You are hungry! Let's cook a delicious meal.")  # the game's objective
    assert "\n\n-= " in obs  # then the room's name and description
    assert "$$" not in obs and "\n>" not in obs and not obs.endswith("/1")  # no banner, prompt or status line
    assert info["task"] == "train-0" and info["max_score"] == 8  # 2 ingredients x (take, cook, cut) + prepare + eat


def test_goal_carries_the_cookbooks_recipe(env: TextWorldCookingEnv) -> None:
    _, info = env.reset("train-0")
    assert info["goal"] == (
        "cook the meal of the recipe and eat it. Ingredients: carrot, yellow bell pepper. "
        "Directions: slice the carrot, roast the carrot, "
        "dice the yellow bell pepper, roast the yellow bell pepper, prepare meal."
    )
    # The same recipe as the cookbook prints when the expert reads it.
    for action in env.expert_actions():
        result = env.step(action)
        if action == "examine cookbook":
            break
    book = " ".join(result.observation.split())
    assert "Ingredients: carrot yellow bell pepper Directions: slice the carrot roast the carrot" in book
    assert info["goal"] == result.info["goal"]


def test_clean_observation() -> None:
    banner = "\n\n   ________  ___\n  |  $$$$$$ |  \\\n\n"
    raw = f"{banner}Be hungry.\n\n-= Kitchen =-\nA kitchen.   \n\n\n\n>        -= Kitchen =-0/1"
    assert clean_observation(raw, "Be hungry.") == "Be hungry.\n\n-= Kitchen =-\nA kitchen."
    end = (
        "\nYou eat the meal.\n\n\n       *** The End ***\n\nYou scored 8 out of a possible 8, in 9 turns.\n\n\n"
        "Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?\n>    -= Kitchen =-7/8"
    )
    assert (
        clean_observation(end)
        == "You eat the meal.\n\n*** The End ***\n\nYou scored 8 out of a possible 8, in 9 turns."
    )


def test_expert_is_the_walkthrough_without_noops() -> None:
    for task in TASKS:
        record = _record(task)
        expert, walkthrough = record["expert"], record["walkthrough"]
        assert 10 <= len(expert) <= 30 and expert[-2:] == ["prepare meal", "eat meal"]
        rest = iter(walkthrough)
        assert all(a in rest for a in expert)  # a subsequence of the walkthrough
        assert not any(a == f"take {b[5:]}" for b, a in pairwise(expert) if b.startswith("drop "))


def test_expert_earns_every_point_and_wins(env: TextWorldCookingEnv) -> None:
    env.reset("id_test-1")
    trajectory = replay(env, "id_test-1", env.expert_actions())
    assert sum(s.reward for s in trajectory.steps) == 8.0
    last = trajectory.steps[-1]
    assert last.won and last.terminated and not last.truncated and "*** The End ***" in last.next_observation
    assert env.valid_actions() == []
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("look")


def test_burning_an_ingredient_loses(env: TextWorldCookingEnv) -> None:
    env.reset("train-1")
    expert = env.expert_actions()
    i = next(i for i, a in enumerate(expert) if a.startswith("cook "))
    for action in expert[: i + 1]:
        env.step(action)
    r = env.step(expert[i])  # cooking it a second time burns it
    assert r.terminated and not r.won and not r.truncated and r.reward == 0.0
    assert "burned" in r.observation and "*** You lost! ***" in r.observation


def test_invalid_and_interpreter_commands_change_nothing(env: TextWorldCookingEnv) -> None:
    env.reset("train-2")
    expert = env.expert_actions()
    for action in expert[:3]:
        env.step(action)
    valid = env.valid_actions()
    assert valid == sorted(set(valid)) and "look" in valid
    r = env.step("fly to the moon")
    assert r.info["invalid"] and r.observation and not r.terminated and env.valid_actions() == valid
    for meta in ("undo", "restart", "quit"):  # would rewind or end the game behind TextWorld's state tracking
        r = env.step(meta)
        assert r.observation == UNKNOWN_VERB and r.info["invalid"] and env.valid_actions() == valid
    assert not env.step(expert[3]).info["invalid"]
    for action in expert[4:]:
        r = env.step(action)
    assert r.won


def test_native_restore_matches_reset_and_replay(env: TextWorldCookingEnv) -> None:
    """Restore then act = reset, replay the prefix, act: same text, reward, flags and valid actions."""
    reference = make("textworld-cooking", "train")
    rng = random.Random(0)
    task = "ood_test-2"
    env.reset(task)
    expert = env.expert_actions()
    try:
        for i, expert_action in enumerate(expert):
            snap = env.snapshot()
            if i % 4 == 1:
                for action in [*rng.sample(env.valid_actions(), 2), "eat meal"]:
                    env.restore(snap)
                    mine = env.step(action)
                    reference.reset(task)
                    for a in expert[:i]:
                        reference.step(a)
                    theirs = reference.step(action)
                    assert mine[:5] == theirs[:5], (i, action)
                    assert env.valid_actions() == reference.valid_actions(), (i, action)
                env.restore(snap)
            assert env.step(expert_action).won == (i == len(expert) - 1)
    finally:
        reference.close()


def test_pickled_snapshot_restores_in_another_env(env: TextWorldCookingEnv) -> None:
    env.reset("train-0")
    expert = env.expert_actions()
    for action in expert[:6]:
        env.step(action)
    snap = pickle.dumps(env.snapshot())
    valid = env.valid_actions()
    other = make("textworld-cooking", "id_test")
    try:
        other.reset("id_test-0")  # another game loaded: restore switches to the snapshot's
        other.restore(pickle.loads(snap))
        assert other.valid_actions() == valid
        for action in expert[6:]:
            r = other.step(action)
        assert r.won
    finally:
        other.close()
    with pytest.raises(InvalidInputError, match="snapshot"):
        env.restore(("train-0", ()))


def test_truncated_is_not_won() -> None:
    env = make("textworld-cooking", "train", max_steps=3)
    assert make("textworld-cooking", "train").max_steps == 50
    env.reset("train-0")
    results = [env.step("look") for _ in range(3)]
    assert results[-1].truncated and not results[-1].terminated and not results[-1].won
    assert not any(r.truncated for r in results[:-1])
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("look")
    env.close()


def test_splits_draw_from_disjoint_seeds_and_shifted_foods() -> None:
    """train and id_test: tw-cooking's train foods and preparations, different seeds; ood_test: its test
    split, where every ingredient is an unseen food or a training food prepared in an unseen way."""
    assert {s: make("textworld-cooking", s).tasks(2) for s in SPLITS} == {s: [f"{s}-0", f"{s}-1"] for s in SPLITS}
    seeds = {s: {SEED_BASE[s] + i for i in range(SPLIT_SIZE[s])} for s in SPLITS}
    assert not seeds["train"] & seeds["id_test"] and not seeds["train"] & seeds["ood_test"]
    uuids = set()
    for task in TASKS:
        record = _record(task)
        split, index = parse_task(task)
        assert record["seed"] == SEED_BASE[split] + index
        uuids.add(record["uuid"])
        in_train = [
            (cooking, cutting) in FOOD_PREPARATIONS_SPLITS["train"].get(food, [])
            for food, cooking, cutting in record["ingredients"]
        ]
        assert record["tw_split"] == ("test" if split == "ood_test" else "train")
        assert all(in_train) if split != "ood_test" else not any(in_train), (task, record["ingredients"])
    assert len(uuids) == len(TASKS)


def test_bad_task_ids(env: TextWorldCookingEnv) -> None:
    for task in ("kitchen-1", "train-x", f"train-{SPLIT_SIZE['train']}"):
        with pytest.raises(InvalidInputError, match=repr(task)):
            env.reset(task)
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("look")


def _without_install_paths(text: str) -> str:
    import re

    return re.sub(r'"text_grammars_path": "[^"]*"', '"text_grammars_path": ""', text)


def _without_serial(story: bytes) -> bytes:
    return story[:18] + b"000000" + story[24:]


def test_generation_is_byte_identical(tmp_path) -> None:
    """A fresh generation (other processes, another folder) gives the cached games, byte for byte."""
    tasks = ["ood_test-0", "ood_test-1"]
    for fresh in prepare(tasks, root=tmp_path, workers=2):  # one game in each of two processes
        cached = cache_root() / fresh.name
        assert (fresh / "task.json").read_bytes() == (cached / "task.json").read_bytes()
        # The Z-machine header's serial number (bytes 18-23) is the compilation date (YYMMDD); a game
        # compiled on another day differs there and nowhere else
        assert _without_serial((fresh / "game.z8").read_bytes()) == _without_serial((cached / "game.z8").read_bytes())
        # game.json records where TextWorld's grammar files are installed (the virtualenv's path), which
        # differs between installs; everything else must match
        assert _without_install_paths((fresh / "game.json").read_text()) == _without_install_paths(
            (cached / "game.json").read_text()
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ood_test-0.lock", ".ood_test-1.lock", *tasks]


def test_collection_and_evaluation_prepare_the_games_first(tmp_path, monkeypatch) -> None:
    """Both stages hand their whole task list to the adapter's `prepare` before the first reset."""
    calls: list[list[str]] = []
    original = TextWorldCookingEnv.prepare

    def spy(self: TextWorldCookingEnv, tasks: list[str]) -> None:
        calls.append(list(tasks))
        original(self, tasks)

    monkeypatch.setattr(TextWorldCookingEnv, "prepare", spy)
    collect("textworld-cooking", "train", 2, tmp_path / "experts")
    run_episodes("textworld-cooking", "id_test", ["id_test-1", "id_test-0"], RandomAgent(seed=0), max_steps=2)
    assert calls == [["train-0", "train-1"], ["id_test-1", "id_test-0"]]


def test_generation_timeout_stops_every_worker(tmp_path, monkeypatch) -> None:
    """A generation that runs past its time limit raises, and leaves no worker process running."""
    import subprocess

    import firsthand.envs.textworld_cooking as cooking

    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def recording(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(cooking.subprocess, "Popen", recording)
    monkeypatch.setattr(cooking, "GENERATION_TIMEOUT_S", -60)  # a limit of 0 s for one game a worker
    with pytest.raises(cooking.GameGenerationError, match="took longer than 0 s"):
        prepare(["train-7", "train-8"], root=tmp_path, workers=2)
    assert len(started) == 2 and all(p.returncode is not None for p in started)
