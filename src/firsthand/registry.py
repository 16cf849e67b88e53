"""The environment registry: `make("household", split="train")`.

Adapters register a factory under a name; factories import their backend lazily so that listing
environments (or `firsthand --help`) never imports an optional package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from firsthand.contract import SPLITS, DependencyNotInstalled, Env, InvalidInputError, UnknownNameError

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
    env = _REGISTRY[name](split=split, **kwargs)
    if not isinstance(env, Env):
        raise InvalidInputError(
            f"the factory registered as {name!r} returned a {type(env).__name__}, not a firsthand.Env: "
            f"make the adapter subclass firsthand.Env (see docs/architecture.md)"
        )
    return env


@contextmanager
def opened(name: str, split: str = "train", **kwargs: Any) -> Iterator[Env]:
    """`make(...)` for the length of a `with` block; closes adapters that hold a process (a JVM)."""
    env = make(name, split, **kwargs)
    try:
        yield env
    finally:
        env.close()


def _household(split: str, **kwargs: Any) -> Env:
    from firsthand.envs.household import HouseholdEnv

    return HouseholdEnv(split, **kwargs)


register("household", _household)


def _lazy(module: str, cls: str, install: str, package: str) -> Callable[..., Env]:
    """A factory that imports `firsthand.envs.<module>` (and its backend) only when called."""

    def factory(split: str, **kwargs: Any) -> Env:
        import importlib

        try:
            backend = importlib.import_module(f"firsthand.envs.{module}")
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == package.replace("-", "_"):
                raise DependencyNotInstalled(
                    f"environment {module.replace('_', '-')!r} needs the package {package!r}; "
                    f"install it with: {install}"
                ) from e
            raise
        return getattr(backend, cls)(split, **kwargs)

    return factory


_EXTRA = "pip install 'firsthand[{}]'"
for _name, _module, _cls, _package, _install in (
    ("scienceworld", "scienceworld", "ScienceWorldEnv", "scienceworld", _EXTRA.format("scienceworld")),
    # bfcl-eval's declared dependencies pull several GB of CUDA wheels its multi-turn environment never imports
    ("bfcl", "bfcl", "BfclEnv", "bfcl_eval", "pip install --no-deps bfcl-eval mpmath"),
    ("textworld-cooking", "textworld_cooking", "TextWorldCookingEnv", "textworld", _EXTRA.format("textworld")),
    (
        "textworld-express",
        "textworld_express",
        "TextWorldExpressEnv",
        "textworld_express",
        _EXTRA.format("textworld-express"),
    ),
):
    register(_name, _lazy(_module, _cls, _install, _package))
