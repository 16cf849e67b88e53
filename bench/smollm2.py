"""SmolLM2-135M-Instruct on household: Prompt / IL / SR (template) / SR (written by the model) / STaR, with
the tokens/s of training and generation. Prepared for one GPU (about 8 minutes), runnable on a CPU at a
smaller scale.

    python bench/smollm2.py                                  # on a GPU: full fine-tuning, the paper's lr 1e-5
    python bench/smollm2.py --train-episodes 24 --eval-episodes 10 --out runs/smollm2-cpu   # this CPU

Two runs share one collection and branching: `template/` trains IL, SR with template reflections and STaR
(rationales written by SmolLM2, kept when it reached the expert's action); `policy/` trains SR on
reflections SmolLM2 wrote itself (`--reflector policy`). A method whose every written text the filters
dropped is reported as not trained, with the counts. Everything resumes from the folders.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from firsthand.inference.backends import Sampling, open_backend
from firsthand.layout import method_name
from firsthand.pipeline import get_preset, run
from firsthand.prompts import PromptConfig
from firsthand.stages.train import TrainConfig


def train_rate(out: Path) -> dict[str, float]:
    """Training tokens/s of each trained model of a run (all its stages)."""
    rates = {}
    for manifest in sorted(out.glob("train/*/manifest.json")):
        stages = json.loads(manifest.read_text())["stages"]
        seconds = sum(s["seconds"] for s in stages)
        rates[manifest.parent.name] = sum(s["tokens"] for s in stages) / seconds if seconds else 0.0
    return rates


def generation_rate(backend_name: str, prompts: list[str], tokens: int) -> tuple[str, float, float]:
    """(backend, seconds, tokens/s) of writing `tokens` new tokens for each prompt, counted in the model's tokens."""
    from transformers import AutoTokenizer

    from firsthand.models import smollm2_path

    backend = open_backend("smollm2-135m", backend=backend_name)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())  # counting tokens needs no second copy of the model
    backend.generate(prompts[:2], Sampling(max_tokens=8))  # warm-up
    started = time.perf_counter()
    replies = backend.generate(prompts, Sampling(max_tokens=tokens, temperature=0.7))
    seconds = time.perf_counter() - started
    written = sum(len(tokenizer(r[0], add_special_tokens=False)["input_ids"]) for r in replies)
    return backend.describe()["backend"], seconds, written / seconds


def main() -> None:
    import torch

    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/smollm2-household"))
    parser.add_argument("--train-episodes", type=int, default=200 if gpu else 24)
    parser.add_argument("--eval-episodes", type=int, default=50 if gpu else 10)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--backend", default="auto", help="generation backend of the writers: auto, hf, vllm")
    parser.add_argument(
        "--thought-tokens", type=int, default=192 if gpu else 128, help="reflections, rationales, thoughts"
    )
    parser.add_argument(
        "--lora", action=argparse.BooleanOptionalAction, default=not gpu, help="LoRA (CPU default) or full fine-tuning"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    # The paper's setup on a GPU (full fine-tuning, lr 1e-5, batch 16, 2 epochs); LoRA at 2e-4 on a CPU.
    train = (
        TrainConfig(epochs=2, batch_size=8, learning_rate=2e-4, lora=True, max_length=1536)
        if args.lora
        else TrainConfig(epochs=2, batch_size=16, learning_rate=1e-5, max_length=1536)
    )
    base = get_preset(
        "quickstart",
        env="household",
        model="smollm2-135m",
        seeds=(0,),
        train_episodes=args.train_episodes,
        eval_episodes=args.eval_episodes,
        k=args.k,
        methods=("il", "sr", "star"),
        backend=args.backend,
        train=train,
        jobs=1,
    )
    # The admissible actions in the prompt, for every method: a zero-shot model has no other way to know them.
    base = replace(
        base,
        prompt=PromptConfig(history=2, show_valid_actions=True, past_actions=True),
        sr_max_new_tokens=args.thought_tokens,
        writer=replace(base.writer, reflection_tokens=args.thought_tokens),
    )
    template = run(base, args.out / "template")
    policy_preset = replace(base, methods=("sr",), writer=replace(base.writer, reflector="policy"))
    policy = run(policy_preset, args.out / "policy", branches=args.out / "template" / "branches")

    splits = base.splits
    print(
        f"\nhousehold, SmolLM2-135M-Instruct, {base.train_episodes} demonstrations, k={base.k}, "
        f"{base.eval_episodes} episodes per split, {'LoRA' if args.lora else 'full fine-tuning'}"
    )
    print(f"{'method':<26}" + "".join(f"{s:>12}" for s in splits) + f"{'steps':>8}")
    rows = [(m, template["results"][m]) for m in ("random", "prompt", "il", "sr", "star") if m in template["results"]]
    rows += [("sr (model-written)", policy["results"]["sr"])] if "sr" in policy["results"] else []
    for name, cells in rows:
        label = name if "(" in name else method_name(name) + (" (template)" if name == "sr" else "")
        steps = cells[splits[0]].get("train_steps", 0)
        print(f"{label:<26}" + "".join(f"{100 * cells[s]['success']:>11.1f}%" for s in splits) + f"{steps:>8.0f}")
    for results, run_name in ((template, "template"), (policy, "policy")):
        for method, why in results.get("not_trained", {}).items():
            print(f"not trained ({run_name} run): {method_name(method)}: {why}")
    for name, rate in {**train_rate(args.out / "template"), **train_rate(args.out / "policy")}.items():
        print(f"training {name}: {rate:,.0f} tokens/s")
    built = [args.out / "template" / "data" / "star", args.out / "policy" / "data" / "sr"]
    for folder in built:
        manifest = folder / "manifest.json"
        if manifest.exists():
            stats = json.loads(manifest.read_text())["stats"]
            print(
                f"{folder.relative_to(args.out)}: " + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "writer")
            )
    from firsthand.artifacts import read_jsonl

    prompts = [r["prompt"] for r in read_jsonl(args.out / "template" / "data" / "il" / "data.jsonl")][:64]
    name, seconds, rate = generation_rate(args.backend, prompts, 128)
    print(f"generation ({name}): {len(prompts)} policy prompts x 128 tokens in {seconds:.1f} s, {rate:,.0f} tokens/s")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
