"""`check_env`: small named checks that every environment adapter must pass.

>>> from firsthand import make
>>> from firsthand.checks import check_env
>>> check_env(make("household", split="train"))   # raises EnvCheckError on the first failure
['types', 'splits', 'determinism', 'snapshot_round_trip', 'expert_wins', 'template_reflections']
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

from firsthand.contract import SPLITS, Env, FirsthandError, StepResult, normalize
from firsthand.prompts import reflection_problems, template_reflection
from firsthand.replay import replay


class EnvCheckError(FirsthandError, AssertionError):
    """An environment adapter broke its contract; the message names the check and what differed."""


def _fail(check: str, message: str) -> EnvCheckError:
    return EnvCheckError(f"check {check!r} failed: {message}")


def _probe_actions(env: Env, task: str, n: int) -> list[str]:
    """A fixed action sequence: the expert's first steps, or the first valid action at each state."""
    env.reset(task)
    try:
        return env.expert_actions()[:n]
    except FirsthandError:
        actions = []
        for _ in range(n):
            valid = env.valid_actions()
            if not valid:
                break
            actions.append(valid[0])
            if env.step(valid[0]).terminated:
                break
        return actions


def check_types(env: Env, task: str) -> None:
    observation, info = env.reset(task)
    if not isinstance(observation, str) or not isinstance(info, dict):
        raise _fail(
            "types", f"reset must return (str, dict), got ({type(observation).__name__}, {type(info).__name__})"
        )
    if "goal" not in info or "task" not in info:
        raise _fail("types", f"reset's info must hold 'goal' and 'task', got keys {sorted(info)}")
    valid = env.valid_actions()
    if not isinstance(valid, list) or not all(isinstance(a, str) for a in valid):
        raise _fail("types", "valid_actions must return a list of str")
    result = env.step(valid[0] if valid else "look")
    if not isinstance(result, StepResult):
        raise _fail("types", f"step must return a StepResult, got {type(result).__name__}")
    for name in ("terminated", "truncated", "won"):
        if not isinstance(getattr(result, name), bool):
            raise _fail("types", f"StepResult.{name} must be a bool, got {getattr(result, name)!r}")
    if not isinstance(env.snapshot_native, bool):
        raise _fail("types", "snapshot_native must be a bool class attribute")


def check_splits(env: Env, task: str) -> None:
    if env.split not in SPLITS:
        raise _fail("splits", f"env.split is {env.split!r}, not one of {SPLITS}")
    tasks = env.tasks(3)
    if not tasks or tasks != env.tasks(3):
        raise _fail("splits", "tasks(limit) must return the same non-empty list every time")


def check_determinism(env: Env, task: str) -> None:
    actions = _probe_actions(env, task, 5)
    runs = []
    for _ in range(2):
        observation, _ = env.reset(task, seed=0)
        trace = [normalize(observation)]
        for action in actions:
            r = env.step(action)
            trace.append(f"{normalize(r.observation)}|{r.reward}|{r.terminated}|{r.truncated}|{r.won}")
            if r.terminated or r.truncated:
                break
        runs.append(trace)
    if runs[0] != runs[1]:
        first = next(i for i in range(max(map(len, runs))) if runs[0][i : i + 1] != runs[1][i : i + 1])
        raise _fail(
            "determinism",
            f"two runs of the same actions differ at step {first}: {runs[0][first : first + 1]} vs "
            f"{runs[1][first : first + 1]}",
        )


def check_snapshot_round_trip(env: Env, task: str, repeats: int = 3) -> None:
    """Restore K times and replay the same action: identical observation and reward every time."""
    if not env.snapshot_native:
        return
    actions = _probe_actions(env, task, 3)
    env.reset(task)
    for action in actions[:-1]:
        env.step(action)
    snap = pickle.loads(pickle.dumps(env.snapshot()))  # snapshots must survive a trip to another process
    valid = env.valid_actions()
    probe = actions[-1] if actions else (valid[0] if valid else "look")
    outcomes = set()
    for _ in range(repeats):
        env.restore(snap)
        if env.valid_actions() != valid:
            raise _fail("snapshot_round_trip", "valid actions after restore differ from those at snapshot time")
        r = env.step(probe)
        outcomes.add((normalize(r.observation), r.reward, r.terminated, r.truncated, r.won))
    if len(outcomes) != 1:
        raise _fail("snapshot_round_trip", f"the same action after {repeats} restores gave {len(outcomes)} outcomes")


def check_expert_wins(env: Env, task: str) -> None:
    env.reset(task)
    try:
        actions = env.expert_actions()
    except FirsthandError:
        return  # the expert is optional
    try:
        replay(env, task, actions)
    except FirsthandError as e:
        raise _fail("expert_wins", f"the expert's actions on {task!r} do not win when replayed: {e}") from e


def check_template_reflections(env: Env, task: str, alternatives: int = 3, states: int = 6) -> None:
    """SR's template reflection at the first `states` expert states, over up to `alternatives` valid actions
    executed from each (by replaying the expert's prefix), passes the filters of `prompts.reflection_problems`:
    observations are quoted into reflections, so an adapter whose observations repeat a fixed line or use a
    filtered word would lose its SR data."""
    env.reset(task)
    try:
        expert = env.expert_actions()
    except FirsthandError:
        return  # without an expert there are no expert states to reflect at
    observation, info = env.reset(task)
    for i, action in enumerate(expert[:states]):
        tried = []
        for alternative in [a for a in env.valid_actions() if normalize(a) != normalize(action)][:alternatives]:
            env.reset(task)
            for earlier in expert[:i]:
                env.step(earlier)
            tried.append((alternative, env.step(alternative).observation))
        env.reset(task)
        for earlier in expert[:i]:
            env.step(earlier)
        outcome = env.step(action)
        if tried:
            text = template_reflection(info["goal"], action, tried)
            problems = reflection_problems(text, action, quoted=[o for _, o in tried])
            if problems:
                raise _fail(
                    "template_reflections",
                    f"the reflection at step {i} of {task!r} fails the filters {problems} (observations are quoted "
                    f"into reflections: docs/adapters.md): {text[:300]!r}",
                )
        if outcome.terminated or outcome.truncated:
            return


CHECKS: dict[str, Callable[[Env, str], None]] = {
    "types": check_types,
    "splits": check_splits,
    "determinism": check_determinism,
    "snapshot_round_trip": check_snapshot_round_trip,
    "expert_wins": check_expert_wins,
    "template_reflections": check_template_reflections,
}


def check_env(env: Env, tasks: int = 3) -> list[str]:
    """Run every check on the first `tasks` tasks of the environment's split; return the names passed."""
    for task in env.tasks(tasks):
        for check in CHECKS.values():
            check(env, task)
    return list(CHECKS)
