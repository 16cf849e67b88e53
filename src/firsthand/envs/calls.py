"""Function calls as text: parse an action into a call with `ast` (never `eval`), print calls canonically.

An action is one Python-style call with literal arguments, as BFCL writes them::

    cd(folder='document')
    grep(file_name='report.txt', pattern='budget')
    sort('final_report.pdf')                      # positional arguments are accepted too

A one-element list (``[cd(folder='document')]``, BFCL's own output format) is accepted as that call;
several calls in one action are not (one call per step keeps every call a branchable state).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firsthand.contract import InvalidInputError

EXAMPLE = "cd(folder='documents')"


@dataclass(frozen=True)
class Call:
    """A parsed call: the function's name and its literal arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def _literal(node: ast.expr, name: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise InvalidInputError(
            f"argument {ast.unparse(node)!r} of {name}() is not a literal value; pass strings, numbers, booleans, "
            "None, lists or dicts"
        ) from None


def parse_call(text: str) -> Call:
    """The call written in `text`; raises InvalidInputError saying what is wrong and how to write it."""
    source = text.strip()
    if not source:
        raise InvalidInputError(f"the action is empty; write one function call such as {EXAMPLE}")
    try:
        node = ast.parse(source, mode="eval").body
    except SyntaxError as e:
        raise InvalidInputError(
            f"{source!r} is not a function call ({e.msg}); write one call such as {EXAMPLE}"
        ) from None
    except (ValueError, MemoryError, RecursionError):
        raise InvalidInputError(f"{source[:80]!r} cannot be parsed; write one call such as {EXAMPLE}") from None
    if isinstance(node, ast.List | ast.Tuple):
        if len(node.elts) != 1:
            raise InvalidInputError(f"{source!r} holds {len(node.elts)} calls; write exactly one call per action")
        node = node.elts[0]
    if not isinstance(node, ast.Call):
        raise InvalidInputError(f"{source!r} is not a function call; write one call such as {EXAMPLE}")
    if not isinstance(node.func, ast.Name):
        raise InvalidInputError(f"call the function by its bare name (e.g. {EXAMPLE}), not {ast.unparse(node.func)!r}")
    name = node.func.id
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise InvalidInputError(f"{name}(): *arguments are not supported; write each argument out")
        args.append(_literal(arg, name))
    kwargs = []
    for kw in node.keywords:
        if kw.arg is None:
            raise InvalidInputError(f"{name}(): **arguments are not supported; write each keyword out")
        kwargs.append((kw.arg, _literal(kw.value, name)))
    return Call(name, tuple(args), tuple(kwargs))


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """The canonical text of a call: keyword arguments in the given order, values as Python literals."""
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in arguments.items())})"
