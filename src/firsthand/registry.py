"""The environment registry: `make("household", split="train")`.

Adapters register a factory under a name; factories import their backend lazily so that listing
environments (or `firsthand --help`) never imports an optional package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firsthand.contract import SPLITS, Env, UnknownNameError

_REGISTRY: dict[str, Callable[..., Env]] = {}


def register(name: str, factory: Callable[..., Env]) -> None:
    """Register `factory(split=..., **kwargs)` under `name` (replacing any earlier one)."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Registered environment names, sorted."""
    return sorted(_REGISTRY)


def make(name: str, split: str = "train", **kwargs: Any) -> Env:
    """Create environment `name` on task split `split` ("train", "id_test" or "ood_test")."""
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown environment {name!r}; registered environments: {', '.join(names())}")
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return _REGISTRY[name](split=split, **kwargs)


def _household(split: str, **kwargs: Any) -> Env:
    from firsthand.envs.household import HouseholdEnv

    return HouseholdEnv(split, **kwargs)


register("household", _household)
