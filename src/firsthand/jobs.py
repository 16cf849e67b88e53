"""Independent jobs (trainings, evaluations) side by side in worker processes, under one progress bar.

A small model on a CPU does not use two cores well inside one process: its matrix products are small and
much of a step is element-wise work and Python. Two trainings with one thread each did 1.32x the steps per
second of one training with two threads on the 2-core machine (docs/benchmarks.md). Each job runs in a
spawned process with `cores // workers` threads; its progress reaches the parent through a queue, and the
parent draws a single bar for all jobs (one live display at a time is all a terminal shows cleanly).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from firsthand import executors
from firsthand.contract import InvalidInputError
from firsthand.progress import Progress, no_progress


@dataclass
class Job:
    """One call `fn(*args, **kwargs, progress=...)`; `total` is how many units its progress will count, and
    `cost` its expected run time in any unit (the longest jobs start first, so that no long job is left to
    run alone at the end while the other workers idle)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    total: int = 0
    cost: float = 0.0


def default_workers() -> int:
    """Side-by-side jobs when none are asked for: one on a GPU (it is shared), else up to 4 on a CPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return 1
    except ImportError:
        pass
    return max(1, min(4, os.cpu_count() or 1))


def run_jobs(jobs: list[Job], description: str, *, workers: int = 1, progress: Progress = no_progress) -> list[Any]:
    """Run `jobs` over `workers` processes (in this process when 1) or, with the Ray executor, as Ray tasks
    of `cores // workers` cores each; return their results in order.

    Everything a job writes must be its own (its own output folder), so jobs can run in any order and an
    interrupted run resumes job by job from what each left on disk.
    """
    if workers < 1:
        raise InvalidInputError(f"workers must be at least 1, got {workers!r}")
    results: list[Any] = [None] * len(jobs)
    with progress(description, sum(job.total for job in jobs)) as advance:
        if executors.current().kind == "local" and (workers == 1 or len(jobs) <= 1):
            for i, job in enumerate(jobs):
                results[i] = job.fn(*job.args, **job.kwargs, progress=_counting(advance))
            return results
        threads = max(1, (os.cpu_count() or 1) // workers)
        with executors.progress_queue() as counts, executors.pool(workers, cpus=threads) as submit:
            longest_first = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
            futures = {submit(_run, jobs[i], threads, counts): i for i in longest_first}
            try:
                while futures:
                    done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                    advance(executors.drain(counts))
                    for future in done:
                        results[futures.pop(future)] = future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            advance(executors.drain(counts))
    return results


def _counting(advance: Callable[[int], None]) -> Progress:
    """A `Progress` whose bars all feed one parent bar."""

    @contextmanager
    def bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield advance

    return bar


def _run(job: Job, threads: int, counts: Any) -> Any:
    """In the worker: `threads` threads for torch, progress sent to the parent in batches."""
    import torch

    torch.set_num_threads(threads)
    return job.fn(*job.args, **job.kwargs, progress=_counting(counts.put))
