"""What a run's results are called and where they lie: `Label` names a trained model (its method, budget rule,
compute-control steps and RL algorithm) and `RunLayout` every path of a run folder.

Results files and `results.json` key their rows by the label's text (`iwm-matched`, `il-steps1200`,
`sr@grpo`); `Label.parse` is the one place that text is read back, and `RunLayout` the one place a file name
is made or listed, so the pipeline, the report, the HTML page and the sweep agree by construction.

    RUN/
      experts/  branches/  validation/  data/{il,iwm,sr}/  models/tiny-seed0/
      train/{label}-seed0/  eval/{label}-seed0-{split}.json  eval-score/...  eval-sample/...
      rl/{label}-seed0-{algo}/  eval/{label}@{algo}-seed0-{split}.json   (with --with-rl)
      results.json  results.md  results.png  report.html  preset.json
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

METHOD_NAMES = {
    "random": "Random",
    "prompt": "Prompt",
    "il": "IL",
    "il-compute": "IL, equal compute",
    "iwm": "IWM",
    "sr": "SR",
    "iwm+sr": "IWM+SR",
    "iwm-aux": "IWM, auxiliary loss",
    "actobs": "ActObs",
    "star": "STaR",
}
"""How the tables print each method (`il-compute`: the compute controls, as a group)."""

ORDER = ("random", "prompt", "il", "il-compute", "iwm", "iwm-aux", "actobs", "sr", "iwm+sr", "star")
"""Table order: baselines, IL and its compute controls, then each method."""

THINKING = ("sr", "star")
"""Methods whose models write a thought before their action."""

COMPUTE = "il-steps"
_COMPUTE = re.compile(r"^il-steps(\d+)$")
_WEIGHT = re.compile(r"-w(\d[\d.e+-]*)$")


@dataclass(frozen=True)
class Label:
    """One trained (or baseline) model of a run: `method`; `rule`, its budget rule where not the default
    (paper, matched); `steps`, IL trained for exactly this many optimizer steps (the compute control of the
    methods of that many); `algo`, the RL algorithm it was continued with."""

    method: str
    rule: str = ""
    steps: int | None = None
    algo: str = ""
    weight: float | None = None
    """A point of a lambda grid (`Preset.aux_weights`): its folder only, never a results row."""

    def __str__(self) -> str:
        if self.steps is not None:
            base = f"{COMPUTE}{self.steps}"
        else:
            base = f"{self.method}-{self.rule}" if self.rule else self.method
        if self.weight is not None:
            base += f"-w{self.weight:g}"
        return f"{base}@{self.algo}" if self.algo else base

    @classmethod
    def parse(cls, text: str) -> Label:
        """The label whose text is `text` (the inverse of `str`): the longest method name it begins with,
        then the rule."""
        base, _, algo = text.partition("@")
        steps = _COMPUTE.match(base)
        if steps:
            return cls("il", steps=int(steps[1]), algo=algo)
        weight = _WEIGHT.search(base)
        if weight:
            return replace(cls.parse(base[: weight.start()]), weight=float(weight[1]), algo=algo)
        for method in sorted(METHOD_NAMES, key=len, reverse=True):
            if base == method or base.startswith(method + "-"):
                return cls(method, base[len(method) + 1 :], algo=algo)
        method, _, rule = base.partition("-")
        return cls(method, rule, algo=algo)

    @classmethod
    def of(cls, method: str, rule: str) -> Label:
        """A training's label: the method under rule auto (and IL under any), else the method and its rule."""
        return cls(method, "" if rule == "auto" or method == "il" else rule)

    @property
    def start(self) -> Label:
        """The model before RL (itself when it had none)."""
        return replace(self, algo="")

    @property
    def is_control(self) -> bool:
        return self.steps is not None

    @property
    def thinks(self) -> bool:
        return any(part in THINKING for part in self.method.split("+"))

    @property
    def name(self) -> str:
        """As the tables print it: `IWM (matched budget)`, `SR + GRPO`, `IL, 1,200 steps`."""
        if self.algo:
            return f"{self.start.name} + {self.algo.upper()}"
        if self.steps is not None:
            return f"IL, {self.steps:,} steps"
        name = METHOD_NAMES.get(self.method, self.method)
        return f"{name} ({self.rule} budget)" if self.rule else name

    def order(self) -> tuple[int, int, str]:
        """Sort key of the tables (a model continued with RL sorts with its starting point)."""
        if self.steps is not None:
            return (ORDER.index("il-compute"), self.steps, str(self))
        return (ORDER.index(self.method) if self.method in ORDER else len(ORDER), 0, str(self))


def eval_folder(evaluation: str) -> str:
    """Where an evaluation's files go: eval/ for greedy generation (the main tables), eval-{name}/ else."""
    return "eval" if evaluation == "greedy" else f"eval-{evaluation}"


_EVAL_FILE = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)-(?P<split>[a-z_]+)\.json$")
_RL_FOLDER = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)-(?P<algo>[a-z]+)$")


@dataclass(frozen=True)
class RunLayout:
    """Every path of a run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def experts(self) -> Path:
        return self.root / "experts"

    @property
    def branches(self) -> Path:
        return self.root / "branches"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    def data(self, kind: str) -> Path:
        return self.root / "data" / kind

    def arm(self, demonstrations: int) -> Path:
        """The run of a low-data arm (`Preset.arms`): a run folder of its own."""
        return self.root / f"demos-{demonstrations}"

    def tiny(self, seed: int) -> Path:
        return self.root / "models" / f"tiny-seed{seed}"

    def train(self, label: Label | str, seed: int) -> Path:
        return self.root / "train" / f"{label}-seed{seed}"

    def rl(self, label: Label | str, seed: int, algo: str) -> Path:
        return self.root / "rl" / f"{label}-seed{seed}-{algo}"

    def eval_file(self, label: Label | str, seed: int, split: str, evaluation: str = "greedy") -> Path:
        return self.root / eval_folder(evaluation) / f"{label}-seed{seed}-{split}.json"

    def evaluations(self, evaluation: str = "greedy") -> Iterator[tuple[Label, int, str, Path]]:
        """(label, seed, split, path) of every evaluation file of `evaluation` on disk, in name order."""
        folder = self.root / eval_folder(evaluation)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            match = _EVAL_FILE.match(path.name)
            if match:
                yield Label.parse(match["label"]), int(match["seed"]), match["split"], path

    def rl_runs(self) -> Iterator[tuple[Label, int, Path]]:
        """(label continued with RL, seed, folder) of every RL run on disk, in name order."""
        folder = self.root / "rl"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            match = _RL_FOLDER.match(path.name)
            if match and path.is_dir():
                yield replace(Label.parse(match["label"]), algo=match["algo"]), int(match["seed"]), path


def method_name(text: str) -> str:
    """A results label's text as the tables print it (`Label.name`)."""
    return Label.parse(text).name


def ordered(labels: Iterable[str]) -> list[str]:
    """Labels' texts in table order (`Label.order`)."""
    return sorted(labels, key=lambda text: Label.parse(text).order())
