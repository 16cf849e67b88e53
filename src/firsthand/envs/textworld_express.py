"""TextWorld-Express: eight fast procedurally generated text games behind the firsthand Env protocol.

TextWorld-Express (Jansen & Côté, 2022; `pip install textworld-express`) reimplements CookingWorld,
TextWorld Commonsense and Coin Collector, and adds Map Reader, Arithmetic, Sorting, Simon Says and
Pecking Order, in Scala. Python talks to one JVM per environment instance through py4j.

Tasks. A task is one generated game, named ``"<game>-<fold>-<seed>"`` (e.g. ``"coin-train-17"``): the
game, and the ``gameFold`` and ``seed`` passed to the engine, so a task id reproduces the game anywhere.
The engine's official seeds are 0-999 (train fold), 10000-10999 (dev fold) and 20000-20999 (test fold);
the folds differ in vocabulary: the dev and test folds draw objects, ingredients, fruits and Simon-says
verbs from lists held out from the train fold (and from each other). The splits are therefore:

==========  =================  ============  ==========================================================
split       fold               seeds         why
==========  =================  ============  ==========================================================
train       train              0-999         the official training games
id_test     train              1000-1999     unseen games from the training distribution (same vocabulary)
ood_test    test               20000-20999   the official test games: held-out vocabulary
==========  =================  ============  ==========================================================

The official dev fold is not an in-distribution split (its vocabulary is held out too, and 5.5% of
Pecking Order's dev gold paths lose), so no split uses it; its tasks (``"twc-dev-10003"``) still play.
By default a split mixes all eight games, one task of each in turn (``tasks(8)`` holds one per game);
``games="coin,twc"`` restricts it. Each split holds 1000 tasks per game.

Game parameters (`DEFAULT_PARAMS`) keep expert trajectories moderate. Expert steps, mean (max), over
all 3000 tasks of each game in the three splits: cookingworld 16.3 (22), twc 8.8 (11), coin 8.1 (30),
mapreader 9.0 (12), arithmetic 4 (4), sorting 8.0 (10), simonsays 5 (5), peckingorder 8 (8); every
one of the 24000 experts wins when replayed. The default `max_steps` is 50.

Expert: the engine's gold path, cleaned and verified. The gold agents random-walk, and their paths
(a) start with "look around", which repeats the first observation: dropped; (b) sometimes hold an
action the engine refuses at its state (CookingWorld opens an already open cupboard): dropped, the
engine ignores them anyway; (c) go on after the win (TWC walks one more room): cut at the win. The
result is replayed before it is returned; a path that does not win raises NoExpertError.

Success: ``won`` is the engine's ``tasksuccess``; ``terminated`` is ``tasksuccess or taskfailure`` (a
wrong answer in Arithmetic, Sorting, Simon Says or Pecking Order, or cooking an ingredient the wrong
way in CookingWorld, ends the game as lost). ``reward`` is the change of the engine's normalised
score: partial credit for sub-goals, negative for undoing one (taking a sorted object back out of the
box). An episode's rewards sum to its final score: 1 on a win, -1 after a loss in the four puzzle
games; a lost CookingWorld game keeps its partial score, so read success from ``won`` only. An action
outside the valid actions is sent to the engine, which answers "Unknown action: I'm not sure what you
mean." and leaves the state unchanged; ``info["invalid"]`` is then True.

Snapshots: the engine cannot copy a game (its Python `clone()` starts a new JVM), so a snapshot is the
task id and the actions taken (picklable, a few hundred bytes), and `restore` regenerates the game
(0.5-2.5 ms) and replays those actions (0.2-0.7 ms each). Restoring the state the environment is
already in costs nothing. Generation is deterministic across JVMs.

The JVM starts at the first `reset` (about 1 s), runs with a 256 MB heap (about 120 MB resident), and
ends with `close()` (or when the object is collected, or the Python process exits).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# The backend first: when it is missing, the registry's error must name it, not one of its dependencies.
from textworld_express.constants import BASEPATH, JAR_PATH

# isort: split
import orjson
from py4j.java_gateway import JavaGateway

from firsthand.contract import Env, InvalidInputError, NoExpertError, UnknownNameError
from firsthand.envs._jvm import start_gateway, stop_gateway

GAMES: tuple[str, ...] = (
    "cookingworld",
    "twc",
    "coin",
    "mapreader",
    "arithmetic",
    "sorting",
    "simonsays",
    "peckingorder",
)
"""The engine's games, in the order in which a split interleaves them."""

DEFAULT_PARAMS: dict[str, str] = {
    "cookingworld": "numLocations=3,numIngredients=2,numDistractorItems=3,includeDoors=0,limitInventorySize=0",
    "twc": "numLocations=2,numItemsToPutAway=3,includeDoors=0,limitInventorySize=0",
    "coin": "numLocations=5,numDistractorItems=3,includeDoors=1,limitInventorySize=0",
    "mapreader": "",  # the engine's: 15 locations, coin at most 4 rooms away, no doors
    "arithmetic": "",  # takes no parameters, like sorting and peckingorder
    "sorting": "",
    "simonsays": "",  # the engine's: 5 commands to follow, 3 distractor actions
    "peckingorder": "",
}
"""Game parameter strings ("name=value,..."); the engine's own defaults give CookingWorld paths of 15-105 steps."""

SEEDS_PER_SPLIT = 1000
SPLIT_SEEDS: dict[str, tuple[str, int]] = {
    "train": ("train", 0),
    "id_test": ("train", 1000),
    "ood_test": ("test", 20000),
}
"""split -> (engine fold, first seed); a split's seeds are first .. first + SEEDS_PER_SPLIT - 1."""

FOLDS: tuple[str, ...] = ("train", "dev", "test")
JAVA_OPTIONS: list[str] = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
"""A small heap and the client compiler only. Measured on 2 busy cores: 126 MB resident instead of 320 MB with
the JVM's defaults, and 770 instead of 600 branching transitions/s (each step waits on a py4j round trip more
than on compiled code, and the C2 compiler competes for the cores)."""

UNKNOWN_ACTION = "Unknown action: I'm not sure what you mean."
_TASK = re.compile(r"^([a-z]+)-(train|dev|test)-(\d+)$")
_GOAL_PREFIX = re.compile(r"^Your (?:first )?task is to ")
_COOKING_GOAL = (
    "cook a delicious meal: find the cookbook in the kitchen, gather and prepare the ingredients of its recipe, "
    "then prepare the meal and eat it."
)


@dataclass(frozen=True)
class Task:
    """One generated game: the arguments of the engine's `generateNewGame(seed, fold)` after `load(game)`."""

    game: str
    fold: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.game}-{self.fold}-{self.seed}"


@dataclass(frozen=True)
class Snapshot:
    """A state as the actions that reach it: restoring regenerates the game and replays them.

    `actions` holds only accepted actions (refused ones change nothing).
    """

    task: str
    actions: tuple[str, ...]


def parse_task(task: str) -> Task:
    """The game, fold and seed named by a task id such as "coin-train-17"."""
    m = _TASK.match(task) if isinstance(task, str) else None
    if m is None or m.group(1) not in GAMES:
        raise InvalidInputError(
            f"unknown textworld-express task {task!r}; task ids look like 'coin-train-17' (<game>-<fold>-<seed>) "
            f"with a game among {', '.join(GAMES)} and a fold among {', '.join(FOLDS)}; see env.tasks()"
        )
    return Task(m.group(1), m.group(2), int(m.group(3)))


def goal_text(game: str, description: str) -> str:
    """The engine's task description as a goal that reads after "My goal is to ..." (see prompts.py)."""
    if game == "cookingworld":  # "You are hungry! Let's cook a delicious meal. Check the cookbook ..."
        return _COOKING_GOAL
    return _GOAL_PREFIX.sub("", " ".join(description.split()))


def _games(games: str | Sequence[str] | None) -> tuple[str, ...]:
    if games is None:
        return GAMES
    names = [g.strip() for g in games.split(",")] if isinstance(games, str) else list(games)
    for g in names:
        if g not in GAMES:
            raise UnknownNameError(f"unknown textworld-express game {g!r}; valid games: {', '.join(GAMES)}")
    if not names:
        raise InvalidInputError("games must name at least one game (or be None for all eight)")
    return tuple(dict.fromkeys(names))


class TextWorldExpressEnv(Env):
    """The eight TextWorld-Express games as one environment; see the module docstring for the design.

    Example:
        >>> from firsthand import make
        >>> env = make("textworld-express", split="train", games="coin")
        >>> env.tasks(2)
        ['coin-train-0', 'coin-train-1']
        >>> observation, info = env.reset("coin-train-0")
        >>> info["goal"]
        'search the environment and find the coin. Once you find the coin, take it.'
        >>> env.close()
    """

    name: ClassVar[str] = "textworld-express"
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = 50
    worker_memory: ClassVar[int] = 128 << 20  # one JVM per instance, ~126 MB

    def __init__(
        self,
        split: str = "train",
        *,
        max_steps: int | None = None,
        games: str | Sequence[str] | None = None,
        game_params: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(split, max_steps=max_steps)
        for g in game_params or {}:
            if g not in GAMES:
                raise UnknownNameError(f"game_params names unknown game {g!r}; valid games: {', '.join(GAMES)}")
        self.games = _games(games)
        self.params = {**DEFAULT_PARAMS, **(game_params or {})}
        self._gateway: JavaGateway | None = None
        self._servers: dict[str, Any] = {}  # game -> its own engine (PythonInterface) in the one JVM
        self._experts: dict[str, list[str]] = {}  # task id -> verified expert actions
        self._task: Task | None = None
        self._goal = ""
        self._description = ""
        self._actions: list[str] = []
        self._response: dict[str, Any] = {}
        self._valid: list[str] = []

    # -- the JVM ---------------------------------------------------------------------------------
    def _server(self, game: str) -> Any:
        """The engine of `game`, loaded with its parameters. One engine per game: `load` re-reads the
        game's data files (50-200 ms), which a split that interleaves games would pay at every task."""
        server = self._servers.get(game)
        if server is None:
            if self._gateway is None:
                self._gateway = start_gateway(JAR_PATH, BASEPATH, JAVA_OPTIONS, "textworld-express")
            server = self._gateway.jvm.textworldexpress.runtime.PythonInterface()
            message = server.load(game, self.params[game])
            if message:
                raise InvalidInputError(
                    f"textworld-express rejected the parameters {self.params[game]!r} of {game!r}: {message.strip()} "
                    "Fix them with game_params={...}."
                )
            self._servers[game] = server
        return server

    def close(self) -> None:
        """Stop the JVM. The environment starts a new one if it is used again."""
        gateway, self._gateway = self._gateway, None
        self._servers = {}
        self._task = None
        if gateway is not None:
            stop_gateway(gateway, timeout=5)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit modules may already be gone
            pass

    # -- tasks -----------------------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        """The split's games, interleaved: one task of each game in turn, seeds in increasing order."""
        fold, first = SPLIT_SEEDS[self.split]
        size = SEEDS_PER_SPLIT * len(self.games)
        n = size if limit is None else max(0, min(limit, size))
        k = len(self.games)
        return [f"{self.games[i % k]}-{fold}-{first + i // k}" for i in range(n)]

    # -- the episode -----------------------------------------------------------------------------
    def _require_task(self) -> Task:
        if self._task is None:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._task

    def _apply(self, response: str) -> dict[str, Any]:
        r = orjson.loads(response)
        self._response = r
        self._valid = sorted(set(r["validActions"]))
        return r

    def _start(self, task: Task) -> dict[str, Any]:
        """Generate `task` afresh (no gold path: generating one costs up to 40 ms in CookingWorld)."""
        server = self._server(task.game)
        r = self._apply(server.generateNewGameJSON(task.seed, task.fold, False))
        if self._task != task:
            self._description = server.getTaskDescription()
            self._goal = goal_text(task.game, self._description)
        self._task = task
        self._actions = []
        return r

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`. The task id fixes the engine's seed, so `seed` changes nothing."""
        t = parse_task(task)
        r = self._start(t)
        info = {
            "task": t.id,
            "goal": self._goal,
            "game": t.game,
            "fold": t.fold,
            "seed": t.seed,
            "task_description": self._description,
            "score": r["score"],
        }
        return r["observation"].strip(), info

    @property
    def _terminated(self) -> bool:
        return bool(self._response.get("tasksuccess") or self._response.get("taskfailure"))

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        t = self._require_task()
        action = " ".join(action.split())
        invalid = action not in self._valid
        before = self._response["score"]
        r = self._apply(self._servers[t.game].stepJSON(action))
        if not invalid:
            self._actions.append(action)
        info = {"task": t.id, "game": t.game, "score": r["score"], "invalid": invalid}
        reward = round(float(r["score"] - before), 9)  # 0.2, not 0.19999999999999996: records stay readable
        return r["observation"].strip(), reward, self._terminated, bool(r["tasksuccess"]), info

    # -- valid actions, snapshots, expert --------------------------------------------------------
    def valid_actions(self) -> list[str]:
        self._require_task()
        return list(self._valid)

    def _snapshot(self) -> Snapshot:
        t = self._require_task()
        return Snapshot(t.id, tuple(self._actions))

    def _restore(self, snapshot: Any) -> None:
        if not isinstance(snapshot, Snapshot):
            raise InvalidInputError(
                f"not a textworld-express snapshot: {type(snapshot).__name__}; pass what env.snapshot() returned"
            )
        t = parse_task(snapshot.task)
        if self._task != t or tuple(self._actions) != snapshot.actions:
            self._start(t)
            server = self._servers[t.game]
            for action in snapshot.actions:
                self._apply(server.stepJSON(action))
            self._actions = list(snapshot.actions)

    def expert_actions(self) -> list[str]:
        """The engine's gold path, cleaned (see the module docstring) and verified to win."""
        t = self._require_task()
        if self.elapsed_steps:
            raise NoExpertError("the textworld-express expert plans from the start of a task: call reset(task) first")
        if t.id not in self._experts:
            self._experts[t.id] = self._verified_gold(t)
        plan = self._experts[t.id]
        if len(plan) > self.max_steps:
            raise NoExpertError(f"the expert needs {len(plan)} steps on {t.id!r}, more than max_steps={self.max_steps}")
        return list(plan)

    def _verified_gold(self, t: Task) -> list[str]:
        server = self._server(t.game)
        r = orjson.loads(server.generateNewGameJSON(t.seed, t.fold, True))
        gold = list(server.getGoldActionSequence())
        plan: list[str] = []
        for i, action in enumerate(gold):
            if (i == 0 and action == "look around") or action not in r["validActions"]:
                continue
            r = orjson.loads(server.stepJSON(action))
            plan.append(action)
            if r["tasksuccess"] or r["taskfailure"]:
                break
        self._start(t)  # back to the start, on a game generated exactly as reset() generates it
        if not r["tasksuccess"]:
            raise NoExpertError(
                f"the engine's gold path for {t.id!r} does not win ({len(gold)} actions, "
                f"{'lost' if r['taskfailure'] else 'unfinished'}); no expert for this task"
            )
        return plan
