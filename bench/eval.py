"""Batched evaluation against one episode at a time: episodes per second.

    python bench/eval.py [--model PATH] [--episodes 32] [--max-steps 6] [--batch-size 32]
                         [--max-new-tokens 24 200]

Each generation budget is measured in turn; the defaults are the quickstart's: 24 new tokens per step
for IL and IWM (an action) and 200 for SR (a thought, then the action). Without --model, a fresh `tiny`
model is created (untrained: it always writes the whole budget, so both modes do the same amount of
generation). Both modes run the same episodes with the same greedy model; the script checks they took
the same actions and prints the speed-up. A model from `firsthand train` is shown the prompts it was
trained with.

Batching only saves decoding: prefill is compute-bound, so a batch of prompts costs about as much as the
same prompts one by one (short replies are generated in groups of similar prompt length, which saves
the padding; see `firsthand.evaluate.length_groups`). The script prints that bound too: one-at-a-time
time divided by the batched run's prefill time (in the same groups), the speed-up batching would reach
if its decoding were free.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from firsthand.artifacts import read_model_prompt
from firsthand.inference.agents import ModelAgent, length_groups
from firsthand.prompts import PromptConfig
from firsthand.registry import make
from firsthand.stages.evaluate import run_episodes


def prefill_seconds(agent: ModelAgent, tasks: list[str], prompt: PromptConfig, batch_size: int) -> float:
    """Seconds for one forward pass over the first step's prompts, `batch_size` prompts at a time, in the
    length groups the agent generates them in (`firsthand.evaluate.length_groups`)."""
    import torch

    from firsthand.prompts import policy_prompt

    env = make("household", "id_test")
    prompts = []
    for task in tasks:
        observation, info = env.reset(task)
        prompts.append(agent.render(policy_prompt(info["goal"], [], observation, env.valid_actions(), prompt)))
    tok = agent.tokenizer
    tok.padding_side = "left"
    batches = []  # tokenized and padded first: the timed part is the forward pass alone
    for i in range(0, len(prompts), batch_size):
        ids = tok(prompts[i : i + batch_size], add_special_tokens=False)["input_ids"]
        for group in length_groups([len(x) for x in ids], agent.max_new_tokens):
            batches.append(tok.pad({"input_ids": [ids[j] for j in group]}, return_tensors="pt"))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=agent.bf16):  # as the agent
        start = time.perf_counter()
        for batch in batches:
            agent.model(**batch, logits_to_keep=1)
        return time.perf_counter() - start


def measure(model: Path, tasks: list[str], prompt: PromptConfig, args: Any, max_new_tokens: int) -> None:
    timings, actions = {}, {}
    for label, batch in (("batched", args.batch_size), ("one at a time", 1)):
        agent = ModelAgent.from_path(model, max_new_tokens=max_new_tokens)
        run_episodes("household", "id_test", tasks[:1], agent, prompt=prompt, max_steps=1)  # warm-up, not timed
        agent.generate_seconds = 0.0
        start = time.perf_counter()
        results = run_episodes(
            "household", "id_test", tasks, agent, prompt=prompt, batch_size=batch, max_steps=args.max_steps
        )
        timings[label] = time.perf_counter() - start
        actions[label] = [r.actions for r in results]
        steps = sum(r.steps for r in results)
        print(
            f"  {label:14s} batch={batch:3d}: {len(tasks)} episodes, {steps} steps in {timings[label]:7.2f} s "
            f"= {len(tasks) / timings[label]:6.2f} episodes/s (generate {agent.generate_seconds:6.2f} s)"
        )
    steps_per_episode = sum(len(a) for a in actions["batched"]) / len(tasks)
    prefill = prefill_seconds(agent, tasks, prompt, args.batch_size) * steps_per_episode
    same = actions["batched"] == actions["one at a time"]
    print(
        f"  speed-up batched / one at a time: {timings['one at a time'] / timings['batched']:.1f}x "
        f"(identical actions: {same}); batched prefill alone {prefill:.2f} s, "
        f"so at most {timings['one at a time'] / prefill:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=None)
    args = parser.parse_args()

    from firsthand.pipeline import PRESETS

    quickstart = PRESETS["quickstart"]
    budgets = args.max_new_tokens or [quickstart.max_new_tokens, quickstart.sr_max_new_tokens]
    if args.model is None:
        from firsthand.artifacts import load_trajectories
        from firsthand.models import create_tiny
        from firsthand.stages.collect import collect

        tmp = Path(tempfile.mkdtemp())
        collect("household", "train", 30, tmp / "experts")
        texts = [s.observation + " " + s.action for t in load_trajectories(tmp / "experts") for s in t.steps]
        args.model = create_tiny(texts, tmp / "tiny")
    tasks = make("household", "id_test").tasks(args.episodes)
    # A trained model sees prompts as in training; a fresh one the quickstart's.
    prompt = read_model_prompt(args.model) or quickstart.prompt
    for tokens in budgets:
        print(f"max_new_tokens={tokens}:")
        measure(args.model, tasks, prompt, args, tokens)


if __name__ == "__main__":
    main()
