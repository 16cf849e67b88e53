"""Device and process helpers shared by training and inference: bf16 where it is fast, and the
processes of a data-parallel launch (torchrun / accelerate launch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def fast_bf16() -> bool:
    """True when bf16 is fast here: a CUDA GPU, or a CPU with native bf16 (AVX512_BF16 / AMX).

    On an AVX2-only CPU bf16 autocast is emulated and far slower than fp32 (docs/benchmarks.md).
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "BF16" in capability or "AMX" in capability


def world_size() -> int:
    """How many processes train together (set by torchrun / accelerate launch; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def distributed() -> Any | None:
    """accelerate's process state (process group initialised) when several processes train, else None."""
    if world_size() < 2:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (creating a model folder, say); the others after it."""
    state = distributed()
    if state is None:
        yield
        return
    with state.main_process_first():
        yield
