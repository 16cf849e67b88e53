"""The contracts every stage of firsthand speaks: the environment protocol, its records, and errors.

This module imports nothing else from the project, so it can be read on its own.

Vocabulary (one word per idea, no aliases): observation, action, reward, terminated,
truncated, won, trajectory, step, branch, snapshot, split, expert, alternative, reflection.

An environment is text in, text out::

    env = firsthand.make("household", split="train")
    task = env.tasks(1)[0]
    observation, info = env.reset(task)          # info["goal"] holds the task's goal text
    result = env.step("go to cabinet 1")         # StepResult(observation, reward, terminated, truncated, won, info)
    snap = env.snapshot()                        # opaque, picklable
    env.restore(snap)                            # back to exactly that state
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, NamedTuple

SPLITS: tuple[str, ...] = ("train", "id_test", "ood_test")
"""Every environment declares these three task splits: training tasks, held-out tasks from the
same distribution (in-domain test), and tasks from a shifted distribution (out-of-domain test)."""


METHODS: tuple[str, ...] = ("il", "iwm", "sr")
"""The training methods: imitation (IL), implicit world modeling (IWM), self-reflection (SR)."""
RATIONALES: tuple[str, ...] = ("sr", "star")
"""The data kinds of a thought before the action (SR's reflections, STaR's rationales): trained mixed with the
expert data, and their models write a thought before acting."""


def normalize(text: str) -> str:
    """The form in which observations are compared (re-synchronisation, replay): whitespace collapsed."""
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------
# Errors: a flat hierarchy. Messages quote the bad value and say how to fix it.
# ----------------------------------------------------------------------------------------------
class FirsthandError(Exception):
    """Base class of every error firsthand raises on purpose."""


class UnknownNameError(FirsthandError, KeyError):
    """An environment, split, method or preset name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidInputError(FirsthandError, ValueError):
    """A user-supplied value (argument, file, record) that cannot be used as given."""


class ReplayError(FirsthandError):
    """A recorded action sequence did not reproduce its recorded outcome when replayed."""


class NoExpertError(FirsthandError):
    """The environment has no expert for this task."""


class DependencyNotInstalled(FirsthandError, ImportError):
    """An optional backend is missing; the message names the pip extra that installs it."""


def check_env_args(env: str, split: str, splits: Any, max_steps: int | None, default_max_steps: int) -> int:
    """Validate an adapter's `split` and `max_steps` (None: `default_max_steps`); return the step limit."""
    if split not in splits:
        raise UnknownNameError(f"unknown split {split!r} for {env}; valid splits: {', '.join(splits)}")
    max_steps = default_max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise InvalidInputError(f"max_steps must be at least 1, got {max_steps!r}")
    return max_steps


# ----------------------------------------------------------------------------------------------
# The environment protocol
# ----------------------------------------------------------------------------------------------
class StepResult(NamedTuple):
    """What one `Env.step` returns.

    `terminated` means the episode reached a terminal state (won or lost); `truncated` means it was
    cut by the step limit. Success is read from `won` alone, never from the end flags.
    """

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    won: bool
    info: dict[str, Any]


class Env:
    """A text environment with task splits, valid actions, snapshots and an optional expert.

    Adapters subclass it and write the environment's own parts (`_reset`, `_step`, `_snapshot`,
    `_restore`, `tasks`, `valid_actions`, `expert_actions`); the episode rules every adapter shares (no
    step before `reset`, none after the episode ended, the step counter, and truncation at `max_steps`)
    live here only, as Gymnasium's `TimeLimit` is the one place that issues truncation.

    `snapshot_native`: True when `_snapshot`/`_restore` copy the state directly, False when the
    environment can only return to a state by `reset` plus a replay of the actions that led there (the
    branching engine then replays the expert prefix itself).

    Optional capabilities have defaults here, so callers never probe for them: `candidate_actions()`
    (open action spaces), `prepare(tasks)` (costly bulk set-up) and `close()` (an external process).
    An adapter may also put ``"invalid": bool`` in `StepResult.info`; evaluation then counts invalid
    actions from it instead of from `valid_actions()`.
    """

    name: ClassVar[str]
    snapshot_native: ClassVar[bool]
    splits: ClassVar[tuple[str, ...]] = SPLITS
    default_max_steps: ClassVar[int] = 50
    worker_memory: ClassVar[int] = 0
    """Bytes a worker process holding instances needs beyond Python (a JVM): reserved per task on Ray."""

    def __init__(self, split: str = "train", *, max_steps: int | None = None) -> None:
        self.max_steps = check_env_args(self.name, split, self.splits, max_steps, self.default_max_steps)
        self.split = split
        self._elapsed_steps = 0
        self._started = False
        self._over = False

    # -- what every adapter writes ----------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        """The split's task identifiers, in a fixed order; the first `limit` of them if given."""
        raise NotImplementedError

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`; return the first observation and info (with at least "goal" and "task")."""
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Execute `action`: (observation, reward, terminated, won, info). Truncation is decided by `step`."""
        raise NotImplementedError

    def valid_actions(self) -> list[str]:
        """The actions accepted in the current state (sorted, no duplicates); empty when the
        environment has no such list (open action spaces)."""
        raise NotImplementedError

    def _snapshot(self) -> Any:
        """The adapter's state as an opaque, picklable object (the step counter is kept by `snapshot`)."""
        raise NotImplementedError

    def _restore(self, snapshot: Any) -> None:
        """Return to the state `_snapshot` captured; the snapshot stays valid for reuse."""
        raise NotImplementedError

    def expert_actions(self) -> list[str]:
        """A winning action sequence from the state right after `reset`; raises NoExpertError
        when the environment has none for this task."""
        raise NotImplementedError

    # -- optional capabilities, with their defaults -----------------------------------------------
    def candidate_actions(self) -> list[str]:
        """Plausible actions at the current state of an open action space (deterministic, sorted, no
        duplicates), from which branching samples alternatives; empty by default."""
        return []

    def prepare(self, tasks: Sequence[str]) -> None:
        """Set up many tasks at once before their resets (textworld-cooking generates its games); a no-op
        by default. Collection and evaluation call it."""

    def close(self) -> None:
        """Release what the adapter holds outside Python (a JVM); a no-op by default."""

    def failure_categories(self, task: str, actions: Sequence[str]) -> list[str]:
        """Why an episode of `task` that took `actions` was lost, in the adapter's own categories (the report
        counts them per method); none by default."""
        return []

    # -- the episode rules, in one place ----------------------------------------------------------
    @property
    def elapsed_steps(self) -> int:
        """Steps taken since the last `reset` (restored with a snapshot)."""
        return self._elapsed_steps

    def reset(self, task: str, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start `task`; return the first observation and info (with at least "goal" and "task")."""
        observation, info = self._reset(task, seed)
        self._elapsed_steps, self._started, self._over = 0, True, False
        return observation, info

    def step(self, action: str) -> StepResult:
        """Execute `action` as given. An action the environment does not accept is not an error:
        it returns an observation saying so (household: "Nothing happens.")."""
        if not self._started:
            raise InvalidInputError(f"the {self.name} environment has no task yet: call reset(task) first")
        if self._over:
            raise InvalidInputError("the episode is over (ended or out of steps): call reset(task) to start another")
        observation, reward, terminated, won, info = self._step(action)
        self._elapsed_steps += 1
        truncated = not terminated and self._elapsed_steps >= self.max_steps
        self._over = terminated or truncated
        return StepResult(observation, reward, terminated, truncated, won, info)

    def state_key(self, observation: str) -> str:
        """A key equal for equal states (GiGPO's step groups): a hash of the native snapshot, step count left out,
        where the environment has one; else the observation text it returned there. Two equal states whose
        snapshots differ in form (an order of items) get two keys, which only makes a step group smaller."""
        if self.snapshot_native:
            return "state:" + hashlib.sha1(pickle.dumps(self._snapshot())).hexdigest()
        return "observation:" + normalize(observation)

    def snapshot(self) -> Any:
        """An opaque, picklable object from which `restore` returns to the current state."""
        if not self._started:
            raise InvalidInputError(f"the {self.name} environment has no task yet: call reset(task) first")
        return (self._snapshot(), self._elapsed_steps, self._over)

    def restore(self, snapshot: Any) -> None:
        """Return to the state captured by `snapshot`. The snapshot stays valid for reuse."""
        if not (isinstance(snapshot, tuple) and len(snapshot) == 3 and isinstance(snapshot[1], int)):
            raise InvalidInputError(
                f"{type(snapshot).__name__} is not a snapshot of the {self.name} environment: pass what "
                f"snapshot() returned"
            )
        state, elapsed, over = snapshot
        self._restore(state)
        self._elapsed_steps, self._started, self._over = elapsed, True, over

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Records. All are plain dataclasses that round-trip through JSON via to_dict / from_dict.
# ----------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One step of a trajectory: the state the agent saw, what it did, and what came of it.

    `observation` is the observation at state s_i (before acting); `next_observation` is what the
    environment returned after `action`.
    """

    observation: str
    action: str
    next_observation: str
    reward: float
    terminated: bool
    truncated: bool
    won: bool
    valid_actions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(**d)


@dataclass
class Trajectory:
    """An episode: a task, its goal, and its steps. `won` is True when the last step won."""

    id: str
    env: str
    split: str
    task: str
    goal: str
    steps: list[Step]
    source: str = "expert"

    @property
    def won(self) -> bool:
        return bool(self.steps) and self.steps[-1].won

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "env": self.env,
            "split": self.split,
            "task": self.task,
            "goal": self.goal,
            "source": self.source,
            "won": self.won,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        return cls(
            id=d["id"],
            env=d["env"],
            split=d["split"],
            task=d["task"],
            goal=d["goal"],
            steps=[Step.from_dict(s) for s in d["steps"]],
            source=d.get("source", "expert"),
        )


@dataclass
class Branch:
    """One executed transition (s_i, a, s') at expert state s_i of a trajectory.

    `expert` is True for the expert's own action at that state (a_i, s_{i+1}) and False for an
    alternative a_i^j. The history that led to s_i is the trajectory's steps before `step_index`;
    a branch directory stores those trajectories beside the branches.
    """

    trajectory_id: str
    env: str
    task: str
    goal: str
    step_index: int
    observation: str
    action: str
    next_observation: str
    reward: float
    terminated: bool
    truncated: bool
    won: bool
    expert: bool
    expert_action: str
    proposer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Branch:
        return cls(**d)
