"""Episodes stepped in batches: every active episode's prompt goes to the agent in one call (one batched
`generate` for a model), each reply is parsed ("Action: ...") and the action is executed as given.
Evaluation and RL rollouts both play their episodes here.

An action that is not among the environment's valid actions counts toward the invalid-action rate (it still
runs, and household answers "Nothing happens."). Adapters that say so in ``info["invalid"]`` decide it
themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firsthand.contract import Env
from firsthand.inference.agents import Agent, AgentInput
from firsthand.prompts import PromptConfig, parse_action, policy_prompt
from firsthand.registry import make


@dataclass
class EpisodeResult:
    task: str
    won: bool
    steps: int
    invalid_actions: int
    truncated: bool
    actions: list[str] = field(default_factory=list)
    goal: str = ""
    observations: list[str] = field(default_factory=list)
    """What the agent saw before each action, then the last observation: what an episode viewer shows."""
    invalid: list[bool] = field(default_factory=list)
    """Per step: whether the environment did not accept the action."""
    replies: list[str] = field(default_factory=list)
    """Per step: the model's whole reply where it says more than the action (an SR model's thought), else ""."""


@dataclass
class LiveEpisode:
    """An episode being played: its place in the task list, its environment and what the agent has seen."""

    index: int
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
    on_step: Callable[[LiveEpisode, AgentInput, Any], None] | None = None,
) -> list[EpisodeResult]:
    """Run `agent` on `tasks` of `split`, `batch_size` episodes at a time; results in task order (a task
    listed twice is played twice). `on_step(episode, input, reply)` sees every step before its action runs,
    with the environment still at the state the agent saw (RL records its samples there); an agent with
    `generate` (a `ModelAgent`) is asked for its `Generation`s then, and the hook gets each one, token ids
    included."""
    prompt = prompt or PromptConfig()
    kwargs = dict(env_kwargs or {})
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    results: dict[int, EpisodeResult] = {}
    queue = list(enumerate(tasks))
    active: list[LiveEpisode] = []
    made: list[Env] = []  # every environment opened, closed at the end whatever happens (JVMs)
    idle: list[Env] = []  # environments are reused: some adapters start a JVM per instance
    try:
        if queue:
            made.append(make(env_name, split, **kwargs))
            idle.append(made[0])
            made[0].prepare(list(tasks))
        while queue or active:
            while queue and len(active) < batch_size:  # keep the batch full as episodes finish
                if not idle:
                    made.append(make(env_name, split, **kwargs))
                    idle.append(made[-1])
                env, (index, task) = idle.pop(), queue.pop(0)
                observation, info = env.reset(task)
                active.append(LiveEpisode(index, env, task, str(info.get("goal", "")), observation))
            inputs = [_agent_input(e, prompt, agent.wants_candidates) for e in active]
            still: list[LiveEpisode] = []
            tokens = on_step is not None and hasattr(agent, "generate")
            replies = agent.generate(inputs) if tokens else agent.act(inputs)
            for e, x, reply in zip(active, inputs, replies, strict=True):
                if on_step:
                    on_step(e, x, reply)
                if _advance(e, x, reply.text if tokens else reply):
                    results[e.index] = e.result  # type: ignore[assignment]
                    idle.append(e.env)
                    if on_episode:
                        on_episode(results[e.index])
                else:
                    still.append(e)
            active = still
    finally:
        for env in made:
            env.close()
    return [results[i] for i in range(len(tasks))]


def _agent_input(e: LiveEpisode, prompt: PromptConfig, wants_candidates: bool) -> AgentInput:
    valid = e.env.valid_actions()
    candidates = e.env.candidate_actions() if wants_candidates and not valid else []
    return AgentInput(policy_prompt(e.goal, e.history, e.observation, valid, prompt), valid, candidates)


def _says_more(reply: str, action: str) -> bool:
    """Whether a reply holds more than its action (and the "Action:" marker): a thought worth keeping."""
    return bool(reply.replace(action, "", 1).replace("Action:", "").strip())


def _advance(e: LiveEpisode, x: AgentInput, reply: str) -> bool:
    """Execute the action in `reply` for episode `e`; True when the episode ended."""
    action = parse_action(reply) or ""
    r = e.env.step(action)
    e.result = e.result or EpisodeResult(e.task, False, 0, 0, False, goal=e.goal)
    e.result.steps += 1
    if "invalid" in r.info:
        invalid = bool(r.info["invalid"])
    else:
        invalid = bool(x.valid_actions) and action not in x.valid_actions
    e.result.invalid_actions += invalid
    e.result.actions.append(action)
    e.result.observations.append(e.observation)
    e.result.invalid.append(invalid)
    e.result.replies.append(reply.strip() if _says_more(reply, action) else "")
    e.history.append((e.observation, action))
    e.observation = r.observation
    if r.terminated or r.truncated:
        e.result.won, e.result.truncated = r.won, r.truncated
        e.result.observations.append(r.observation)
        return True
    return False
