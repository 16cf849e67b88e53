"""RL after supervised training: the advantage and loss arithmetic against plain loops, the rollouts, the
stage's resumption and a learning test (RL raises an IL checkpoint's success on its training tasks)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from firsthand.artifacts import model_hash, read_jsonl
from firsthand.contract import InvalidInputError, UnknownNameError
from firsthand.policy_gradient import (
    discounted_returns,
    episode_advantages,
    gigpo_advantages,
    grpo_advantages,
    kl_k3,
    ppo_clip_loss,
    step_rewards,
)
from firsthand.registry import make
from firsthand.stages.evaluate import model_prompt
from firsthand.stages.rl import RLConfig, rl


def _naive_normalized(value: float, group: list[float]) -> float:
    if len(group) < 2:
        return 0.0
    return (value - statistics.mean(group)) / (statistics.stdev(group) + 1e-6)


def test_step_rewards_and_discounted_returns() -> None:
    assert step_rewards(True, [False, True, False]) == [0.0, -0.1, 10.0]
    assert step_rewards(False, [True, False]) == [-0.1, 0.0]
    assert step_rewards(True, [True], win_reward=1.0, penalty=0.5) == [0.5]
    rewards = [0.0, -0.1, 0.0, 10.0]
    expected = [sum(0.95**k * rewards[t + k] for k in range(len(rewards) - t)) for t in range(len(rewards))]
    assert discounted_returns(rewards, 0.95) == pytest.approx(expected)


def test_grpo_advantages_match_a_plain_loop() -> None:
    rng = random.Random(0)
    groups = [rng.randrange(4) for _ in range(40)] + [9]  # group 9 has one member
    returns = [rng.choice([0.0, 10.0, -0.2, 9.9]) for _ in groups]
    got = grpo_advantages(returns, groups)
    for value, group, a in zip(returns, groups, got, strict=True):
        members = [r for r, g in zip(returns, groups, strict=True) if g == group]
        assert a == pytest.approx(_naive_normalized(value, members))
    assert got[-1] == 0.0
    assert grpo_advantages([5.0, 5.0, 5.0], [0, 0, 0]) == [0.0, 0.0, 0.0]  # no spread, no signal


def test_gigpo_advantages_match_a_plain_loop() -> None:
    rng = random.Random(1)
    episodes = []
    for i in range(12):
        n = rng.randint(1, 6)
        won = rng.random() < 0.4
        episodes.append(
            {
                "group": i // 4,
                "rewards": step_rewards(won, [rng.random() < 0.2 for _ in range(n)]),
                "states": [rng.choice("abc") for _ in range(n)],  # few states: step groups form
            }
        )
    got = gigpo_advantages(episodes, gamma=0.9, step_weight=0.5)
    returns = {
        (i, t): sum(0.9**k * e["rewards"][t + k] for k in range(len(e["rewards"]) - t))
        for i, e in enumerate(episodes)
        for t in range(len(e["rewards"]))
    }
    for i, e in enumerate(episodes):
        group_totals = [sum(o["rewards"]) for o in episodes if o["group"] == e["group"]]
        episode_level = _naive_normalized(sum(e["rewards"]), group_totals)
        for t, state in enumerate(e["states"]):
            same_state = [
                returns[(j, u)]
                for j, o in enumerate(episodes)
                if o["group"] == e["group"]
                for u, s in enumerate(o["states"])
                if s == state
            ]
            assert got[i][t] == pytest.approx(episode_level + 0.5 * _naive_normalized(returns[(i, t)], same_state))
    # the same state in two task groups is two step groups
    shared = [{"group": g, "rewards": [r], "states": ["s"]} for g, r in ((0, 0.0), (1, 10.0))]
    assert gigpo_advantages(shared) == [[0.0], [0.0]]
    grpo = episode_advantages(episodes, "grpo")
    assert all(len(set(a)) <= 1 for a in grpo)  # GRPO: one advantage for every step of an episode


def test_ppo_clip_loss_and_k3_match_a_plain_loop() -> None:
    torch.manual_seed(0)
    batch, width, clip, kl_coef = 3, 5, 0.2, 0.05
    logprobs = -torch.rand(batch, width) * 3
    old = logprobs + torch.randn(batch, width) * 0.4  # ratios well outside the clip range too
    ref = logprobs + torch.randn(batch, width) * 0.3
    advantages = torch.tensor([1.5, -0.7, 0.0])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    loss, parts = ppo_clip_loss(logprobs, old, ref, advantages, mask, clip=clip, kl_coef=kl_coef)
    policy = kl = clipped = 0.0
    tokens = 0
    for b in range(batch):
        for t in range(width):
            if not mask[b, t]:
                continue
            ratio = math.exp(float(logprobs[b, t]) - float(old[b, t]))
            a = float(advantages[b])
            plain, cut = -a * ratio, -a * min(max(ratio, 1 - clip), 1 + clip)
            policy += max(plain, cut)
            clipped += cut > plain
            d = float(ref[b, t]) - float(logprobs[b, t])
            kl += min(math.exp(d) - d - 1, 10.0)
            tokens += 1
    assert parts["policy_loss"] == pytest.approx(policy / tokens, rel=1e-5)
    assert parts["kl"] == pytest.approx(kl / tokens, rel=1e-5)
    assert parts["clip_fraction"] == pytest.approx(clipped / tokens)
    assert 0 < parts["clip_fraction"] < 1
    assert float(loss) == pytest.approx(policy / tokens + kl_coef * kl / tokens, rel=1e-5)
    assert float(kl_k3(logprobs, logprobs).abs().max()) == 0.0
    assert bool((kl_k3(logprobs, ref) >= 0).all())
    assert float(kl_k3(torch.tensor([-20.0]), torch.tensor([0.0]))) == 10.0  # capped per token


def test_a_task_listed_twice_is_played_twice_and_every_step_is_seen() -> None:
    from firsthand.inference.agents import RandomAgent
    from firsthand.stages.evaluate import run_episodes

    tasks = make("household", "train").tasks(2)
    seen: list[tuple[int, int]] = []
    results = run_episodes(
        "household",
        "train",
        [tasks[0], tasks[0], tasks[1]],
        RandomAgent(0),
        max_steps=3,
        batch_size=2,
        on_step=lambda e, x, reply: seen.append((e.index, e.env.elapsed_steps)),
    )
    assert [r.task for r in results] == [tasks[0], tasks[0], tasks[1]]
    for index, r in enumerate(results):
        assert [s for i, s in seen if i == index] == list(range(r.steps))  # before each action runs


def test_state_keys_are_equal_for_equal_states() -> None:
    env = make("household", "train")
    task = env.tasks(1)[0]
    observation, _ = env.reset(task)
    start = env.state_key(observation)
    snap = env.snapshot()
    moved = env.step(env.valid_actions()[0])
    assert env.state_key(moved.observation) != start
    env.restore(snap)
    assert env.state_key(observation) == start
    observation, _ = env.reset(task)
    assert env.state_key(observation) == start  # a new episode of the task starts in the same state


class _Stop(Exception):
    pass


@contextmanager
def _stop_after_first_iteration(description: str, total: int) -> Iterator[Callable[[int], None]]:
    def advance(n: int) -> None:
        raise _Stop

    yield advance


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model with its prompt settings: RL's plumbing does not need a good policy."""
    from firsthand.artifacts import write_model_prompt
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.prompts import PromptConfig

    env = make("household", "train")
    texts = []
    for task in env.tasks(4):
        observation, info = env.reset(task)
        texts.append(f"Goal: {info['goal']}\n{observation}\nAction: " + "; ".join(env.valid_actions()))
    folder = create_tiny(
        texts, tmp_path_factory.mktemp("tiny") / "model", TinyConfig(hidden_size=64, layers=1, heads=2)
    )
    write_model_prompt(folder, asdict(PromptConfig(history=1, show_valid_actions=False)))
    return folder


def _small(**changes: object) -> RLConfig:
    settings = dict(
        iterations=2,
        tasks_per_iteration=2,
        group_size=2,
        task_pool=4,
        max_steps=3,
        max_new_tokens=6,
        learning_rate=1e-3,
        minibatch_size=4,
        micro_batch_size=3,
        skip_zero_advantage=False,  # an untrained policy's advantages are mostly 0: update on every sample
    )
    return RLConfig(**{**settings, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("algo", ["grpo", "gigpo"])
def test_an_interrupted_rl_run_resumes_as_if_it_had_not_stopped(small_model: Path, tmp_path: Path, algo: str) -> None:
    config = _small(algo=algo)
    whole = rl(small_model, "household", tmp_path / "whole", config)
    with pytest.raises(_Stop):
        rl(small_model, "household", tmp_path / "cut", config, progress=_stop_after_first_iteration)
    assert not (tmp_path / "cut" / "manifest.json").exists()
    assert len((tmp_path / "cut" / "iterations.jsonl").read_text().splitlines()) == 1
    resumed = rl(small_model, "household", tmp_path / "cut", config)
    lines = [list(read_jsonl(tmp_path / run / "iterations.jsonl")) for run in ("whole", "cut")]
    assert len(lines[0]) == 2 and lines[0] == lines[1]
    # the content hash verifies the resume: wall-clock figures live in timings.jsonl, which it leaves out
    assert resumed["content_hash"] == whole["content_hash"]
    timings = list(read_jsonl(tmp_path / "cut" / "timings.jsonl"))
    assert [t["iteration"] for t in timings] == [1, 2] and all(t["update_seconds"] > 0 for t in timings)
    assert model_hash(tmp_path / "whole" / "model") == model_hash(tmp_path / "cut" / "model")
    assert whole["count"] == resumed["count"] == 2 and whole["config"]["algo"] == algo
    stats = whole["final"]
    assert stats["episodes"] == 4 and stats["samples"] == stats["mean_steps"] * 4
    assert 0 <= stats["success"] <= 1 and stats["kl"] >= 0 and stats["update_tokens"] > 0
    assert stats["trained_samples"] == stats["samples"]
    # the model differs from where it started and is a model folder evaluation accepts
    assert model_hash(tmp_path / "whole" / "model") != model_hash(small_model)
    assert model_prompt(tmp_path / "whole" / "model") == model_prompt(small_model)
    # a finished run is reused with the same settings and refused with others, naming the difference
    assert rl(small_model, "household", tmp_path / "whole", config)["content_hash"] == whole["content_hash"]
    with pytest.raises(InvalidInputError, match="iterations: 2 there, 3 now"):
        rl(small_model, "household", tmp_path / "whole", _small(algo=algo, iterations=3))


def test_bad_rl_settings_are_refused(small_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="'ppo'"):
        rl(small_model, "household", tmp_path / "x", _small(algo="ppo"))
    with pytest.raises(InvalidInputError, match="--group-size must be at least 2, got 1"):
        rl(small_model, "household", tmp_path / "x", _small(group_size=1))
    assert not (tmp_path / "x").exists()


def test_sequence_logprobs_of_a_padded_batch_match_each_sequence_alone(small_model: Path) -> None:
    from firsthand.models import load
    from firsthand.stages.rl import _Sample, sequence_logprobs

    model, tokenizer = load(small_model)
    rng = random.Random(0)
    samples = [
        _Sample([rng.randrange(5, 200) for _ in range(p)], [rng.randrange(5, 200) for _ in range(c)], "", False)
        for p, c in ((7, 3), (2, 5), (11, 1))
    ]
    batched, mask = sequence_logprobs(model, samples, tokenizer.pad_token_id)
    assert mask.sum(1).tolist() == [3, 5, 1]
    with torch.no_grad():
        for row, s in enumerate(samples):
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            alone = (
                logits[-len(s.completion_ids) :].gather(-1, torch.tensor(s.completion_ids).unsqueeze(-1)).squeeze(-1)
            )
            assert torch.allclose(batched[row, mask[row]], alone, atol=1e-5)


def test_rl_raises_the_success_of_an_il_checkpoint_on_its_training_tasks(household_il: Path, tmp_path: Path) -> None:
    """Learning test: 12 GRPO iterations on 3 training tasks (8 rollouts each) from IL on 10 demonstrations.
    Measured once: sampled success 29% -> 72%, greedy 1/3 -> 2/3 (docs/rl.md); asserted: a clear rise."""
    from firsthand.inference.agents import ModelAgent
    from firsthand.prompts import PromptConfig
    from firsthand.stages.evaluate import run_episodes, summarize

    prompt = PromptConfig(history=2, show_valid_actions=False)
    tasks = make("household", "train").tasks(3)

    def sampled_success(model: Path) -> float:
        torch.manual_seed(123)
        agent = ModelAgent.from_path(model, max_new_tokens=12, temperature=0.5)
        played = [t for t in tasks for _ in range(26)]
        return summarize(run_episodes("household", "train", played, agent, prompt=prompt, max_steps=12))["success"]

    config = RLConfig(
        iterations=12,
        tasks_per_iteration=3,
        group_size=8,
        task_pool=3,
        max_steps=12,
        max_new_tokens=12,
        learning_rate=1e-4,
        temperature=0.5,
        minibatch_size=32,
    )
    manifest = rl(household_il, "household", tmp_path / "rl", config)
    before, after = sampled_success(household_il), sampled_success(tmp_path / "rl" / manifest["model"])
    assert after >= before + 0.2, (before, after)
    curve = [s["success"] for s in read_jsonl(tmp_path / "rl" / "iterations.jsonl")]
    assert sum(curve[-4:]) / 4 > sum(curve[:4]) / 4, curve  # the rollouts' own success rose too


def test_the_rl_command_runs_reports_each_iteration_and_refuses_bad_input(small_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    cli = [sys.executable, "-m", "firsthand.cli", "rl", "--model", str(small_model)]
    small = ["--iterations", "1", "--tasks-per-iteration", "1", "--group-size", "2", "--max-steps", "2"]
    r = subprocess.run([*cli, "--out", str(tmp_path / "r"), *small], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rl iteration 1/1: success" in r.stderr and "model: " in r.stdout
    assert (tmp_path / "r" / "manifest.json").exists()
    for args, message in (
        (["--algo", "ppo"], "unknown RL algorithm 'ppo'; valid: grpo, gigpo"),
        (["--group-size", "1"], "--group-size must be at least 2, got 1"),
        (["--model", str(tmp_path / "nowhere")], "does not exist"),
    ):
        bad = subprocess.run([*cli, "--out", str(tmp_path / "b"), *args], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "b").exists()


def _plain_losses(model, samples, advantages_matter: bool, obs_weight: float):  # noqa: ANN001, ANN202
    """A plain loop over samples, one sequence at a time: the policy term -A x ratio (ratio 1 at the first
    update, so its gradient is -A x grad log p) as a token-mean over completions, plus obs_weight x the
    token-mean cross-entropy of the next-observation tokens."""
    policy, policy_tokens, obs, obs_tokens = 0.0, 0, 0.0, 0
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.completion_ids + s.observation_ids])
        logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        targets = ids[0, 1:]
        token = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        start = len(s.prompt_ids) - 1
        action = token[start : start + len(s.completion_ids)]
        policy = policy + (-s.advantage * torch.exp(action - action.detach())).sum()
        policy_tokens += len(s.completion_ids)
        if s.observation_ids:
            obs = obs - token[start + len(s.completion_ids) :].sum()
            obs_tokens += len(s.observation_ids)
    loss = (policy / policy_tokens if advantages_matter else 0.0) + obs_weight * obs / max(1, obs_tokens)
    return loss


@pytest.mark.parametrize("obs_weight", [0.0, 0.5])
def test_observation_tokens_carry_the_loss_and_action_tokens_the_advantage(
    small_model: Path, obs_weight: float
) -> None:
    """One update with the observation loss: its gradient equals the plain loop's, where the next observation's
    tokens get obs_weight x cross-entropy and no advantage, and the action tokens the advantage only."""
    from firsthand.models import load
    from firsthand.stages.rl import _Sample, update

    model, tokenizer = load(small_model, for_training=True)
    rng = random.Random(1)

    def sample(advantage: float) -> _Sample:
        ids = lambda n: [rng.randrange(5, 200) for _ in range(n)]  # noqa: E731
        return _Sample(ids(6), ids(3), "", False, advantage, observation_ids=ids(5))

    samples = [sample(1.0), sample(-0.5), sample(0.0)]
    config = RLConfig(obs_loss=obs_weight, kl_coef=0.0, minibatch_size=8, micro_batch_size=2, grad_clip=1e9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step changes nothing: the gradient stays to read
    reference = load(small_model)[0]
    model.eval()
    update(model, reference, optimizer, samples, config, tokenizer.pad_token_id, random.Random(0))
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _plain_losses(model, samples, True, obs_weight).backward()
    for a, b in zip(got, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rl_with_the_observation_loss_logs_it_on_rollouts_and_held_out_steps(small_model: Path, tmp_path: Path) -> None:
    manifest = rl(small_model, "household", tmp_path / "rl", _small(iterations=1, obs_loss=0.1))
    final = manifest["final"]
    assert final["obs_loss"] > 0 and final["obs_loss_validation"] > 0
    assert final["trained_samples"] == final["samples"]  # every sample carries its observation's loss
