"""The agents that act: random, a model with batched generation, a model that scores the valid actions.
Evaluation, validation and RL rollouts use them; `backends` builds its Hugging Face backend on `ModelAgent`."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firsthand.device import fast_bf16
from firsthand.models import load

Prompt = str | Sequence[dict[str, str]]
"""One user message, or a conversation as chat messages ({"role": ..., "content": ...}) to be answered."""


@dataclass(frozen=True)
class AgentInput:
    """What an agent sees at one step of one episode."""

    prompt: Prompt
    valid_actions: list[str]
    candidates: list[str] = field(default_factory=list)
    """For agents that ask for them (`wants_candidates`): the environment's candidate actions where it
    has no valid-action list (open action spaces)."""


class Agent(Protocol):
    name: str
    wants_candidates: bool
    """True when the agent picks from `AgentInput.candidates` (so evaluation lists them)."""

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
        """One reply per input (model text, parsed for "Action: ..." by the caller)."""
        ...


class RandomAgent:
    """Picks a uniformly random valid action (or candidate action, in open action spaces): the floor
    every table shows."""

    name = "random"
    wants_candidates = True

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
        return [f"Action: {self._pick(x.valid_actions or x.candidates)}" for x in inputs]

    def _pick(self, actions: list[str]) -> str:
        return self.rng.choice(actions) if actions else "look"


SHORT_REPLY_TOKENS = 32
"""Generation budgets up to this (an action, not a thought) count as short replies; see `length_groups`."""
MIN_GROUP = 16


def length_groups(lengths: Sequence[int], max_new_tokens: int) -> list[list[int]]:
    """How `ModelAgent.act` splits a batch of prompts (token counts `lengths`) into generate calls.

    With short replies the prompt's forward pass dominates a batch, and left padding to the longest prompt
    in it is wasted work, so prompts sorted by length go in groups of at least `MIN_GROUP` (measured in
    docs/benchmarks.md). Long budgets (SR's thoughts) stay one call: their cost is decoding, which
    batching amortises.
    """
    n = len(lengths)
    if max_new_tokens > SHORT_REPLY_TOKENS or n < 2 * MIN_GROUP:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: lengths[i])
    size = -(-n // (n // MIN_GROUP))
    return [order[i : i + size] for i in range(0, n, size)]


class ModelAgent:
    """A causal LM that answers the policy prompt; greedy decoding, batched, left-padded (short replies
    in groups of similar prompt length, see `length_groups`)."""

    wants_candidates = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "model",
        max_new_tokens: int = 48,
        max_prompt_tokens: int = 896,
        response_prefix: str = "",
        temperature: float = 0.0,
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.temperature = temperature
        """0: greedy (evaluation); above 0: sampled at this temperature (RL rollouts)."""
        self.max_new_tokens = max_new_tokens
        self.response_prefix = response_prefix
        """Text the reply is made to begin with: "Thought:" makes an SR model reason before it acts, which
        greedy decoding otherwise never did (docs/history.md)."""
        self.max_prompt_tokens = max_prompt_tokens
        self.generate_seconds = 0.0
        self.bf16 = fast_bf16(model.num_parameters())  # decided once, not at every step

    @classmethod
    def from_path(cls, path: Path, **kwargs: Any) -> ModelAgent:
        model, tokenizer = load(Path(path))
        return cls(model, tokenizer, **kwargs)

    def render(self, prompt: Prompt) -> str:
        """The prompt in the model's chat template: one user message, or a whole conversation."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + (
            self.response_prefix
        )

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
        return [g.text for g in self.generate(inputs)]

    def generate(self, inputs: Sequence[AgentInput]) -> list[Generation]:
        """Each reply with the token ids it came from (RL trains on exactly the tokens that were sampled)."""
        import torch

        start = time.perf_counter()
        texts = [self.render(x.prompt) for x in inputs]
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # keep the end of the prompt: the current state
        batch = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            add_special_tokens=False,
        )
        device = "cuda" if next(self.model.parameters()).is_cuda else "cpu"
        mask = batch["attention_mask"]
        # Sampling from the whole distribution (no top-k / top-p cut): RL's log-probabilities are of that one.
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
            if self.temperature > 0
            else {"do_sample": False}
        )
        generations: list[Generation | None] = [None] * len(texts)
        for group in length_groups(mask.sum(1).tolist(), self.max_new_tokens):
            rows = torch.tensor(group)
            keep = mask[rows].any(0)  # drop the columns that are padding in every row of the group
            ids, attention = batch["input_ids"][rows][:, keep], mask[rows][:, keep]
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    **sampling,
                )
            new = out[:, ids.shape[1] :].cpu()
            for j, i in enumerate(group):
                completion = new[j].tolist()
                if self.tokenizer.eos_token_id in completion:  # the end of the reply, then padding
                    completion = completion[: completion.index(self.tokenizer.eos_token_id) + 1]
                reply = self.tokenizer.decode(completion, skip_special_tokens=True)
                prompt_ids = ids[j][attention[j].bool()].tolist()
                generations[i] = Generation(self.response_prefix + reply, prompt_ids, completion)
        self.generate_seconds += time.perf_counter() - start
        return generations  # type: ignore[return-value]


@dataclass(frozen=True)
class Generation:
    """One reply of `ModelAgent.generate`: its text (response prefix included) and its tokens."""

    text: str
    prompt_ids: list[int]
    """The rendered prompt as the model read it (chat template and response prefix, truncated on the left)."""
    completion_ids: list[int]
    """The generated tokens, up to and including the end-of-reply token when one was generated."""


DECISIONS: tuple[str, ...] = ("generate", "score")
"""How a model policy picks its action: generate free text and parse it, or score every valid action."""


class ScoringAgent:
    """A causal LM that picks the valid action it gives the highest likelihood, instead of writing one: it
    tells "chose the wrong receptacle" from "could not spell the object's name". Each candidate is scored as the
    whole reply ``Action: <action>`` and its end-of-reply token (so "cabinet 1" does not win for being a prefix
    of "cabinet 10"); the prompt is read once, the candidates packed after it (`scores_many`). A model that
    thinks first (`thinker`: its generating agent) writes its thought greedily, and the actions are scored
    after it. Inputs without valid actions fall back to generation."""

    wants_candidates = False

    def __init__(self, generator: ModelAgent, *, thinks: bool = False, score_tokens: int = 1024) -> None:
        self.generator, self.thinks, self.score_tokens = generator, thinks, score_tokens
        self.model, self.tokenizer, self.name = generator.model, generator.tokenizer, generator.name

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
        replies: list[str | None] = [None] * len(inputs)
        generate = [i for i, x in enumerate(inputs) if not x.valid_actions]
        if self.thinks:  # the thought is written, then the actions are scored after it
            generate = list(range(len(inputs)))
        replies_of = self.generator.act([inputs[i] for i in generate]) if generate else []
        written = dict(zip(generate, replies_of, strict=True))
        heads: dict[int, str] = {}
        for i, x in enumerate(inputs):
            if not x.valid_actions:
                replies[i] = written[i]
                continue
            head = ""
            if self.thinks:
                text = written[i]
                cut = text.rfind("Action:")
                head = (text[:cut] if cut >= 0 else text.rstrip() + "\n")[len(self.generator.response_prefix) :]
            heads[i] = head
        order = list(heads)
        prefixes = [self.generator.render(inputs[i].prompt) + heads[i] + "Action: " for i in order]
        scored = self.scores_many(prefixes, [inputs[i].valid_actions for i in order])
        for i, scores in zip(order, scored, strict=True):
            best = max(range(len(scores)), key=scores.__getitem__)
            replies[i] = heads[i] + f"Action: {inputs[i].valid_actions[best]}"
        return replies  # type: ignore[return-value]

    def scores(self, prefix: str, actions: Sequence[str]) -> list[float]:
        """log p(action and end of reply | prefix) for each action."""
        return self.scores_many([prefix], [actions])[0]

    def scores_many(self, prefixes: Sequence[str], actions: Sequence[Sequence[str]]) -> list[list[float]]:
        """`scores` of many inputs at once. Each input is one packed sequence (`firsthand.packing`): the tokens
        its candidates share once, then every candidate's own tokens, attending to the shared part and to
        themselves only; packs are batched up to `score_tokens` tokens a forward, all candidates tokenized in
        one call: copying a prompt's key-value cache for each candidate took a fifth of the scoring time
        (docs/benchmarks.md, bench/scoring.py)."""
        import torch

        from firsthand.packing import PAD_SEGMENT, block_mask

        eos = self.tokenizer.eos_token_id
        texts = [p + a for p, acts in zip(prefixes, actions, strict=True) for a in acts]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        packs = []  # per input: ids, positions, segments, and each candidate's (predictor, token) index pairs
        for acts in actions:
            full = [[*next(encoded), eos] for _ in acts]
            shared = 0
            while shared < min(map(len, full)) - 1 and all(ids[shared] == full[0][shared] for ids in full):
                shared += 1
            cut = max(0, shared - self.generator.max_prompt_tokens)  # a long prompt keeps its end: the state
            ids = full[0][cut:shared]
            start = len(ids)
            positions, segments, targets = list(range(start)), [0] * start, []
            for segment, candidate in enumerate(full, start=1):
                suffix = candidate[shared:]
                predictors = [start - 1] + list(range(len(ids), len(ids) + len(suffix) - 1))
                targets.append(list(zip(predictors, range(len(ids), len(ids) + len(suffix)), strict=True)))
                ids += suffix
                positions += range(start, start + len(suffix))
                segments += [segment] * len(suffix)
            packs.append((ids, positions, segments, targets))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        results: list[list[float]] = [[] for _ in packs]
        by_length = sorted(range(len(packs)), key=lambda n: len(packs[n][0]))
        batches: list[list[int]] = []
        for n in by_length:  # similar lengths together, so little padding; at most `score_tokens` a forward
            if batches and (len(batches[-1]) + 1) * len(packs[n][0]) <= max(self.score_tokens, len(packs[n][0])):
                batches[-1].append(n)
            else:
                batches.append([n])
        for batch in batches:
            width = max(len(packs[n][0]) for n in batch)

            def padded(column: int, fill: int, batch: list[int] = batch, width: int = width) -> Any:
                rows = [packs[n][column] + [fill] * (width - len(packs[n][column])) for n in batch]
                return torch.tensor(rows, device=device)

            ids, segments = padded(0, pad), padded(2, PAD_SEGMENT)
            row, predictor, token = (
                torch.tensor(column, device=device, dtype=torch.long)
                for column in zip(
                    *[(r, p, t) for r, n in enumerate(batch) for pairs in packs[n][3] for p, t in pairs], strict=True
                )
            )
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=self.generator.bf16):
                hidden = self.model.get_decoder()(
                    input_ids=ids, attention_mask=block_mask(segments), position_ids=padded(1, 0), use_cache=False
                ).last_hidden_state
                logits = self.model.get_output_embeddings()(hidden[row, predictor]).float()
                cap = getattr(self.model.config, "final_logit_softcapping", None)
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[row, token].unsqueeze(-1)).squeeze(-1)
            values = iter(logprobs.tolist())
            for n in batch:
                results[n] = [sum(next(values) for _ in pairs) for pairs in packs[n][3]]
        return results
