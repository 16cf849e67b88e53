"""The build stage: training data for imitation (IL), implicit world modeling (IWM) and self-reflection (SR).

`build(method, branch_dir, out)` turns a branch directory into prompt/completion records:

- ``il``:  policy prompt at s_i -> ``Action: a_i`` (one per expert state);
- ``iwm``: world-model prompt (s_i, a) -> ``[observation] s' [/observation]``, for every executed
  alternative and for the expert transition;
- ``sr``:  policy prompt at s_i -> ``Thought: <reflection>`` + ``Action: a_i``, the reflection
  grounded in up to `sr_alternatives` alternatives that were really executed from s_i, written from a
  template or by a language model (`WriterConfig.reflector`);
- ``star``: the STaR baseline: policy prompt at s_i -> ``Thought: <rationale>`` + ``Action: a_i``, the
  rationale written by a model that saw no alternative and no outcome, kept only when the action it
  concluded with is a_i.

Model-written texts are filtered (`prompts.reflection_problems`); dropped ones go to ``dropped.jsonl``
with their reasons, and the counters to the manifest. Generation appends to ``written.partial.jsonl``
as it goes, so an interrupted build resumes without writing anything twice.

Output directory (stage "build"): ``data.jsonl`` (prompt/completion records with metadata),
``data.parquet`` (the same as a Hugging Face `datasets` table, readable by TRL), the chat-format file the
paper's authors release (``expert_sft.jsonl``, ``iwm_sft.jsonl``, ``reflection_sft.jsonl``; STaR:
``rationale_sft.jsonl``: user / assistant turns), ``samples.txt`` (a few records to read), and
``manifest.json`` with filter counters.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firsthand.artifacts import (
    check_config,
    finished,
    load_branches,
    read_manifest,
    relative,
    write_jsonl_atomic,
    write_manifest,
)
from firsthand.contract import METHODS, Branch, InvalidInputError, Trajectory, UnknownNameError
from firsthand.inference.backends import Sampling, open_backend
from firsthand.progress import Progress, no_progress
from firsthand.prompts import (
    PromptConfig,
    action_completion,
    policy_prompt,
    rationale_prompt,
    reflection_completion,
    reflection_problems,
    reflection_prompt,
    split_conclusion,
    template_reflection,
    unseen_names,
    world_model_completion,
    world_model_prompt,
)

log = logging.getLogger(__name__)

BUILD_METHODS: tuple[str, ...] = (*METHODS, "star")
"""What `build` makes: the three methods' data and the STaR baseline's rationales."""
CHAT_FILES = {
    "il": "expert_sft.jsonl",
    "iwm": "iwm_sft.jsonl",
    "sr": "reflection_sft.jsonl",
    "star": "rationale_sft.jsonl",
}
PARTIAL = "written.partial.jsonl"
DROPPED = "dropped.jsonl"


class AllDropped(InvalidInputError):
    """Every text the model wrote was dropped by the filters: nothing to train on (the texts are kept)."""


@dataclass
class WriterConfig:
    """Who writes SR's reflections and STaR's rationales, and how (see `generation`)."""

    reflector: str = "template"
    """template (SR only), smollm2-135m, a local model folder, or the model a server serves (with --base-url);
    `run` also takes policy: the model it trains."""
    backend: str = "auto"
    """auto (vllm on a GPU where it is installed, else hf), hf, vllm or openai."""
    base_url: str | None = None
    """An OpenAI-compatible server for the reflector (e.g. http://localhost:8000/v1)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the server's API key (the key is never written anywhere)."""
    reflection_tokens: int = 192
    """Most tokens a reflection or rationale may take."""
    reflection_temperature: float = 0.7
    """Sampling temperature of reflections and rationales (0: greedy)."""
    concurrency: int = 8
    """Requests in flight to a server."""
    chunk: int = 64
    """Texts written between two saves of `written.partial.jsonl` (what an interruption can lose)."""

    def uses_model(self, method: str) -> bool:
        return method == "star" or (method == "sr" and self.reflector != "template")

    def validate(self, method: str) -> None:
        if method == "star" and self.reflector == "template":
            raise InvalidInputError(
                "STaR's rationales are written by a model: pass --reflector MODEL (smollm2-135m, a local model "
                "folder, or a served model with --base-url)"
            )
        if self.reflector == "policy":
            raise InvalidInputError(
                "--reflector policy names the model a `firsthand run` trains; for `firsthand build`, name the "
                "model itself (smollm2-135m, a local folder, or a served model with --base-url)"
            )
        if self.reflection_tokens < 8 or self.chunk < 1 or self.reflection_temperature < 0:
            raise InvalidInputError(
                f"reflection_tokens must be at least 8 (got {self.reflection_tokens!r}), chunk at least 1 (got "
                f"{self.chunk!r}), reflection_temperature at least 0 (got {self.reflection_temperature!r})"
            )


@dataclass
class BuildConfig:
    """Settings of a dataset build (written to the output directory)."""

    prompt: PromptConfig = field(default_factory=PromptConfig)
    sr_alternatives: int = 3
    """Alternatives contrasted in each reflection (the paper: 2-4 work best)."""
    seed: int = 0
    """Seed for choosing which alternatives a reflection uses (and for a model's sampling)."""
    writer: WriterConfig = field(default_factory=WriterConfig)


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


def _reflection_states(
    trajectories: list[Trajectory], branches: list[Branch], config: BuildConfig, counters: dict[str, int]
) -> list[tuple[tuple[str, int], Trajectory, list[tuple[str, str]], Branch, list[Branch]]]:
    """Every expert state SR writes a reflection for: (key, trajectory, history, expert transition, the chosen
    alternatives). States without executed alternatives are skipped: no reflection without them."""
    states = _states(trajectories)
    by_state: dict[tuple[str, int], list[Branch]] = defaultdict(list)
    for b in branches:
        by_state[(b.trajectory_id, b.step_index)].append(b)
    chosen = []
    for key, group in by_state.items():
        t, history = states[key]
        expert = [b for b in group if b.expert]
        alternatives = [b for b in group if not b.expert]
        if not expert or not alternatives:
            counters["sr_skipped_no_alternatives"] += 1  # the hard rule: no reflection without executed alternatives
            continue
        rng = random.Random(f"{config.seed}:{key[0]}:{key[1]}")
        chosen.append(
            (key, t, history, expert[0], rng.sample(alternatives, min(config.sr_alternatives, len(alternatives))))
        )
    return chosen


def _record(prompt: str, completion: str, kind: str, key: tuple[str, int]) -> dict[str, Any]:
    return {"prompt": prompt, "completion": completion, "kind": kind, "trajectory_id": key[0], "step_index": key[1]}


def sr_records(
    trajectories: list[Trajectory],
    branches: list[Branch],
    config: BuildConfig,
    counters: dict[str, int],
    dropped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """SR's records with template reflections (any the filters drop go to `dropped`, with their reasons)."""
    records = []
    for key, t, history, _, chosen in _reflection_states(trajectories, branches, config, counters):
        step = t.steps[key[1]]
        tried = [(b.action, b.next_observation) for b in chosen]
        reflection = template_reflection(t.goal, step.action, tried)
        problems = reflection_problems(reflection, step.action, quoted=[o for _, o in tried])
        for p in problems:  # none on any built-in environment (tests/envs/test_every_env.py); kept as a guard
            counters[f"sr_filtered_{p}"] += 1
        if problems:
            dropped.append(
                {
                    "trajectory_id": key[0],
                    "step_index": key[1],
                    "action": step.action,
                    "text": reflection,
                    "problems": problems,
                }
            )
            continue
        prompt = policy_prompt(t.goal, history, step.observation, step.valid_actions, config.prompt)
        visible = [prompt, step.action, *(f"{a} {o}" for a, o in tried)]
        counters["sr_unseen_names"] += bool(unseen_names(reflection, visible))
        records.append(_record(prompt, reflection_completion(reflection, step.action), "reflection", key))
    return records


Request = tuple[tuple[str, int], str, str, str]
"""What a model is asked to write: (state key, the prompt it reads, the policy prompt of the record, the
action the text must conclude with)."""


def written_sr_requests(
    trajectories: list[Trajectory], branches: list[Branch], config: BuildConfig, counters: dict[str, int]
) -> list[Request]:
    """SR: one reflection per state, from the state, its action and the chosen alternatives with the outcomes
    observed after each, in an order shuffled per state (the action is not always first or last)."""
    requests = []
    for key, t, history, expert, chosen in _reflection_states(trajectories, branches, config, counters):
        step = t.steps[key[1]]
        tried = [(b.action, b.next_observation) for b in [expert, *chosen]]
        random.Random(f"order:{config.seed}:{key[0]}:{key[1]}").shuffle(tried)
        asked = reflection_prompt(t.goal, history, step.observation, step.action, tried, config.prompt)
        policy = policy_prompt(t.goal, history, step.observation, step.valid_actions, config.prompt)
        requests.append((key, asked, policy, step.action))
    return requests


def star_requests(trajectories: list[Trajectory], config: BuildConfig) -> list[Request]:
    """STaR: a rationale at every expert state from the policy prompt alone (no alternatives, no outcomes)."""
    requests = []
    for (tid, i), (t, history) in _states(trajectories).items():
        step = t.steps[i]
        policy = policy_prompt(t.goal, history, step.observation, step.valid_actions, config.prompt)
        requests.append(((tid, i), rationale_prompt(policy), policy, step.action))
    return requests


def _key(request: Request) -> str:
    return f"{request[0][0]}:{request[0][1]}"


def _read_partial(path: Path) -> tuple[dict[str, str], bool]:
    """The texts an interrupted build wrote, by key, and whether the file ends with a whole line; a last line
    cut off by a kill is skipped (written again)."""
    texts: dict[str, str] = {}
    content = path.read_text(encoding="utf-8") if path.exists() else ""
    if content:
        for line in content.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            texts[record["key"]] = record["text"]
    return texts, content.endswith("\n") or not content


def write_texts(
    requests: list[Request],
    open_writer: Callable[[], Any],
    config: BuildConfig,
    out: Path,
    progress: Progress = no_progress,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The text a model wrote for each request, by "trajectory_id:step" key, and generation figures.

    Texts are appended to `out`/written.partial.jsonl chunk by chunk; those already there (an interrupted
    build) are read back, not written again. The model is opened only when something is left to write."""
    partial = out / PARTIAL
    texts, whole = _read_partial(partial)
    todo = [r for r in requests if _key(r) not in texts]
    writer = config.writer
    sampling = Sampling(
        max_tokens=writer.reflection_tokens, temperature=writer.reflection_temperature, seed=config.seed
    )
    figures: dict[str, Any] = {"resumed": len(texts)}
    if todo:
        backend = open_writer()
        figures["writer"] = backend.describe()
        started = time.perf_counter()
        with progress(f"write {len(todo)} texts", len(todo)) as advance, open(partial, "a", encoding="utf-8") as f:
            if not whole:
                f.write("\n")  # after a line cut off by a kill
            for begin in range(0, len(todo), writer.chunk):
                chunk = todo[begin : begin + writer.chunk]
                replies = backend.generate([r[1] for r in chunk], sampling, on_progress=advance)
                for r, samples in zip(chunk, replies, strict=True):
                    texts[_key(r)] = samples[0]
                    f.write(json.dumps({"key": _key(r), "text": samples[0]}, ensure_ascii=False) + "\n")
                f.flush()
        seconds = time.perf_counter() - started
        figures.update(
            written=len(todo),
            write_seconds=round(seconds, 1),
            texts_per_second=round(len(todo) / seconds, 3) if seconds else None,
            chars_per_second=round(sum(len(texts[_key(r)]) for r in todo) / seconds, 1) if seconds else None,
        )
    return texts, figures


def written_records(
    method: str, requests: list[Request], texts: dict[str, str], counters: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept records, dropped texts with their reasons) after the filters of `prompts.reflection_problems`."""
    kind = "reflection" if method == "sr" else "rationale"
    kept, dropped = [], []
    for request in requests:
        key, _, policy, action = request
        text = texts[_key(request)]
        thought, conclusion = split_conclusion(text)
        problems = reflection_problems(thought, action, conclusion)
        for p in problems:
            counters[f"{method}_filtered_{p}"] += 1
        if problems:
            dropped.append(
                {"trajectory_id": key[0], "step_index": key[1], "action": action, "text": text, "problems": problems}
            )
        else:
            kept.append(_record(policy, reflection_completion(thought, action), kind, key))
    counters[f"{method}_written"] = len(requests)
    counters[f"{method}_kept"] = len(kept)
    return kept, dropped


def build(
    method: str,
    branches_dir: Path,
    out: Path,
    config: BuildConfig | None = None,
    *,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Build the `method` dataset from a branch directory into `out`; return the manifest."""
    if method not in BUILD_METHODS:
        raise UnknownNameError(f"unknown method {method!r}; valid methods: {', '.join(BUILD_METHODS)}")
    config = config or BuildConfig()
    if config.sr_alternatives < 1:
        raise InvalidInputError(f"sr_alternatives must be at least 1, got {config.sr_alternatives!r}")
    written = config.writer.uses_model(method)
    if written:
        config.writer.validate(method)
    out = Path(out)
    source = read_manifest(Path(branches_dir), "branch")
    settings = asdict(config)
    if not written:
        del settings["writer"]  # nothing was written by a model: the writer's settings are not the data's
    stage_config = {
        "method": method,
        "branches": relative(branches_dir, out),
        "branches_hash": source["content_hash"],
        "env": source["config"]["env"],
        **settings,
    }
    done = finished(out, "build", stage_config)
    if done is not None:
        return done
    trajectories, branches = load_branches(Path(branches_dir))
    counters: dict[str, int] = defaultdict(int)
    figures: dict[str, Any] = {}
    dropped: list[dict[str, Any]] = []
    if method == "il":
        records = il_records(trajectories, config)
    elif method == "iwm":
        records = iwm_records(trajectories, branches, config)
    elif not written:
        records = sr_records(trajectories, branches, config, counters, dropped)
    else:
        out.mkdir(parents=True, exist_ok=True)
        check_config(out, stage_config)  # an interrupted build resumes its texts only with the same settings
        requests = (
            written_sr_requests(trajectories, branches, config, counters)
            if method == "sr"
            else star_requests(trajectories, config)
        )
        writer = config.writer

        def open_writer() -> Any:
            return open_backend(
                writer.reflector,
                backend=writer.backend,
                base_url=writer.base_url,
                api_key_env=writer.api_key_env,
                concurrency=writer.concurrency,
            )

        texts, figures = write_texts(requests, open_writer, config, out, progress)
        records, dropped = written_records(method, requests, texts, counters)
    if not records and dropped:  # the texts stay in written.partial.jsonl: nothing is written again
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out / DROPPED, dropped)
        reasons = ", ".join(f"{k.split('_filtered_')[1]} {v}" for k, v in sorted(counters.items()) if "_filtered_" in k)
        writer = "texts the model wrote" if written else "template reflections"
        fix = "write them with a stronger model (--reflector)" if written else "see docs/adapters.md on observations"
        raise AllDropped(
            f"no {method} records could be built from {str(branches_dir)!r}: the filters dropped all {len(dropped)} "
            f"{writer} ({reasons}); read them with `firsthand samples {out} --dropped`, and {fix}"
        )
    if not records:
        skipped = counters.get(f"{method}_skipped_no_alternatives", 0)
        why = f": {skipped} expert states had no executed alternative (branch with --k 1 or more)" if skipped else ""
        raise InvalidInputError(f"no {method} records could be built from {str(branches_dir)!r}{why}")
    write_records(out, method, records)
    files = ["data.jsonl", "data.parquet", CHAT_FILES[method]]
    if dropped and not written:
        write_jsonl_atomic(out / DROPPED, dropped)
        files.append(DROPPED)
    if written:
        write_jsonl_atomic(out / DROPPED, dropped)
        files.append(DROPPED)
        (out / PARTIAL).unlink(missing_ok=True)  # every text is in data.jsonl or dropped.jsonl now
    stats = {
        "records": len(records),
        "states": len({(r["trajectory_id"], r["step_index"]) for r in records}),
        **dict(sorted(counters.items())),
        **figures,
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
