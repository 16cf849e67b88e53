"""The collect stage: run an environment's expert, or import demonstrations, and verify each by replay.

Output directory (stage "collect")::

    trajectories-00000.jsonl ...   one Trajectory record per line (docs/records.md)
    rejected.jsonl                 imported lines that were dropped, with line number and reason
    config.json, manifest.json

Demonstrations to import are JSONL, one per line: ``{"task": "train-12", "actions": ["go to ..."]}``.
Full Trajectory records (with "steps") are accepted too; their recorded observations must then match
what the environment returns on replay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from firsthand.artifacts import file_hash, finished, read_jsonl, relative, write_jsonl_atomic, write_manifest
from firsthand.contract import Env, FirsthandError, InvalidInputError, Trajectory
from firsthand.registry import opened
from firsthand.replay import replay
from firsthand.sharding import run_sharded

log = logging.getLogger(__name__)


# -- the shard workers (top-level so that spawned worker processes can import them) ---------------
def _collect_shard(tasks: Sequence[str], config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    with opened(config["env"], config["split"], **config["env_kwargs"]) as env:
        return _collect_tasks(env, tasks)


def _collect_tasks(env: Env, tasks: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    records: list[dict[str, Any]] = []
    stats = {"episodes": 0, "won": 0, "failed": 0, "steps": 0}
    for task in tasks:
        stats["episodes"] += 1
        try:
            env.reset(task)
            actions = env.expert_actions()
            trajectory = replay(env, task, actions)  # running the expert *is* its verification by replay
        except FirsthandError as e:
            log.warning("expert failed on %s: %s", task, e)
            stats["failed"] += 1
            continue
        stats["won"] += 1
        stats["steps"] += len(trajectory.steps)
        records.append(trajectory.to_dict())
    return records, stats


def _import_shard(
    lines: Sequence[tuple[int, str]], config: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    with opened(config["env"], config["split"], **config["env_kwargs"]) as env:
        return _import_lines(env, lines)


def _import_lines(env: Env, lines: Sequence[tuple[int, str]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    records: list[dict[str, Any]] = []
    stats = {"episodes": 0, "won": 0, "failed": 0, "steps": 0}
    for lineno, text in lines:
        stats["episodes"] += 1
        try:
            trajectory = _import_line(env, lineno, text)
        except (FirsthandError, ValueError, KeyError, TypeError) as e:
            stats["failed"] += 1
            records.append({"rejected": True, "line": lineno, "reason": str(e)})
            continue
        stats["won"] += 1
        stats["steps"] += len(trajectory.steps)
        records.append(trajectory.to_dict())
    return records, stats


def _import_line(env: Env, lineno: int, text: str) -> Trajectory:
    try:
        record = json.loads(text.rstrip("\r\n"))  # the newline would move an error at the end to "line 2 column 1"
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("task"), str):
        raise InvalidInputError('expected an object with a string "task" and a list "actions" (or "steps")')
    observations = None
    if "steps" in record:
        steps = record["steps"]
        actions = [s["action"] for s in steps]
        observations = [s["observation"] for s in steps]
        if steps and "next_observation" in steps[-1]:
            observations.append(steps[-1]["next_observation"])
    else:
        actions = record.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise InvalidInputError('"actions" must be a list of strings')
    return replay(
        env,
        record["task"],
        actions,
        observations=observations,
        source="imported",
        trajectory_id=str(record.get("id", f"line-{lineno}")),
    )


def _check_arguments(episodes: int, source: Path | None) -> None:
    """`collect`'s own arguments, checked before anything is read or written."""
    if episodes < 0:
        raise InvalidInputError(f"--episodes must be at least 0 (0 with --from reads every line), got {episodes!r}")
    if source is not None:
        if Path(source).is_dir():
            raise InvalidInputError(
                f"--from {str(source)!r} is a directory; give the JSONL file of demonstrations (one per line)"
            )
        if not Path(source).is_file():
            raise InvalidInputError(f"demonstration file {str(source)!r} does not exist")
        with open(source, encoding="utf-8", errors="replace") as f:
            if not any(line.strip() for line in f):
                raise InvalidInputError(
                    f"demonstration file {str(source)!r} holds no demonstrations; write one JSON object per line, "
                    f'such as {{"task": "train-12", "actions": ["go to shelf 1"]}} (docs/records.md)'
                )
    if source is None and episodes == 0:
        raise InvalidInputError("--episodes must be at least 1 when running the expert")


def collect(
    env: str,
    split: str,
    episodes: int,
    out: Path,
    *,
    source: Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    workers: int = 1,
    shard_size: int = 50,
    skip: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Collect verified expert trajectories into `out`; return the manifest.

    With `source`, import the demonstrations in that JSONL file instead of running the expert
    (`episodes` then caps how many lines are read; 0 reads all). `skip`: run the expert on the split's tasks
    after its first `skip` (the validation tasks, after those of the demonstrations).
    """
    out = Path(out)
    _check_arguments(episodes, source)
    if skip < 0:
        raise InvalidInputError(f"skip must be at least 0, got {skip!r}")
    config: dict[str, Any] = {
        "env": env,
        "split": split,
        "episodes": episodes,
        "env_kwargs": env_kwargs or {},
        "source": relative(source, out) if source else None,
        "source_hash": file_hash(Path(source)) if source else None,
        "shard_size": shard_size,
        **({"skip": skip} if skip else {}),  # absent when 0: earlier collections keep their configuration
    }
    done = finished(out, "collect", config)
    if done is not None:
        log.info("%s is already complete; skipping collect", out)
        return done
    with opened(env, split, **(env_kwargs or {})) as listing:  # validates the names before any work
        task_list = listing.tasks(skip + episodes)[skip:] if source is None and episodes > 0 else []
        if task_list:
            listing.prepare(task_list)
        memory = listing.worker_memory
    if source is None:
        items: list[Any] = task_list
        fn = _collect_shard
    else:
        with open(source, encoding="utf-8") as f:
            items = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
        if episodes:
            items = items[:episodes]
        fn = _import_shard
    names, stats = run_sharded(
        fn,
        items,
        out=out,
        prefix="trajectories",
        config=config,
        shard_size=shard_size,
        workers=workers,
        memory=memory,
        on_shard=on_progress,
    )
    if source is not None:
        _split_rejected(out, names)
    return write_manifest(out, stage="collect", count=stats["won"], config=config, files=names, extra={"stats": stats})


def _split_rejected(out: Path, names: list[str]) -> None:
    """Move the rejection records of imported shards into rejected.jsonl (shards keep trajectories).

    rejected.jsonl is written before any shard is rewritten, so an interruption loses nothing.
    """
    path = out / "rejected.jsonl"
    rejected = {r["line"]: r for r in read_jsonl(path)} if path.exists() else {}
    shards = {name: list(read_jsonl(out / name)) for name in names}
    rejected.update({r["line"]: r for records in shards.values() for r in records if r.get("rejected")})
    write_jsonl_atomic(path, (rejected[n] for n in sorted(rejected)))
    for name, records in shards.items():
        if any(r.get("rejected") for r in records):
            write_jsonl_atomic(out / name, (r for r in records if not r.get("rejected")))
    if rejected:
        log.info("%d demonstration lines rejected; reasons in %s", len(rejected), path)
