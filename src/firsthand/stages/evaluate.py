"""The evaluate stage: agents act for N episodes per split (`episodes.run_episodes`); success rate with
Wilson intervals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from firsthand.artifacts import MODEL_PROMPT, read_model_prompt, trained_method, write_json_atomic
from firsthand.contract import RATIONALES, FirsthandError, InvalidInputError, UnknownNameError, normalize
from firsthand.inference.agents import DECISIONS, Agent, AgentInput, ModelAgent, RandomAgent, ScoringAgent
from firsthand.inference.backends import BackendAgent, default_backend, open_backend
from firsthand.inference.episodes import EpisodeResult, LiveEpisode, run_episodes  # noqa: F401 (the stage's API)
from firsthand.models import check_model_folder
from firsthand.progress import Progress, no_progress
from firsthand.prompts import PromptConfig, parse_action, policy_prompt
from firsthand.registry import opened
from firsthand.replay import replay
from firsthand.stats import wilson_interval

log = logging.getLogger(__name__)


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


ACTION_TOKENS = 24
"""Generation budget per step of a model that answers with its action (`run`'s and `eval`'s default)."""
THOUGHT_TOKENS = 200
"""Generation budget per step of a model trained to think before it acts (SR, STaR)."""


@dataclass
class EvalConfig:
    """How `firsthand eval` plays a model on one split. The fields left None take what `run` uses on the
    environment (`settings.eval_settings`), so both commands give the same numbers for the same model."""

    env: str = "household"
    """Environment name, with arguments as NAME:key=value:... (`firsthand envs` lists them)."""
    split: str = "id_test"
    """Task split."""
    episodes: int = 100
    """Episodes (the split's first N tasks)."""
    max_steps: int | None = None
    """Step limit per episode (default: what `run` uses on the environment)."""
    batch_size: int | None = None
    """Episodes stepped together, one generate call per step (default: as `run`)."""
    max_new_tokens: int | None = None
    """Generation budget per step (default: as `run`, more for models that think first)."""
    history: int | None = None
    """Past steps in each prompt (default: as the model was trained; required for a model without its prompt
    file, such as a served one)."""
    seed: int = 0
    """Seed of the random agent and of sampled replies."""
    backend: str = "hf"
    """Generation backend: hf, vllm, auto (vllm on a GPU), openai."""
    base_url: str | None = None
    """Evaluate the model an OpenAI-compatible server serves under this URL (needs --history unless --model is
    a folder)."""
    response_prefix: str = ""
    """Make every reply begin with this text ('Thought:' makes an SR model reason first)."""
    expert_states: bool = False
    """Score the action at every state of the expert's episodes (teacher-forced) instead of playing episodes."""
    decision: str = "generate"
    """generate (write the action) or score (pick the likeliest valid action; hf backend)."""
    temperature: float = 0.0
    """0: greedy; above 0: sampled at this temperature (the paper: 0.4), by --seed."""


def make_agent(
    model: Path | str | None,
    *,
    name: str | None = None,
    max_new_tokens: int | None = None,
    response_prefix: str = "",
    seed: int = 0,
    backend: str = "hf",
    base_url: str | None = None,
    decision: str = "generate",
    temperature: float = 0.0,
) -> Agent:
    """The random agent (`model` None or "random"), or a model's greedy policy: a folder generating with
    Hugging Face in this process (`backend` hf), with vLLM, or a model an OpenAI-compatible server serves.
    `max_new_tokens` None: `THOUGHT_TOKENS` for a model trained to think, else `ACTION_TOKENS`. `decision`
    score: pick the valid action the model finds likeliest (`inference.ScoringAgent`, hf only). `temperature`
    above 0 samples (the paper evaluates at 0.4), seeded by `seed`."""
    if decision not in DECISIONS:
        raise UnknownNameError(f"unknown decision {decision!r}; valid: {', '.join(DECISIONS)}")
    if temperature < 0:
        raise InvalidInputError(f"--temperature must be at least 0 (0: greedy), got {temperature!r}")
    if model is None or str(model) == "random":
        return RandomAgent(seed)
    if max_new_tokens is None:
        local = base_url is None or Path(model).is_dir()
        max_new_tokens = THOUGHT_TOKENS if local and thinks(model) else ACTION_TOKENS
    chosen = "openai" if base_url is not None else default_backend() if backend == "auto" else backend
    if chosen != "hf":
        if response_prefix or decision != "generate" or temperature:
            raise InvalidInputError("--response-prefix, --decision score and --temperature are for the hf backend only")
        writer = open_backend(str(model), backend=chosen, base_url=base_url)
        return BackendAgent(writer, name=name or str(model), max_new_tokens=max_new_tokens)
    if temperature:
        import torch

        torch.manual_seed(seed)  # sampled replies are reproducible by seed
    agent = ModelAgent.from_path(
        Path(model),
        name=name or str(model),
        max_new_tokens=max_new_tokens,
        response_prefix=response_prefix,
        temperature=temperature,
    )
    return ScoringAgent(agent, thinks=thinks(model)) if decision == "score" else agent


def check_arguments(episodes: int, out: Path) -> None:
    """The checks of an evaluation's own arguments, made before a model is loaded."""
    if episodes < 1:
        raise InvalidInputError(f"--episodes must be at least 1, got {episodes!r}")
    if Path(out).is_dir():
        raise InvalidInputError(f"--out {str(out)!r} is a directory; give the path of a JSON file to write")


def evaluate(
    agent: Agent,
    env: str,
    split: str,
    episodes: int,
    out: Path,
    *,
    prompt: PromptConfig | None = None,
    max_steps: int | None = None,
    batch_size: int = 50,
    labels: dict[str, Any] | None = None,
    description: str | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run `agent` on the first `episodes` tasks of `split`; write the summary and every episode to the
    JSON file `out` and return the summary (`labels`, such as method and seed, lead it)."""
    out = Path(out)
    check_arguments(episodes, out)
    with opened(env, split) as listing:
        tasks = listing.tasks(episodes)
    with progress(description or f"eval {split}", len(tasks)) as advance:
        results = run_episodes(
            env,
            split,
            tasks,
            agent,
            prompt=prompt,
            batch_size=batch_size,
            max_steps=max_steps,
            on_episode=lambda r: advance(1),
        )
    summary = {**(labels or {}), "split": split, **summarize(results)}
    write_json_atomic(out, {"summary": summary, "episodes": episode_records(results)})
    return summary


def expert_step_accuracy(
    agent: Agent,
    env: str,
    split: str,
    episodes: int,
    out: Path,
    *,
    prompt: PromptConfig | None = None,
    batch_size: int = 50,
    labels: dict[str, Any] | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """The agent's action at every state of the expert's own episodes on the first `episodes` tasks of
    `split` (teacher-forced: the history is the expert's). It tells a policy that picks wrong actions at
    states a demonstration reaches from one that loses by drifting into states none reaches. Writes the
    summary and every state to the JSON file `out`; returns the summary."""
    out = Path(out)
    check_arguments(episodes, out)
    prompt = prompt or PromptConfig()
    states: list[dict[str, Any]] = []
    inputs: list[AgentInput] = []
    with opened(env, split) as e:
        tasks = e.tasks(episodes)
        e.prepare(tasks)
        for task in tasks:
            e.reset(task)
            try:
                trajectory = replay(e, task, e.expert_actions())
            except FirsthandError as error:
                log.warning("no expert trajectory for %s: %s", task, error)
                continue
            history: list[tuple[str, str]] = []
            for i, step in enumerate(trajectory.steps):
                text = policy_prompt(trajectory.goal, history, step.observation, step.valid_actions, prompt)
                inputs.append(AgentInput(text, step.valid_actions))
                states.append({"task": task, "step": i, "expert": step.action})
                history.append((step.observation, step.action))
    with progress(f"expert states {split}", len(inputs)) as advance:
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            for state, reply in zip(states[start : start + batch_size], agent.act(batch), strict=True):
                state["chosen"] = parse_action(reply) or ""
                state["correct"] = normalize(state["chosen"]) == normalize(state["expert"])
            advance(len(batch))
    right = sum(s["correct"] for s in states)
    low, high = wilson_interval(right, len(states))
    first = [s for s in states if s["step"] == 0]
    summary = {
        **(labels or {}),
        "split": split,
        "episodes": len({s["task"] for s in states}),
        "states": len(states),
        "step_accuracy": right / len(states) if states else 0.0,
        "ci_low": low,
        "ci_high": high,
        "first_step_accuracy": sum(s["correct"] for s in first) / len(first) if first else 0.0,
        "all_steps_right": _all_right(states),
    }
    write_json_atomic(out, {"summary": summary, "states": states})
    return summary


def _all_right(states: list[dict[str, Any]]) -> float:
    """Share of tasks whose every expert state got the expert's action: an upper bound of what following
    the demonstrations alone would win."""
    by_task: dict[str, bool] = {}
    for s in states:
        by_task[s["task"]] = by_task.get(s["task"], True) and s["correct"]
    return sum(by_task.values()) / len(by_task) if by_task else 0.0


def model_prompt(model: Path | str | None, history: int | None = None) -> PromptConfig:
    """The prompt settings to evaluate `model` with: those it was trained with (`history` replaces their
    window). A model folder that does not carry them needs `history`: prompts other than those of its
    training data make a model fail without a word (99.7% invalid actions on household)."""
    if model is None or str(model) == "random":
        return PromptConfig() if history is None else PromptConfig(history=history)
    check_model_folder(model)
    trained = read_model_prompt(Path(model))
    if trained is None:
        if history is None:
            raise InvalidInputError(
                f"model folder {str(model)!r} does not carry the prompt settings it was trained with "
                f"({MODEL_PROMPT}, written by `firsthand train`); for a model trained elsewhere, choose the prompt "
                f"with --history N (past steps shown in full)"
            )
        return PromptConfig(history=history)
    return trained if history is None else replace(trained, history=history)


def thinks(model: Path | str | None) -> bool:
    """Whether `model` was trained on SR data, so that it writes a thought before its action (read from the
    manifest of the `firsthand train` run it came from; False for any other folder)."""
    if model is None or str(model) == "random":
        return False
    return any(kind in trained_method(model).split("+") for kind in RATIONALES)
