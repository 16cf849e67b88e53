"""TextWorld cooking games (the "First TextWorld Problems" challenge): find the ingredients of a recipe
in a small house, cook and cut them as the cookbook says, prepare the meal and eat it.

Games are generated with TextWorld's own `tw-cooking` challenge, once, on first use, and cached under
``~/.cache/firsthand/textworld-cooking/`` (or ``$FIRSTHAND_CACHE``): 3-8 s and about 550 KB a game.

- Difficulty (fixed, see `SETTINGS`): a 2-ingredient recipe whose ingredients must be found (``--recipe 2
  --take 2``), 6 rooms (``--go 6``), containers and doors to open, ingredients to cook and to cut. The
  expert then needs 13-16 actions (tw-cooking's walkthroughs: 15-19).
- Splits: ``train`` and ``id_test`` are games of tw-cooking's *train* split (its foods and preparations)
  from disjoint generation seeds; ``ood_test`` is tw-cooking's *test* split: unseen foods, and training
  foods prepared in unseen ways. Task ``train-7`` is the game of seed ``SEED_BASE["train"] + 7``.
- The goal states the game's recipe (see `goal_text`): the game's objective only says to read the
  cookbook, and the recipe would be out of a short prompt history two steps later.
- Valid actions are TextWorld's admissible commands; the expert is the game's walkthrough with its
  no-op steps removed (see `_expert_from_walkthrough`), verified to win when the game is generated.
- Snapshots are native: the Z-machine state (Jericho) plus TextWorld's logical state (the facts from
  which admissible commands are computed); taking or restoring one costs under 0.1 ms, against ~10 ms
  plus ~5 ms a step for reset-and-replay and 200-300 ms for TextWorld's `env.copy()`. They pickle
  (~230 KB), so they may cross processes.

Example:
    >>> from firsthand import make
    >>> env = make("textworld-cooking", split="train")
    >>> obs, info = env.reset("train-0")
    >>> obs.startswith("You are hungry!")
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import textworld
import textworld.generator
from jericho import UnsupportedGameWarning
from textworld.challenges.tw_cooking import cooking
from textworld.core import GameState
from textworld.envs.wrappers.tw_inform7 import Inform7Data, StateTracking
from textworld.envs.zmachine.jericho import JerichoEnv

from firsthand.contract import SPLITS, Env, FirsthandError, InvalidInputError, NoExpertError

NAME = "textworld-cooking"
SETTINGS: dict[str, Any] = {
    "recipe": 2,  # ingredients in the recipe
    "take": 2,  # of which must be found in the house
    "go": 6,  # rooms
    "open": True,  # containers and doors start closed
    "cook": True,  # some ingredients must be fried, roasted or grilled
    "cut": True,  # some must be sliced, chopped or diced
    "drop": False,  # unlimited inventory (tw-cooking writes no walkthrough with limited inventory)
    "recipe_seed": 0,
}
"""The tw-cooking difficulty of every game (the options of ``tw-make tw-cooking``)."""

TW_SPLIT: dict[str, str] = {"train": "train", "id_test": "train", "ood_test": "test"}
"""Which tw-cooking food split each of our splits draws its games from."""
SEED_BASE: dict[str, int] = {"train": 0, "id_test": 1_000_000, "ood_test": 2_000_000}
"""Task ``<split>-<i>`` is generated with seed ``SEED_BASE[split] + i``: disjoint seeds across splits."""
SPLIT_SIZE: dict[str, int] = {"train": 10_000, "id_test": 1_000, "ood_test": 1_000}
DEFAULT_MAX_STEPS = 50  # about 2.5 times the longest expert
EMULATOR_SEED = 20  # fixed, so that the Z-machine's random numbers never depend on the clock
CACHE_VERSION = "v1"  # bump when generation changes, so that old games are not mixed with new ones
GENERATION_TIMEOUT_S = 120  # per game

# Interpreter commands that act outside the story. "undo" and "restore" would rewind the Z-machine behind
# TextWorld's state tracking (its admissible commands would then be wrong), the rest end or stall the game;
# TextWorld's own debug commands ("tw-trace-actions", ...) start with "tw-" and are refused too.
META_COMMANDS = frozenset({"undo", "restart", "restore", "save", "quit", "q", "script", "unscript", "transcript"})
UNKNOWN_VERB = "That's not a verb I recognise."

_PROMPT = re.compile(r"\n>[^\n]*\Z")  # the prompt and the status line (room, score/moves) after each turn
_REPLAY_QUESTION = "Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?"
_BLANK_LINES = re.compile(r"\n{3,}")


class GameGenerationError(FirsthandError):
    """TextWorld could not generate or compile a cooking game."""


def settings_key() -> str:
    """The difficulty in tw-make's own notation, e.g. ``recipe2+take2+go6+open+cook+cut``."""
    flags = [f"{k}{'' if v is True else v}" for k, v in SETTINGS.items() if k != "recipe_seed" and v]
    return "+".join(flags)


def cache_root() -> Path:
    """Where games are cached (same convention as `firsthand.models.cache_dir`)."""
    base = Path(os.environ.get("FIRSTHAND_CACHE", Path.home() / ".cache" / "firsthand"))
    return base / NAME / f"{CACHE_VERSION}-{settings_key()}"


def parse_task(task: str) -> tuple[str, int]:
    """``"train-7"`` -> ``("train", 7)``; raises InvalidInputError for anything else."""
    split, _, index = task.rpartition("-")
    if split not in SPLITS or not index.isdigit() or int(index) >= SPLIT_SIZE[split]:
        raise InvalidInputError(
            f"unknown {NAME} task {task!r}; task identifiers look like 'train-12' (split-index, index below "
            f"{SPLIT_SIZE.get(split, SPLIT_SIZE['train'])}), see env.tasks()"
        )
    return split, int(index)


# ----------------------------------------------------------------------------------------------
# Generation (in a subprocess, so that every machine generates byte-identical games)
# ----------------------------------------------------------------------------------------------
def prepare(tasks: Iterable[str], root: Path | None = None, *, workers: int = 1, progress: bool = False) -> list[Path]:
    """Generate the games of `tasks` that are not cached yet; return their folders.

    The games are split over `workers` subprocesses (each pays TextWorld's ~1-2 s import once, then
    ~3-5 s a game); `progress` shows a bar on stderr. The subprocesses run with PYTHONHASHSEED=0:
    TextWorld's generator iterates over sets, so with Python's per-process hash seed the same seed would
    give games whose text differs in the order of things.
    """
    root = root or cache_root()
    tasks = list(dict.fromkeys(tasks))
    for task in tasks:
        parse_task(task)
    missing = [t for t in tasks if not (root / t / "task.json").is_file()]
    if not missing:
        return [root / t for t in tasks]
    root.mkdir(parents=True, exist_ok=True)
    src = str(Path(__file__).resolve().parents[2])  # so the worker finds firsthand even if not installed
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path}
    code = "import sys; from firsthand.envs.textworld_cooking import _generate_main; _generate_main(sys.argv[1:])"
    n = max(1, min(workers, len(missing)))
    shares = [missing[i::n] for i in range(n)]
    timeout = GENERATION_TIMEOUT_S * len(shares[0]) + 60
    from tqdm.auto import tqdm

    done = lambda: sum((root / t / "task.json").is_file() for t in missing)  # noqa: E731
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        # Files, not pipes: a full pipe would block the worker. Closed on every way out of this block.
        logs = [stack.enter_context(tempfile.TemporaryFile(mode="w+")) for _ in shares]
        procs: list[subprocess.Popen[bytes]] = []
        stack.callback(_kill_all, procs)  # a timeout, an interrupt or a failed start leaves no worker behind
        for share, log in zip(shares, logs, strict=True):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, str(root), *share], env=env, stdout=subprocess.DEVNULL, stderr=log
                )
            )
        with tqdm(total=len(missing), desc=f"generating {NAME} games", unit="game", disable=not progress) as bar:
            start = time.monotonic()
            while any(p.poll() is None for p in procs):
                if time.monotonic() - start > timeout:
                    raise GameGenerationError(f"generating {missing} took longer than {timeout:.0f} s")
                time.sleep(0.5)
                bar.update(done() - bar.n)
            bar.update(done() - bar.n)
        for p, log in zip(procs, logs, strict=True):
            log.seek(0)
            if p.returncode:
                errors.append(f"exit status {p.returncode}: {log.read().strip()[-2000:]}")
    failed = [t for t in missing if not (root / t / "task.json").is_file()]
    if errors or failed:
        raise GameGenerationError(
            f"could not generate the {NAME} games {failed or missing} under {str(root)!r} ({'; '.join(errors)})"
        )
    return [root / t for t in tasks]


def _kill_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _generate_main(argv: Sequence[str]) -> None:
    """Worker entry point: ``ROOT TASK...``. Each game is built in a temporary folder and renamed into
    place under a per-task lock, so concurrent processes never see (or both write) a half-made game."""
    root, tasks = Path(argv[0]), argv[1:]
    for task in tasks:
        final = root / task
        with open(root / f".{task}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (final / "task.json").is_file():
                continue  # another process made it while we waited
            tmp = Path(tempfile.mkdtemp(prefix=f".{task}.", dir=root))
            tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the game from other users of a shared cache
            try:
                _build_game(task, tmp)
                if final.exists():
                    shutil.rmtree(final)  # an incomplete folder left by an older layout
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def _build_game(task: str, directory: Path) -> None:
    split, index = parse_task(task)
    seed = SEED_BASE[split] + index
    options = textworld.GameOptions()
    options.seeds = seed
    options.path = str(directory / "game.z8")
    options.force_recompile = True
    game = cooking.make({**SETTINGS, "split": TW_SPLIT[split]}, options)
    textworld.generator.compile_game(game, options)
    (directory / "game.ni").unlink(missing_ok=True)  # the Inform 7 source, only needed to compile
    walkthrough = list(game.metadata["walkthrough"])
    record = {
        "task": task,
        "tw_split": TW_SPLIT[split],
        "seed": seed,
        "settings": SETTINGS,
        "uuid": game.metadata["uuid"],
        "ingredients": [list(i) for i in game.metadata["ingredients"]],
        "walkthrough": walkthrough,
        "expert": _expert_from_walkthrough(directory / "game.z8", walkthrough),
        "textworld": textworld.__version__,
    }
    (directory / "task.json").write_text(json.dumps(record, indent=1))


def _without_drop_take_pairs(actions: Sequence[str]) -> list[str]:
    """Drop "drop X" immediately followed by "take X" (the walkthrough does this with the knife between cuts)."""
    out: list[str] = []
    for action in actions:
        if out and out[-1].startswith("drop ") and action == "take " + out[-1][5:]:
            out.pop()
            continue
        out.append(action)
    return out


def _expert_from_walkthrough(game_file: Path, walkthrough: Sequence[str]) -> list[str]:
    """The walkthrough without its no-ops, replayed to check that it wins; [] when it does not.

    tw-cooking's walkthroughs open a container or door again each time they use it ("That's already
    open.", not an admissible command, so replay() would reject it) and drop and re-take the knife between
    two cuts; both are removed. If the shorter sequence fails to win, the admissible part of the full one
    is tried.
    """
    for candidate in (_without_drop_take_pairs(walkthrough), list(walkthrough)):
        env = _start(game_file)
        try:
            state = env.reset()
            actions: list[str] = []
            for action in candidate:
                if action not in state["admissible_commands"]:
                    continue
                state, _, done = env.step(action)
                actions.append(action)
                if done:
                    break
            if state["won"]:
                return actions
        finally:
            env.close()
    return []


# ----------------------------------------------------------------------------------------------
# Playing
# ----------------------------------------------------------------------------------------------
def _start(game_file: Path) -> textworld.Environment:
    infos = textworld.EnvInfos(
        admissible_commands=True, objective=True, max_score=True, score=True, won=True, lost=True
    )
    with warnings.catch_warnings():
        # Jericho knows no TextWorld game ("not fully supported"): TextWorld reads score and moves itself.
        warnings.simplefilter("ignore", UnsupportedGameWarning)
        env = textworld.start(str(game_file), request_infos=infos)
    env.seed(EMULATOR_SEED)
    return env


def goal_text(metadata: dict[str, Any]) -> str:
    """The goal of a game, with its recipe (what its cookbook says): "cook the meal of the recipe and eat
    it. Ingredients: carrot, yellow bell pepper. Directions: slice the carrot, ..., prepare meal."

    The game's own objective ("You are hungry! ... Check the cookbook ...", the start of the first
    observation) only says to read the cookbook; a policy that sees the last few steps (cut to a few
    hundred characters) would lose the recipe two steps after reading it and could not know which
    ingredients to fetch or how to prepare them. ALFWorld states its task in the goal likewise; the
    imperative matches the other environments' goals."""
    ingredients = [str(item[0]) for item in metadata.get("ingredients", [])]
    text = str(metadata.get("recipe", ""))
    directions = text.split("Directions:", 1)[1] if "Directions:" in text else ""
    steps = [line.strip() for line in directions.splitlines() if line.strip()]
    if not ingredients or not steps:
        raise FirsthandError(f"the {NAME} game has no recipe in its metadata (generated by another textworld?)")
    return (
        f"cook the meal of the recipe and eat it. Ingredients: {', '.join(ingredients)}. "
        f"Directions: {', '.join(steps)}."
    )


def clean_observation(raw: str, objective: str | None = None) -> str:
    """TextWorld's text without what is not the story: the TEXTWORLD banner (before the objective, in the
    first observation), the prompt with the status line (room and score/moves), the RESTART/QUIT question
    at the end, the spaces that indent lines (centring "*** The End ***", ragged in recipes) and runs of
    blank lines."""
    if objective and objective in raw:
        raw = raw[raw.index(objective) :]
    raw = _PROMPT.sub("", raw.rstrip()).replace(_REPLAY_QUESTION, "")
    lines = [line.strip() for line in raw.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True)
class CookingSnapshot:
    """Everything `restore` needs, picklable. `machine` is Jericho's Z-machine state (RAM, stack, PC,
    RNG); `facts` and `logical_actions` are TextWorld's logical state, from which it derives admissible
    commands and tracks what each command did. `actions` (the commands since reset) also gives the move count."""

    task: str
    actions: tuple[str, ...]
    score: int
    won: bool
    lost: bool
    machine: tuple[Any, ...]
    facts: Any  # textworld.logic.State
    logical_actions: tuple[Any, ...]  # textworld.logic.Action, in TextWorld's order
    admissible: tuple[str, ...]


@dataclass
class _Game:
    """A loaded game: its TextWorld environment and the wrapper layers a snapshot reads and writes."""

    task: str
    env: textworld.Environment
    tracker: StateTracking
    inform7: Inform7Data
    machine: JerichoEnv
    objective: str
    goal: str
    max_score: int
    expert: list[str]


def _layer(env: Any, cls: type) -> Any:
    layer = env
    while layer is not None and not isinstance(layer, cls):
        layer = layer.__dict__.get("_wrapped_env")
    if layer is None:
        raise FirsthandError(
            f"TextWorld {textworld.__version__} no longer wraps its games in {cls.__name__}; the {NAME} adapter's "
            "snapshots need it (written against textworld 1.6-1.7)"
        )
    return layer


class TextWorldCookingEnv(Env):
    """TextWorld cooking games behind the firsthand Env protocol; see the module docstring.

    Reward is the game's score gained by the step (one point per recipe step: taking, cooking and
    cutting an ingredient, preparing the meal, eating it); success is `won` (the meal was eaten).
    Eating something else, or burning or mis-cutting an ingredient, ends the game as lost.
    """

    name: ClassVar[str] = NAME
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = DEFAULT_MAX_STEPS

    def __init__(self, split: str = "train", *, max_steps: int | None = None) -> None:
        super().__init__(split, max_steps=max_steps)
        self._game: _Game | None = None
        self._actions: list[str] = []
        self._score = 0
        self._won = False
        self._lost = False
        self._admissible: list[str] = []

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, limit: int | None = None) -> list[str]:
        """Task ids in order; their games are generated (and cached) when first reset."""
        size = SPLIT_SIZE[self.split]
        n = size if limit is None else max(0, min(limit, size))
        return [f"{self.split}-{i}" for i in range(n)]

    def prepare(self, tasks: Iterable[str]) -> None:
        """Generate the games of `tasks` now, in parallel and with a progress bar (collection and
        evaluation call this before their first reset; otherwise each game is made at its reset)."""
        prepare(tasks, workers=os.cpu_count() or 1, progress=True)

    def _load(self, task: str) -> _Game:
        """The loaded game of `task`: the current one, or a freshly started one (generated if needed)."""
        if self._game is not None and self._game.task == task:
            return self._game
        (directory,) = prepare([task])
        record = json.loads((directory / "task.json").read_text())
        self.close()
        env = _start(directory / "game.z8")
        self._game = _Game(
            task=task,
            env=env,
            tracker=_layer(env, StateTracking),
            inform7=_layer(env, Inform7Data),
            machine=_layer(env, JerichoEnv),
            objective="",
            goal=goal_text(json.loads((directory / "game.json").read_text())["metadata"]),
            max_score=0,
            expert=list(record["expert"]),
        )
        return self._game

    # -- the episode ----------------------------------------------------------------------------
    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        """Start `task`. A game is a function of its task alone (and play is deterministic), so `seed`
        changes nothing."""
        parse_task(task)
        game = self._load(task)
        state = game.env.reset()
        game.objective = state["objective"]
        game.max_score = int(state["max_score"])
        self._actions = []
        self._score = int(state["score"] or 0)
        self._won = self._lost = False
        self._admissible = list(state["admissible_commands"])
        return clean_observation(state.feedback, game.objective), self._info()

    def _require_game(self) -> _Game:
        if self._game is None or not self._game.objective:
            raise InvalidInputError("the environment has no task yet: call reset(task) first")
        return self._game

    def _info(self) -> dict[str, Any]:
        game = self._require_game()
        return {"task": game.task, "goal": game.goal, "score": self._score, "max_score": game.max_score}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        game = self._require_game()
        command = " ".join(action.strip().split())
        invalid = command.lower() not in self._admissible
        self._actions.append(action)
        verb = command.lower().split(" ")[0]
        if verb in META_COMMANDS or verb.startswith("tw-"):
            observation, reward = UNKNOWN_VERB, 0.0
        else:
            state, _, _ = game.env.step(command)
            score = int(state["score"] or 0)
            observation, reward = clean_observation(state.feedback), float(score - self._score)
            self._score, self._won, self._lost = score, bool(state["won"]), bool(state["lost"])
            self._admissible = list(state["admissible_commands"])
        info = {**self._info(), "invalid": invalid}
        return observation, reward, self._won or self._lost, self._won, info

    # -- valid actions, snapshots, expert -------------------------------------------------------
    def valid_actions(self) -> list[str]:
        """TextWorld's admissible commands (sorted, no duplicates); none once the game has ended."""
        self._require_game()
        return [] if self._won or self._lost else list(self._admissible)

    def _snapshot(self) -> CookingSnapshot:
        game = self._require_game()
        progression = game.tracker._game_progression
        return CookingSnapshot(
            task=game.task,
            actions=tuple(self._actions),
            score=self._score,
            won=self._won,
            lost=self._lost,
            machine=game.machine._jericho.get_state(),
            facts=progression.state.copy(),
            logical_actions=tuple(progression.valid_actions),
            admissible=tuple(self._admissible),
        )

    def _restore(self, snapshot: Any) -> None:
        """Put the Z-machine and TextWorld's state tracking back as they were; the snapshot is not
        consumed (its mutable parts are copied)."""
        if not isinstance(snapshot, CookingSnapshot):
            raise InvalidInputError(f"not a {NAME} snapshot: {type(snapshot).__name__}; pass what snapshot() returned")
        game = self._game
        if game is None or game.task != snapshot.task or not game.objective:
            self._reset(snapshot.task, None)  # loads the game and readies every wrapper layer for step()
            game = self._require_game()
        game.machine._jericho.set_state(snapshot.machine)
        progression = game.tracker._game_progression
        progression.state = snapshot.facts.copy()
        progression._valid_actions = list(snapshot.logical_actions)
        game.tracker._last_action = None
        game.tracker._moves = len(snapshot.actions)
        game.inform7._prev_state = None
        game.inform7.state = GameState(score=snapshot.score, moves=len(snapshot.actions))
        self._actions = list(snapshot.actions)
        self._score, self._won, self._lost = snapshot.score, snapshot.won, snapshot.lost
        self._admissible = list(snapshot.admissible)

    def expert_actions(self) -> list[str]:
        """The game's walkthrough without its no-ops, verified to win when the game was generated."""
        game = self._require_game()
        if self.elapsed_steps:
            raise NoExpertError(f"the {NAME} expert plays from the start of a game: call reset(task) first")
        if not game.expert:
            raise NoExpertError(f"the walkthrough of {game.task} does not win when replayed; no expert for this task")
        return list(game.expert)

    def close(self) -> None:
        """Stop the game's interpreter (each holds a copy of the Z-machine library)."""
        if self._game is not None:
            self._game.env.close()
            self._game = None
