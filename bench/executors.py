"""Branching on local worker processes against branching as Ray tasks on this machine, in one run.

    python bench/executors.py [--envs household,scienceworld] [--workers 2]

For each environment: collect expert trajectories once, branch them with `--workers` local processes and
then with as many Ray tasks in flight (a Ray instance started here; its start is timed apart), check that
both wrote the same bytes, and print transitions/s, the ratio, and Ray's overhead per shard.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from firsthand import executors
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.collect import collect

SIZES = {"household": (600, 8), "scienceworld": (6, 2), "textworld-express": (200, 8)}
"""Trajectories and K per environment: a few seconds to a few minutes of branching each."""


def timed_branch(experts: Path, out: Path, k: int, workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = branch(experts, out, BranchConfig(k=k), workers=workers)
    return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="household,scienceworld")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        executors.use("ray")
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        print(f"ray.init: {time.perf_counter() - start:.1f} s")
        executors.use("local")
        rows = []
        for env in args.envs.split(","):
            tasks, k = SIZES.get(env, (40, 4))
            collect(env, "train", tasks, root / env / "experts", workers=args.workers, shard_size=5)
            local_s, local = timed_branch(root / env / "experts", root / env / "local", k, args.workers)
            with executors.using("ray"):
                ray_s, remote = timed_branch(root / env / "experts", root / env / "ray", k, args.workers)
            assert remote["content_hash"] == local["content_hash"], f"{env}: Ray wrote other bytes"
            shards = len(local["files"]) - 1  # trajectories.jsonl is not a shard
            rows.append((env, tasks, k, local["count"], shards, local_s, ray_s))
        print(f"\nbranching, {args.workers} workers, same bytes from both executors\n")
        print("| env | trajectories | K | transitions | shards | local s | local tr/s | Ray s | Ray tr/s | Ray/local "
              "rate | Ray overhead per shard |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for env, tasks, k, count, shards, local_s, ray_s in rows:
            print(
                f"| {env} | {tasks} | {k} | {count} | {shards} | {local_s:.1f} | {count / local_s:.0f} | {ray_s:.1f} | "
                f"{count / ray_s:.0f} | {local_s / ray_s:.2f} | {(ray_s - local_s) / shards * 1000:+.0f} ms |"
            )
        ray.shutdown()


if __name__ == "__main__":
    main()
