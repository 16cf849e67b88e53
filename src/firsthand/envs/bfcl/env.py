"""BFCL multi-turn (Berkeley Function Calling Leaderboard v4, package `bfcl_eval`) as a text environment.

An entry is a conversation: a user asks for something in each turn, and the agent answers with calls to
the functions of the entry's API classes (a file system, a trading bot, a travel agency, a car, ...),
which run against real Python objects holding the state. This adapter runs one call per step:

- **actions** are calls written as text, ``cd(folder='document')``, parsed with `ast` (see `calls.py`) and
  run only against the public methods of the entry's classes that are available at this turn. A syntax
  error, an unknown or not-yet-available function, arguments that do not fit the signature, or an exception
  inside the function is an invalid action: the observation says what was wrong, info["invalid"] is True,
  and the state is left as the function left it (BFCL's own executor behaves the same way).
- **end_turn()** is the action that says "this request is done" (BFCL ends a turn when the model answers
  without a call). It checks the turn like BFCL's multi-turn checker and presents the next request.
- **observations**: after reset, the first request and the signatures of the available functions; after a
  call, its return value exactly as BFCL's executor renders it (dicts as JSON), cut at `OBSERVATION_LIMIT`
  characters; after end_turn(), the next request (a miss_func turn that adds functions lists their
  signatures). The goal is a summary of the conversation, not its first request, because it is the one
  text every prompt keeps while the requests change from turn to turn.
- **success** is BFCL's: at the end of every turn with a non-empty ground truth, the package's
  `state_checker` compares the instances with those produced by the ground-truth calls of all turns so far,
  its `response_checker` requires every ground-truth result of the turn among the agent's results so far,
  and a turn without any executed call fails. `won` is True at the last end_turn() when every turn passed;
  the episode terminates then (won or not), and is truncated at `max_steps`.
- **expert**: the ground-truth calls, flattened, with end_turn() after each turn, in canonical form
  (keyword arguments in signature order, see `format_call`). It wins on every included entry, and BFCL's
  own `multi_turn_checker` accepts its calls on every included entry too.
- **valid_actions()** is empty (an open action space); `candidate_actions()` lists plausible calls
  built from the schemas and the state (see `candidates.py`) plus end_turn().
- **snapshots** are native: the instances and the turn bookkeeping, pickled (so a snapshot is immutable,
  picklable, and restoring it never aliases it).

Splits (task ids are BFCL's entry ids):

- train / id_test: `multi_turn_base` (200 entries), entry i goes to id_test when i % 4 == 3 (50 entries,
  spread over the four domains, which are blocks of 50 ids), else to train (150, the paper's 75%).
- ood_test: `multi_turn_miss_func`, `multi_turn_miss_param` and `multi_turn_long_context` (600 entries):
  functions withheld until a later turn, requests missing a parameter until a later turn, and states
  padded with many files, stocks and long texts.

The ground truth of 799 of the 800 entries wins when replayed; one (multi_turn_miss_func_49) calls a
function before the entry makes it available and is excluded (`EXCLUDED`), so ood_test holds 599 tasks.
Task order interleaves the domains (and, in ood_test, the categories), so that a prefix `tasks(n)`
samples all of them.
"""

from __future__ import annotations

import copy
import decimal
import functools
import importlib
import inspect
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mpmath
from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
from bfcl_eval.constants.eval_config import MULTI_TURN_FUNC_DOC_PATH, POSSIBLE_ANSWER_PATH, PROMPT_PATH
from bfcl_eval.constants.executable_backend_config import (
    CLASS_FILE_PATH_MAPPING,
    MULTI_TURN_FUNC_DOC_FILE_MAPPING,
    STATELESS_CLASSES,
)
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker

from firsthand.contract import Env, InvalidInputError, NoExpertError
from firsthand.envs.bfcl.candidates import candidate_calls
from firsthand.envs.calls import Call, format_call, parse_call

END_TURN = "end_turn()"
"""The action that ends the current turn (the agent has nothing more to call for this request)."""

OBSERVATION_LIMIT = 1500
"""Default cut of observations: every multi_turn_base result is shorter (the longest is about 600
characters), while long_context results run to 31,700 characters, which no prompt of this project holds."""

DEFAULT_MAX_STEPS = 60
"""The longest expert (ground-truth calls plus one end_turn() per turn) takes 37 steps."""

ID_CATEGORY = "multi_turn_base"
OOD_CATEGORIES: tuple[str, ...] = ("multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
ENTRIES_PER_CATEGORY = 200
DOMAIN_BLOCK = 50  # ids 0-49 file system, 50-99 car, 100-149 trading, 150-199 travel (each with companions)

EXCLUDED: frozenset[str] = frozenset({"multi_turn_miss_func_49"})
"""Entries whose ground truth does not win when replayed: miss_func_49 calls tail() a turn before the
entry makes tail() available (BFCL's executor does not enforce availability; this adapter does)."""

_LIMITS: dict[str, dict[str, float]] = {
    "logarithm": {"precision": 1000},
    "square_root": {"precision": 1000},
    "power": {"exponent": 10000},
}
"""Arguments that would stall the process (digits of precision, integer powers); the ground truth stays far below."""

_PYTHON_TYPES = {"string": "str", "integer": "int", "float": "float", "number": "float", "boolean": "bool"}
_PYTHON_TYPES |= {"array": "list", "dict": "dict", "object": "dict", "tuple": "tuple", "any": "Any"}


# ----------------------------------------------------------------------------------------------
# The data: entries, ground truth and function documents, read once from the package
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One BFCL multi-turn entry, as the adapter needs it."""

    id: str
    category: str
    requests: tuple[str, ...]  # the user's text of each turn
    ground_truth: tuple[tuple[str, ...], ...]  # the calls of each turn
    classes: tuple[str, ...]
    config: str = field(repr=False)  # the initial configuration as JSON text (immutable; parsed per load)
    added: tuple[tuple[int, tuple[str, ...]], ...] = ()  # miss_func: (turn, functions made available then)

    @property
    def long_context(self) -> bool:
        return "long_context" in self.category

    def added_at(self, turn: int) -> tuple[str, ...]:
        return next((names for t, names in self.added if t == turn), ())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _request_text(messages: Sequence[dict[str, Any]]) -> str:
    text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user").strip()
    return text or DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC  # BFCL's message for a turn that adds functions


@functools.cache
def entries() -> dict[str, Entry]:
    """Every multi-turn entry of the four categories, by id."""
    out: dict[str, Entry] = {}
    for category in (ID_CATEGORY, *OOD_CATEGORIES):
        prompts = _read_jsonl(PROMPT_PATH / f"BFCL_v4_{category}.json")
        answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(POSSIBLE_ANSWER_PATH / f"BFCL_v4_{category}.json")}
        for e in prompts:
            out[e["id"]] = Entry(
                id=e["id"],
                category=category,
                requests=tuple(_request_text(turn) for turn in e["question"]),
                ground_truth=tuple(tuple(calls) for calls in answers[e["id"]]),
                classes=tuple(e["involved_classes"]),
                config=json.dumps(e.get("initial_config", {})),
                added=tuple(sorted((int(t), tuple(names)) for t, names in e.get("missed_function", {}).items())),
            )
    return out


@functools.cache
def _class_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl(MULTI_TURN_FUNC_DOC_PATH / MULTI_TURN_FUNC_DOC_FILE_MAPPING[class_name]))


@functools.cache
def _owners(classes: tuple[str, ...]) -> dict[str, str]:
    """Function name -> the class that runs it (a later class wins a clash, as in BFCL's executor)."""
    return {doc["name"]: c for c in classes for doc in _class_docs(c)}


@functools.lru_cache(maxsize=4096)
def available_docs(entry: Entry, turn: int) -> tuple[dict[str, Any], ...]:
    """The function documents the agent may call at `turn` (miss_func withholds some until a later turn)."""
    withheld = {name for t, names in entry.added if t > turn for name in names}
    return tuple(doc for c in entry.classes for doc in _class_docs(c) if doc["name"] not in withheld)


@functools.cache
def _method_signature(owner: str, name: str) -> inspect.Signature:
    """The signature of `owner.name` without self and return annotation (inspect is slow: computed once)."""
    function = getattr(getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[owner]), owner), name)
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[1:], return_annotation=signature.empty)


@functools.cache
def signature_text(owner: str, function: str) -> str:
    """`name(param: type, optional: type = default)`: types from the function document, defaults from the code."""
    doc = next(d for d in _class_docs(owner) if d["name"] == function)
    defaults = {k: p.default for k, p in _method_signature(owner, function).parameters.items()}
    parts = []
    for name, schema in doc["parameters"].get("properties", {}).items():
        kind = schema.get("type", "any")
        text = f"{name}: {_PYTHON_TYPES.get(kind, kind)}"
        if defaults.get(name, inspect.Parameter.empty) is not inspect.Parameter.empty:
            text += f" = {defaults[name]!r}"
        parts.append(text)
    return f"{doc['name']}({', '.join(parts)})"


def _fresh_instances(entry: Entry) -> dict[str, Any]:
    """The entry's API objects in their initial state, built as BFCL's executor builds them."""
    config = json.loads(entry.config)
    instances: dict[str, Any] = {}
    for class_name in entry.classes:
        cls = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name]), class_name)
        instance = cls()
        if class_name not in STATELESS_CLASSES:
            instance._load_scenario(copy.deepcopy(config.get(class_name, {})), long_context=entry.long_context)
        instances[class_name] = instance
    return instances


@functools.lru_cache(maxsize=1024)  # every entry: 4.4 MB of pickles in all
def _initial_state(task: str) -> bytes:
    """The pickled initial instances (unpickling is several times faster than loading the scenario)."""
    return pickle.dumps(_fresh_instances(entries()[task]))


def render_result(result: Any) -> str:
    """A return value as text, exactly as BFCL's executor renders it (the response check compares these)."""
    if isinstance(result, str):
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
    return str(result)


@dataclass(frozen=True)
class _Outcome:
    text: str  # the full rendered result (or the reason the action is invalid)
    executed: bool  # the function ran (possibly raising): it counts as a call of the turn
    invalid: bool


def execute(instances: dict[str, Any], owners: dict[str, str], call: Call) -> _Outcome:
    """Run `call` on the instance owning it; arguments must bind to the method's signature."""
    signature = _method_signature(owners[call.name], call.name)
    unknown = [k for k, _ in call.kwargs if k not in signature.parameters]
    try:
        if unknown:  # named first: a wrong name usually also leaves a required argument missing
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
        bound = signature.bind(*call.args, **dict(call.kwargs))
    except TypeError as e:
        return _Outcome(f"Invalid action: {call.name}(): {e}; the signature is {call.name}{signature}", False, True)
    # Some API methods have mutable default arguments that later calls change in place
    # (TwitterAPI.post_tweet(mentions=[]) stores the default list in the tweet; mention() extends it), so
    # one episode's actions leaked into every later one in the process: each call gets its own copy.
    for name, parameter in signature.parameters.items():
        if name not in bound.arguments and isinstance(parameter.default, list | dict | set):
            bound.arguments[name] = copy.deepcopy(parameter.default)
    for param, limit in _LIMITS.get(call.name, {}).items():
        value = bound.arguments.get(param)
        if isinstance(value, int | float) and abs(value) > limit:
            return _Outcome(f"Invalid action: {call.name}(): {param} above {limit} is not supported here", False, True)
    # MathAPI sets mpmath's and decimal's precision process-wide: keep that inside the call
    mpmath_dps, decimal_context = mpmath.mp.dps, decimal.getcontext().copy()
    try:
        result = getattr(instances[owners[call.name]], call.name)(*bound.args, **bound.kwargs)
        text = render_result(result)  # inside the try, as in BFCL: rendering can fail (ints over 4300 digits)
    except Exception as e:  # noqa: BLE001 - the function's own failure is an outcome, as in BFCL
        return _Outcome(f"Error during execution: {e}", True, True)
    finally:
        mpmath.mp.dps = mpmath_dps
        decimal.setcontext(decimal_context)
    return _Outcome(text, True, False)


@dataclass(frozen=True)
class _Reference:
    """The ground truth's state after each turn (pickled: compact, and never mutated) and each turn's results."""

    states: tuple[bytes, ...]
    results: tuple[tuple[str, ...], ...]

    def instances(self, turn: int) -> dict[str, Any]:
        return pickle.loads(self.states[turn])


@functools.lru_cache(maxsize=256)
def _reference(task: str) -> _Reference:
    entry = entries()[task]
    instances = pickle.loads(_initial_state(task))
    owners = _owners(entry.classes)
    states, results = [], []
    for calls in entry.ground_truth:
        turn_results = []
        for text in calls:
            outcome = execute(instances, owners, parse_call(text))
            turn_results.append(outcome.text)
        states.append(pickle.dumps(instances))
        results.append(tuple(turn_results))
    return _Reference(tuple(states), tuple(results))


def canonical(entry: Entry, text: str) -> str:
    """A ground-truth call in canonical form: positional arguments named, keyword order of the signature."""
    call = parse_call(text)
    bound = _method_signature(_owners(entry.classes)[call.name], call.name).bind(*call.args, **dict(call.kwargs))
    return format_call(call.name, dict(bound.arguments))


# ----------------------------------------------------------------------------------------------
# The environment
# ----------------------------------------------------------------------------------------------
@dataclass
class _Progress:
    """The episode's bookkeeping beside the API objects (pickled with them into snapshots)."""

    turn: int = 0
    calls_this_turn: int = 0
    results: list[str] = field(default_factory=list)  # every executed call's result, for the response check
    failure: str = ""  # why the first failed turn failed; "" while every turn has passed
    done: bool = False
    won: bool = False


def _split_of(task: str) -> str | None:
    category, _, index = task.rpartition("_")
    if category == ID_CATEGORY and index.isdigit():
        return "id_test" if int(index) % 4 == 3 else "train"
    if category in OOD_CATEGORIES and index.isdigit():
        return "ood_test"
    return None


def _interleaved(index: int) -> tuple[int, int]:
    return index % DOMAIN_BLOCK, index // DOMAIN_BLOCK


@functools.cache
def split_tasks(split: str) -> tuple[str, ...]:
    """The task ids of `split`, domains (and ood categories) interleaved."""
    order = sorted(range(ENTRIES_PER_CATEGORY), key=_interleaved)
    if split == "ood_test":
        ids = [f"{c}_{i}" for i in order for c in OOD_CATEGORIES]
    else:
        ids = [f"{ID_CATEGORY}_{i}" for i in order if _split_of(f"{ID_CATEGORY}_{i}") == split]
    known = entries()
    return tuple(t for t in ids if t in known and t not in EXCLUDED)


class BfclEnv(Env):
    """BFCL v4 multi-turn conversations, one function call per step; see the module docstring.

    Example:
        >>> from firsthand import make
        >>> env = make("bfcl", split="train")
        >>> obs, info = env.reset("multi_turn_base_0")
        >>> obs.splitlines()[0][:60]
        "User: Move 'final_report.pdf' within document directory to '"
        >>> env.step("cd(folder='document')").observation
        '{"current_working_directory": "document"}'
    """

    name: ClassVar[str] = "bfcl"
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = DEFAULT_MAX_STEPS

    def __init__(
        self, split: str = "train", *, max_steps: int | None = None, observation_limit: int = OBSERVATION_LIMIT
    ) -> None:
        super().__init__(split, max_steps=max_steps)
        if observation_limit < 1:
            raise InvalidInputError(f"observation_limit must be at least 1, got {observation_limit!r}")
        self.observation_limit = observation_limit
        self._entry: Entry | None = None
        self._instances: dict[str, Any] = {}
        self._progress = _Progress()

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        ids = split_tasks(self.split)
        return list(ids if limit is None else ids[:limit])

    def _entry_of(self, task: str) -> Entry:
        entry = entries().get(task)
        if entry is None or _split_of(task) is None:
            raise InvalidInputError(
                f"unknown bfcl task {task!r}; task ids are BFCL entry ids such as 'multi_turn_base_0' or "
                "'multi_turn_miss_param_3', see env.tasks()"
            )
        if task in EXCLUDED:
            raise InvalidInputError(f"bfcl task {task!r} is excluded: its ground truth does not reproduce")
        return entry

    # -- the episode ----------------------------------------------------------------------------
    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`. The APIs seed their own generators from the entry, so `seed` changes nothing."""
        entry = self._entry_of(task)
        self._entry = entry
        self._instances = pickle.loads(_initial_state(task))
        self._progress = _Progress()
        owners = _owners(entry.classes)
        functions = "\n".join(signature_text(owners[d["name"]], d["name"]) for d in available_docs(entry, 0))
        observation = f"User: {entry.requests[0]}\n\nAvailable functions:\n{functions}"
        return observation, self._info()

    def _require_entry(self) -> Entry:
        if self._entry is None:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._entry

    def goal(self) -> str:
        entry = self._require_entry()
        turns = len(entry.requests)
        requests = "request" if turns == 1 else f"{turns} requests, one per turn,"
        return (
            f"Carry out the user's {requests} by calling the functions of {' and '.join(entry.classes)}, "
            f"one call per action; call {END_TURN} when the current request is done."
        )

    def _info(self, invalid: bool | None = None) -> dict[str, Any]:
        entry = self._require_entry()
        p = self._progress
        info: dict[str, Any] = {
            "task": entry.id,
            "goal": self.goal(),
            "category": entry.category,
            "turn": p.turn,
            "turns": len(entry.requests),
            "request": entry.requests[min(p.turn, len(entry.requests) - 1)],
            "failure": p.failure,
        }
        if invalid is not None:
            info["invalid"] = invalid
        return info

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        entry = self._require_entry()
        observation, invalid = self._act(entry, action)
        p = self._progress
        return observation, 1.0 if p.won else 0.0, p.done, p.won, self._info(invalid)

    def _act(self, entry: Entry, action: str) -> tuple[str, bool]:
        try:
            call = parse_call(action)
        except InvalidInputError as e:
            return f"Invalid action: {e}", True
        if call.name == END_TURN[:-2]:
            if call.args or call.kwargs:
                return f"Invalid action: {END_TURN} takes no arguments", True
            return self._end_turn(entry), False
        available = {d["name"] for d in available_docs(entry, self._progress.turn)}
        if call.name not in available:
            return (
                f"Invalid action: there is no function {call.name!r}; available: {', '.join(sorted(available))}, "
                f"and {END_TURN}",
                True,
            )
        outcome = execute(self._instances, _owners(entry.classes), call)
        if outcome.executed:
            self._progress.results.append(outcome.text)
            self._progress.calls_this_turn += 1
        return self._cut(outcome.text), outcome.invalid

    def _cut(self, text: str) -> str:
        if len(text) <= self.observation_limit:
            return text
        return f"{text[: self.observation_limit]} ... [cut: {len(text)} characters in all]"

    def _end_turn(self, entry: Entry) -> str:
        p = self._progress
        if not p.failure and entry.ground_truth[p.turn]:
            p.failure = self._check_turn(p.turn)
        p.turn += 1
        p.calls_this_turn = 0
        if p.turn == len(entry.requests):
            p.done = True
            p.won = not p.failure
            return "The user has no more requests."
        observation = f"User: {entry.requests[p.turn]}"
        if added := entry.added_at(p.turn):
            docs = [d for d in available_docs(entry, p.turn) if d["name"] in added]
            observation += "\n\nNew functions:\n" + "\n".join(
                signature_text(_owners(entry.classes)[d["name"]], d["name"]) for d in docs
            )
        return observation

    def _check_turn(self, turn: int) -> str:
        """BFCL's check of a turn with a non-empty ground truth: "" when it passes, else why not."""
        if not self._progress.calls_this_turn:
            return f"turn {turn}: no function was called"
        reference = _reference(self._require_entry().id)
        result = state_checker(self._instances, reference.instances(turn))
        if result["valid"]:
            result = response_checker(self._progress.results, list(reference.results[turn]), turn)
        return "" if result["valid"] else f"turn {turn}: {result['error_message']}"

    # -- actions, snapshots, expert -------------------------------------------------------------
    def valid_actions(self) -> list[str]:
        """Empty: any call may be written (an open action space); see `candidate_actions`."""
        self._require_entry()
        return []

    def candidate_actions(self) -> list[str]:
        """Plausible calls at the current state (schemas plus state values) and end_turn(); sorted."""
        entry = self._require_entry()
        p = self._progress
        if p.done:
            return []
        turn = min(p.turn, len(entry.requests) - 1)
        calls = candidate_calls(
            available_docs(entry, turn), _owners(entry.classes), self._instances, entry.requests[: turn + 1]
        )
        return sorted({*calls, END_TURN})

    def _snapshot(self) -> tuple[str, bytes]:
        entry = self._require_entry()
        return entry.id, pickle.dumps((self._instances, self._progress))

    def _restore(self, snapshot: Any) -> None:
        task, state = snapshot
        self._entry = self._entry_of(task)
        self._instances, self._progress = pickle.loads(state)

    def expert_actions(self) -> list[str]:
        """The ground-truth calls of every turn, each turn closed by end_turn(); wins every included entry."""
        entry = self._require_entry()
        if self.elapsed_steps:
            raise NoExpertError("the bfcl expert plays from the start of a conversation: call reset(task) first")
        return [a for calls in entry.ground_truth for a in (*(canonical(entry, c) for c in calls), END_TURN)]
