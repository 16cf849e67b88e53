"""Sweeps: the main job at several values of one setting, the paper's ablations (its Figure 4) and model size.

    firsthand sweep demos --out runs/sweep-demos        # 1/8, 1/4, 1/2 and all of the demonstrations
    firsthand sweep k --out runs/sweep-k                # alternatives per state: 1, 2, 4, 8
    firsthand sweep width --out runs/sweep-width        # the tiny model's width (parameters in the table)

Collection and branching run once, at the largest value; each point builds its data from a subset of that
branch directory (`stages.branch.subset`) and is a complete run directory of its own, so a sweep resumes
point by point and stage by stage like `firsthand run`:

    runs/sweep-demos/
      experts/  branches/  sweep.json
      points/demos-0.125/  (a run directory: branches/ data/ models/ train/ eval/ results.json ...)
      sweep-results.json  sweep.md  sweep.png  report.html
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from firsthand.artifacts import MANIFEST, check_output_dir, claimed, read_manifest, write_json_atomic
from firsthand.contract import InvalidInputError, UnknownNameError
from firsthand.layout import RunLayout, method_name, ordered
from firsthand.models import TinyConfig, tiny_parameters
from firsthand.pipeline import Preset, collect_experts, run
from firsthand.progress import Progress, no_progress
from firsthand.report_html import write_html
from firsthand.stages.branch import BranchConfig, branch, subset
from firsthand.stages.report import save_figure

log = logging.getLogger(__name__)

AXES: dict[str, tuple[float, ...]] = {
    "demos": (0.125, 0.25, 0.5, 1.0),
    "k": (1, 2, 4, 8),
    "width": (128, 256, 448),
    "aux-weight": (0.01, 0.05, 0.2, 1.0),
}
"""Each axis with its default values: `demos` is a fraction of the preset's expert trajectories, `k` the
alternatives per expert state, `width` the tiny model's hidden size (its MLP keeps the ratio 344/128, its
layers are the preset's), `aux-weight` the weight lambda of iwm-aux's and actobs's world-model loss."""

AXIS_LABELS = {
    "demos": "expert trajectories (fraction of the preset's)",
    "k": "alternatives per expert state (K)",
    "width": "tiny model parameters",
    "aux-weight": "weight lambda of the auxiliary world-model loss",
}
AUX_METHODS = ("iwm-aux", "actobs")


@dataclass
class Sweep:
    axis: str
    values: tuple[float, ...]
    preset: Preset

    def validate(self) -> None:
        if self.axis not in AXES:
            raise UnknownNameError(f"unknown sweep axis {self.axis!r}; valid axes: {', '.join(AXES)}")
        if not self.values or len(set(self.values)) != len(self.values):
            raise InvalidInputError(f"sweep values must be distinct and at least one, got {list(self.values)!r}")
        for value in self.values:
            if self.axis == "demos" and not 0 < value <= 1:
                raise InvalidInputError(
                    f"demos values are fractions of the preset's {self.preset.train_episodes} expert trajectories, "
                    f"in (0, 1]; got {value!r}"
                )
            if self.axis in ("k", "width") and (value != int(value) or value < 1):
                raise InvalidInputError(f"{self.axis} values must be whole numbers of at least 1, got {value!r}")
            if self.axis == "width" and int(value) % self.preset.tiny.heads:
                raise InvalidInputError(
                    f"width {value!r} is not divisible by the tiny model's {self.preset.tiny.heads} attention heads"
                )
        if self.axis == "aux-weight":
            if any(v < 0 for v in self.values):
                raise InvalidInputError(f"aux-weight values must be at least 0, got {list(self.values)!r}")
            if not set(AUX_METHODS) & set(self.preset.methods):
                raise InvalidInputError(
                    f"the aux-weight axis weighs the world-model loss of {' and '.join(AUX_METHODS)}; the preset "
                    f"trains {', '.join(self.preset.methods)}: add them (--methods il,iwm-aux,actobs)"
                )
        if self.axis == "width" and self.preset.model != "tiny":
            raise InvalidInputError(f"the width axis sizes the tiny model; the preset's model is {self.preset.model!r}")
        if self.axis == "demos" and round(min(self.values) * self.preset.train_episodes) < 1:
            raise InvalidInputError(
                f"demos fraction {min(self.values)!r} of {self.preset.train_episodes} trajectories keeps none; "
                f"collect more (--train-episodes) or choose a larger fraction"
            )

    def largest(self) -> Preset:
        """The preset that collection and branching run with: every point's data is a subset of its."""
        if self.axis == "k":
            return replace(self.preset, k=int(max(self.values)))
        return self.preset

    def point(self, value: float, collected: int) -> tuple[str, Preset]:
        """(folder name, preset) of the point at `value`; `collected`: trajectories the branch directory holds."""
        name = f"{self.axis}-{value:g}"
        if self.axis == "demos":
            return name, replace(self.preset, train_episodes=max(1, round(value * collected)))
        if self.axis == "k":
            return name, replace(self.preset, k=int(value))
        if self.axis == "aux-weight":
            train = replace(self.preset.train, aux_weight=float(value))  # this lambda alone, not run's grid
            return name, replace(self.preset, train=train, aux_weights=(float(value),))
        return name, replace(self.preset, tiny=width_config(self.preset.tiny, int(value)))


def width_config(tiny: TinyConfig, width: int) -> TinyConfig:
    """The tiny model at hidden size `width`, its MLP at the default's ratio (344 / 128)."""
    default = TinyConfig()
    return replace(
        tiny, hidden_size=width, intermediate_size=round(width * default.intermediate_size / default.hidden_size)
    )


def sweep(spec: Sweep, out: Path, progress: Progress = no_progress) -> dict[str, Any]:
    """Run every point of `spec` into `out`/points; return the sweep's results (also sweep-results.json)."""
    spec.validate()
    out = Path(out)
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with claimed(out):  # a second launch on the same folder is refused, not run twice
        return _sweep(spec, out, progress)


def _sweep(spec: Sweep, out: Path, progress: Progress) -> dict[str, Any]:
    """`sweep` inside its claim on `out`."""
    settings = json.loads(json.dumps({"axis": spec.axis, "values": list(spec.values), "preset": asdict(spec.preset)}))
    path = out / "sweep.json"
    # Values may be added or dropped on a resume (each point is a run directory of its own); the axis and the
    # preset may not: every point has to differ from the others in the swept value alone.
    if path.exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        if {k: v for k, v in before.items() if k != "values"} != {k: v for k, v in settings.items() if k != "values"}:
            raise InvalidInputError(
                f"{str(out)!r} holds a sweep with other settings; resume it with the same axis and options (values "
                f"may change), or choose another --out"
            )
    write_json_atomic(path, settings)

    largest = spec.largest()
    collected = collect_experts(largest, out / "experts", progress)
    k = largest.k
    if spec.axis == "k" and (out / "branches" / MANIFEST).exists():  # a resume without the largest K: keep its branches
        k = max(k, read_manifest(out / "branches", "branch")["config"]["branch"]["k"])
    with progress("branch", collected) as advance:
        branching = BranchConfig(k=k)
        branch(out / "experts", out / "branches", branching, workers=largest.workers, on_progress=advance)

    points = []
    for value in spec.values:
        name, preset = spec.point(value, collected)
        folder = out / "points" / name
        log.info("sweep point %s", name)
        if spec.axis == "width":
            branches = out / "branches"  # the same data at every width
        else:
            branches = folder / "branches"
            subset(out / "branches", branches, trajectories=preset.train_episodes, k=preset.k)
        results = run(preset, folder, progress, branches=branches)
        points.append(
            {
                "value": value,
                "name": name,
                "trajectories": preset.train_episodes,
                "k": preset.k,
                "parameters": _parameters(preset, folder),
                "results": results["results"],
                "versus_il": results["versus_il"],
                "versus_il_compute": results["versus_il_compute"],
            }
        )
    summary = {
        "axis": spec.axis,
        "values": list(spec.values),
        "env": spec.preset.env,
        "preset": spec.preset.name,
        "seeds": list(spec.preset.seeds),
        "splits": list(spec.preset.splits),
        "points": points,
    }
    write_json_atomic(out / "sweep-results.json", summary)
    (out / "sweep.md").write_text(sweep_markdown(summary), encoding="utf-8")
    sweep_plot(summary, out / "sweep.png")
    write_html(out)
    return summary


def _parameters(preset: Preset, folder: Path) -> int | None:
    """The tiny model's parameters at a point: its vocabulary is what the tokenizer learned from the point's data."""
    if preset.model != "tiny":
        return None
    config = json.loads((RunLayout(folder).tiny(preset.seeds[0]) / "config.json").read_text(encoding="utf-8"))
    return tiny_parameters(preset.tiny, config["vocab_size"])


def point_label(axis: str, point: dict[str, Any]) -> str:
    """How a point is named in tables and on the plot's axis."""
    if axis == "demos":
        return f"{point['value']:g} ({point['trajectories']})"
    if axis == "width":
        return f"{point['value']:g} ({point['parameters'] / 1e6:.1f}M)"
    return f"{point['value']:g}"


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return f"{100 * c['success']:.1f} ({100 * c['ci_low']:.1f}-{100 * c['ci_high']:.1f})"


def _diff(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return f"{100 * c['difference']:+.1f} ({100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f})"


def sweep_markdown(summary: dict[str, Any]) -> str:
    """The sweep's table: success per point and method with its interval, and the paired difference from IL
    (and from IL of equal compute, when the preset trains it)."""
    axis, splits = summary["axis"], summary["splits"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    heading = {
        "demos": "demonstrations (fraction, trajectories)",
        "k": "K",
        "width": "width (parameters)",
        "aux-weight": "lambda",
    }[axis]
    lines = [
        f"## Sweep over {AXIS_LABELS[axis]}: {summary['env']}, seeds {seeds}",
        "",
        "Success % (95% Wilson interval, seeds pooled); difference from IL in points (95% interval, paired over "
        "the same episodes).",
        "",
        f"| {heading} | method | " + " | ".join(splits) + " | " + " | ".join(f"vs IL, {s}" for s in splits) + " |",
        "|---|---|" + "---|" * (2 * len(splits)),
    ]
    has_control = any(p["versus_il_compute"] for p in summary["points"])
    for point in summary["points"]:
        for label in ordered(point["results"]):
            if label == "random":
                continue
            by_split = point["results"][label]
            versus = point["versus_il"].get(label, {})
            lines.append(
                f"| {point_label(axis, point)} | {method_name(label)} | "
                + " | ".join(_cell(by_split.get(s)) for s in splits)
                + " | "
                + " | ".join(_diff(versus.get(s)) for s in splits)
                + " |"
            )
    if has_control:
        lines += [
            "",
            "Difference from IL trained for as many steps as the longest method of the point (paired):",
            "",
            f"| {heading} | method | " + " | ".join(splits) + " |",
            "|---|---|" + "---|" * len(splits),
        ]
        for point in summary["points"]:
            for label in ordered(point["versus_il_compute"]):
                versus = point["versus_il_compute"][label]
                lines.append(
                    f"| {point_label(axis, point)} | {method_name(label)} | "
                    + " | ".join(_diff(versus.get(s)) for s in splits)
                    + " |"
                )
    return "\n".join(lines) + "\n"


def sweep_plot(summary: dict[str, Any], path: Path) -> None:
    """Success against the swept value, one panel per split, one line per method, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis, splits, points = summary["axis"], summary["splits"], summary["points"]
    labels = [m for m in ordered({m for p in points for m in p["results"]}) if m != "random"]
    xs = [p["parameters"] if axis == "width" else p["value"] for p in points]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), dpi=120, sharey=True, squeeze=False)
    spread = (math.log(max(xs)) - math.log(min(xs))) if len(xs) > 1 else 1.0
    highest = max((c["ci_high"] for p in points for m in labels for c in p["results"].get(m, {}).values()), default=1)
    top = min(100, 10 * math.ceil(100 * highest / 10 + 0.5))  # the intervals fill the panel
    for ax, split in zip(axes[0], splits, strict=True):
        for i, label in enumerate(labels):
            # a small horizontal offset per method, so that the intervals do not hide each other
            shift = math.exp((i - (len(labels) - 1) / 2) * 0.012 * spread)
            cells = [(x * shift, p["results"].get(label, {}).get(split)) for x, p in zip(xs, points, strict=True)]
            cells = [(x, c) for x, c in cells if c]
            if not cells:
                continue
            ys = [100 * c["success"] for _, c in cells]
            err = [
                [100 * (c["success"] - c["ci_low"]) for _, c in cells],
                [100 * (c["ci_high"] - c["success"]) for _, c in cells],
            ]
            ax.errorbar([x for x, _ in cells], ys, yerr=err, marker="o", ms=4, capsize=3, label=method_name(label))
        ax.set_xscale("log")
        ax.set_xticks(xs, [point_label(axis, p) for p in points], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel(AXIS_LABELS[axis], fontsize=8)
        ax.set_title(split, fontsize=9)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("success rate (%)")
    axes[0][-1].legend(frameon=False, fontsize=7)
    seeds = ", ".join(str(s) for s in summary["seeds"])
    fig.suptitle(f"{summary['env']}: sweep over {AXIS_LABELS[axis]} (seeds {seeds}; 95% Wilson intervals)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
