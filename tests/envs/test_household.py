from __future__ import annotations

import pytest

from firsthand import InvalidInputError, make
from firsthand.envs.household import TASK_TYPES, generate
from firsthand.envs.household.env import NOTHING
from firsthand.envs.household.world import held_out, kind_of
from firsthand.replay import replay
from firsthand.testing import EnvContract


class TestHouseholdContract(EnvContract):
    env_name = "household"


def test_expert_wins_200_tasks_of_every_type_and_split() -> None:
    seen: dict[str, set[str]] = {}
    won = 0
    for split in ("train", "id_test", "ood_test"):
        env = make("household", split)
        for task in env.tasks(80):
            env.reset(task)
            trajectory = replay(env, task, env.expert_actions())
            assert trajectory.won and trajectory.steps[-1].terminated and not trajectory.steps[-1].truncated
            seen.setdefault(split, set()).add(generate(split, int(task.split("-")[1])).task_type)
            won += 1
    assert won >= 200
    for split, types in seen.items():
        assert types == set(TASK_TYPES), f"{split} misses task types {set(TASK_TYPES) - types}"


def test_ood_uses_only_held_out_pairings() -> None:
    for split in ("train", "id_test", "ood_test"):
        for i in range(150):
            t = generate(split, i)
            assert held_out(t.obj_kind, t.destination) == (split == "ood_test"), t


def test_train_and_id_test_are_disjoint_worlds() -> None:
    train = {generate("train", i) for i in range(300)}
    assert not train & {generate("id_test", i) for i in range(300)}


def test_generation_is_deterministic() -> None:
    assert generate("train", 7) == generate("train", 7)
    assert generate("train", 7) != generate("train", 8)


def test_alfworld_wording() -> None:
    env = make("household", "train")
    obs, info = env.reset("train-2")
    assert obs.startswith("You are in the middle of a room. Looking quickly around you, you see a ")
    assert obs.endswith(f"Your task is to: {info['goal']}")
    assert env.step("fly to the moon").observation == NOTHING
    r = env.step("go to fridge 1")
    assert r.observation == "You arrive at fridge 1. The fridge 1 is closed."
    assert env.step("go to fridge 1").observation == NOTHING  # already there
    assert env.step("open fridge 1").observation.startswith(
        "You open the fridge 1. The fridge 1 is open. In it, you see"
    )
    assert env.step("close fridge 1").observation == "You close the fridge 1."
    assert env.step("inventory").observation == "You are not carrying anything."


def test_every_valid_action_does_something() -> None:
    """Valid actions never answer "Nothing happens." (and other actions always do)."""
    env = make("household", "train")
    for task in env.tasks(5):
        env.reset(task)
        for expert_action in env.expert_actions():
            snap = env.snapshot()
            for action in env.valid_actions():
                env.restore(snap)
                assert env.step(action).observation != NOTHING, (task, action)
            env.restore(snap)
            env.step(expert_action)


def test_holding_one_object_at_a_time() -> None:
    env = make("household", "train")
    # a task whose room has two objects on one receptacle
    for task in env.tasks(200):
        t = generate("train", int(task.split("-")[1]))
        by_rec: dict[str, list[str]] = {}
        for obj, rec in t.placement:
            if kind_of(obj) != "desklamp" and rec not in t.openable:
                by_rec.setdefault(rec, []).append(obj)
        pairs = [(rec, objs) for rec, objs in by_rec.items() if len(objs) >= 2]
        if pairs:
            break
    rec, (first, second, *_) = pairs[0]
    env.reset(task)
    env.step(f"go to {rec}")
    assert env.step(f"take {first} from {rec}").observation.startswith("You pick up")
    assert env.step(f"take {second} from {rec}").observation == NOTHING
    assert f"take {second} from {rec}" not in env.valid_actions()


def test_truncated_is_not_won() -> None:
    env = make("household", "train", max_steps=3)
    env.reset("train-0")
    results = [env.step("look") for _ in range(3)]
    assert results[-1].truncated and not results[-1].terminated and not results[-1].won
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("look")


def test_transformations_change_state() -> None:
    env = make("household", "train")
    env.reset("train-0")  # put a hot tomato in diningtable
    actions = env.expert_actions()
    heat = next(a for a in actions if a.startswith("heat "))
    assert kind_of(heat.split(" with ")[1]) == "microwave"
    without_heat = [a for a in actions if a != heat]
    from firsthand import ReplayError

    with pytest.raises(ReplayError, match="does not win"):
        replay(env, "train-0", without_heat)


def test_bad_task_id() -> None:
    env = make("household", "train")
    with pytest.raises(InvalidInputError, match="'kitchen-1'"):
        env.reset("kitchen-1")


def test_failure_categories_of_lost_episodes() -> None:
    """Episodes read by hand (the quickstart's IL model on id_test), and their categories."""
    from firsthand.envs.household import HouseholdEnv
    from firsthand.envs.household.env import failure_categories

    pot = [
        "go to cabinet 1",
        "open cabinet 1",
        "take pot 1 from cabinet 1",
        "go to fridge 1",
        "cool pot 1 with fridge 1",
    ]
    pot += ["go to stoveburner 1", "put pot 1 in/on stoveburner 1"]  # "pot 2" was in the cabinet, "pot 1" nowhere
    assert failure_categories("id_test-4", pot) == ["wrong_copy", "never_found", "put_not_held"]
    news = ["go to coffeetable 1", "take newspaper 2 from coffeetable 1", "go to garbagecan 1"]
    news += ["put newspaper 2 in/on garbagecan 1"] + ["go to garbagecan 1"] * 3  # one of two, then stuck
    assert failure_categories("id_test-5", news) == ["second_object", "repeat_go_to"]
    lamp = ["go to bed 1", "take cellphone 1 from bed 1", "go to dresser 1", "use desklamp 1"]
    assert failure_categories("id_test-1", lamp) == ["other"]  # held the object, never found the lamp
    assert HouseholdEnv("id_test").failure_categories("id_test-4", pot[:3]) == ["wrong_copy", "never_found"]


def test_difficulty_is_an_adapter_argument() -> None:
    """`household:receptacles=...:habit=...` builds harder worlds from the command line; the defaults build the
    worlds every result was measured on."""
    from firsthand.envs.household.world import STANDARD, generate
    from firsthand.registry import make

    tasks = make("household", "ood_test").tasks(60)
    default = make("household", "ood_test")
    assert all(default._parse_task(t) == generate("ood_test", int(t.split("-")[1]), STANDARD) for t in tasks[:5])
    harder = make("household:receptacles=2:habit=1.0", "ood_test")
    count = lambda env: sum(len(env._parse_task(t).receptacles) for t in tasks)  # noqa: E731
    assert count(harder) > 1.5 * count(default)
    loose = make("household:habit=1.0", "ood_test")  # objects keep less to their usual places
    moved = sum(loose._parse_task(t).placement[0] != default._parse_task(t).placement[0] for t in tasks)
    assert moved > len(tasks) / 4
    for env in (default, harder):  # the expert still wins every harder world
        for task in tasks[:12]:
            env.reset(task)
            assert replay(env, task, env.expert_actions()).steps
    with pytest.raises(InvalidInputError, match="habit must be above 0 and at most 1"):
        make("household:habit=0", "train")


def test_novel_objects_are_goals_of_their_own_split_only() -> None:
    """With novel_objects, the novel kinds are never a training goal (no expert target names them) but lie in
    training worlds (observations name them); novel_test makes them its goals, and its expert wins."""
    from firsthand.envs.household.world import novel_goal

    train = make("household:novel_objects=true", "train")
    goals = {train._parse_task(t).obj_kind for t in train.tasks(1500)}
    assert goals and not any(novel_goal(k) for k in goals)
    placed = {o.rsplit(" ", 1)[0] for t in train.tasks(200) for o, _ in train._parse_task(t).placement}
    assert {k for k in placed if novel_goal(k)}  # seen in training worlds, as distractors
    novel = make("household:novel_objects=true", "novel_test")
    for task in novel.tasks(24):
        assert novel_goal(novel._parse_task(task).obj_kind)
        novel.reset(task)
        assert replay(novel, task, novel.expert_actions()).steps
    with pytest.raises(InvalidInputError, match="household:novel_objects=true"):
        make("household", "novel_test")
