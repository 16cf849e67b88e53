"""RL throughput: rollout and update tokens/s, and the share of an iteration spent in each.

    python bench/rl.py [--model MODEL_FOLDER] [--iterations 3] [--tasks 16] [--group 8]

Runs `firsthand.stages.rl.rl` on household from MODEL_FOLDER (default: IL on 10 demonstrations, 30 epochs,
trained here first, as the RL learning test does) twice with the same seed: once leaving zero-advantage
samples out of the update (the default) and once updating on every sample. The rollouts of both are the
same until the first update differs, so the update times of iteration 1 compare the two directly. Prints,
per iteration: rollout seconds, update seconds, generated tokens/s during rollouts, sequence tokens/s
through the update (each sample read three times: sampling policy, reference, update), and the shares.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def il_model(root: Path) -> Path:
    from firsthand.artifacts import load_records
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.prompts import PromptConfig
    from firsthand.stages.branch import BranchConfig, branch
    from firsthand.stages.build import BuildConfig, build
    from firsthand.stages.collect import collect
    from firsthand.stages.train import TrainConfig, train

    collect("household", "train", 10, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=1))
    build("il", root / "branches", root / "il", BuildConfig(prompt=PromptConfig(history=2, show_valid_actions=False)))
    texts = (r["prompt"] + r["completion"] for r in load_records(root / "il"))
    base = create_tiny(texts, root / "base", TinyConfig(hidden_size=128, intermediate_size=344, layers=2))
    manifest = train(
        "il", {"il": root / "il"}, base, root / "run", TrainConfig(epochs=30, batch_size=8, learning_rate=3e-3)
    )
    return root / "run" / manifest["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    args = parser.parse_args()

    from firsthand.stages.rl import RLConfig, rl

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or il_model(root / "il")
        print(
            f"model: {model}; {args.iterations} iterations of {args.tasks} tasks x {args.group} rollouts on household"
        )
        header = (
            f"{'update on':<22}{'iter':>5}{'samples':>9}{'trained':>9}{'rollout s':>11}{'update s':>10}"
            f"{'gen tok/s':>11}{'upd tok/s':>11}{'rollout %':>11}"
        )
        print(header)
        totals = {}
        for skip in (True, False):
            config = RLConfig(
                iterations=args.iterations,
                tasks_per_iteration=args.tasks,
                group_size=args.group,
                task_pool=max(args.tasks, 10),
                max_steps=12 if args.model is None else None,
                max_new_tokens=12 if args.model is None else 24,
                learning_rate=1e-4,
                temperature=0.5,
                skip_zero_advantage=skip,
            )
            out = root / f"rl-{skip}"
            rl(model, "household", out, config)
            name = "nonzero advantages" if skip else "every sample"
            stats = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
            timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
            lines = [{**a, **b} for a, b in zip(stats, timings, strict=True)]
            for s in lines:
                share = s["rollout_seconds"] / (s["rollout_seconds"] + s["update_seconds"])
                print(
                    f"{name:<22}{s['iteration']:>5}{s['samples']:>9}{s['trained_samples']:>9}"
                    f"{s['rollout_seconds']:>11.2f}{s['update_seconds']:>10.2f}"
                    f"{s['rollout_tokens_per_second']:>11.0f}{s['update_tokens_per_second']:>11.0f}"
                    f"{100 * share:>10.1f}%"
                )
            totals[skip] = lines[0]["update_seconds"]
        print(
            f"iteration 1 update, every sample / nonzero only: {totals[False]:.2f} s / {totals[True]:.2f} s = "
            f"{totals[False] / max(totals[True], 1e-9):.2f}x"
        )


if __name__ == "__main__":
    main()
