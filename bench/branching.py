"""Branching throughput against the raw step rate, and snapshot/restore against reset + replay.

    python bench/branching.py [--env household] [--tasks 200] [--k 8]

Prints, from one run on this machine:
1. raw env.step rate (expert actions, no branching), branching transitions/s, and their ratio;
2. for trajectories of 20 and 50 steps, the time to return to every state K times by
   snapshot/restore versus by reset + replay, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from firsthand.registry import make
from firsthand.replay import replay
from firsthand.stages.branch import BranchConfig, UniformProposer, branch_trajectory, new_stats


def raw_step_rate(env_name: str, tasks: int) -> tuple[float, list]:
    env = make(env_name, "train")
    plans = []
    for task in env.tasks(tasks):
        env.reset(task)
        plans.append((task, env.expert_actions()))
    steps = 0
    elapsed = 0.0  # time inside env.step only: resets are not steps
    for task, actions in plans:
        env.reset(task)
        start = time.perf_counter()
        for a in actions:
            env.step(a)
        elapsed += time.perf_counter() - start
        steps += len(actions)
    trajectories = [replay(env, task, actions) for task, actions in plans]
    getattr(env, "close", lambda: None)()
    return steps / elapsed, trajectories


def branch_rate(env_name: str, trajectories: list, k: int, mode: str) -> tuple[float, dict]:
    env = make(env_name, "train")
    stats = new_stats()
    config = BranchConfig(k=k, mode=mode)
    start = time.perf_counter()
    for t in trajectories:
        branch_trajectory(env, t, UniformProposer(), config, stats)
    elapsed = time.perf_counter() - start
    getattr(env, "close", lambda: None)()
    return stats["branches"] / elapsed, stats


def return_cost(env_name: str, length: int, k: int, repeats: int = 3) -> tuple[float, float]:
    """Seconds to return to each of `length` states K times: (snapshot/restore, reset + replay)."""
    env = make(env_name, "train", max_steps=length + 10)
    task = env.tasks(1)[0]
    env.reset(task)
    # A long path of harmless, state-changing actions: walk between receptacles.
    walk = [a for a in env.valid_actions() if a.startswith("go to ")]
    actions = [walk[i % len(walk)] for i in range(length)]
    return _return_cost(env, task, actions, k, repeats)


def expert_return_cost(env_name: str, trajectories: list, k: int, repeats: int = 3) -> tuple[int, float, float]:
    """The same along the longest expert trajectory (any environment): (its length, snapshot, replay)."""
    longest = max(trajectories, key=lambda t: len(t.steps))
    env = make(env_name, "train")
    return len(longest.steps), *_return_cost(env, longest.task, longest.actions, k, repeats)


def _return_cost(env, task: str, actions: list[str], k: int, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    snap_times, replay_times = [], []
    for _ in range(repeats):
        env.reset(task)
        start = time.perf_counter()
        for a in actions:
            snap = env.snapshot()
            for _ in range(k):
                env.restore(snap)
            env.restore(snap)
            env.step(a)
        snap_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(len(actions)):
            for _ in range(k):
                env.reset(task)
                for a in actions[:i]:
                    env.step(a)
        replay_times.append(time.perf_counter() - start)
    getattr(env, "close", lambda: None)()
    return statistics.median(snap_times), statistics.median(replay_times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="household")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args(argv)

    # Each rate is the median of three runs: single runs on a shared 2-core machine vary by ~15%.
    raws = [raw_step_rate(args.env, args.tasks) for _ in range(3)]
    raw, trajectories = statistics.median(r[0] for r in raws), raws[0][1]
    print(
        f"environment {args.env}: {len(trajectories)} expert trajectories, "
        f"{sum(len(t.steps) for t in trajectories)} steps, python {sys.version.split()[0]}"
    )
    print(f"raw env.step rate                     {raw:12,.0f} steps/s")
    native = make(args.env, "train").snapshot_native
    for mode in ("snapshot", "replay") if native else ("replay",):
        runs = [branch_rate(args.env, trajectories, args.k, mode) for _ in range(3)]
        rate, stats = statistics.median(r[0] for r in runs), runs[0][1]
        print(
            f"branching k={args.k} ({mode:8s})          {rate:12,.0f} transitions/s   "
            f"ratio to raw {rate / raw:5.2f}   (mismatches {stats['resync_mismatches']})"
        )
    costs = [return_cost(args.env, n, args.k) for n in (20, 50)] if args.env == "household" else []
    lengths = [20, 50] if costs else []
    if not costs and native:  # other environments: along their longest expert trajectory
        n, snap, rep = expert_return_cost(args.env, trajectories, args.k)
        lengths, costs = [n], [(snap, rep)]
    for length, (snap, rep) in zip(lengths, costs, strict=True):
        print(
            f"return to every state of a {length}-step trajectory k={args.k} times: "
            f"snapshot/restore {snap * 1e3:8.2f} ms, reset+replay {rep * 1e3:8.2f} ms, "
            f"replay/snapshot {rep / snap:6.1f}x"
        )


if __name__ == "__main__":
    main()
