"""CLI options generated from the config dataclasses, in the manner of TRL's script parsers: each field
is one option with one default and one help text (the field's docstring), so no flag is copied by hand
and every field is reachable."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

_SCALARS = (bool, int, float, str)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass `cls` (its only documentation), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _scalar(hint: Any) -> type | None:
    """bool, int, float or str for a field typed so (or Optional of it); None for anything else."""
    if hint in _SCALARS:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and args[0] in _SCALARS else None


def _fields(cls: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any, str]]:
    """(path, type hint, default, help) of every CLI-settable field, nested config dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(type(value), path + (f.name,))
        elif _scalar(hint) is not None:
            yield path + (f.name,), hint, value, docs.get(f.name, "")


def _build(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()) -> Any:
    """An instance of `cls` from the option values keyed by field path."""
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        here = path + (f.name,)
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = _build(type(default), values, here)
        elif here in values:
            kwargs[f.name] = values[here]
    return cls(**kwargs)


def with_configs(**configs: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one option per field of each config dataclass; the command is called with
    the built configs under the given keyword names (``@with_configs(config=BranchConfig)``)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name not in configs]
        taken = {p.name for p in own}
        added: dict[str, tuple[str, tuple[str, ...]]] = {}
        params = []
        for key, cls in configs.items():
            for path, hint, default, doc in _fields(cls):
                name = path[-1]
                if name in taken:
                    raise TypeError(f"option {name!r} of {cls.__name__} clashes with another option")
                taken.add(name)
                added[name] = (key, path)
                flag = name.replace("_", "-")
                is_bool = _scalar(hint) is bool
                option = typer.Option(f"--{flag}/--no-{flag}" if is_bool else f"--{flag}", help=doc)
                annotation = Annotated[hint, option]  # type: ignore[valid-type]
                kind = inspect.Parameter.KEYWORD_ONLY
                params.append(inspect.Parameter(name, kind, default=default, annotation=annotation))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values: dict[str, dict[tuple[str, ...], Any]] = {key: {} for key in configs}
            for name, (key, path) in added.items():
                values[key][path] = kwargs.pop(name)
            built = {key: _build(cls, values[key]) for key, cls in configs.items()}
            return command(**kwargs, **built)

        hints = typing.get_type_hints(command, include_extras=True)
        positional = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional]
        wrapper.__signature__ = signature.replace(parameters=keyword + params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in keyword + params}
        del wrapper.__wrapped__  # typer reads the signature above, not the command's
        return wrapper

    return decorate


def _tuple_of(hint: Any) -> type | None:
    """int, float or str for a field typed ``tuple[T, ...]`` (a comma-separated option); None otherwise."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return args[0]
    return None


def override_fields(
    cls: type, prefixes: dict[str, str], exclude: set[str]
) -> Iterator[tuple[str, tuple[str, ...], Any, str]]:
    """(option name, field path, option type, help) of every field of `cls` an override option sets: its own
    scalar and tuple fields, and those of the config dataclasses it nests (one level), whose names get
    `prefixes[group]`; `exclude` holds paths as "field" or "group.field". Defaults are not needed: a field
    whose option is not given keeps the preset's value."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.name in exclude:
            continue
        if dataclasses.is_dataclass(hint):
            prefix = prefixes.get(f.name, "")
            for path, sub_hint, _, doc in _fields(hint, (f.name,)):
                if ".".join(path) not in exclude:
                    yield f"{prefix}{path[-1]}", path, _scalar(sub_hint), doc
        elif _scalar(hint) is not None:
            yield f.name, (f.name,), _scalar(hint), docs.get(f.name, "")
        elif _tuple_of(hint) is not None:
            doc = docs.get(f.name, "")
            yield f.name, (f.name,), hint, f"{doc} Comma-separated." if doc else "Comma-separated."


def with_overrides(
    cls: type, *, prefixes: dict[str, str], exclude: set[str]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one option per field of `cls` (`override_fields`), each None unless given; the
    command is called with ``overrides``: {field path: value} of the options given, tuples parsed from their
    comma-separated text (a value that does not parse is refused, quoting it)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "overrides"]
        taken = {p.name for p in own}
        added: dict[str, tuple[tuple[str, ...], Any]] = {}
        params = []
        for name, path, hint, doc in override_fields(cls, prefixes, exclude):
            if name in taken:
                raise TypeError(f"option {name!r} of {cls.__name__} clashes with another option")
            taken.add(name)
            added[name] = (path, hint)
            flag = name.replace("_", "-")
            kind = str if _tuple_of(hint) is not None else hint
            option = typer.Option(f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}", help=doc)
            annotation = Annotated[kind | None, option]  # type: ignore[valid-type]
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            from firsthand.contract import InvalidInputError

            overrides: dict[tuple[str, ...], Any] = {}
            for name, (path, hint) in added.items():
                value = kwargs.pop(name)
                if value is not None:
                    try:
                        overrides[path] = _parse_tuple(name, value, _tuple_of(hint)) if _tuple_of(hint) else value
                    except InvalidInputError as e:  # as the commands' own errors read: one line, exit 2
                        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
                        raise typer.Exit(2) from None
            return command(**kwargs, overrides=overrides)

        hints = typing.get_type_hints(command, include_extras=True)
        positional = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional]
        wrapper.__signature__ = signature.replace(parameters=keyword + params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in keyword + params}
        del wrapper.__wrapped__  # typer reads the signature above, not the command's
        return wrapper

    return decorate


_KINDS = {int: "integers", float: "numbers", str: "names", bool: "booleans"}


def _parse_tuple(name: str, text: str, kind: type) -> tuple[Any, ...]:
    from firsthand.contract import InvalidInputError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise InvalidInputError(
            f"--{name.replace('_', '-')} takes comma-separated {_KINDS[kind]} (e.g. "
            f"{'0,1,2' if kind is int else '0.05,0.2' if kind is float else 'a,b'}), got {text!r}"
        ) from None


def nested_overrides(overrides: dict[tuple[str, ...], Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`with_overrides`' values as `settings.get_preset` takes them: top-level fields, and per group."""
    top = {path[0]: v for path, v in overrides.items() if len(path) == 1}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in overrides.items():
        if len(path) == 2:
            nested.setdefault(path[0], {})[path[1]] = value
    return top, nested
