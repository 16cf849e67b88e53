"""Action scoring (`--decision score`): decisions per second, packed against a key-value cache per input.

    python bench/scoring.py [--model PATH|smollm2-135m] [--episodes 50] [--max-steps 10] [--batch-size 50] [--fp32]

Plays the same household `id_test` episodes twice with the same greedy model: with `ScoringAgent` as
evaluation runs it (every input of a step packed, `ScoringAgent.scores_many`), and with the scorer it
replaced, kept here as the reference: one input at a time, its prompt read once into a key-value cache that
is copied for each candidate (`cache.batch_repeat_interleave`), one tokenizer call per candidate. It prints
decisions (steps) per second for both, the ratio, whether both took the same actions, the largest score
difference on the first step's inputs (float rounding: ~1e-5 in fp32, ~0.1 under the bf16 autocast that
the agent uses where the CPU has native bf16; --fp32 turns it off), and the bound: the first step's packed scoring
against its prompts' forward passes alone (what the step would cost if the candidates were free). Without
--model, a fresh `tiny` model is created from 30 demonstrations, as bench/eval.py does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from firsthand.artifacts import read_model_prompt
from firsthand.inference.agents import AgentInput, ModelAgent, ScoringAgent
from firsthand.models import resolve
from firsthand.registry import make
from firsthand.stages.evaluate import run_episodes


class CachedScorer(ScoringAgent):
    """The reference: each input alone, the prompt's key-value cache repeated for its candidates."""

    def scores_many(self, prefixes: Sequence[str], actions: Sequence[Sequence[str]]) -> list[list[float]]:
        import inspect

        import torch

        argument = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        eos, results = self.tokenizer.eos_token_id, []
        for prefix, acts in zip(prefixes, actions, strict=True):
            full = [self.tokenizer(prefix + a, add_special_tokens=False)["input_ids"] + [eos] for a in acts]
            shared = 0
            while shared < min(map(len, full)) - 1 and all(ids[shared] == full[0][shared] for ids in full):
                shared += 1
            cut = max(0, shared - self.generator.max_prompt_tokens)
            suffixes = [ids[shared:] for ids in full]
            longest = max(map(len, suffixes))
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
            ids = torch.tensor([s + [pad] * (longest - len(s)) for s in suffixes])
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.generator.bf16):
                out = self.model(input_ids=torch.tensor([full[0][cut:shared]]), use_cache=True)
                cache = out.past_key_values
                cache.batch_repeat_interleave(len(acts))
                start = shared - cut
                positions = torch.arange(start, start + longest).expand(len(acts), -1)
                attention = torch.ones((len(acts), start + longest), dtype=torch.long)
                logits = self.model(
                    input_ids=ids, attention_mask=attention, position_ids=positions, **{argument: cache}
                ).logits
                logits = torch.cat([out.logits[:, -1:].expand(len(acts), -1, -1), logits[:, :-1]], dim=1)
                logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            results.append([float(logprobs[i, : len(s)].sum()) for i, s in enumerate(suffixes)])
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model folder or name; default: a fresh tiny model")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast where the agent would use it")
    args = parser.parse_args()

    import torch

    from firsthand.pipeline import PRESETS
    from firsthand.prompts import policy_prompt

    if args.model is None:
        from firsthand.artifacts import load_trajectories
        from firsthand.models import create_tiny
        from firsthand.stages.collect import collect

        tmp = Path(tempfile.mkdtemp())
        collect("household", "train", 30, tmp / "experts")
        texts = [s.observation + " " + s.action for t in load_trajectories(tmp / "experts") for s in t.steps]
        model = create_tiny(texts, tmp / "tiny")
    else:
        model = resolve(args.model)
    prompt = read_model_prompt(model) or PRESETS["quickstart"].prompt
    tasks = make("household", "id_test").tasks(args.episodes)
    generator = ModelAgent.from_path(model)
    generator.bf16 = generator.bf16 and not args.fp32
    print(
        f"model {args.model or 'tiny (fresh)'}, {torch.get_num_threads()} threads, {len(tasks)} episodes, "
        f"bf16 autocast: {generator.bf16}"
    )
    timings, actions, steps = {}, {}, {}
    scorers = {"packed": ScoringAgent(generator), "cache per input": CachedScorer(generator)}
    for label, scorer in scorers.items():
        run_episodes("household", "id_test", tasks[:2], scorer, prompt=prompt, max_steps=1)  # warm-up
        start = time.perf_counter()
        results = run_episodes(
            "household", "id_test", tasks, scorer, prompt=prompt, batch_size=args.batch_size, max_steps=args.max_steps
        )
        timings[label] = time.perf_counter() - start
        actions[label], steps[label] = [r.actions for r in results], sum(r.steps for r in results)
        print(
            f"  {label:16s}: {steps[label]} decisions in {timings[label]:7.2f} s "
            f"= {steps[label] / timings[label]:6.1f} decisions/s"
        )
    env = make("household", "id_test")
    prefixes, valid = [], []
    for task in tasks:
        observation, info = env.reset(task)
        x = AgentInput(policy_prompt(info["goal"], [], observation, env.valid_actions(), prompt), env.valid_actions())
        prefixes.append(generator.render(x.prompt) + "Action: ")
        valid.append(x.valid_actions)
    env.close()
    packed, cached = (s.scores_many(prefixes, valid) for s in scorers.values())
    # the bound: one forward over each of these prompts alone (no candidate), as many per batch as packed
    start = time.perf_counter()
    scorers["packed"].scores_many(prefixes, valid)
    first_step = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=generator.bf16):
        for prefix in prefixes:
            ids = generator.tokenizer(prefix, add_special_tokens=False)["input_ids"][-generator.max_prompt_tokens :]
            generator.model(input_ids=torch.tensor([ids]), logits_to_keep=1)
    prompts_alone = time.perf_counter() - start
    gap = max(abs(a - b) for p, c in zip(packed, cached, strict=True) for a, b in zip(p, c, strict=True))
    per = {label: timings[label] / steps[label] for label in timings}
    print(
        f"  speed-up packed / cache per input: {per['cache per input'] / per['packed']:.1f}x per decision "
        f"(same actions: {actions['packed'] == actions['cache per input']}; largest score difference on the "
        f"first steps' {sum(map(len, valid))} candidates: {gap:.2e})"
    )
    print(
        f"  first steps' {len(prefixes)} inputs: packed scoring {first_step:.2f} s, their prompts' forwards alone "
        f"{prompts_alone:.2f} s: scoring costs {first_step / prompts_alone:.2f} prompt forwards"
    )


if __name__ == "__main__":
    main()
