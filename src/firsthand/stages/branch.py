"""The branch stage, early experience itself: at every expert state s_i, execute K alternative actions and record s'.

For each expert trajectory and each state s_i on it:

1. return to s_i: `restore` a snapshot taken on the way (native snapshots), or `reset` and replay
   the expert prefix a_0..a_{i-1} (environments without snapshots);
2. check re-synchronisation: after a replay, the observation must equal the recorded s_i; after a
   restore, the valid actions must equal the recorded ones. A mismatch drops that state's branches
   and is counted (a known bug of earlier pipelines ran alternatives in the wrong game);
3. execute one action (an alternative a_i^j, or the expert's a_i) and record a Branch
   (s_i, a, s', reward, flags).

Alternatives come from a Proposer: `uniform` samples distinct valid actions other than the
expert's; `policy` asks a model for candidates and refills invalid or duplicate ones from the valid
actions; `mixed` takes half from each. Randomness is seeded per (seed, trajectory, state), so the
records never depend on worker count or on whether the run was resumed.

Output directory (stage "branch"): ``trajectories.jsonl`` (the expert trajectories branched,
whose steps give each state's history), ``branches-NNNNN.jsonl`` shards of Branch records,
``config.json`` and ``manifest.json``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from firsthand.artifacts import (
    finished,
    load_branches,
    load_trajectories,
    read_manifest,
    read_model_prompt,
    relative,
    verified_manifest,
    write_jsonl_atomic,
    write_manifest,
)
from firsthand.contract import Branch, Env, InvalidInputError, Trajectory, UnknownNameError, normalize
from firsthand.inference.backends import Backend, HFBackend, Sampling
from firsthand.prompts import PromptConfig, parse_action, policy_prompt
from firsthand.registry import opened
from firsthand.sharding import run_sharded

log = logging.getLogger(__name__)

PROPOSERS: tuple[str, ...] = ("uniform", "policy", "mixed")
MODES: tuple[str, ...] = ("auto", "snapshot", "replay")


@dataclass(frozen=True)
class ProposalContext:
    """What a proposer sees at an expert state."""

    goal: str
    history: list[tuple[str, str]]  # (observation, action) pairs before this state
    observation: str
    valid_actions: list[str]
    expert_action: str
    open_actions: bool = False
    """An open action space: `valid_actions` holds the environment's candidate actions, a sample of what
    can be done rather than all of it, so a proposal outside them is still executed as proposed."""


class ActionSampler(Protocol):
    """A model that proposes candidate actions (`PolicySampler`, or any object with this method)."""

    def sample_actions(self, contexts: Sequence[ProposalContext], n: int) -> list[list[str]]:
        """For each context, up to `n` candidate actions (free text, possibly invalid or repeated)."""
        ...


class PolicySampler:
    """Proposes alternative actions with a policy model: `n` samples per state at temperature 1.0, from the
    prompt the model was trained with (`prompt`), for the `policy` and `mixed` proposers."""

    def __init__(
        self,
        backend: Backend,
        *,
        prompt: PromptConfig | None = None,
        temperature: float = 1.0,
        max_tokens: int = 48,
        seed: int = 0,
    ) -> None:
        self.backend = backend
        self.prompt = prompt or PromptConfig()
        self.sampling = Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed)

    def sample_actions(self, contexts: Sequence[ProposalContext], n: int) -> list[list[str]]:
        prompts = [policy_prompt(c.goal, c.history, c.observation, c.valid_actions, self.prompt) for c in contexts]
        replies = self.backend.generate(prompts, replace(self.sampling, n=n))
        return [[a for a in (parse_action(r) for r in samples) if a] for samples in replies]


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext, k: int, rng: random.Random) -> tuple[list[str], int]:
        """Up to `k` distinct alternatives, none equal to the expert action; plus how many were refilled."""
        ...


def _uniform(context: ProposalContext, k: int, rng: random.Random, exclude: set[str]) -> list[str]:
    pool = [a for a in context.valid_actions if a not in exclude]
    return rng.sample(pool, min(k, len(pool)))


class UniformProposer:
    """Sample K distinct valid actions other than the expert's (the paper's choice for IWM)."""

    name = "uniform"

    def propose(self, context: ProposalContext, k: int, rng: random.Random) -> tuple[list[str], int]:
        return _uniform(context, k, rng, {context.expert_action}), 0


class PolicyProposer:
    """Ask a policy model for candidates; canonicalise, de-duplicate, refill from valid actions.

    `share` is the fraction of the K alternatives taken from the policy (1.0 for `policy`, 0.5 for
    `mixed`); the rest, and any invalid or duplicate proposal, are sampled uniformly. In open action
    spaces (`ProposalContext.open_actions`) every distinct non-empty proposal is kept: the environment
    decides what it does, and that outcome is the experience.
    """

    def __init__(self, sampler: ActionSampler, *, share: float = 1.0, name: str = "policy") -> None:
        self.sampler = sampler
        self.share = share
        self.name = name

    def propose(self, context: ProposalContext, k: int, rng: random.Random) -> tuple[list[str], int]:
        want = round(k * self.share)
        chosen: list[str] = []
        if want:
            valid = set(context.valid_actions)
            for candidate in self.sampler.sample_actions([context], 2 * want)[0]:
                action = " ".join(candidate.strip().split())
                outside = bool(valid) and not context.open_actions and action not in valid
                if not action or action == context.expert_action or action in chosen or outside:
                    continue
                chosen.append(action)
                if len(chosen) == want:
                    break
        refilled = k - len(chosen) - round(k * (1 - self.share))
        chosen += _uniform(context, k - len(chosen), rng, {context.expert_action, *chosen})
        return chosen, max(refilled, 0)


@dataclass
class BranchConfig:
    """Settings of a branching run (written to the run directory as config.json)."""

    k: int = 8
    """Alternatives per expert state (the paper: 8 for IWM on ALFWorld, 2-4 for SR)."""
    proposer: str = "uniform"
    """Where alternatives come from: uniform | policy | mixed."""
    seed: int = 0
    """Seed of the alternative sampling."""
    mode: str = "auto"
    """How to return to a state: auto (snapshot when the environment has native snapshots), snapshot, replay."""
    shard_size: int = 16
    """Most trajectories per shard (the unit of resumption, progress and parallel work); smaller when
    that leaves fewer than `MIN_SHARDS` shards (see `effective_shard_size`)."""
    env_kwargs: dict[str, Any] | None = None
    """Keyword arguments for the environment constructor."""

    def validate(self) -> None:
        if self.k < 1:
            raise InvalidInputError(f"--k must be at least 1 (alternatives per state), got {self.k!r}")
        if self.proposer not in PROPOSERS:
            raise UnknownNameError(f"unknown proposer {self.proposer!r}; valid proposers: {', '.join(PROPOSERS)}")
        if self.mode not in MODES:
            raise UnknownNameError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")


def branch_trajectory(
    env: Env, trajectory: Trajectory, proposer: Proposer, config: BranchConfig, stats: dict[str, int]
) -> list[Branch]:
    """All branches of one trajectory: K alternatives and the expert transition at each state."""
    use_snapshot = config.mode == "snapshot" or (config.mode == "auto" and env.snapshot_native)
    steps = trajectory.steps
    records: list[Branch] = []

    def execute(i: int, action: str, expert: bool) -> str:
        r = env.step(action)
        stats["env_steps"] += 1
        records.append(
            Branch(
                trajectory_id=trajectory.id,
                env=trajectory.env,
                task=trajectory.task,
                goal=trajectory.goal,
                step_index=i,
                observation=steps[i].observation,
                action=action,
                next_observation=r.observation,
                reward=r.reward,
                terminated=r.terminated,
                truncated=r.truncated,
                won=r.won,
                expert=expert,
                expert_action=steps[i].action,
                proposer=proposer.name,
            )
        )
        return r.observation

    def replay_to(i: int) -> str:
        observation, _ = env.reset(trajectory.task)
        for step in steps[:i]:
            observation = env.step(step.action).observation
        stats["replayed_steps"] += i
        return observation

    def go_to_state(i: int, snapshot: Any) -> bool:
        """Return to s_i; True when the environment is verifiably back in sync with the recording."""
        if use_snapshot:
            env.restore(snapshot)
            stats["restores"] += 1
            return env.valid_actions() == steps[i].valid_actions
        return normalize(replay_to(i)) == normalize(steps[i].observation)

    observation, _ = env.reset(trajectory.task)
    history: list[tuple[str, str]] = []
    for i, step in enumerate(steps):
        if normalize(observation) != normalize(step.observation):
            # Walking the expert path itself diverged: nothing after this point can be trusted.
            stats["resync_mismatches"] += 1
            stats["dropped_states"] += len(steps) - i
            log.warning("%s: expert path diverged from the recording at step %d; dropping the rest", trajectory.id, i)
            break
        stats["states"] += 1
        rng = random.Random(f"{config.seed}:{trajectory.id}:{i}")
        pool = step.valid_actions or env.candidate_actions()
        context = ProposalContext(
            trajectory.goal, list(history), step.observation, pool, step.action, open_actions=not step.valid_actions
        )
        alternatives, refilled = proposer.propose(context, config.k, rng)
        stats["refilled"] += refilled
        stats["short_states"] += len(alternatives) < config.k
        snapshot = env.snapshot() if use_snapshot else None
        start = len(records)
        # Alternatives first; the expert action last, so that (with replay) the walk goes on from there.
        in_sync = True
        for j, action in enumerate(alternatives):
            # The walk stands at s_i already (checked above): the first alternative needs no return.
            if j and not go_to_state(i, snapshot):
                in_sync = False
                break
            execute(i, action, expert=False)
        if in_sync and alternatives:
            in_sync = go_to_state(i, snapshot)
        if not in_sync:
            replay_to(i)  # back onto the expert path from scratch; the next state's check verifies it
        observation = execute(i, step.action, expert=True)
        in_sync = in_sync and normalize(observation) == normalize(step.next_observation)
        if in_sync:
            stats["alternatives"] += len(records) - start - 1
        else:
            del records[start:]
            stats["resync_mismatches"] += 1
            stats["dropped_states"] += 1
        history.append((step.observation, step.action))
    stats["branches"] += len(records)
    return records


STAT_KEYS: tuple[str, ...] = (
    "trajectories", "states", "branches", "alternatives", "resync_mismatches", "dropped_states",
    "short_states", "refilled", "restores", "replayed_steps", "env_steps",
)  # fmt: skip


def new_stats() -> dict[str, int]:
    """Zeroed counters of a branching run (summed over shards into the manifest's "stats")."""
    return dict.fromkeys(STAT_KEYS, 0)


def make_proposer(name: str, sampler: ActionSampler | None = None) -> Proposer:
    """The proposer called `name`; `policy` and `mixed` need a model's `sampler`."""
    if name == "uniform":
        return UniformProposer()
    if name not in PROPOSERS:
        raise UnknownNameError(f"unknown proposer {name!r}; valid proposers: {', '.join(PROPOSERS)}")
    if sampler is None:
        raise InvalidInputError(f"the {name!r} proposer needs a policy model: pass --model PATH")
    return PolicyProposer(sampler, share=1.0 if name == "policy" else 0.5, name=name)


def _branch_shard(
    trajectories: Sequence[dict[str, Any]], config: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    cfg = BranchConfig(**config["branch"])
    proposer = make_proposer(cfg.proposer, _load_sampler(config.get("model")))
    stats = new_stats()
    records: list[dict[str, Any]] = []
    with opened(config["env"], config["split"], **(cfg.env_kwargs or {})) as env:
        for t in trajectories:
            stats["trajectories"] += 1
            records += [b.to_dict() for b in branch_trajectory(env, Trajectory.from_dict(t), proposer, cfg, stats)]
    return records, stats


def _load_sampler(model: str | None) -> ActionSampler | None:
    if model is None:
        return None
    if not (Path(model) / "config.json").exists():
        raise InvalidInputError(f"policy model {model!r} is not a model folder (no config.json); pass a trained model")
    # the prompts the model was trained on (its firsthand_prompt.json): others make a trained model propose
    # nothing it would choose (evaluation measured 50% -> 0% on household with the wrong prompt settings)
    return PolicySampler(HFBackend(Path(model), max_prompt_tokens=896), prompt=read_model_prompt(Path(model)))


MIN_SHARDS = 10
"""Branching splits its input into at least this many shards (when there are as many trajectories):
where a trajectory takes minutes (ScienceWorld replays its prefix K times at every state), 27
trajectories in shards of 16 moved the progress bar twice and lost up to 16 trajectories' work to an
interruption."""


def effective_shard_size(n_trajectories: int, shard_size: int) -> int:
    """`shard_size`, lowered so that `n_trajectories` fill at least `MIN_SHARDS` shards."""
    return max(1, min(shard_size, n_trajectories // MIN_SHARDS))


def branch(
    experts: Path,
    out: Path,
    config: BranchConfig,
    *,
    model: str | None = None,
    workers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Branch every trajectory of the collect directory `experts` into `out`; return the manifest."""
    out = Path(out)
    config.validate()
    source = read_manifest(Path(experts), "collect")
    env, split = source["config"]["env"], source["config"]["split"]
    stage_config = {
        "env": env,
        "split": split,
        "experts": relative(experts, out),
        "experts_hash": source["content_hash"],
        "model": model,
        "branch": asdict(config),
    }
    done = finished(out, "branch", stage_config)
    if done is not None:
        log.info("%s is already complete; skipping branch", out)
        return done
    make_proposer(config.proposer, _load_sampler(model))  # fail before any work
    trajectories = load_trajectories(Path(experts))
    if not trajectories:
        raise InvalidInputError(f"{str(experts)!r} holds no trajectories to branch")
    with opened(env, split, **(config.env_kwargs or {})) as instance:  # adapters start their JVMs lazily
        memory = instance.worker_memory
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "trajectories.jsonl").exists():
        write_jsonl_atomic(out / "trajectories.jsonl", (t.to_dict() for t in trajectories))
    names, stats = run_sharded(
        _branch_shard,
        [t.to_dict() for t in trajectories],
        out=out,
        prefix="branches",
        config=stage_config,
        shard_size=effective_shard_size(len(trajectories), config.shard_size),
        workers=workers,
        memory=memory,
        on_shard=on_progress,
    )
    if stats["resync_mismatches"]:
        log.warning("%d states were out of sync after restore and were dropped", stats["resync_mismatches"])
    return write_manifest(
        out,
        stage="branch",
        count=stats["branches"],
        config=stage_config,
        files=["trajectories.jsonl", *names],
        extra={"stats": stats},
    )


def subset(source: Path, out: Path, *, trajectories: int | None = None, k: int | None = None) -> dict[str, Any]:
    """A branch directory holding the first `trajectories` expert trajectories of the finished branch directory
    `source` and, at each of their states, its first `k` alternatives (with the expert's transition); return
    its manifest.

    Sweeps use it so that collection and branching run once: the uniform proposer draws a state's K
    alternatives as an ordered random sample, so its first k are a uniform k-subset of the valid actions, as a
    run with K = k would draw (other draws, the same distribution)."""
    out = Path(out)
    parent = verified_manifest(Path(source), "branch")
    kept, all_branches = load_branches(Path(source))
    available = parent["config"]["branch"]["k"]
    if trajectories is not None and not 1 <= trajectories <= len(kept):
        raise InvalidInputError(
            f"a subset needs 1 to {len(kept)} trajectories of {str(source)!r}, got {trajectories!r}"
        )
    if k is not None and not 1 <= k <= available:
        raise InvalidInputError(f"a subset needs k from 1 to {available} (the k of {str(source)!r}), got {k!r}")
    config = {
        **parent["config"],
        "experts": relative(Path(source) / parent["config"]["experts"], out),
        "branch": {**parent["config"]["branch"], "k": k or available},
        "subset_of": relative(source, out),
        "subset_of_hash": parent["content_hash"],
        "trajectories": trajectories or len(kept),
    }
    done = finished(out, "branch", config)
    if done is not None:
        return done
    kept = kept[: config["trajectories"]]
    ids = {t.id for t in kept}
    taken: dict[tuple[str, int], int] = {}
    records = []
    for b in all_branches:
        if b.trajectory_id not in ids:
            continue
        if not b.expert:
            key = (b.trajectory_id, b.step_index)
            taken[key] = taken.get(key, 0) + 1
            if taken[key] > config["branch"]["k"]:
                continue
        records.append(b.to_dict())
    stats = new_stats()
    stats.update(
        trajectories=len(kept),
        states=sum(b["expert"] for b in records),
        branches=len(records),
        alternatives=sum(not b["expert"] for b in records),
        short_states=sum(
            taken.get((b["trajectory_id"], b["step_index"]), 0) < config["branch"]["k"] for b in records if b["expert"]
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "trajectories.jsonl", (t.to_dict() for t in kept))
    write_jsonl_atomic(out / "branches-00000.jsonl", records)
    files = ["trajectories.jsonl", "branches-00000.jsonl"]
    return write_manifest(out, stage="branch", count=len(records), config=config, files=files, extra={"stats": stats})
