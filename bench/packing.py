"""Shared-prefix packing: tokens and time of an IL epoch, and of a world-model epoch unpacked and packed.

    python bench/packing.py [--model smollm2-135m] [--train-episodes 40] [--k 8] [--steps 12] [--batch-size 4]

Collects `--train-episodes` household demonstrations, branches K alternatives at every expert state and builds
the IL and IWM data (cached in --out). Then, on the same starting model, it times `--steps` optimizer steps of
firsthand's training stage (`stages.train._sft_stage`, as `firsthand train` runs it) on: the expert data (IL),
the world-model data record by record, and the world-model data packed (`TrainConfig.packing`: a state's K + 1
records as one sequence, the shared prompt once). It prints, for each, the tokens of one epoch, the steps of
one epoch, the measured seconds per step, the epoch's time derived from them, tokens/s, and the FLOP/s
achieved as a share of this machine's fp32 matrix-multiply peak (6 N FLOPs per token, 4 N with LoRA; N the
linear layers' parameters; attention left out, so a lower bound), then the ratios to IL's epoch. The first
step of each configuration is a warm-up, timed apart. Pretrained models train with LoRA (r=16) at 2e-4.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from firsthand.artifacts import load_records  # noqa: E402
from firsthand.models import load, starting_model  # noqa: E402
from firsthand.settings import ENV_SETTINGS  # noqa: E402
from firsthand.stages.branch import BranchConfig, branch  # noqa: E402
from firsthand.stages.build import BuildConfig, build  # noqa: E402
from firsthand.stages.collect import collect  # noqa: E402
from firsthand.stages.train import TrainConfig, _by_state, _prepare, _sft_stage, stage_examples  # noqa: E402
from training import linear_parameters, matmul_peak  # noqa: E402


def data(out: Path, episodes: int, k: int) -> dict[str, Path]:
    """The IL and IWM build folders of `episodes` household demonstrations (resumed when already there)."""
    collect("household", "train", episodes, out / "experts")
    branch(out / "experts", out / "branches", BranchConfig(k=k))
    prompt = ENV_SETTINGS["household"]["prompt"]
    for kind in ("il", "iwm"):
        build(kind, out / "branches", out / kind, BuildConfig(prompt=prompt))
    return {"il": out / "il", "iwm": out / "iwm"}


def measure(base: Path, kind: str, records: list[dict], config: TrainConfig, steps: int) -> dict:
    """Time `steps` optimizer steps (after one warm-up step) of one training stage; the epoch's figures."""
    import random

    import torch

    torch.manual_seed(0)
    model, tokenizer = _prepare(*load(base, for_training=True), config)
    examples = stage_examples(kind, 10**9, {"il": records, "iwm": records}, config, random.Random(0))
    packed = config.packing and kind == "iwm"
    with tempfile.TemporaryDirectory() as tmp:
        warm = _sft_stage(model, tokenizer, examples, 1, Path(tmp) / "warm", config, None, packed=packed)
        timed = _sft_stage(model, tokenizer, examples, steps, Path(tmp) / "timed", config, None, packed=packed)
    units = warm.get("packs", len(examples))  # what a batch holds batch_size of: records, or packs
    epoch_steps = math.ceil(units / config.batch_size)
    per_step = timed["seconds"] / steps
    return {
        "tokens_per_epoch": timed["tokens_per_epoch"],
        "epoch_steps": epoch_steps,
        "warmup_seconds": warm["seconds"],
        "seconds_per_step": per_step,
        "epoch_seconds": per_step * epoch_steps,
        "tokens_per_second": timed["tokens"] / timed["seconds"],
        "linear_parameters": linear_parameters(model),
        "lora": config.lora,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="tiny, smollm2-135m, gemma3-270m or a model folder")
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per configuration")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-packing"))
    args = parser.parse_args()

    folders = data(args.out, args.train_episodes, args.k)
    records = {kind: load_records(folder) for kind, folder in folders.items()}
    base = starting_model(args.model, folders.values(), args.out / "tiny", env="household")
    pretrained = args.model != "tiny"
    config = TrainConfig(batch_size=args.batch_size, learning_rate=2e-4 if pretrained else 1e-3, lora=pretrained)
    peak = matmul_peak("fp32")
    states = len(_by_state(records["iwm"]))
    print(
        f"{args.model}: {args.train_episodes} demonstrations, {len(records['il'])} IL records, "
        f"{len(records['iwm'])} IWM records at {states} states (K = {args.k}); batch {args.batch_size}; "
        f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    rows = {
        "IL": measure(base, "expert", records["il"], config, args.steps),
        "IWM, unpacked": measure(base, "iwm", records["iwm"], config, args.steps),
        "IWM, packed": measure(base, "iwm", records["iwm"], replace(config, packing=True), args.steps),
    }
    il = rows["IL"]
    header = (
        f"{'':16}{'tokens/epoch':>13}{'steps/epoch':>12}{'s/step':>8}{'epoch s':>9}{'tokens/s':>10}"
        f"{'% peak':>8}{'x IL tokens':>12}{'x IL time':>10}"
    )
    print(header)
    for name, r in rows.items():
        flops = (4 if r["lora"] else 6) * r["linear_parameters"] * r["tokens_per_second"]
        print(
            f"{name:16}{r['tokens_per_epoch']:>13,}{r['epoch_steps']:>12,}{r['seconds_per_step']:>8.2f}"
            f"{r['epoch_seconds']:>9.0f}{r['tokens_per_second']:>10.0f}{100 * flops / peak:>8.1f}"
            f"{r['tokens_per_epoch'] / il['tokens_per_epoch']:>12.2f}{r['epoch_seconds'] / il['epoch_seconds']:>10.2f}"
        )
    unpacked, packed = rows["IWM, unpacked"], rows["IWM, packed"]
    print(
        f"packing: {unpacked['tokens_per_epoch'] / packed['tokens_per_epoch']:.2f}x fewer tokens per world-model "
        f"epoch, {unpacked['epoch_seconds'] / packed['epoch_seconds']:.2f}x less time"
    )


if __name__ == "__main__":
    main()
