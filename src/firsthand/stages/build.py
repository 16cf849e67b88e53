"""The build stage: training data for imitation (IL), implicit world modeling (IWM) and self-reflection (SR).

`build(method, branch_dir, out)` turns a branch directory into prompt/completion records:

- ``il``:  policy prompt at s_i -> ``Action: a_i`` (one per expert state);
- ``iwm``: world-model prompt (s_i, a) -> ``[observation] s' [/observation]``, for every executed
  alternative and for the expert transition;
- ``sr``:  policy prompt at s_i -> ``Thought: <reflection>`` + ``Action: a_i``, the reflection
  grounded in up to `sr_alternatives` alternatives that were really executed from s_i.

Output directory (stage "build"): ``data.jsonl`` (prompt/completion records with metadata),
``data.parquet`` (the same as a Hugging Face `datasets` table, readable by TRL), the chat-format file the
paper's authors release (``expert_sft.jsonl``, ``iwm_sft.jsonl`` or ``reflection_sft.jsonl``: user /
assistant turns), ``samples.txt`` (a few records to read), and ``manifest.json`` with filter counters.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firsthand.artifacts import finished, load_branches, read_manifest, relative, write_jsonl_atomic, write_manifest
from firsthand.contract import METHODS, Branch, InvalidInputError, Trajectory, UnknownNameError
from firsthand.prompts import (
    PromptConfig,
    action_completion,
    policy_prompt,
    reflection_completion,
    reflection_problems,
    template_reflection,
    world_model_completion,
    world_model_prompt,
)

log = logging.getLogger(__name__)

CHAT_FILES = {"il": "expert_sft.jsonl", "iwm": "iwm_sft.jsonl", "sr": "reflection_sft.jsonl"}


@dataclass
class BuildConfig:
    """Settings of a dataset build (written to the output directory)."""

    prompt: PromptConfig = field(default_factory=PromptConfig)
    sr_alternatives: int = 3
    """Alternatives contrasted in each reflection (the paper: 2-4 work best)."""
    seed: int = 0
    """Seed for choosing which alternatives a reflection uses."""


def _states(trajectories: list[Trajectory]) -> dict[tuple[str, int], tuple[Trajectory, list[tuple[str, str]]]]:
    """(trajectory id, step index) -> (trajectory, history before that step)."""
    states = {}
    for t in trajectories:
        history: list[tuple[str, str]] = []
        for i, step in enumerate(t.steps):
            states[(t.id, i)] = (t, list(history))
            history.append((step.observation, step.action))
    return states


def il_records(trajectories: list[Trajectory], config: BuildConfig) -> list[dict[str, Any]]:
    records = []
    for (tid, i), (t, history) in _states(trajectories).items():
        step = t.steps[i]
        prompt = policy_prompt(t.goal, history, step.observation, step.valid_actions, config.prompt)
        records.append(
            {
                "prompt": prompt,
                "completion": action_completion(step.action),
                "kind": "expert",
                "trajectory_id": tid,
                "step_index": i,
            }
        )
    return records


def iwm_records(trajectories: list[Trajectory], branches: list[Branch], config: BuildConfig) -> list[dict[str, Any]]:
    states = _states(trajectories)
    records = []
    for b in branches:
        t, history = states[(b.trajectory_id, b.step_index)]
        prompt = world_model_prompt(t.goal, history, b.observation, b.action, config.prompt)
        records.append(
            {
                "prompt": prompt,
                "completion": world_model_completion(b.next_observation),
                "kind": "expert_transition" if b.expert else "alternative",
                "trajectory_id": b.trajectory_id,
                "step_index": b.step_index,
            }
        )
    return records


def sr_records(
    trajectories: list[Trajectory], branches: list[Branch], config: BuildConfig, counters: dict[str, int]
) -> list[dict[str, Any]]:
    states = _states(trajectories)
    by_state: dict[tuple[str, int], list[Branch]] = defaultdict(list)
    for b in branches:
        by_state[(b.trajectory_id, b.step_index)].append(b)
    records = []
    for key, group in by_state.items():
        t, history = states[key]
        step = t.steps[key[1]]
        expert = [b for b in group if b.expert]
        alternatives = [b for b in group if not b.expert]
        if not expert or not alternatives:
            counters["sr_skipped_no_alternatives"] += 1  # the hard rule: no reflection without executed alternatives
            continue
        rng = random.Random(f"{config.seed}:{key[0]}:{key[1]}")
        chosen = rng.sample(alternatives, min(config.sr_alternatives, len(alternatives)))
        reflection = template_reflection(
            t.goal, step.action, expert[0].next_observation, [(b.action, b.next_observation) for b in chosen]
        )
        problems = reflection_problems(reflection, step.action)
        for p in problems:
            counters[f"sr_filtered_{p}"] += 1
        if problems:
            continue
        prompt = policy_prompt(t.goal, history, step.observation, step.valid_actions, config.prompt)
        records.append(
            {
                "prompt": prompt,
                "completion": reflection_completion(reflection, step.action),
                "kind": "reflection",
                "trajectory_id": key[0],
                "step_index": key[1],
            }
        )
    return records


def build(method: str, branches_dir: Path, out: Path, config: BuildConfig | None = None) -> dict[str, Any]:
    """Build the `method` dataset from a branch directory into `out`; return the manifest."""
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    config = config or BuildConfig()
    if config.sr_alternatives < 1:
        raise InvalidInputError(f"sr_alternatives must be at least 1, got {config.sr_alternatives!r}")
    out = Path(out)
    source = read_manifest(Path(branches_dir), "branch")
    stage_config = {
        "method": method,
        "branches": relative(branches_dir, out),
        "branches_hash": source["content_hash"],
        "env": source["config"]["env"],
        **asdict(config),
    }
    done = finished(out, "build", stage_config)
    if done is not None:
        return done
    trajectories, branches = load_branches(Path(branches_dir))
    counters: dict[str, int] = defaultdict(int)
    if method == "il":
        records = il_records(trajectories, config)
    elif method == "iwm":
        records = iwm_records(trajectories, branches, config)
    else:
        records = sr_records(trajectories, branches, config, counters)
    if not records:
        raise InvalidInputError(f"no {method} records could be built from {str(branches_dir)!r}")
    write_records(out, method, records)
    files = ["data.jsonl", "data.parquet", CHAT_FILES[method]]
    stats = {
        "records": len(records),
        "states": len({(r["trajectory_id"], r["step_index"]) for r in records}),
        **dict(sorted(counters.items())),
    }
    return write_manifest(
        out,
        stage="build",
        count=len(records),
        config=stage_config,
        files=files,
        extra={"stats": stats},
        packages=("datasets", "pyarrow"),
    )


def write_records(out: Path, method: str, records: list[dict[str, Any]]) -> None:
    """data.jsonl, data.parquet (Hugging Face datasets), the chat-format file and samples.txt."""
    import datasets

    datasets.disable_progress_bars()  # library code draws no progress bars
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "data.jsonl", records)
    write_jsonl_atomic(
        out / CHAT_FILES[method],
        (
            {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
            for r in records
        ),
    )
    tmp = out / ".data.parquet.tmp"
    datasets.Dataset.from_list(records).to_parquet(str(tmp))
    tmp.replace(out / "data.parquet")
    picks = random.Random(0).sample(records, min(3, len(records)))
    (out / "samples.txt").write_text(
        "\n\n".join(f"=== PROMPT ===\n{r['prompt']}\n=== COMPLETION ===\n{r['completion']}" for r in picks) + "\n",
        encoding="utf-8",
    )
