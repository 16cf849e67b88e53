"""Run a stage's work in shards, over worker processes, resuming from shards already on disk.

A stage splits its work items into fixed shards (shard i = items[i*size:(i+1)*size]); a worker
turns one shard into records plus a small stats dict. The parent writes each finished shard
atomically (stats sidecar first, records file last), so an interrupted run loses at most the
shards in flight, and a resumed run skips every shard whose records file exists. Records depend
only on the items and the configuration, never on timing or worker count, so a resumed run
produces byte-identical output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

from firsthand import executors
from firsthand.artifacts import check_config, claimed, write_json_atomic, write_jsonl_atomic
from firsthand.contract import InvalidInputError

log = logging.getLogger(__name__)

ShardFn = Callable[[Sequence[Any], dict[str, Any]], tuple[list[dict[str, Any]], dict[str, int]]]
"""(items of one shard, stage config) -> (records, integer counters)."""


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.jsonl"


def run_sharded(
    fn: ShardFn,
    items: Sequence[Any],
    *,
    out: Path,
    prefix: str,
    config: dict[str, Any],
    shard_size: int,
    workers: int = 1,
    memory: int = 0,
    on_shard: Callable[[int], None] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Process `items` in shards with `fn`; return (shard file names, summed counters).

    `on_shard(n_items)` is called after each shard is written (the CLI advances its progress bar). `memory`:
    bytes a worker needs beyond Python (a JVM), reserved per task on Ray. Two launches on the same `out`
    do not both work: the second is refused while the first holds its claim.
    """
    if shard_size < 1:
        raise InvalidInputError(f"shard size must be at least 1, got {shard_size!r}")
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers!r}")
    out.mkdir(parents=True, exist_ok=True)
    with claimed(out):
        check_config(out, config)
        for stale in out.glob(f".{prefix}-*.tmp"):  # half-written shards of a killed run
            stale.unlink()
        shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
        names = [shard_name(prefix, i) for i in range(len(shards))]
        done = {i for i, name in enumerate(names) if (out / name).exists() and _stats_path(out, name).exists()}
        pending = [i for i in range(len(names)) if i not in done]
        if len(pending) < len(shards):
            log.info("resuming: %d of %d shards already done in %s", len(shards) - len(pending), len(shards), out)
            if on_shard:
                on_shard(sum(len(shards[i]) for i in done))

        def save(i: int, records: list[dict[str, Any]], stats: dict[str, int]) -> None:
            write_json_atomic(_stats_path(out, names[i]), stats)
            write_jsonl_atomic(out / names[i], records)
            if on_shard:
                on_shard(len(shards[i]))

        if not pending or (executors.current().kind == "local" and (workers == 1 or len(pending) == 1)):
            for i in pending:
                save(i, *fn(shards[i], config))
        else:
            _run_pool(fn, shards, pending, config, workers, memory, save)

        totals: dict[str, int] = {}
        for name in names:
            for key, value in json.loads(_stats_path(out, name).read_text(encoding="utf-8")).items():
                totals[key] = totals.get(key, 0) + value
        return names, totals


def _run_pool(
    fn: ShardFn,
    shards: list[Sequence[Any]],
    pending: list[int],
    config: dict[str, Any],
    workers: int,
    memory: int,
    save: Callable[[int, list[dict[str, Any]], dict[str, int]], None],
) -> None:
    """Run the `pending` shards over `workers` processes or Ray tasks, saving each as it finishes (at most 2
    per worker in flight, so an interruption loses little)."""
    with executors.pool(workers, memory=memory) as submit:
        futures = {}
        queue = list(pending)
        try:
            while queue or futures:
                while queue and len(futures) < 2 * workers:
                    i = queue.pop(0)
                    futures[submit(fn, shards[i], config)] = i
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    save(futures.pop(future), *future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _stats_path(out: Path, name: str) -> Path:
    return out / (name.removesuffix(".jsonl") + ".stats.json")
