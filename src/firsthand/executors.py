"""Where sharded stages and side-by-side jobs run: processes of this machine (default) or a Ray cluster.

Both give the same `submit(fn, *args) -> concurrent.futures.Future`, so the loops that wait on shards and
jobs do not know which one runs them (a Ray `ObjectRef.future()` is such a Future). Results come back to
the launching process, which writes every shard and manifest itself, so the output does not depend on the
executor: a run interrupted on a cluster resumes on one machine, and the other way round.

The choice is process-wide (`use("ray", address="auto")`, the CLI's `--executor`), not a run setting: it
changes where work runs, never what it produces, so it is not in preset.json and a resume may change it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from firsthand.contract import DependencyNotInstalled, InvalidInputError, UnknownNameError
from firsthand.registry import portable, restore

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RETRIES = 3
"""Times Ray runs a task again when its worker process or node dies (a JVM crash, a lost machine); an
exception raised by the task itself is a bug or bad input and is not retried."""

Submit = Callable[..., "Future[Any]"]


@dataclass(frozen=True)
class Executor:
    """`local`: spawned processes of this machine. `ray`: Ray tasks; `address` None starts a Ray instance on
    this machine, "auto" or HOST:PORT joins a running cluster."""

    kind: str = "local"
    address: str | None = None

    def validate(self) -> None:
        if self.kind not in EXECUTORS:
            raise UnknownNameError(f"unknown executor {self.kind!r}; valid executors: {', '.join(EXECUTORS)}")
        if self.address is not None and self.kind != "ray":
            raise InvalidInputError(f"--ray-address {self.address!r} needs --executor ray")


_current = Executor()


def use(kind: str = "local", address: str | None = None) -> Executor:
    """Run the sharded stages and jobs of this process on `kind` from now on; return the previous choice."""
    global _current
    chosen = Executor(kind, address)
    chosen.validate()
    if kind == "ray":
        _import_ray()
    previous, _current = _current, chosen
    return previous


def current() -> Executor:
    return _current


@contextmanager
def using(kind: str = "local", address: str | None = None) -> Iterator[None]:
    """`use` for the length of a `with` block."""
    previous = use(kind, address)
    try:
        yield
    finally:
        use(previous.kind, previous.address)


@contextmanager
def pool(workers: int, *, cpus: int = 1, memory: int = 0) -> Iterator[Submit]:
    """A `submit(fn, *args)` running calls on the current executor, each with `cpus` cores and `memory`
    bytes reserved (Ray schedules by them; local processes get `workers` of them). Calls not finished when
    the block ends are cancelled."""
    if _current.kind == "local":
        context = mp.get_context("spawn")  # not fork: the parent may hold threads (progress bars, torch)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=restore, initargs=(portable(),)) as p:
            yield p.submit
        return
    ray = _connect(_current.address)
    options: dict[str, Any] = {"num_cpus": cpus, "max_retries": RETRIES, "retry_exceptions": False}
    if memory:
        options["memory"] = memory
    task = ray.remote(_in_ray_worker).options(**options)
    moved = portable()
    started: list[tuple[Any, Future[Any]]] = []

    def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        ref = task.remote(moved, fn, *args)
        started.append((ref, ref.future()))
        return started[-1][1]

    try:
        yield submit
    finally:
        for ref, future in started:  # an interrupted run leaves nothing running on the cluster
            if not future.done():
                ray.cancel(ref, force=True)


def _in_ray_worker(moved: dict[str, Any], fn: Callable[..., Any], *args: Any) -> Any:
    restore(moved)  # environments registered by the launching script
    return fn(*args)


@contextmanager
def progress_queue() -> Iterator[Any]:
    """A queue that calls running on the current executor `put` progress counts into, read with `drain`: a
    manager's queue locally, a queue actor on Ray."""
    if _current.kind == "local":
        with mp.get_context("spawn").Manager() as manager:
            yield manager.Queue()
        return
    _connect(_current.address)
    from ray.util.queue import Queue

    queue = Queue()
    try:
        yield queue
    finally:
        queue.shutdown()


def drain(queue: Any) -> int:
    """The sum of the counts waiting in a `progress_queue` (only the launching process reads it)."""
    total = 0
    while not queue.empty():
        total += queue.get_nowait()
    return total


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DependencyNotInstalled(
            "--executor ray needs Ray: pip install 'firsthand[ray]' (on every machine of the cluster)"
        ) from None
    return ray


def _connect(address: str | None) -> Any:
    """Ray, initialised once per process: a local instance with this machine's cores, or the cluster."""
    ray = _import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs["num_cpus"] = os.cpu_count() or 1
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise InvalidInputError(
                f"cannot reach the Ray cluster at --ray-address {address!r} ({e}); start it with `ray start --head` "
                f"or give its address as HOST:PORT"
            ) from None
        log.info("ray: %s", ray.cluster_resources())
    return ray
