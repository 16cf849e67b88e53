"""ScienceWorld (Wang et al., 2022): 30 elementary-science task types in a simulated house.

The simulator is Scala code in a Java VM, driven through py4j by the `scienceworld` package. This
adapter talks to its `PythonInterface` directly (the package's Python wrapper recomputes ~3,000
"valid" actions at every step, 50-400 ms, and cannot pass options to the JVM).

Tasks and splits
    A task is one *variation* of one task type, written ``"<task type>:<variation>"``, e.g.
    ``"boil:3"``. ScienceWorld splits each type's variations into train (50%), dev (25%) and test
    (25%) by contiguous index ranges, and the ranges hold different objects (boil: water ... in
    train, ice cream and lead in dev, lead, tin, caesium in test). So the official dev set is as
    shifted as test, and the splits here are:

    - ``train``: the official train variations, less every fifth one;
    - ``id_test``: those held-out train variations (same objects and substances, other layouts and
      start rooms: the same distribution);
    - ``ood_test``: the official test variations (unseen objects and substances).

    The official dev variations are not used. By default the three types whose expert paths are
    long (`LONG_TASK_TYPES`, median expert path above 100 steps: every branched state replays the
    whole prefix, and the pipeline prompts at every step) are left out of `tasks()`; pass
    ``task_types=TASK_TYPES`` to list all 30. `tasks()` interleaves the types (one variation of
    each type per round, shortest types first), so a small limit still covers many types; within
    a type the variations come in a fixed shuffled order, so the first rounds are not all "water".

Determinism
    ScienceWorld 1.2.3 is not deterministic: objects live in hash sets keyed by Java identity
    hash codes, so rooms list their contents in a different order at every load, and where the
    simulation draws random numbers (bees, pollination, genetics) in set order, the dynamics
    diverge too (grow-fruit completes at step 86 or 87 for the same actions). The JVM here runs
    with ``-XX:hashCode=2`` (every identity hash is the same), which makes set order depend on
    insertion order alone: observations and expert paths are then identical across loads and
    across JVMs (checked on all 30 types). Listing valid actions draws from the simulator's global
    random generator too, so `candidate_actions` saves and restores it: asking for candidates
    never changes what happens next.

    One JVM per process is shared by every environment of that process (evaluation runs many
    episodes side by side); each environment has its own simulator object, and the two pieces of
    global simulator state (the random generator and the object-id counter) are swapped in and out
    when another environment's simulator is used. The JVM stops when the last environment of the
    process is closed or collected. Memory: about 0.5 GB resident for the JVM (with the serial
    garbage collector; the default one grows to ~3 GB), plus ~1 MB per environment.

Actions
    `valid_actions()` is empty: ScienceWorld parses free text against the objects in view, and its
    own "valid" list (~3,000 template x object pairs per state, mostly nonsense such as "connect
    agent to air") does not even contain the expert's actions, which often name objects another
    way ("focus on thermometer in inventory") or answer an ambiguity prompt ("0"). Instead
    `candidate_actions()` returns a bounded, de-duplicated sample of that list (at most
    `candidates_per_template` per action template, chosen by a stable hash; never "reset task",
    "task", actions on the agent or the air, or wiring in tasks without electricity, as
    ScienceWorld's noElectricalAction simplification does), and every StepResult carries ``info["invalid"]``:
    True when the game answered that no action matches the input.

Expert, success, step limit
    The expert is ScienceWorld's gold path (``load(..., generateGoldPath=True)``), cut at the step
    that completes the task (gold paths often go on with "wait1" or "look around"). `won` is the
    task completed (score 100); a failed task (score -100, e.g. focusing on the wrong object) ends
    the episode with `terminated` and not `won`. `reward` is the change in score (0..1 scale), and
    ``info["score"]`` the score out of 100. `max_steps` defaults to 150, above the expert path of
    nearly every task in the default lists; a task whose expert needs more raises NoExpertError.

Snapshots
    There is no way to copy a simulator's state: `snapshot_native` is False, a snapshot is the task
    and the actions taken, and `restore` reloads the task (~0.1 s) and replays them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import weakref
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import scienceworld  # noqa: F401 - the registry turns a missing package into DependencyNotInstalled
from scienceworld.constants import BASEPATH, JAR_PATH

from firsthand.contract import Env, InvalidInputError, NoExpertError
from firsthand.envs._jvm import start_gateway, stop_gateway

MAX_VARIATIONS: dict[str, int] = {
    "boil": 30,
    "change-the-state-of-matter-of": 30,
    "chemistry-mix": 32,
    "chemistry-mix-paint-secondary-color": 36,
    "chemistry-mix-paint-tertiary-color": 36,
    "find-animal": 300,
    "find-living-thing": 300,
    "find-non-living-thing": 300,
    "find-plant": 300,
    "freeze": 30,
    "grow-fruit": 126,
    "grow-plant": 126,
    "identify-life-stages-1": 14,
    "identify-life-stages-2": 10,
    "inclined-plane-determine-angle": 168,
    "inclined-plane-friction-named-surfaces": 1386,
    "inclined-plane-friction-unnamed-surfaces": 162,
    "lifespan-longest-lived": 125,
    "lifespan-longest-lived-then-shortest-lived": 125,
    "lifespan-shortest-lived": 125,
    "measure-melting-point-known-substance": 436,
    "measure-melting-point-unknown-substance": 300,
    "melt": 30,
    "mendelian-genetics-known-plant": 120,
    "mendelian-genetics-unknown-plant": 480,
    "power-component": 20,
    "power-component-renewable-vs-nonrenewable-energy": 20,
    "test-conductivity": 900,
    "test-conductivity-of-unknown-substances": 600,
    "use-thermometer": 540,
}
"""Variations per task type in scienceworld 1.2.3 (the tests check this against the simulator), so
that listing tasks needs no JVM."""


TASK_TYPES: tuple[str, ...] = (
    "lifespan-longest-lived",  # 5
    "lifespan-shortest-lived",  # 5
    "lifespan-longest-lived-then-shortest-lived",  # 6
    "find-non-living-thing",  # 7
    "power-component",  # 10
    "find-animal",  # 12
    "find-living-thing",  # 12
    "find-plant",  # 12
    "power-component-renewable-vs-nonrenewable-energy",  # 13
    "identify-life-stages-2",  # 14
    "use-thermometer",  # 17
    "test-conductivity",  # 18
    "test-conductivity-of-unknown-substances",  # 18
    "chemistry-mix-paint-secondary-color",  # 20
    "chemistry-mix",  # 22
    "chemistry-mix-paint-tertiary-color",  # 27
    "measure-melting-point-known-substance",  # 30
    "measure-melting-point-unknown-substance",  # 32
    "identify-life-stages-1",  # 38
    "grow-plant",  # 39
    "change-the-state-of-matter-of",  # 48
    "melt",  # 48
    "freeze",  # 58
    "inclined-plane-friction-named-surfaces",  # 70
    "boil",  # 73
    "inclined-plane-determine-angle",  # 77
    "grow-fruit",  # 88
    "inclined-plane-friction-unnamed-surfaces",  # 104
    "mendelian-genetics-known-plant",  # 144
    "mendelian-genetics-unknown-plant",  # 146
)
"""The 30 task types, shortest expert first (comments: median expert steps over 10-12 sampled variations
of all three official splits), so that the first tasks of a list are the cheapest to run."""
LONG_TASK_TYPES: frozenset[str] = frozenset(
    {"mendelian-genetics-known-plant", "mendelian-genetics-unknown-plant", "inclined-plane-friction-unnamed-surfaces"}
)
"""Types left out of `tasks()` by default: median expert paths of 104-146 steps (up to 191), so branching
them in replay mode costs ~K * 150^2 / 2 simulator steps per trajectory."""

JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:hashCode=2",  # constant identity hashes: hash-set order, hence the game, becomes deterministic
    "--add-opens=java.base/java.util=ALL-UNNAMED",  # to save and restore the global random generator
    "-XX:+UseSerialGC",  # ~0.5 GB resident instead of ~3 GB with the default collector, and no slower
)
NO_MATCH = "No known action matches that input."
_INVALID_PREFIXES = (NO_MATCH, "ERROR: Unknown response", "ERROR: Value out of range")
_SKIPPED = {"reset task", "task"}  # "reset task" undoes goal progress; "task" repeats the goal
_PASSIVE_OBJECTS = re.compile(r"\b(?:agent|air)\b")  # "connect agent to air", "focus on air", ...
_WIRING = re.compile(r"^(?:connect|disconnect) ")
_JAVA_RANDOM_MULTIPLIER = 0x5DEECE66D  # java.util.Random.setSeed(s) stores s ^ this


def official_splits(n: int) -> tuple[list[int], list[int], list[int]]:
    """ScienceWorld's train/dev/test variation indices for a type with `n` variations (n >= 5),
    as PythonInterface.getSets computes them: four groups of n // 4, the remainder joining test."""
    size = n // 4
    groups = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    return groups[0] + groups[1], groups[2], [v for g in groups[3:] for v in g]


def split_variations(task_type: str, split: str) -> list[int]:
    """The variations of `task_type` in `split` (see the module docstring), ascending."""
    train, _dev, test = official_splits(MAX_VARIATIONS[task_type])
    if split == "ood_test":
        return test
    return [v for i, v in enumerate(train) if (i % 5 == 4) == (split == "id_test")]


# ----------------------------------------------------------------------------------------------
# The JVM, shared by the environments of one process
# ----------------------------------------------------------------------------------------------
class _Host:
    """One JVM and the bookkeeping that lets several simulators share it deterministically."""

    def __init__(self) -> None:
        self.gateway = start_gateway(JAR_PATH, BASEPATH, JVM_OPTIONS, "ScienceWorld")
        self.proc = self.gateway.java_process
        self.pid = os.getpid()
        jvm = self.gateway.jvm
        self._random = jvm.java.lang.Class.forName("scala.util.Random$").getField("MODULE$").get(None).self()
        self._seed = jvm.java.lang.Class.forName("java.util.Random").getDeclaredField("seed")
        self._seed.setAccessible(True)
        self._ids = jvm.java.lang.Class.forName("util.UniqueIdentifier$").getField("MODULE$").get(None)
        self.lock = threading.RLock()
        self.owner: _Simulator | None = None
        self.users = 0

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def save(self) -> tuple[int, int]:
        """The simulator's global state: the random generator's seed and the next object id."""
        return int(self._seed.get(self._random)), int(self._ids.count())

    def load(self, state: tuple[int, int]) -> None:
        self._random.setSeed(state[0] ^ _JAVA_RANDOM_MULTIPLIER)
        getattr(self._ids, "count_$eq")(state[1])

    def activate(self, simulator: _Simulator) -> None:
        """Swap `simulator`'s global state in (and the previous owner's out). Call under `lock`."""
        if self.owner is simulator:
            return
        if self.owner is not None:
            self.owner.globals = self.save()
        if simulator.globals is not None:
            self.load(simulator.globals)
        self.owner = simulator

    def shutdown(self) -> None:
        stop_gateway(self.gateway)


_HOST: _Host | None = None
_HOST_LOCK = threading.Lock()


def _acquire_host() -> _Host:
    global _HOST
    with _HOST_LOCK:
        if _HOST is None or not _HOST.alive():
            _HOST = _Host()
        _HOST.users += 1
        return _HOST


def _release_host(host: _Host) -> None:
    global _HOST
    with _HOST_LOCK:
        host.users -= 1
        if host.users <= 0 and host.alive():
            if _HOST is host:
                _HOST = None
            host.shutdown()


class _Simulator:
    """One ScienceWorld PythonInterface inside the shared JVM."""

    def __init__(self) -> None:
        self.host = _acquire_host()
        with self.host.lock:
            self.server = self.host.gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self.globals: tuple[int, int] | None = None
        self.closed = False

    def load(self, task_type: str, variation: int, *, gold: bool = False) -> tuple[str, str, list[str]]:
        """Load a variation; return its first observation, its goal text and (with `gold`) the gold path."""
        with self.host.lock:
            self.host.activate(self)
            error = self.server.load(task_type, variation, "", gold)
            if error:
                raise InvalidInputError(f"ScienceWorld could not load {task_type}:{variation}: {error}")
            # (with gold, the simulator generates the path, then loads the variation afresh)
            path = [str(a) for a in self.server.getGoldActionSequence()] if gold else []
            observation = str(self.server.step("look around"))
            return observation, str(self.server.getTaskDescription()), path

    def step(self, action: str) -> tuple[str, float, bool]:
        with self.host.lock:
            self.host.activate(self)
            observation = str(self.server.step(action))
            return observation, float(self.server.getScore()), bool(self.server.getCompleted())

    def valid_actions_json(self) -> list[dict[str, Any]]:
        """The simulator's valid-action list, leaving the global random generator as it was."""
        with self.host.lock:
            self.host.activate(self)
            state = self.host.save()
            try:
                return json.loads(self.server.getValidActionObjectCombinationsJSON())["validActions"]
            finally:
                self.host.load(state)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self.host.lock:
            if self.host.owner is self:
                self.host.owner = None
        _release_host(self.host)


# ----------------------------------------------------------------------------------------------
# The environment
# ----------------------------------------------------------------------------------------------
_GOLD: dict[str, tuple[str, ...] | str] = {}
"""Expert paths (or why there is none) by task, shared by the environments of a process."""


def _electrical(task_type: str) -> bool:
    """The types that need wires (the simulator's own test, in its Python wrapper's load)."""
    return "power-component" in task_type or "conductivity" in task_type


def _stable(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class ScienceWorldEnv(Env):
    """ScienceWorld behind the firsthand Env protocol; see the module docstring.

    Example:
        >>> from firsthand import make
        >>> env = make("scienceworld", split="train")
        >>> observation, info = env.reset("boil:0")
        >>> info["goal"].startswith("Your task is to boil water.")
        True
        >>> env.close()
    """

    name: ClassVar[str] = "scienceworld"
    snapshot_native: ClassVar[bool] = False
    default_max_steps: ClassVar[int] = 150
    worker_memory: ClassVar[int] = 512 << 20  # one JVM per process, ~0.5 GB

    def __init__(
        self,
        split: str = "train",
        *,
        max_steps: int | None = None,
        task_types: Sequence[str] | None = None,
        candidates_per_template: int = 6,
    ) -> None:
        super().__init__(split, max_steps=max_steps)
        if candidates_per_template < 1:
            raise InvalidInputError(f"candidates_per_template must be at least 1, got {candidates_per_template!r}")
        chosen = [t for t in TASK_TYPES if t not in LONG_TASK_TYPES] if task_types is None else list(task_types)
        unknown = [t for t in chosen if t not in MAX_VARIATIONS]
        if unknown or not chosen:
            raise InvalidInputError(
                f"task_types must name ScienceWorld task types, got unknown ones {unknown!r} of {chosen!r}; "
                f"task types: {', '.join(TASK_TYPES)}"
            )
        self.task_types = tuple(t for t in TASK_TYPES if t in chosen)  # canonical order
        self.candidates_per_template = candidates_per_template
        self._tasks: list[str] | None = None
        self._sim: _Simulator | None = None  # started at the first reset: listing tasks needs no JVM
        self._finalizer: weakref.finalize | None = None
        self._task = ""
        self._goal = ""
        self._actions: list[str] = []  # since reset: a snapshot replays them
        self._score = 0.0

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        if self._tasks is None:
            columns = []
            for t in self.task_types:
                variations = split_variations(t, self.split)
                random.Random(f"scienceworld:{self.split}:{t}").shuffle(variations)
                columns.append([f"{t}:{v}" for v in variations])
            rounds = max(map(len, columns))
            self._tasks = [c[r] for r in range(rounds) for c in columns if r < len(c)]
        return list(self._tasks if limit is None else self._tasks[:limit])

    def _parse_task(self, task: str) -> tuple[str, int]:
        task_type, _, variation = task.rpartition(":")
        if not task_type or not variation.isdigit():
            raise InvalidInputError(
                f"unknown scienceworld task {task!r}; task identifiers look like 'boil:3' (task type:variation), "
                "see env.tasks()"
            )
        if task_type not in MAX_VARIATIONS:
            raise InvalidInputError(
                f"unknown ScienceWorld task type {task_type!r} in task {task!r}; task types: {', '.join(TASK_TYPES)}"
            )
        if int(variation) not in split_variations(task_type, self.split):
            raise InvalidInputError(
                f"task {task!r} is not in the {self.split!r} split; its variations of {task_type!r} are listed by "
                f"env.tasks() (make the environment with the split that holds this task)"
            )
        return task_type, int(variation)

    # -- the episode ----------------------------------------------------------------------------
    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`. A variation fixes everything (the simulator seeds itself with its index),
        so `seed` changes nothing."""
        task_type, variation = self._parse_task(task)
        observation, goal, _ = self._simulator().load(task_type, variation)
        self._task, self._goal = task, goal
        self._actions, self._score = [], 0.0
        return observation.strip(), self._info()

    def _simulator(self) -> _Simulator:
        if self._sim is not None and not self._sim.host.alive():  # the JVM died: start another
            self.close()
        if self._sim is None or self._sim.closed:
            self._sim = _Simulator()
            self._finalizer = weakref.finalize(self, self._sim.close)
        return self._sim

    def _info(self) -> dict[str, Any]:
        task_type, _, variation = self._task.rpartition(":")
        return {
            "task": self._task,
            "goal": self._goal,
            "task_type": task_type,
            "variation": int(variation),
            "score": round(100 * self._score),
        }

    def _require_task(self) -> _Simulator:
        if not self._task or self._sim is None or self._sim.closed:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._sim

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        sim = self._require_task()
        observation, score, completed = sim.step(action)
        self._actions.append(action)
        won = completed and score > 0
        terminated = won or score < 0  # the simulator scores a failed task -1 and does not flag it completed
        reward, self._score = score - self._score, score
        info = self._info()
        info["invalid"] = observation.startswith(_INVALID_PREFIXES)
        return observation.strip(), reward, terminated, won, info

    # -- actions, snapshots, expert -------------------------------------------------------------
    def valid_actions(self) -> list[str]:
        """Always empty: ScienceWorld's action space is open (see the module docstring)."""
        self._require_task()
        return []

    def candidate_actions(self) -> list[str]:
        """A bounded sample of the simulator's valid actions at this state (sorted, deterministic).

        At an ambiguity prompt these are the numbers of its options ("0", "1", ...).
        """
        sim = self._require_task()
        # Like ScienceWorld's noElectricalAction simplification: wiring only where the task is electrical.
        wiring = _electrical(self._task.rpartition(":")[0])
        by_template: dict[int, set[str]] = defaultdict(set)
        for entry in sim.valid_actions_json():
            action = str(entry["action"])
            if action in _SKIPPED or _PASSIVE_OBJECTS.search(action) or (not wiring and _WIRING.match(action)):
                continue
            by_template[int(entry["template_id"])].add(action)
        chosen = [
            a for actions in by_template.values() for a in sorted(actions, key=_stable)[: self.candidates_per_template]
        ]
        return sorted(chosen)

    def _snapshot(self) -> tuple[str, tuple[str, ...]]:
        self._require_task()
        return (self._task, tuple(self._actions))

    def _restore(self, snapshot: Any) -> None:
        """Reload the task and replay the actions (ScienceWorld cannot copy its state)."""
        task, actions = snapshot
        self._reset(task, None)
        for action in actions:
            self._step(action)

    def expert_actions(self) -> list[str]:
        """ScienceWorld's gold path for the task, cut where it completes the task."""
        sim = self._require_task()
        if self.elapsed_steps:
            raise NoExpertError("the scienceworld expert plans from the start of a task: call reset(task) first")
        if self._task not in _GOLD:
            _GOLD[self._task] = self._gold_path(sim)
            self._reset(self._task, None)  # the gold path was walked to find where it completes
        path = _GOLD[self._task]
        if isinstance(path, str):
            raise NoExpertError(path)
        if len(path) > self.max_steps:
            raise NoExpertError(
                f"the expert for {self._task!r} needs {len(path)} steps, more than max_steps={self.max_steps}; "
                f"make the environment with max_steps={len(path)} or more"
            )
        return list(path)

    def _gold_path(self, sim: _Simulator) -> tuple[str, ...] | str:
        """The gold path up to and including the step that completes the task, or why there is none."""
        task_type, variation = self._parse_task(self._task)
        _, _, path = sim.load(task_type, variation, gold=True)
        for i, action in enumerate(path):
            _, score, completed = sim.step(action)
            if completed and score > 0:
                return tuple(path[: i + 1])
            if score < 0:
                return f"ScienceWorld's gold path for {self._task!r} fails the task at step {i} ({action!r})"
        return f"ScienceWorld's gold path for {self._task!r} ({len(path)} steps) does not complete the task"

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Detach from the shared JVM (which stops when its last environment closes)."""
        if self._finalizer is not None:
            self._finalizer()
        self._sim = None
        self._task = ""
