"""Lockbox: a small text game written as a firsthand environment adapter (the guide in docs/adapters.md).

A key lies in one of several drawers; the agent must find it, unlock a box and take the coin inside.
Out of domain, rooms have more drawers. Use it from the command line as ``--env examples/lockbox.py:make_env``.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, ClassVar

from firsthand import Env
from firsthand.contract import NoExpertError

JUNK = ("a spoon", "an old letter", "a ball of string", "a candle", "nothing", "a broken watch")


class LockboxEnv(Env):
    name: ClassVar[str] = "lockbox"
    snapshot_native: ClassVar[bool] = True  # the state is a small dict: copied directly
    default_max_steps: ClassVar[int] = 15

    def tasks(self, limit: int | None = None) -> list[str]:
        n = 200 if self.split == "train" else 50
        return [f"{self.split}-{i}" for i in range(n if limit is None else min(limit, n))]

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        rng = random.Random(zlib.crc32(task.encode()))
        drawers = rng.randint(5, 6) if self.split == "ood_test" else rng.randint(2, 4)
        key = rng.randrange(drawers)
        self.state = {
            "contents": ["a key" if i == key else rng.choice(JUNK) for i in range(drawers)],
            "open": [False] * drawers,
            "holding_key": False,
            "box": "locked",
        }
        goal = "find the key, unlock the box and take the coin"
        observation = f"You are in a study with {drawers} drawers and a locked box. Your task is to: {goal}."
        return observation, {"goal": goal, "task": task}

    def valid_actions(self) -> list[str]:
        s = self.state
        actions = ["look"] + [f"open drawer {i + 1}" for i, is_open in enumerate(s["open"]) if not is_open]
        if not s["holding_key"] and any(o and c == "a key" for o, c in zip(s["open"], s["contents"], strict=True)):
            actions.append("take key")
        if s["holding_key"] and s["box"] == "locked":
            actions.append("unlock box")
        if s["box"] == "unlocked":
            actions.append("open box")
        if s["box"] == "open":
            actions.append("take coin")
        return sorted(actions)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        s = self.state
        if action not in self.valid_actions():
            return "Nothing happens.", 0.0, False, False, {}
        if action == "look":
            seen = [f"drawer {i + 1} holds {c}" for i, c in enumerate(s["contents"]) if s["open"][i]]
            described = "; ".join(seen) or "every drawer is closed"
            return f"The box is {s['box']}; {described}.", 0.0, False, False, {}
        if action.startswith("open drawer"):
            i = int(action.rsplit(" ", 1)[1]) - 1
            s["open"][i] = True
            return f"You open drawer {i + 1}. In it you see {s['contents'][i]}.", 0.0, False, False, {}
        if action == "take key":
            s["holding_key"] = True
            s["contents"] = ["nothing" if c == "a key" else c for c in s["contents"]]
            return "You take the key.", 0.0, False, False, {}
        if action == "unlock box":
            s["box"] = "unlocked"
            return "You unlock the box with the key.", 0.0, False, False, {}
        if action == "open box":
            s["box"] = "open"
            return "You open the box. In it you see a coin.", 0.0, False, False, {}
        return "You take the coin. You won!", 1.0, True, True, {}

    def _snapshot(self) -> Any:
        return _copy(self.state)

    def _restore(self, snapshot: Any) -> None:
        self.state = _copy(snapshot)  # a copy: the snapshot stays valid for reuse

    def expert_actions(self) -> list[str]:
        if any(self.state["open"]) or self.state["box"] != "locked":
            raise NoExpertError("the lockbox expert plans from the start of a task only")
        key = self.state["contents"].index("a key")
        return [f"open drawer {key + 1}", "take key", "unlock box", "open box", "take coin"]


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, list) else value for key, value in state.items()}


def make_env(split: str = "train", **kwargs: Any) -> LockboxEnv:
    """The factory firsthand calls: `make_env(split=..., max_steps=...)`."""
    return LockboxEnv(split, **kwargs)
