"""The arithmetic of RL after supervised training: rewards, GRPO and GiGPO advantages, the PPO-clip loss and
the k3 KL estimate. Pure functions (lists in, lists out; tensors in, tensors out), so each is tested against
a plain loop written in the test.

Shapes follow verl-agent, the code the paper's RL used: one sample per environment step, a group of rollouts
per task from the same initial state, one advantage per step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

ALGORITHMS: tuple[str, ...] = ("grpo", "gigpo")


def step_rewards(
    won: bool, malformed: Sequence[bool], *, win_reward: float = 10.0, penalty: float = 0.1
) -> list[float]:
    """The reward of each step of an episode: `win_reward` on the last step of a won episode, minus `penalty`
    on every step whose reply held no action (the paper's 10 x won, -0.1 per malformed step)."""
    rewards = [-penalty if bad else 0.0 for bad in malformed]
    if won and rewards:
        rewards[-1] += win_reward
    return rewards


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """G_t = r_t + gamma * G_{t+1}: the return from each step of one episode."""
    returns = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def normalized_in_groups(values: Sequence[float], keys: Sequence[Hashable], eps: float = 1e-6) -> list[float]:
    """(v - mean) / (std + eps) within each group of equal keys (std with Bessel's correction, as torch.std).
    A group of one has nothing to be compared with: its value is 0."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    out = [0.0] * len(values)
    for indices in members.values():
        if len(indices) < 2:
            continue
        group = [values[i] for i in indices]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((v - mean) ** 2 for v in group) / (len(group) - 1))
        for i in indices:
            out[i] = (values[i] - mean) / (std + eps)
    return out


def grpo_advantages(returns: Sequence[float], groups: Sequence[Hashable], eps: float = 1e-6) -> list[float]:
    """One advantage per trajectory: its return normalised within its task group (given to all its steps)."""
    return normalized_in_groups(returns, groups, eps)


def gigpo_advantages(
    episodes: Sequence[dict[str, Any]], *, gamma: float = 0.95, step_weight: float = 1.0, eps: float = 1e-6
) -> list[list[float]]:
    """GiGPO: the episode-level GRPO advantage plus `step_weight` x a step-level one. Steps of one task group
    taken at the same state (equal `states` keys) form a step group; their discounted returns are normalised
    within it. Each episode: {"group": task key, "rewards": [...], "states": [key per step]}; returns one list
    of advantages per episode."""
    totals = [sum(e["rewards"]) for e in episodes]
    episode_level = grpo_advantages(totals, [e["group"] for e in episodes], eps)
    flat_returns: list[float] = []
    flat_keys: list[Hashable] = []
    for e in episodes:
        flat_returns += discounted_returns(e["rewards"], gamma)
        flat_keys += [(e["group"], state) for state in e["states"]]
    step_level = normalized_in_groups(flat_returns, flat_keys, eps)
    out, at = [], 0
    for e, a in zip(episodes, episode_level, strict=True):
        n = len(e["rewards"])
        out.append([a + step_weight * s for s in step_level[at : at + n]])
        at += n
    return out


def episode_advantages(
    episodes: Sequence[dict[str, Any]], algorithm: str, *, gamma: float = 0.95, step_weight: float = 1.0
) -> list[list[float]]:
    """The advantage of every step of every episode under `algorithm` ("grpo" or "gigpo")."""
    if algorithm == "grpo":
        per_episode = grpo_advantages([sum(e["rewards"]) for e in episodes], [e["group"] for e in episodes])
        return [[a] * len(e["rewards"]) for e, a in zip(episodes, per_episode, strict=True)]
    if algorithm == "gigpo":
        return gigpo_advantages(episodes, gamma=gamma, step_weight=step_weight)
    raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")


def kl_k3(logprobs: Any, ref_logprobs: Any) -> Any:
    """Per-token k3 estimate of KL(policy || reference): exp(ref - lp) - (ref - lp) - 1 (always >= 0), at most
    10 per token as in verl: a token the policy made far likelier than the reference did would otherwise
    outweigh every other token of the mean."""
    import torch

    delta = torch.clamp(ref_logprobs - logprobs, -20.0, 20.0)
    return torch.clamp(torch.exp(delta) - delta - 1.0, max=10.0)


def ppo_clip_loss(
    logprobs: Any,
    old_logprobs: Any,
    ref_logprobs: Any,
    advantages: Any,
    mask: Any,
    *,
    clip: float = 0.2,
    kl_coef: float = 0.01,
) -> tuple[Any, dict[str, float]]:
    """PPO-clip on the model's own tokens plus `kl_coef` x k3 KL to the reference, each a mean over the
    tokens of `mask` (verl's token-mean). Tensors are (batch, tokens); `advantages` is (batch,), one per
    step sample. Returns the loss and its parts (policy loss, KL, share of tokens clipped)."""
    import torch

    mask = mask.to(logprobs.dtype)
    tokens = mask.sum().clamp(min=1.0)
    ratio = torch.exp(torch.clamp(logprobs - old_logprobs, -20.0, 20.0))
    a = advantages.unsqueeze(-1)
    unclipped, clipped = -a * ratio, -a * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    policy = (torch.maximum(unclipped, clipped) * mask).sum() / tokens
    kl = (kl_k3(logprobs, ref_logprobs) * mask).sum() / tokens
    clip_fraction = ((clipped > unclipped).to(mask.dtype) * mask).sum() / tokens
    loss = policy + kl_coef * kl
    parts = {"policy_loss": policy, "kl": kl, "clip_fraction": clip_fraction}
    return loss, {name: float(value.detach()) for name, value in parts.items()}
