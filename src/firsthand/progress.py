"""How stages report progress without drawing anything: the caller passes a factory of progress bars."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
"""progress(description, total) -> context manager yielding advance(n); only the CLI draws bars."""


def no_progress(description: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
    """The default `Progress`: counts nothing, draws nothing."""
    return nullcontext(lambda n: None)
