"""The household environment: ALFWorld's rooms, task types and action wording in pure Python."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from firsthand.contract import SPLITS, Env, InvalidInputError, NoExpertError
from firsthand.envs.household.world import (
    APPLIANCE,
    LAMP,
    NOVEL_TEST,
    SPLIT_SIZE,
    STANDARD,
    TRANSFORM,
    Difficulty,
    Task,
    generate,
    kind_of,
)

NOTHING = "Nothing happens."
_PUT = re.compile(r"^put (.+?) (?:in/on|in|on) (.+)$")
_TAKE = re.compile(r"^take (.+?) from (.+)$")
_WITH = re.compile(r"^(clean|heat|cool) (.+?) with (.+)$")


@dataclass
class _State:
    """The mutable part of a world. Copied field by field for snapshots (cheaper than deepcopy)."""

    contents: dict[str, tuple[str, ...]]  # tuples: a snapshot copies the dict, not every list
    location: dict[str, str]  # object -> receptacle it is in/on ("" while carried)
    is_open: dict[str, bool]
    # frozensets are replaced, never mutated, so copies can share them
    clean: frozenset[str] = frozenset()
    hot: frozenset[str] = frozenset()
    cool: frozenset[str] = frozenset()
    lamps_on: frozenset[str] = frozenset()
    at: str = ""  # "" = the middle of the room
    holding: str = ""
    won: bool = False

    def copy(self) -> _State:
        return _State(
            contents=dict(self.contents),
            location=dict(self.location),
            is_open=dict(self.is_open),
            clean=self.clean,
            hot=self.hot,
            cool=self.cool,
            lamps_on=self.lamps_on,
            at=self.at,
            holding=self.holding,
            won=self.won,
        )


def _listing(items: Sequence[str]) -> str:
    """ALFWorld's list wording: "a mug 1", "a mug 1, and a cup 2", "a a, a b, and a c"."""
    if not items:
        return "nothing"
    words = [f"a {x}" for x in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + ", and " + words[-1]


@functools.lru_cache(maxsize=4096)
def _destinations(t: Task) -> tuple[str, ...]:
    return tuple(r for r in t.receptacles if kind_of(r) == t.destination)


@functools.lru_cache(maxsize=65536)
def _valid_actions(t: Task, at: str, holding: str, is_open: bool | None, here: tuple[str, ...]) -> tuple[str, ...]:
    """Valid actions as a pure function of what they depend on, memoised: branching asks for
    them after every restore to check re-synchronisation, so this is on the hot path."""
    acts = ["inventory", "look"]
    acts += [f"go to {r}" for r in t.receptacles if r != at]
    if holding:
        acts.append(f"examine {holding}")
    if at:
        acts.append(f"examine {at}")
        if is_open is not None:
            acts.append(f"{'close' if is_open else 'open'} {at}")
        if is_open is not False:
            for obj in here:
                acts.append(f"examine {obj}")
                if kind_of(obj) == LAMP:
                    acts.append(f"use {obj}")
                elif not holding:
                    acts.append(f"take {obj} from {at}")
            if holding:
                acts.append(f"put {holding} in/on {at}")
        if holding:
            for task_type, appliance in APPLIANCE.items():
                if kind_of(at) == appliance:
                    acts.append(f"{TRANSFORM[task_type]} {holding} with {at}")
    return tuple(sorted(set(acts)))


def _room_view(t: Task) -> str:
    return f"You are in the middle of a room. Looking quickly around you, you see {_listing(list(t.receptacles))}."


class HouseholdEnv(Env):
    """ALFWorld-style household tasks, generated procedurally; see `firsthand.envs.household.world`.

    Example:
        >>> from firsthand import make
        >>> env = make("household", split="train")
        >>> obs, info = env.reset(env.tasks(1)[0])
        >>> obs.startswith("You are in the middle of a room.")
        True
    """

    name: ClassVar[str] = "household"
    splits: ClassVar[tuple[str, ...]] = (*SPLITS, NOVEL_TEST)
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = 20
    """Twice the expert's longest plan (10 steps): what `run` and `eval` play to."""

    def __init__(
        self,
        split: str = "train",
        *,
        max_steps: int | None = None,
        receptacles: float = STANDARD.receptacles,
        habit: float = STANDARD.habit,
        novel_objects: bool = STANDARD.novel_objects,
    ) -> None:
        """`receptacles`, `habit` and `novel_objects`: the world's difficulty and splits (`world.Difficulty`),
        e.g. ``--env household:receptacles=2:habit=0.5`` for a harder out-of-domain split."""
        super().__init__(split, max_steps=max_steps)
        if split == NOVEL_TEST and novel_objects is not True:
            raise InvalidInputError(
                f"household's {NOVEL_TEST} split is for the worlds whose training goals leave its objects out: "
                f"name the environment household:novel_objects=true"
            )
        try:
            self.difficulty = Difficulty(
                receptacles=float(receptacles), habit=float(habit), novel_objects=novel_objects is True
            )
        except (TypeError, ValueError) as e:
            raise InvalidInputError(
                f"environment household: {e} (for example --env household:receptacles=2:habit=0.5)"
            ) from None
        self._task: Task | None = None
        self._state: _State | None = None

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        size = SPLIT_SIZE[self.split]
        n = size if limit is None else min(limit, size)
        return [f"{self.split}-{i}" for i in range(n)]

    def _parse_task(self, task: str) -> Task:
        split, _, index = task.rpartition("-")
        if split not in self.splits or not index.isdigit():
            raise InvalidInputError(
                f"unknown household task {task!r}; task identifiers look like 'train-12' (split-index), see env.tasks()"
            )
        return generate(split, int(index), self.difficulty)

    # -- the episode ----------------------------------------------------------------------------
    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`. Generation is a function of the task alone, so `seed` changes nothing."""
        t = self._parse_task(task)
        contents: dict[str, tuple[str, ...]] = dict.fromkeys(t.receptacles, ())
        location: dict[str, str] = {}
        for obj, rec in t.placement:
            contents[rec] += (obj,)
            location[obj] = rec
        self._task = t
        self._state = _State(contents=contents, location=location, is_open={r: False for r in t.openable})
        return f"{_room_view(t)}\n\nYour task is to: {t.goal}", self._info()

    def _info(self) -> dict[str, Any]:
        t = self._require_task()
        return {"task": t.task_id, "goal": t.goal, "task_type": t.task_type, "room": t.room}

    def _require_task(self) -> Task:
        if self._task is None:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._task

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        t = self._require_task()
        s = self._state
        assert s is not None
        observation = self._execute(" ".join(action.strip().lower().split()), t, s)
        if not s.won:
            s.won = self._goal_reached(t, s)
        return observation, 1.0 if s.won else 0.0, s.won, s.won, self._info()

    def _visible(self, s: _State, rec: str) -> bool:
        return s.is_open.get(rec, True)  # closed receptacles hide their contents

    def _describe(self, s: _State, rec: str) -> str:
        if rec in s.is_open:
            if not s.is_open[rec]:
                return f"The {rec} is closed."
            return f"The {rec} is open. In it, you see {_listing(s.contents[rec])}."
        return f"On the {rec}, you see {_listing(s.contents[rec])}."

    def _execute(self, a: str, t: Task, s: _State) -> str:  # noqa: C901 - one branch per verb reads best
        if a == "look":
            if not s.at:
                return _room_view(t)
            return f"You are facing the {s.at}. Next to it, you see nothing."
        if a == "inventory":
            return f"You are carrying: a {s.holding}." if s.holding else "You are not carrying anything."
        if a.startswith("go to "):
            rec = a[6:]
            if rec not in s.contents or rec == s.at:
                return NOTHING
            s.at = rec
            return f"You arrive at {rec}. {self._describe(s, rec)}"
        if a.startswith("open ") or a.startswith("close "):
            verb, rec = a.split(" ", 1)
            if rec != s.at or rec not in s.is_open or s.is_open[rec] == (verb == "open"):
                return NOTHING
            s.is_open[rec] = verb == "open"
            if verb == "open":
                return f"You open the {rec}. {self._describe(s, rec)}"
            return f"You close the {rec}."
        if a.startswith("examine "):
            x = a[8:]
            if x == s.at:
                return self._describe(s, x)
            if x == s.holding or (s.at and self._visible(s, s.at) and x in s.contents[s.at]):
                return f"This is a normal {x}."
            return NOTHING
        if a.startswith("use "):
            lamp = a[4:]
            if kind_of(lamp) != LAMP or not s.at or s.location.get(lamp) != s.at:
                return NOTHING
            s.lamps_on |= {lamp}
            return f"You turn on the {lamp}."
        m = _TAKE.match(a)
        if m:
            obj, rec = m.groups()
            if (
                s.holding
                or rec != s.at
                or not self._visible(s, rec)
                or obj not in s.contents[rec]
                or kind_of(obj) == LAMP
            ):
                return NOTHING
            s.contents[rec] = tuple(o for o in s.contents[rec] if o != obj)
            s.location[obj] = ""
            s.holding = obj
            return f"You pick up the {obj} from the {rec}."
        m = _PUT.match(a)
        if m:
            obj, rec = m.groups()
            if obj != s.holding or rec != s.at or not self._visible(s, rec):
                return NOTHING
            s.contents[rec] += (obj,)
            s.location[obj] = rec
            s.holding = ""
            return f"You put the {obj} in/on the {rec}."
        m = _WITH.match(a)
        if m:
            verb, obj, rec = m.groups()
            task_type = {v: k for k, v in TRANSFORM.items()}[verb]
            if obj != s.holding or rec != s.at or kind_of(rec) != APPLIANCE[task_type]:
                return NOTHING
            if verb == "clean":
                s.clean |= {obj}
            elif verb == "heat":
                s.hot |= {obj}
                s.cool -= {obj}
            else:
                s.cool |= {obj}
                s.hot -= {obj}
            return f"You {verb} the {obj} using the {rec}."
        return NOTHING

    def _goal_reached(self, t: Task, s: _State) -> bool:
        if t.task_type == "look_at_obj_in_light":
            return kind_of(s.holding) == t.obj_kind and any(s.location.get(lamp) == s.at for lamp in s.lamps_on)
        need = {"pick_clean_then_place": s.clean, "pick_heat_then_place": s.hot, "pick_cool_then_place": s.cool}.get(
            t.task_type
        )
        for rec in _destinations(t):
            objs = s.contents[rec]
            good = [o for o in objs if kind_of(o) == t.obj_kind and (need is None or o in need)]
            if len(good) >= (2 if t.task_type == "pick_two_obj_and_place" else 1):
                return True
        return False

    # -- valid actions, snapshots, expert -------------------------------------------------------
    def valid_actions(self) -> list[str]:
        t = self._require_task()
        s = self._state
        assert s is not None
        return list(_valid_actions(t, s.at, s.holding, s.is_open.get(s.at), s.contents.get(s.at, ())))

    def _snapshot(self) -> tuple[Task, _State]:
        t = self._require_task()
        assert self._state is not None
        return (t, self._state.copy())

    def _restore(self, snapshot: Any) -> None:
        task, state = snapshot
        self._task = task
        self._state = state.copy()

    def failure_categories(self, task: str, actions: Sequence[str]) -> list[str]:
        return failure_categories(task, actions, self.difficulty)

    def expert_actions(self) -> list[str]:
        """A planner with privileged knowledge of where every object is; wins every task."""
        t = self._require_task()
        if self._state is None or self.elapsed_steps:
            raise NoExpertError("the household expert plans from the start of a task: call reset(task) first")
        return plan(t)


def plan(t: Task) -> list[str]:
    """The expert's action sequence for task `t`, from its initial state."""
    at = ""
    opened: set[str] = set()
    contents: dict[str, list[str]] = {r: [] for r in t.receptacles}
    for obj, rec in t.placement:
        contents[rec].append(obj)
    actions: list[str] = []

    def go(rec: str) -> None:
        nonlocal at
        if at != rec:
            actions.append(f"go to {rec}")
            at = rec
        if rec in t.openable and rec not in opened:
            actions.append(f"open {rec}")
            opened.add(rec)

    candidates = [o for o, _ in t.placement if kind_of(o) == t.obj_kind]
    location = dict(t.placement)
    if t.task_type == "look_at_obj_in_light":
        obj = candidates[0]
        lamp = next(o for o, _ in t.placement if kind_of(o) == LAMP)
        go(location[obj])
        actions.append(f"take {obj} from {location[obj]}")
        go(location[lamp])
        actions.append(f"use {lamp}")
        return actions
    destination = next(r for r in t.receptacles if kind_of(r) == t.destination)
    needed = 2 if t.task_type == "pick_two_obj_and_place" else 1
    for obj in candidates[:needed]:
        go(location[obj])
        actions.append(f"take {obj} from {location[obj]}")
        if t.task_type in APPLIANCE:
            appliance = next(r for r in t.receptacles if kind_of(r) == APPLIANCE[t.task_type])
            if at != appliance:
                actions.append(f"go to {appliance}")
                at = appliance
            actions.append(f"{TRANSFORM[t.task_type]} {obj} with {appliance}")
        go(destination)
        actions.append(f"put {obj} in/on {destination}")
    return actions


# -- why an episode was lost: the categories that reading failed episodes showed (docs/history.md) --
CATEGORIES: tuple[str, ...] = ("wrong_copy", "never_found", "second_object", "put_not_held", "repeat_go_to")
"""wrong_copy: took a copy of an object that was not there while another copy of its kind was in view;
never_found: never held an object of the goal's kind; second_object: a pick-two task in which only one
was ever held; put_not_held: tried to put down an object it did not hold; repeat_go_to: ended with three
or more `go to` the place it already stood at. An episode may fall in several; "other" when in none."""


def failure_categories(task: str, actions: Sequence[str], difficulty: Difficulty = STANDARD) -> list[str]:
    """The categories of a lost episode of `task` that took `actions` (see `CATEGORIES`)."""
    split = task.rpartition("-")[0]
    env = HouseholdEnv(
        split,
        max_steps=max(1, len(actions)),
        receptacles=difficulty.receptacles,
        habit=difficulty.habit,
        novel_objects=difficulty.novel_objects,
    )
    observation, _ = env.reset(task)
    goal_kind = env._require_task().obj_kind
    pick_two = env._require_task().task_type == "pick_two_obj_and_place"
    held: set[str] = set()
    found: set[str] = set()
    tail_repeats = 0
    for action in actions:
        state = env._state
        assert state is not None
        at, holding = state.at, state.holding
        take, put = _TAKE.match(action), _PUT.match(action)
        r = env.step(action)
        if take and r.observation == NOTHING:
            obj = take.group(1)
            others = set(re.findall(rf"\b{re.escape(kind_of(obj))} \d+\b", observation)) - {obj}
            if others:
                found.add("wrong_copy")
        if put and put.group(1) != holding:
            found.add("put_not_held")
        going_nowhere = action.startswith("go to ") and action[6:] == at
        tail_repeats = tail_repeats + 1 if going_nowhere else 0
        if env._state and env._state.holding:
            held.add(env._state.holding)
        observation = r.observation
        if r.terminated or r.truncated:
            break
    kinds = [h for h in held if kind_of(h) == goal_kind]
    if not kinds:
        found.add("never_found")
    elif pick_two and len(kinds) < 2:
        found.add("second_object")
    if tail_repeats >= 3:
        found.add("repeat_go_to")
    return [c for c in CATEGORIES if c in found] or ["other"]
