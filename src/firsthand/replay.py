"""Replay an action sequence on an environment into a verified Trajectory (collection, imports, checks)."""

from __future__ import annotations

from collections.abc import Sequence

from firsthand.contract import Env, ReplayError, Step, Trajectory, normalize


def replay(
    env: Env,
    task: str,
    actions: Sequence[str],
    *,
    observations: Sequence[str] | None = None,
    source: str = "expert",
    trajectory_id: str | None = None,
) -> Trajectory:
    """Replay `actions` on `task` and return the recorded Trajectory; raise ReplayError unless it wins.

    Every action must be in the environment's valid actions at its state (when the environment lists
    them), and, when `observations` are given (the observation at each state, then the final one),
    each must match what the environment returns.
    """
    if not actions:
        raise ReplayError("the demonstration has no actions")
    observation, info = env.reset(task)
    steps: list[Step] = []
    for i, action in enumerate(actions):
        if observations is not None and normalize(observations[i]) != normalize(observation):
            raise ReplayError(
                f"step {i}: the recorded observation {observations[i][:80]!r} differs from the environment's "
                f"{observation[:80]!r}"
            )
        valid = env.valid_actions()
        if valid and action not in valid:
            raise ReplayError(
                f"step {i}: action {action!r} is not valid at its state (valid: {', '.join(valid[:12])}, ...)"
            )
        result = env.step(action)
        steps.append(
            Step(
                observation=observation,
                action=action,
                next_observation=result.observation,
                reward=result.reward,
                terminated=result.terminated,
                truncated=result.truncated,
                won=result.won,
                valid_actions=valid,
            )
        )
        observation = result.observation
        if (result.terminated or result.truncated) and i < len(actions) - 1:
            end = "won" if result.won else ("truncated" if result.truncated else "terminated")
            raise ReplayError(f"step {i}: the episode {end} with {len(actions) - i - 1} actions still to go")
    if observations is not None and len(observations) > len(actions):
        if normalize(observations[len(actions)]) != normalize(observation):
            raise ReplayError("the recorded final observation differs from the environment's")
    if not steps[-1].won:
        raise ReplayError(f"the demonstration does not win: after {len(actions)} actions the task is not done")
    return Trajectory(
        id=trajectory_id or task,
        env=env.name,
        split=env.split,
        task=task,
        goal=str(info.get("goal", "")),
        steps=steps,
        source=source,
    )
