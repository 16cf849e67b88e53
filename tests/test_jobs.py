"""Jobs side by side: results in order, one progress bar fed by every worker, errors reach the caller."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from firsthand import InvalidInputError
from firsthand.jobs import Job, run_jobs
from firsthand.progress import Progress


def count_to(n: int, *, progress: Progress) -> tuple[int, int]:
    """A job: advances its bar n times, one unit each, and says which process it ran in."""
    with progress("count", n) as advance:
        for _ in range(n):
            advance(1)
    return n, os.getpid()


def fail(*, progress: Progress) -> None:
    raise InvalidInputError("job failed on purpose")


def recording() -> tuple[Progress, list[tuple[str, int]], list[int]]:
    bars: list[tuple[str, int]] = []
    units: list[int] = []

    @contextmanager
    def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
        bars.append((description, total))
        yield units.append

    return progress, bars, units


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_one_bar(workers: int) -> None:
    progress, bars, units = recording()
    jobs = [Job(count_to, (n,), total=n) for n in (3, 1, 4, 2)]
    results = run_jobs(jobs, "count 4", workers=workers, progress=progress)
    assert [n for n, _ in results] == [3, 1, 4, 2]
    assert bars == [("count 4", 10)] and sum(units) == 10  # the workers' bars all fed the one bar
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_a_failing_job_raises_in_the_caller() -> None:
    with pytest.raises(InvalidInputError, match="on purpose"):
        run_jobs([Job(count_to, (2,), total=2), Job(fail)], "x", workers=2)
    with pytest.raises(InvalidInputError, match="workers must be at least 1, got 0"):
        run_jobs([Job(fail)], "x", workers=0)
