"""The RL stage: multi-turn GRPO or GiGPO on the environment's reward, from any trained checkpoint.

One iteration (the shape of verl-agent, which the paper's RL used):

1. rollouts: `tasks_per_iteration` training tasks, each played `group_size` times from its initial state by
   the policy sampling at `temperature`, through the same batched episodes as evaluation (`run_episodes`);
   every step is one sample: the policy prompt the checkpoint was trained on, and the tokens it generated;
2. rewards: `win_reward` on the last step of a won episode, minus `invalid_penalty` for a reply without an
   action; advantages by GRPO (per episode, normalised in its task group) or GiGPO (plus a step-level term
   over steps taken at the same state, keyed by `Env.state_key`);
3. one epoch of PPO-clip updates over the samples in minibatches, with a k3 KL penalty to the starting
   model (`policy_gradient`).

TRL's GRPOTrainer treats one completion as one episode, so it cannot train per-step samples whose prompts are
built from the environment's answers; this loop is ours and reuses transformers for generation and the
arithmetic of `policy_gradient`. Each iteration ends with a checkpoint (model, optimizer, statistics), and an
interrupted run resumes from the last one.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firsthand.artifacts import (
    check_config,
    finished,
    model_hash,
    read_jsonl,
    read_model_prompt,
    relative,
    trained_method,
    write_manifest,
    write_model_prompt,
)
from firsthand.contract import InvalidInputError, UnknownNameError
from firsthand.inference.agents import AgentInput, Generation, ModelAgent
from firsthand.inference.episodes import LiveEpisode, run_episodes
from firsthand.models import check_model_folder, load, save_model
from firsthand.policy_gradient import ALGORITHMS, episode_advantages, ppo_clip_loss, step_rewards
from firsthand.progress import Progress, no_progress
from firsthand.prompts import PromptConfig, parse_action, world_model_completion
from firsthand.registry import opened

log = logging.getLogger(__name__)

STATS = "iterations.jsonl"
TIMINGS = "timings.jsonl"
"""Wall-clock figures per iteration, apart from `STATS` so the content hash (which leaves them out) verifies a
resumed run against an uninterrupted one."""
CHECKPOINT = "checkpoint"
TIMING_FIELDS = ("rollout_seconds", "update_seconds", "rollout_tokens_per_second", "update_tokens_per_second")


@dataclass
class RLConfig:
    """The RL budget and its optimisation settings (the same for every starting point of a comparison)."""

    algo: str = "grpo"
    """grpo (one advantage per episode) or gigpo (plus a step-level advantage over identical states)."""
    iterations: int = 20
    """Rollout-and-update rounds."""
    tasks_per_iteration: int = 16
    """Training tasks per iteration (the paper: 16)."""
    group_size: int = 8
    """Rollouts per task from its initial state (the paper: 8)."""
    task_pool: int = 150
    """Tasks are drawn from the first this many tasks of the training split."""
    max_steps: int | None = None
    """Step limit per episode (None: evaluation's on the environment)."""
    max_new_tokens: int | None = None
    """Generation budget per step (None: evaluation's, which is larger for SR models, as they think first)."""
    learning_rate: float = 1e-5
    """AdamW's learning rate (the paper: 1e-6 for 1.5-7B models)."""
    kl_coef: float = 0.01
    """Weight of the k3 KL penalty to the starting model."""
    clip: float = 0.2
    """PPO clip range."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    gamma: float = 0.95
    """Discount of GiGPO's step-level returns."""
    step_weight: float = 1.0
    """Weight of GiGPO's step-level advantage."""
    win_reward: float = 10.0
    """Reward on the last step of a won episode."""
    invalid_penalty: float = 0.1
    """Subtracted for each reply that holds no "Action: ..." line."""
    minibatch_size: int = 64
    """Step samples per optimizer step (one epoch over the iteration's samples)."""
    micro_batch_size: int = 16
    """Samples per forward/backward pass (memory only: gradients are accumulated to the minibatch)."""
    rollout_batch_size: int = 64
    """Episodes stepped together in rollouts (one generate call)."""
    obs_loss: float = 0.0
    """Weight of the next-observation loss (PaW's form of world modeling during RL): each step sample's
    completion is followed by the environment's real next observation, whose tokens are trained with this
    weight and no advantage (every sample, zero-advantage ones included); 0: off."""
    obs_tokens: int = 128
    """Most tokens of a next observation trained on (`obs_loss`)."""
    grad_clip: float = 1.0
    """Largest gradient norm of an optimizer step (clipped above it)."""
    skip_zero_advantage: bool = True
    """Leave out of the update the samples whose advantage is 0 (every sample of a group whose rollouts all got
    the same reward): they carry no policy gradient, only the KL term, and on a weak starting policy they are
    most of the samples (docs/rl.md measures the time saved)."""
    seed: int = 0
    """Seed of the tasks drawn each iteration and of the rollouts' sampling."""

    def validate(self) -> None:
        if self.algo not in ALGORITHMS:
            raise UnknownNameError(f"unknown RL algorithm {self.algo!r}; valid: {', '.join(ALGORITHMS)}")
        for name in ("iterations", "tasks_per_iteration", "task_pool", "minibatch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise InvalidInputError(
                f"--group-size must be at least 2, got {self.group_size!r}: advantages compare rollouts of one task"
            )
        if self.temperature <= 0:
            raise InvalidInputError(f"--temperature must be above 0 (rollouts are sampled), got {self.temperature!r}")
        if self.obs_loss < 0 or self.obs_tokens < 1:
            raise InvalidInputError(
                f"--obs-loss must be at least 0 (got {self.obs_loss!r}) and --obs-tokens at least 1 "
                f"(got {self.obs_tokens!r})"
            )


@dataclass
class _Sample:
    """One step of one rollout: what the policy read, what it generated, and the advantage it gets."""

    prompt_ids: list[int]
    completion_ids: list[int]
    state: str
    malformed: bool
    advantage: float = 0.0
    observation_ids: list[int] = field(default_factory=list)
    """The environment's next observation as tokens after the completion (`RLConfig.obs_loss`)."""


def rollouts(
    agent: ModelAgent,
    env: str,
    tasks: Sequence[str],
    config: RLConfig,
    prompt: PromptConfig,
) -> tuple[list[dict[str, Any]], list[list[_Sample]]]:
    """Play each of `tasks` `group_size` times; return per-episode records (group, rewards, states, won) and
    each episode's step samples."""
    played = [t for t in tasks for _ in range(config.group_size)]
    steps: dict[int, list[_Sample]] = {i: [] for i in range(len(played))}

    def record(e: LiveEpisode, x: AgentInput, g: Generation) -> None:
        malformed = parse_action(g.text) is None
        steps[e.index].append(_Sample(g.prompt_ids, g.completion_ids, e.env.state_key(e.observation), malformed))

    results = run_episodes(
        env,
        "train",
        played,
        agent,
        prompt=prompt,
        batch_size=config.rollout_batch_size,
        max_steps=config.max_steps,
        on_step=record,
    )
    if config.obs_loss:  # each step's reply is followed by what the environment answered to it
        tokenizer = agent.tokenizer
        for i, r in enumerate(results):
            for j, sample in enumerate(steps[i]):
                text = world_model_completion(r.observations[j + 1])
                sample.observation_ids = tokenizer(text, add_special_tokens=False)["input_ids"][: config.obs_tokens]
    episodes = []
    for i, r in enumerate(results):
        malformed = [s.malformed for s in steps[i]]
        rewards = step_rewards(r.won, malformed, win_reward=config.win_reward, penalty=config.invalid_penalty)
        episodes.append(
            {"group": i // config.group_size, "rewards": rewards, "states": [s.state for s in steps[i]], "won": r.won}
        )
    return episodes, [steps[i] for i in range(len(played))]


def sequence_logprobs(model: Any, samples: Sequence[_Sample], pad_id: int, temperature: float = 1.0) -> tuple[Any, Any]:
    """Log-probabilities of each sample's completion tokens under `model`: (batch, longest completion) with a
    mask. Sequences are left-padded, so completions end together and only their positions go through the
    LM head; positions count from each row's first real token, as in generation."""
    import torch

    length = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    longest = max(len(s.completion_ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    mask = torch.zeros((len(samples), longest), dtype=torch.bool)
    for row, s in enumerate(samples):
        sequence = s.prompt_ids + s.completion_ids
        ids[row, length - len(sequence) :] = torch.tensor(sequence)
        attention[row, length - len(sequence) :] = 1
        mask[row, longest - len(s.completion_ids) :] = True
    device = next(model.parameters()).device
    ids, attention = ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=longest + 1).logits[
        :, :-1
    ]
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    targets = ids[:, -longest:]
    return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), mask.to(device)


def observation_loss(model: Any, samples: Sequence[_Sample], pad_id: int) -> tuple[Any, int]:
    """The summed cross-entropy of each sample's next-observation tokens after its prompt and completion, and
    how many tokens that is (the observation is read as a continuation: no advantage, no clip, no KL)."""
    continued = [_Sample(s.prompt_ids + s.completion_ids, s.observation_ids, s.state, s.malformed) for s in samples]
    logprobs, mask = sequence_logprobs(model, continued, pad_id)
    return -(logprobs * mask).sum(), int(mask.sum())


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def update(
    model: Any,
    reference: Any,
    optimizer: Any,
    samples: list[_Sample],
    config: RLConfig,
    pad_id: int,
    rng: random.Random,
) -> dict[str, float]:
    """One epoch of PPO-clip over `samples` in minibatches; the minibatch's loss is a mean over all its tokens.
    Returns the loss parts, the completion tokens trained on and the sequence tokens read (each read three
    times: by the sampling policy, the reference, and the update)."""
    import torch

    order = list(samples)
    rng.shuffle(order)
    old: dict[int, Any] = {}  # per sample: its tokens' log-probabilities under the policy that sampled
    ref: dict[int, Any] = {}  # and under the reference
    with torch.no_grad():
        for micro in _chunks(order, config.micro_batch_size):
            for store, net in ((old, model), (ref, reference)):
                logprobs, _ = sequence_logprobs(net, micro, pad_id, config.temperature)
                for row, s in enumerate(micro):
                    store[id(s)] = logprobs[row, logprobs.shape[1] - len(s.completion_ids) :]
    totals = {"policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    tokens_seen = 0
    observed, observed_tokens = 0.0, 0
    model.train()
    for minibatch in _chunks(order, config.minibatch_size):
        optimizer.zero_grad(set_to_none=True)
        tokens = sum(len(s.completion_ids) for s in minibatch)
        obs_tokens = sum(len(s.observation_ids) for s in minibatch) if config.obs_loss else 0
        for micro in _chunks(minibatch, config.micro_batch_size):
            if obs_tokens:  # lambda x the minibatch's mean next-observation cross-entropy, this micro-batch's share
                summed, counted_obs = observation_loss(model, micro, pad_id)
                (config.obs_loss * summed / obs_tokens).backward()
                observed += float(summed.detach())
                observed_tokens += counted_obs
            logprobs, mask = sequence_logprobs(model, micro, pad_id, config.temperature)
            advantages = torch.tensor([s.advantage for s in micro], dtype=logprobs.dtype, device=logprobs.device)
            loss, parts = ppo_clip_loss(
                logprobs,
                _right_aligned([old[id(s)] for s in micro], logprobs.shape[1]),
                _right_aligned([ref[id(s)] for s in micro], logprobs.shape[1]),
                advantages,
                mask,
                clip=config.clip,
                kl_coef=config.kl_coef,
            )
            counted = int(mask.sum())
            (loss * (counted / tokens)).backward()
            for name in totals:
                totals[name] += parts[name] * counted
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        tokens_seen += tokens
    model.eval()
    read = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    return {name: value / max(1, tokens_seen) for name, value in totals.items()} | {
        "update_tokens": tokens_seen,
        "update_sequence_tokens": read,
        **({"obs_loss": observed / observed_tokens} if observed_tokens else {}),
    }


def _right_aligned(rows: list[Any], width: int) -> Any:
    """Rows of different lengths in one (len(rows), width) tensor, each at the right end (zeros before)."""
    import torch

    out = torch.zeros((len(rows), width), dtype=rows[0].dtype, device=rows[0].device)
    for i, row in enumerate(rows):
        out[i, width - len(row) :] = row
    return out


def iteration_tasks(pool: Sequence[str], config: RLConfig, iteration: int) -> list[str]:
    """The tasks of one iteration: a fixed draw for (seed, iteration), so a resumed run plays the same ones."""
    return random.Random(f"{config.seed}:{iteration}").sample(list(pool), min(config.tasks_per_iteration, len(pool)))


def rl(
    model_path: Path,
    env: str,
    out: Path,
    config: RLConfig,
    *,
    prompt: PromptConfig | None = None,
    response_prefix: str = "",
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Continue `model_path` (a model folder) with RL on `env`'s training tasks; write out/model, the
    per-iteration statistics and the manifest; resume from out/checkpoint. Returns the manifest."""
    config.validate()
    out = Path(out)
    with opened(env, "train") as listing:  # a bad name or argument fails here, before anything is loaded or written
        pool = listing.tasks(config.task_pool)
    check_model_folder(model_path)
    prompt = prompt or read_model_prompt(Path(model_path))
    if prompt is None:
        raise InvalidInputError(
            f"model folder {str(model_path)!r} does not carry the prompt settings it was trained with; pass the "
            f"prompt to use (--history N on the command line)"
        )
    stage_config = {
        "env": env,
        "model": relative(model_path, out),
        "model_hash": model_hash(Path(model_path)),
        "method": trained_method(model_path),
        "prompt": asdict(prompt),
        "response_prefix": response_prefix,
        **asdict(config),
    }
    done = finished(out, "rl", stage_config)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, stage_config)

    import torch

    model, tokenizer = load(Path(model_path), for_training=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    start, history = _resume(out, model, optimizer)
    model.eval()
    agent = ModelAgent(
        model,
        tokenizer,
        name="policy",
        max_new_tokens=config.max_new_tokens or 48,
        temperature=config.temperature,
        response_prefix=response_prefix,
    )
    pad_id = tokenizer.pad_token_id
    held = held_out_steps(agent, env, pool, config, prompt) if config.obs_loss else []
    with progress(f"rl {config.algo} seed {config.seed}", config.iterations) as advance:
        if start:
            advance(start)
        for iteration in range(start, config.iterations):
            stats = _iteration(agent, reference, optimizer, env, pool, config, prompt, pad_id, iteration)
            if held:
                stats["obs_loss_validation"] = _mean_observation_loss(agent.model, held, pad_id, config)
            history.append(stats)
            _save_checkpoint(out, model, tokenizer, optimizer, history)
            log.info(
                "rl iteration %d/%d: success %.1f%% of %d rollouts, no action %.1f%%, groups without spread %d/%d, "
                "KL %.4f, clipped %.1f%%, %.0f s",
                iteration + 1,
                config.iterations,
                100 * stats["success"],
                stats["episodes"],
                100 * stats["malformed_rate"],
                stats["zero_spread_groups"],
                stats["groups"],
                stats["kl"],
                100 * stats["clip_fraction"],
                stats["rollout_seconds"] + stats["update_seconds"],
            )
            advance(1)
    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(out / CHECKPOINT / "model", final)
    write_model_prompt(final, asdict(prompt))
    return write_manifest(
        out,
        stage="rl",
        count=config.iterations,
        config=stage_config,
        files=["config.json", STATS, *(f"model/{f.name}" for f in sorted(final.iterdir()) if f.is_file())],
        extra={"model": "model", "final": history[-1] if history else {}, "timings": TIMINGS},
        packages=("torch", "transformers"),
    )


HELD_OUT_TASKS = 8
"""Expert episodes (training tasks after the RL task pool) whose steps measure the next-observation loss."""


def held_out_steps(
    agent: ModelAgent, env: str, pool: Sequence[str], config: RLConfig, prompt: PromptConfig
) -> list[_Sample]:
    """The expert's steps on `HELD_OUT_TASKS` training tasks RL never plays, as step samples with their next
    observations: the observation loss measured apart from the rollouts it trains on."""
    from firsthand.contract import FirsthandError
    from firsthand.prompts import action_completion, policy_prompt
    from firsthand.replay import replay

    tokenizer, samples = agent.tokenizer, []
    with opened(env, "train") as e:
        tasks = e.tasks(len(pool) + HELD_OUT_TASKS)[len(pool) :]
        for task in tasks:
            e.reset(task)
            try:
                trajectory = replay(e, task, e.expert_actions())
            except FirsthandError:
                continue
            history: list[tuple[str, str]] = []
            for step in trajectory.steps:
                text = agent.render(
                    policy_prompt(trajectory.goal, history, step.observation, step.valid_actions, prompt)
                )
                completion = tokenizer(action_completion(step.action), add_special_tokens=False)["input_ids"]
                observed = tokenizer(world_model_completion(step.next_observation), add_special_tokens=False)
                samples.append(
                    _Sample(
                        tokenizer(text, add_special_tokens=False)["input_ids"][-agent.max_prompt_tokens :],
                        completion + [tokenizer.eos_token_id],
                        "",
                        False,
                        observation_ids=observed["input_ids"][: config.obs_tokens],
                    )
                )
                history.append((step.observation, step.action))
    return samples


def _mean_observation_loss(model: Any, samples: list[_Sample], pad_id: int, config: RLConfig) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for micro in _chunks(samples, config.micro_batch_size):
            summed, n = observation_loss(model, micro, pad_id)
            total, count = total + float(summed), count + n
    return total / max(1, count)


def _iteration(
    agent: ModelAgent,
    reference: Any,
    optimizer: Any,
    env: str,
    pool: Sequence[str],
    config: RLConfig,
    prompt: PromptConfig,
    pad_id: int,
    iteration: int,
) -> dict[str, Any]:
    import torch

    torch.manual_seed(config.seed * 1_000_003 + iteration)  # a resumed run samples as an uninterrupted one
    tasks = iteration_tasks(pool, config, iteration)
    began = time.perf_counter()
    episodes, samples = rollouts(agent, env, tasks, config, prompt)
    rollout_seconds = time.perf_counter() - began
    advantages = episode_advantages(episodes, config.algo, gamma=config.gamma, step_weight=config.step_weight)
    flat: list[_Sample] = []
    for steps, values in zip(samples, advantages, strict=True):
        for s, a in zip(steps, values, strict=True):
            s.advantage = a
            flat.append(s)
    skip = config.skip_zero_advantage and not config.obs_loss  # with obs_loss every sample has a loss
    trained = [s for s in flat if s.advantage != 0.0] if skip else flat
    began = time.perf_counter()
    losses = update(
        agent.model, reference, optimizer, trained, config, pad_id, random.Random(f"{config.seed}:{iteration}")
    )
    update_seconds = time.perf_counter() - began
    returns = [sum(e["rewards"]) for e in episodes]
    groups: dict[int, list[float]] = {}
    for e, r in zip(episodes, returns, strict=True):
        groups.setdefault(e["group"], []).append(r)
    mean = sum(returns) / len(returns)
    generated = sum(len(s.completion_ids) for s in flat)
    step_groups: dict[tuple[int, str], int] = {}
    for e in episodes:
        for state in e["states"]:
            step_groups[(e["group"], state)] = step_groups.get((e["group"], state), 0) + 1
    return {
        "iteration": iteration + 1,
        "success": sum(e["won"] for e in episodes) / len(episodes),
        "episodes": len(episodes),
        "samples": len(flat),
        "trained_samples": len(trained),
        "mean_steps": len(flat) / len(episodes),
        "malformed_rate": sum(s.malformed for s in flat) / max(1, len(flat)),
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5,
        "groups": len(groups),
        "zero_spread_groups": sum(max(g) == min(g) for g in groups.values()),
        "step_groups_shared": sum(n > 1 for n in step_groups.values()),
        **losses,
        "rollout_seconds": rollout_seconds,
        "update_seconds": update_seconds,
        "rollout_tokens_per_second": generated / rollout_seconds if rollout_seconds else 0.0,
        "update_tokens_per_second": losses["update_sequence_tokens"] / update_seconds if update_seconds else 0.0,
    }


def _save_checkpoint(out: Path, model: Any, tokenizer: Any, optimizer: Any, history: list[dict[str, Any]]) -> None:
    """Model, optimizer and statistics of the last finished iteration, replaced as one (rename)."""
    import torch

    tmp = out / (CHECKPOINT + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tokenizer, tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "iterations": len(history)}, tmp / "state.pt")
    with open(tmp / STATS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({k: v for k, v in s.items() if k not in TIMING_FIELDS}) + "\n" for s in history)
    with open(tmp / TIMINGS, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"iteration": s["iteration"], **{k: s[k] for k in TIMING_FIELDS if k in s}}) + "\n"
            for s in history
        )
    old = out / (CHECKPOINT + ".old")
    if (out / CHECKPOINT).exists():
        (out / CHECKPOINT).rename(old)
    tmp.rename(out / CHECKPOINT)
    if old.exists():
        shutil.rmtree(old)
    shutil.copyfile(out / CHECKPOINT / STATS, out / STATS)
    shutil.copyfile(out / CHECKPOINT / TIMINGS, out / TIMINGS)


def _resume(out: Path, model: Any, optimizer: Any) -> tuple[int, list[dict[str, Any]]]:
    """Load the last checkpoint into `model` and `optimizer`; return the iterations done and their statistics."""
    import torch

    checkpoint = out / CHECKPOINT
    if not checkpoint.is_dir() and (out / (CHECKPOINT + ".old")).is_dir():  # stopped between the two renames
        (out / (CHECKPOINT + ".old")).rename(checkpoint)
    if not (checkpoint / "state.pt").is_file():
        return 0, []
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(checkpoint / "model")
    model.load_state_dict(trained.state_dict())
    state = torch.load(checkpoint / "state.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    history = list(read_jsonl(checkpoint / STATS))
    if (checkpoint / TIMINGS).is_file():  # the figures of the iterations before the interruption
        timings = {t["iteration"]: t for t in read_jsonl(checkpoint / TIMINGS)}
        history = [{**h, **timings.get(h["iteration"], {})} for h in history]
    log.info("resuming RL from iteration %d", state["iterations"])
    return state["iterations"], history
