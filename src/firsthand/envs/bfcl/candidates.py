"""Plausible calls at a state: the alternatives the branching engine samples in BFCL's open action space.

BFCL has no list of valid actions (any call with any arguments may be written), so `candidate_actions`
builds a bounded set of calls from two sources, both read from the current state only:

- the functions available at this turn, with argument values from their schemas (an "[Enum]: [...]" in a
  parameter's description, True/False for booleans);
- values the state offers for a parameter, looked up by the parameter's name: files and folders of the
  current directory, tweet, ticket, order, booking and card ids, user ids, watched stocks, the access token;
  otherwise literals of the user's requests so far (quoted strings, numbers, dates, three-letter codes).

A required parameter with no value at all drops the function (no invented placeholders). Each function
contributes at most `PER_FUNCTION` calls, so that uniform sampling spreads over functions rather than over
argument combinations of one function. Values the current request mentions come first.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from bfcl_eval.eval_checker.multi_turn_eval.func_source_code.gorilla_file_system import Directory, File

from firsthand.envs.calls import format_call

PER_FUNCTION = 3
"""At most this many calls per function (each parameter's values are zipped, not multiplied)."""

_ENUM = re.compile(r"\[Enum\]:\s*(\[[^\]]*\]|[^\[\n]+)")
_QUOTED = re.compile(r"(?<![\w'])'([^'\n]{1,80})'(?!\w)|\"([^\"\n]{1,80})\"")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_CODE = re.compile(r"\b[A-Z]{3}\b")
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")

# Parameters that name something new (a folder or file to create): existing names would only fail.
_NEW_NAME = {("mkdir", "dir_name"), ("touch", "file_name")}


def _files_and_folders(fs: Any) -> tuple[list[str], list[str]]:
    contents = fs._current_dir.contents  # the working directory is private state of GorillaFileSystem
    files = sorted(k for k, v in contents.items() if isinstance(v, File))
    folders = sorted(k for k, v in contents.items() if isinstance(v, Directory))
    return files, folders


def _file_system(fs: Any, param: str) -> list[Any] | None:
    files, folders = _files_and_folders(fs)
    table = {
        "file_name": files,
        "file_name1": files,
        "file_name2": files,
        "source": files + folders,
        "destination": folders,
        "folder": [*folders, ".."],
        "dir_name": folders,
    }
    return table.get(param)


def _twitter(api: Any, param: str) -> list[Any] | None:
    users = [api.username, *api.following_list]
    table = {
        "tweet_id": sorted(api.tweets, key=str),
        "username": users,
        "username_to_follow": users,
        "username_to_unfollow": list(api.following_list),
    }
    return table.get(param)


def _message(api: Any, param: str) -> list[Any] | None:
    table = {
        "user_id": sorted(api.user_map.values()),
        "receiver_id": sorted(api.user_map.values()),
        "user": sorted(api.user_map),
        "user_name": sorted(api.user_map),
    }
    return table.get(param)


def _ticket(api: Any, param: str) -> list[Any] | None:
    return [t["id"] for t in api.ticket_queue if isinstance(t, dict) and "id" in t] if param == "ticket_id" else None


def _trading(api: Any, param: str) -> list[Any] | None:
    symbols = list(dict.fromkeys([*api.watch_list, *sorted(api.stocks)]))
    table = {
        "order_id": sorted(k for k in api.orders if isinstance(k, int)),
        "symbol": symbols,
        "stock": symbols,
        "stocks": [list(api.watch_list[:3])] if api.watch_list else [],
    }
    return table.get(param)


def _travel(api: Any, param: str) -> list[Any] | None:
    table = {
        "access_token": [api.access_token] if api.access_token else [],
        "card_id": sorted(api.credit_card_list),
        "booking_id": sorted(api.booking_record),
    }
    return table.get(param)


STATE_VALUES: dict[str, Callable[[Any, str], list[Any] | None]] = {
    "GorillaFileSystem": _file_system,
    "TwitterAPI": _twitter,
    "MessageAPI": _message,
    "TicketAPI": _ticket,
    "TradingBot": _trading,
    "TravelAPI": _travel,
}
"""Per class: the values its state offers for a parameter name (None: the state has nothing to say)."""


class Literals(NamedTuple):
    """Literals of the user's requests, each kind in order of appearance (tuples: the result is cached)."""

    quoted: tuple[str, ...]
    dates: tuple[str, ...]  # 2024-11-15
    codes: tuple[str, ...]  # three capitals: airports (LAX), currencies (GBP)
    numbers: tuple[float, ...]


@functools.lru_cache(maxsize=4096)
def request_literals(requests: tuple[str, ...]) -> Literals:
    """The literals of `requests` (most relevant request first), without repeats."""
    quoted: list[str] = []
    dates: list[str] = []
    codes: list[str] = []
    numbers: list[float] = []
    for text in requests:
        quoted += [a or b for a, b in _QUOTED.findall(text)]
        dates += _DATE.findall(text)
        codes += _CODE.findall(text)
        numbers += [float(token.replace(",", "")) for token in _NUMBER.findall(_DATE.sub(" ", text))]
    return Literals(
        tuple(dict.fromkeys(quoted)),
        tuple(dict.fromkeys(dates)),
        tuple(dict.fromkeys(codes)),
        tuple(dict.fromkeys(numbers)),
    )


@functools.lru_cache(maxsize=4096)
def _enum(description: str) -> list[Any] | None:
    """The values of "[Enum]: ["a", "b"]" (JSON) or "[Enum]: a, b" (bare, to the end) in a description."""
    m = _ENUM.search(description)
    if not m:
        return None
    text = m.group(1).strip()
    if not text.startswith("["):
        return [v.strip() for v in text.rstrip(".").split(",") if v.strip()]
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return None
    return values if isinstance(values, list) else None


def _values(
    function: str,
    param: str,
    schema: dict[str, Any],
    state: list[Any] | None,
    literals: Literals,
) -> list[Any]:
    kind = schema.get("type")
    strings, numbers = literals.quoted, literals.numbers
    if (function, param) in _NEW_NAME:
        return [s for s in strings if s not in (state or []) and " " not in s]
    enum = _enum(schema.get("description", ""))
    if enum:
        return [enum, *([v] for v in enum)] if kind == "array" else enum
    if state is not None:
        return state
    if kind == "boolean":
        return [True, False]
    if kind == "integer":
        return [int(n) for n in numbers if n == int(n)]
    if kind in ("float", "number"):
        return list(numbers)
    if kind == "string":
        if "date" in param.lower():
            return list(literals.dates)
        if param.startswith("travel_") and param != "travel_class":  # travel_from, travel_to: airport codes
            return list(literals.codes)
        return list(strings)
    if kind == "array":
        items = schema.get("items", {}).get("type")
        if items in ("float", "number", "integer") and numbers:
            return [list(numbers)]
        if items == "string":
            return [[s] for s in strings]
    return []


def _mentioned_first(values: list[Any], request: str) -> list[Any]:
    """Values the current request mentions, then the others, each group in its given order; at most 8
    (long_context directories hold hundreds of files, and only the first few values are ever used)."""
    mentioned = [v for v in values if isinstance(v, str | int | float) and str(v) in request]
    return (mentioned + [v for v in values[:8] if v not in mentioned])[:8]


def candidate_calls(
    docs: Sequence[dict[str, Any]],
    owner: dict[str, str],
    instances: dict[str, Any],
    requests: Sequence[str],
) -> list[str]:
    """Plausible calls of the functions in `docs` (owned by `owner[name]`) given the state and the requests.

    `requests` are the user's requests so far, the current one last.
    """
    current = requests[-1] if requests else ""
    literals = request_literals((current, *reversed(requests[:-1])))
    calls: set[str] = set()
    for doc in docs:
        name = doc["name"]
        properties: dict[str, Any] = doc["parameters"].get("properties", {})
        required = [p for p in doc["parameters"].get("required", []) if p in properties]
        lookup = STATE_VALUES.get(owner[name])
        options: list[list[Any]] = []
        for param in required:
            state = lookup(instances[owner[name]], param) if lookup else None
            options.append(_mentioned_first(_values(name, param, properties[param], state, literals), current))
        if any(not values for values in options):
            continue  # a required argument the state cannot fill: no plausible call
        width = min(PER_FUNCTION, max((len(v) for v in options), default=1))
        for j in range(width):
            # parameter k takes value j + k: two parameters fed from one list (diff, mv) get different values
            pairs = enumerate(zip(required, options, strict=True))
            arguments = {p: values[(j + k) % len(values)] for k, (p, values) in pairs}
            calls.add(format_call(name, arguments))
        for param, schema in properties.items():  # optional flags: the call with the flag set
            if param not in required and schema.get("type") == "boolean" and not options:
                calls.add(format_call(name, {param: True}))
    return sorted(calls)
