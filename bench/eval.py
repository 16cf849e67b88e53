"""Batched evaluation against one episode at a time: episodes per second.

    python bench/eval.py [--model PATH] [--episodes 32] [--max-steps 6] [--batch-size 32]

Without --model, a fresh `tiny` model is created (untrained: it always writes --max-new-tokens
tokens, so both modes do the same amount of generation). Both modes run the same episodes with the
same greedy model; the script checks they took the same actions and prints the speed-up. A model from
`firsthand train` is shown the prompts it was trained with (for example the quickstart's SR model with
--max-new-tokens 200, the budget the quickstart gives its thoughts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from firsthand.evaluate import ModelAgent, run_episodes, training_prompt
from firsthand.prompts import PromptConfig
from firsthand.registry import make


def prefill_bound(agent: ModelAgent, tasks: list[str], prompt: PromptConfig) -> None:
    """Time one forward pass over the first step's prompts, batched and one by one.

    Prefill is compute-bound, so batching cannot make it much cheaper per prompt on a CPU; this ratio
    bounds what batching can gain once generation is dominated by prompt processing.
    """
    import torch

    from firsthand.prompts import policy_prompt

    env = make("household", "id_test")
    prompts = []
    for task in tasks:
        observation, info = env.reset(task)
        prompts.append(agent.render(policy_prompt(info["goal"], [], observation, env.valid_actions(), prompt)))
    tok = agent.tokenizer
    tok.padding_side = "left"
    timings = {}
    with torch.inference_mode():
        for label, size in (("batched", len(prompts)), ("one at a time", 1)):
            start = time.perf_counter()
            for i in range(0, len(prompts), size):
                batch = tok(prompts[i : i + size], return_tensors="pt", padding=True, add_special_tokens=False)
                agent.model(**batch)
            timings[label] = time.perf_counter() - start
    n = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    print(
        f"prefill only ({len(prompts)} prompts, {n / len(prompts):.0f} tokens each): "
        f"batched {timings['batched']:.2f} s, "
        f"one at a time {timings['one at a time']:.2f} s, ratio {timings['one at a time'] / timings['batched']:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(torch.get_num_threads())
    if args.model is None:
        from firsthand.experts import collect
        from firsthand.models import create_tiny

        tmp = Path(tempfile.mkdtemp())
        collect("household", "train", 30, tmp / "experts")
        from firsthand.experts import load_trajectories

        texts = [s.observation + " " + s.action for t in load_trajectories(tmp / "experts") for s in t.steps]
        args.model = create_tiny(texts, tmp / "tiny")
    tasks = make("household", "id_test").tasks(args.episodes)
    prompt = training_prompt(args.model) or PromptConfig()  # a trained model sees prompts as in training
    timings = {}
    actions = {}
    for label, batch in (("batched", args.batch_size), ("one at a time", 1)):
        agent = ModelAgent.from_path(args.model, max_new_tokens=args.max_new_tokens)
        start = time.perf_counter()
        results = run_episodes(
            "household", "id_test", tasks, agent, prompt=prompt, batch_size=batch, max_steps=args.max_steps
        )
        timings[label] = time.perf_counter() - start
        actions[label] = [r.actions for r in results]
        steps = sum(r.steps for r in results)
        print(
            f"{label:14s} batch={batch:3d}: {len(tasks)} episodes, {steps} steps in {timings[label]:7.2f} s "
            f"= {len(tasks) / timings[label]:6.2f} episodes/s (generate {agent.generate_seconds:6.2f} s)"
        )
    prefill_bound(agent, tasks, prompt)
    same = actions["batched"] == actions["one at a time"]
    print(
        f"speed-up batched / one at a time: {timings['one at a time'] / timings['batched']:.1f}x "
        f"(identical actions: {same})"
    )


if __name__ == "__main__":
    main()
