"""Lockbox: a small text game written as a firsthand environment adapter (the guide in docs/adapters.md).

A key lies in one of several drawers among odds and ends; the agent must find it, unlock a box and take
the coin inside, within 10 steps (the expert needs 5). Out of domain, rooms have more drawers. Use it
from the command line as ``--env examples/lockbox.py:make_env``.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, ClassVar

from firsthand import Env
from firsthand.contract import NoExpertError

JUNK = ("spoon", "letter", "string", "candle", "watch", "stamp", "pencil")


class LockboxEnv(Env):
    name: ClassVar[str] = "lockbox"
    snapshot_native: ClassVar[bool] = True  # the state is a small dict: copied directly
    default_max_steps: ClassVar[int] = 10

    def tasks(self, limit: int | None = None) -> list[str]:
        n = 200 if self.split == "train" else 50
        return [f"{self.split}-{i}" for i in range(n if limit is None else min(limit, n))]

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        rng = random.Random(zlib.crc32(task.encode()))
        drawers = rng.randint(7, 9) if self.split == "ood_test" else rng.randint(3, 6)
        key = rng.randrange(drawers)
        self.state = {
            "contents": ["key" if i == key else rng.choice(JUNK) for i in range(drawers)],
            "open": [False] * drawers,
            "held": [],
            "box": "locked",
        }
        goal = "find the key, unlock the box and take the coin"
        observation = f"You are in a study with {drawers} drawers and a locked box. Your task is to: {goal}."
        return observation, {"goal": goal, "task": task}

    def valid_actions(self) -> list[str]:
        s = self.state
        actions = ["look"]
        for i, (is_open, thing) in enumerate(zip(s["open"], s["contents"], strict=True)):
            actions.append(f"close drawer {i + 1}" if is_open else f"open drawer {i + 1}")
            if is_open and thing:
                actions.append(f"take {thing} from drawer {i + 1}")
        if "key" in s["held"] and s["box"] == "locked":
            actions.append("unlock box")
        if s["box"] == "unlocked":
            actions.append("open box")
        if s["box"] == "open":
            actions.append("take coin from box")
        return sorted(actions)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        s = self.state
        if action not in self.valid_actions():
            return "Nothing happens.", 0.0, False, False, {}
        verb, _, rest = action.partition(" ")
        if action == "look":
            seen = [f"drawer {i + 1} holds {c or 'nothing'}" for i, c in enumerate(s["contents"]) if s["open"][i]]
            described = "; ".join(seen) or "every drawer is closed"
            return f"The box is {s['box']}; {described}.", 0.0, False, False, {}
        if verb in ("open", "close") and rest.startswith("drawer"):
            i = int(rest.rsplit(" ", 1)[1]) - 1
            s["open"][i] = verb == "open"
            inside = f" In it you see {s['contents'][i] or 'nothing'}." if verb == "open" else ""
            return f"You {verb} drawer {i + 1}.{inside}", 0.0, False, False, {}
        if action == "take coin from box":
            return "You take the coin. You won!", 1.0, True, True, {}
        if verb == "take":
            i = int(action.rsplit(" ", 1)[1]) - 1
            s["held"].append(s["contents"][i])
            s["contents"][i] = ""
            return f"You take the {s['held'][-1]}.", 0.0, False, False, {}
        if action == "unlock box":
            s["box"] = "unlocked"
            return "You unlock the box with the key.", 0.0, False, False, {}
        s["box"] = "open"
        return "You open the box. In it you see a coin.", 0.0, False, False, {}

    def _snapshot(self) -> Any:
        return _copy(self.state)

    def _restore(self, snapshot: Any) -> None:
        self.state = _copy(snapshot)  # a copy: the snapshot stays valid for reuse

    def expert_actions(self) -> list[str]:
        if any(self.state["open"]) or self.state["box"] != "locked":
            raise NoExpertError("the lockbox expert plans from the start of a task only")
        drawer = self.state["contents"].index("key") + 1
        return [
            f"open drawer {drawer}",
            f"take key from drawer {drawer}",
            "unlock box",
            "open box",
            "take coin from box",
        ]


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, list) else value for key, value in state.items()}


def make_env(split: str = "train", **kwargs: Any) -> LockboxEnv:
    """The factory firsthand calls: `make_env(split=..., max_steps=...)`."""
    return LockboxEnv(split, **kwargs)
