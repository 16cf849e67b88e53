"""Evaluation: agents act for N episodes per split; success rate with Wilson intervals.

Episodes run in batches: every active episode's prompt goes to the agent in one call (one batched
`generate` for a model), each reply is parsed ("Action: ...") and the action is executed as given.
An action that is not among the environment's valid actions counts toward the invalid-action rate
(it still runs, and household answers "Nothing happens.").
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firsthand.branching import candidate_actions_of
from firsthand.contract import Env, prepare_tasks
from firsthand.prompts import PromptConfig, parse_action, policy_prompt
from firsthand.registry import make
from firsthand.stats import wilson_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentInput:
    """What an agent sees at one step of one episode."""

    prompt: str
    valid_actions: list[str]
    candidates: list[str] = field(default_factory=list)
    """For agents that ask for them (`wants_candidates`): the environment's candidate actions where it
    has no valid-action list (open action spaces)."""


class Agent(Protocol):
    name: str

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

    With short replies the prompt's forward pass dominates a batch, and left padding to the longest
    prompt in it wastes ~24% of that pass (household evaluation). Prompts sorted by length then go in
    groups of at least `MIN_GROUP`: on the trained quickstart IL model, 50 real prompts took 0.40 s in one
    call and 0.32-0.34 s in 3-4 groups (10 groups: 0.47 s; replies identical). Long budgets (SR's
    thoughts) stay one call: their cost is decoding, which batching amortises.
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

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "model",
        max_new_tokens: int = 48,
        max_prompt_tokens: int = 896,
        response_prefix: str = "",
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_new_tokens = max_new_tokens
        self.response_prefix = response_prefix
        """Text the reply is made to begin with ("Thought:" makes an SR model reason before it acts: trained
        on reflections mixed with plain expert actions for the same prompts, greedy decoding otherwise
        starts with "Action:" every time; measured on household, see the README)."""
        self.max_prompt_tokens = max_prompt_tokens
        self.generate_seconds = 0.0
        from firsthand.train import fast_bf16

        self.bf16 = fast_bf16()  # decided once, not at every step

    @classmethod
    def from_path(cls, path: Path, **kwargs: Any) -> ModelAgent:
        from firsthand.models import load

        model, tokenizer = load(Path(path))
        return cls(model, tokenizer, **kwargs)

    def render(self, prompt: str) -> str:
        return (
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            + self.response_prefix
        )

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
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
        replies: list[str] = [""] * len(texts)
        for group in length_groups(mask.sum(1).tolist(), self.max_new_tokens):
            rows = torch.tensor(group)
            keep = mask[rows].any(0)  # drop the columns that are padding in every row of the group
            ids, attention = batch["input_ids"][rows][:, keep], mask[rows][:, keep]
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=attention,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            texts_out = self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            for i, reply in zip(group, texts_out, strict=True):
                replies[i] = reply
        self.generate_seconds += time.perf_counter() - start
        return [self.response_prefix + r for r in replies]


class PolicySampler:
    """Proposes alternative actions with a policy model: several samples at temperature 1.0 in one call.

    Implements `firsthand.branching.ActionSampler` for the `policy` and `mixed` proposers.
    """

    def __init__(
        self,
        path: Path,
        *,
        prompt: PromptConfig | None = None,
        temperature: float = 1.0,
        max_new_tokens: int = 48,
        seed: int = 0,
    ) -> None:
        self.agent = ModelAgent.from_path(path, max_new_tokens=max_new_tokens)
        self.prompt = prompt or PromptConfig()
        self.temperature = temperature
        self.seed = seed

    def sample_actions(self, contexts: Sequence[Any], n: int) -> list[list[str]]:
        import torch

        tokenizer, model = self.agent.tokenizer, self.agent.model
        texts = [
            self.agent.render(policy_prompt(c.goal, c.history, c.observation, c.valid_actions, self.prompt))
            for c in contexts
        ]
        batch = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.agent.max_prompt_tokens,
            add_special_tokens=False,
        )
        torch.manual_seed(self.seed)  # proposals are reproducible for a given model and state
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=self.temperature,
                num_return_sequences=n,
                max_new_tokens=self.agent.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [[a for a in (parse_action(r) for r in replies[i * n : (i + 1) * n]) if a] for i in range(len(contexts))]


@dataclass
class EpisodeResult:
    task: str
    won: bool
    steps: int
    invalid_actions: int
    truncated: bool
    actions: list[str] = field(default_factory=list)


@dataclass
class _Episode:
    env: Env
    task: str
    goal: str
    observation: str
    history: list[tuple[str, str]] = field(default_factory=list)
    result: EpisodeResult | None = None


def run_episodes(
    env_name: str,
    split: str,
    tasks: Sequence[str],
    agent: Agent,
    *,
    prompt: PromptConfig | None = None,
    batch_size: int = 32,
    max_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Run `agent` on `tasks` of `split`, `batch_size` episodes at a time; results in task order."""
    prompt = prompt or PromptConfig()
    kwargs = dict(env_kwargs or {})
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    results: dict[str, EpisodeResult] = {}
    queue = list(tasks)
    active: list[_Episode] = []
    idle: list[Env] = []  # environments are reused: some adapters start a JVM per instance
    wants_candidates = getattr(agent, "wants_candidates", False)
    if queue:
        idle.append(make(env_name, split, **kwargs))
        prepare_tasks(idle[0], queue)
    while queue or active:
        while queue and len(active) < batch_size:  # keep the batch full as episodes finish
            env = idle.pop() if idle else make(env_name, split, **kwargs)
            task = queue.pop(0)
            observation, info = env.reset(task)
            active.append(_Episode(env, task, str(info.get("goal", "")), observation))
        inputs = []
        for e in active:
            valid = e.env.valid_actions()
            candidates = candidate_actions_of(e.env) if wants_candidates and not valid else []
            inputs.append(AgentInput(policy_prompt(e.goal, e.history, e.observation, valid, prompt), valid, candidates))
        replies = agent.act(inputs)
        still: list[_Episode] = []
        for e, x, reply in zip(active, inputs, replies, strict=True):
            action = parse_action(reply) or ""
            r = e.env.step(action)
            e.result = e.result or EpisodeResult(e.task, False, 0, 0, False)
            e.result.steps += 1
            if "invalid" in r.info:
                e.result.invalid_actions += bool(r.info["invalid"])
            else:
                e.result.invalid_actions += bool(x.valid_actions) and action not in x.valid_actions
            e.result.actions.append(action)
            e.history.append((e.observation, action))
            e.observation = r.observation
            if r.terminated or r.truncated:
                e.result.won, e.result.truncated = r.won, r.truncated
                results[e.task] = e.result
                idle.append(e.env)
                if on_episode:
                    on_episode(e.result)
            else:
                still.append(e)
        active = still
    for env in idle:  # adapters that hold a process (a JVM) release it
        getattr(env, "close", lambda: None)()
    return [results[t] for t in tasks]


def training_prompt(model: Path) -> PromptConfig | None:
    """The prompt settings a `firsthand train` model was trained with (read from its run's manifests).

    Evaluation must render prompts the way the training data did; None when `model` is not a
    `firsthand train` output (then the caller's settings apply).
    """
    manifest = Path(model).parent / "manifest.json"
    try:
        config = json.loads(manifest.read_text())["config"]
        data = Path(config["data"][config["method"]])
        prompt = json.loads((data / "manifest.json").read_text())["config"]["prompt"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return PromptConfig(**{"restate_goal": False, **prompt})  # data built before the option did not restate it


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Success rate with a 95% Wilson interval, mean steps and invalid-action rate."""
    n = len(results)
    wins = sum(r.won for r in results)
    low, high = wilson_interval(wins, n)
    steps = sum(r.steps for r in results)
    return {
        "success": wins / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "episodes": n,
        "wins": wins,
        "mean_steps": steps / n if n else 0.0,
        "invalid_rate": sum(r.invalid_actions for r in results) / steps if steps else 0.0,
    }


def episode_records(results: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
