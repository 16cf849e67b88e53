"""Device and process helpers shared by training and inference: bf16 where it is fast, and the
processes of a data-parallel launch (torchrun / accelerate launch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU features that compute bf16 natively; without them torch emulates bf16, far slower than fp32."""
BF16_MIN_PARAMETERS = 30_000_000
"""On a CPU, bf16 autocast pays for its casts only on larger models: SmolLM2-135M with LoRA trained 1.41x
faster with it, the 0.5M tiny model 0.81x as fast (AVX512_BF16 without AMX, docs/benchmarks.md); no size
in between was measured."""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; empty where there is no such file."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fast_bf16(parameters: int | None = None) -> bool:
    """True when bf16 autocast speeds up a model of `parameters` here: a CUDA GPU that supports bf16, or a
    CPU with native bf16 (AVX512_BF16 or AMX) and a model of at least `BF16_MIN_PARAMETERS` (None: large).

    The CPU's flags are read, not torch's `get_cpu_capability()`: that names the kernels torch picked
    ("AVX512" on CPUs with AMX too), not what the CPU has.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    if not flags:  # not Linux: what torch reports
        capability = torch.backends.cpu.get_cpu_capability().upper()
        native = "BF16" in capability or "AMX" in capability
    else:
        native = any(flag in flags for flag in BF16_CPU_FLAGS)
    return native and (parameters is None or parameters >= BF16_MIN_PARAMETERS)


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
