"""The report stage: results.json, results.md (a table like the paper's Table 2) and results.png."""

from __future__ import annotations

import functools
import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from firsthand.artifacts import package_versions, write_json_atomic
from firsthand.contract import FirsthandError
from firsthand.layout import Label, RunLayout, method_name, ordered
from firsthand.registry import make
from firsthand.stats import paired_comparison, two_level_bootstrap, wilson_interval

log = logging.getLogger(__name__)

Wins = Callable[[str, int, str], "dict[str, bool] | None"]
"""(method, seed, split) -> whether each task's episode was won; None where it was not evaluated."""


def episode_wins(out: Path, evaluation: str = "greedy") -> Wins:
    """The per-episode outcomes of a run's evaluation files of `evaluation`, each file read once."""

    @functools.cache
    def wins(method: str, seed: int, split: str) -> dict[str, bool] | None:
        path = RunLayout(out).eval_file(method, seed, split, evaluation)
        if not path.exists():
            return None
        return {e["task"]: bool(e["won"]) for e in json.loads(path.read_text())["episodes"]}

    return wins


OUTCOME = {True: "1", False: "0"}
"""How `outcomes` writes an episode: won, lost; "-": a task of the split this evaluation did not play."""


Played = dict[tuple[str, str, int, str], dict[str, bool]]
"""(evaluation, label, seed, split) -> whether each task's episode was won."""


def outcomes(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every evaluated episode of `rows`, compact: per split its tasks in order, and per evaluation, label,
    seed and split one character per task (`OUTCOME`), so that a run's results.json alone carries what
    seed-and-task intervals need and can be pooled with other seeds' runs (`firsthand pool`)."""
    played: Played = {}
    for r in rows:
        evaluation = r.get("evaluation", "greedy")
        wins = episode_wins(out, evaluation)(r["method"], r["seed"], r["split"])
        if wins is not None:
            played[(evaluation, r["method"], r["seed"], r["split"])] = wins
    return _encoded(played)


def _encoded(played: Played) -> dict[str, Any]:
    tasks: dict[str, set[str]] = defaultdict(set)
    for (_, _, _, split), wins in played.items():
        tasks[split] |= set(wins)
    order = {split: sorted(names) for split, names in tasks.items()}
    won: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for (evaluation, method, seed, split), wins in played.items():
        line = "".join(OUTCOME[wins[t]] if t in wins else "-" for t in order[split])
        won.setdefault(evaluation, {}).setdefault(method, {}).setdefault(str(seed), {})[split] = line
    return {"tasks": order, "won": won}


def outcome_wins(outcomes: dict[str, Any], evaluation: str = "greedy") -> Wins:
    """`episode_wins` read from `outcomes` (a results.json's) instead of a run's evaluation files."""

    def wins(method: str, seed: int, split: str) -> dict[str, bool] | None:
        line = outcomes["won"].get(evaluation, {}).get(method, {}).get(str(seed), {}).get(split)
        if line is None:
            return None
        return {t: c == "1" for t, c in zip(outcomes["tasks"][split], line, strict=True) if c != "-"}

    return wins


def merge_outcomes(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The `outcomes` of several runs as one (runs of other seeds: no label, seed and split is in two)."""
    played: Played = {}
    for part in parts:
        for evaluation, methods in part["won"].items():
            for method, seeds in methods.items():
                for seed, lines in seeds.items():
                    for split in lines:
                        wins = outcome_wins(part, evaluation)(method, int(seed), split)
                        played[(evaluation, method, int(seed), split)] = wins or {}
    return _encoded(played)


def _grid(per_seed: dict[int, dict[str, float]]) -> list[list[float]] | None:
    """Seeds x tasks values over the tasks every seed has; None when they share none."""
    common = sorted(set.intersection(*(set(v) for v in per_seed.values()))) if per_seed else []
    return [[per_seed[s][t] for t in common] for s in sorted(per_seed)] if common else None


def pool(rows: list[dict[str, Any]], wins: Wins | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and split: success over seeds with its 95% interval, which resamples seeds and tasks together
    (`stats.two_level_bootstrap`) where the episodes can be read (`wins`), else a Wilson interval over the
    episodes added up."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        grouped[(r["method"], r["split"])].append(r)
    pooled: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (method, split), group in grouped.items():
        won = sum(r["wins"] for r in group)
        n = sum(r["episodes"] for r in group)
        low, high = wilson_interval(won, n)
        interval = "wilson"
        episodes = {r["seed"]: wins(method, r["seed"], split) for r in group} if wins else {}
        if episodes and all(e for e in episodes.values()):
            grid = _grid({seed: {t: float(w) for t, w in e.items()} for seed, e in episodes.items() if e})
            if grid is not None:
                _, b_low, b_high, _ = two_level_bootstrap(grid)
                if b_high > b_low:  # every episode alike (all lost): nothing to resample, Wilson's stays open
                    low, high, interval = b_low, b_high, "seeds_and_tasks"
        steps = sum(r["mean_steps"] * r["episodes"] for r in group)
        pooled[method][split] = {
            "success": won / n if n else 0.0,
            "ci_low": low,
            "ci_high": high,
            "interval": interval,
            "episodes": n,
            "mean_steps": steps / n if n else 0.0,
            "invalid_rate": sum(r["invalid_rate"] * r["mean_steps"] * r["episodes"] for r in group) / steps
            if steps
            else 0.0,
            # training compute, mean over seeds (absent from evaluations made before it was recorded)
            "train_steps": statistics.fmean(r.get("train_steps", 0) for r in group),
            "train_tokens": statistics.fmean(r.get("train_tokens", 0) for r in group),
            "checkpoint_step": statistics.fmean(r.get("checkpoint_step", r.get("train_steps", 0)) for r in group),
            "seeds": {
                str(r["seed"]): {k: r[k] for k in ("success", "ci_low", "ci_high", "episodes")}
                for r in sorted(group, key=lambda r: r["seed"])
            },
        }
    return dict(pooled)


def versus_il(
    out: Path,
    rows: list[dict[str, Any]],
    baseline_method: str | Callable[[str, int], str | None] = "il",
    wins: Wins | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and split: success minus `baseline_method`'s (IL; or, given a function of (label, seed),
    the label it returns, None for none: a method's compute control in that seed, a model before RL), paired
    over the same episodes (same seed, same tasks), with a 95% interval that resamples seeds and tasks
    together and the difference the comparison could detect at 80% power (`stats.paired_comparison`).

    Read from the evaluation files under `out`/eval (or `wins`)."""
    wins = wins or episode_wins(out)
    pairs: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    baseline_of = baseline_method if callable(baseline_method) else lambda method, seed: baseline_method
    for r in rows:
        label = Label.parse(r["method"])
        if label.method in ("il", "il-compute", "random") and not label.algo and not callable(baseline_method):
            continue
        baseline = baseline_of(r["method"], r["seed"])
        if baseline is None:
            continue
        il, other = wins(baseline, r["seed"], r["split"]), wins(r["method"], r["seed"], r["split"])
        if il is None or other is None:
            continue
        pairs[(r["method"], r["split"])][r["seed"]] = {t: float(other[t]) - float(il[t]) for t in set(il) & set(other)}
    compared: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (method, split), per_seed in pairs.items():
        grid = _grid(per_seed)
        if grid is None:
            continue
        compared[method][split] = {
            **paired_comparison(grid),
            "episodes": sum(map(len, grid)),
            "seeds": len(grid),
        }
    return dict(compared)


def failures(out: Path, rows: list[dict[str, Any]], env: str) -> dict[str, dict[str, int]]:
    """Per method: its lost episodes (all splits and seeds) and how many fall in each of the environment's
    failure categories (`Env.failure_categories`); empty for environments that define none."""
    counts: dict[str, dict[str, int]] = {}
    instances: dict[str, Any] = {}
    try:
        for r in rows:
            path = RunLayout(out).eval_file(r["method"], r["seed"], r["split"])
            if r["method"] == "random" or not path.exists():
                continue
            if r["split"] not in instances:
                instances[r["split"]] = make(env, r["split"])
            lost = [e for e in json.loads(path.read_text())["episodes"] if not e["won"]]
            tally = counts.setdefault(r["method"], {"lost": 0})
            for e in lost:
                try:
                    categories = instances[r["split"]].failure_categories(e["task"], e["actions"])
                except FirsthandError as error:  # episodes the environment cannot replay: no table
                    log.warning("no failure categories: %s", error)
                    return {}
                if not categories:
                    return {}
                tally["lost"] += 1
                for c in categories:
                    tally[c] = tally.get(c, 0) + 1
    finally:
        for instance in instances.values():
            instance.close()
    return counts


def failures_markdown(counts: dict[str, dict[str, int]]) -> str:
    if not counts:
        return ""
    categories = sorted({c for tally in counts.values() for c in tally} - {"lost"}, key=lambda c: (c == "other", c))
    lines = [
        "",
        "Lost episodes by failure category (all splits and seeds; an episode may fall in several):",
        "",
        "| method | lost | " + " | ".join(categories) + " |",
        "|---|---|" + "---|" * len(categories),
    ]
    for m in ordered(counts):
        tally = counts[m]
        lines.append(
            f"| {method_name(m)} | {tally['lost']} | " + " | ".join(str(tally.get(c, 0)) for c in categories) + " |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def _cells(
    by_split: dict[str, dict[str, Any]], splits: tuple[str, ...], fmt: Callable[[dict[str, Any]], str]
) -> list[str]:
    """One table cell per split: `fmt` of its entry, "-" where the split was not evaluated."""
    return [fmt(by_split[s]) if s in by_split else "-" for s in splits]


def comparison_markdown(
    compared: dict[str, dict[str, dict[str, Any]]], splits: tuple[str, ...], baseline: str = "IL"
) -> str:
    methods = ordered(compared)
    if not methods:
        return ""
    lines = [
        "",
        f"Difference from {baseline} in points (paired over the same episodes; 95% interval resampling seeds and "
        f"tasks; detectable: the difference this comparison finds with 80% power at its seeds and episodes):",
        "",
        "| method | " + " | ".join(splits) + " | " + " | ".join(f"detectable ({s})" for s in splits) + " |",
        "|---|" + "---|" * (2 * len(splits)),
    ]
    for m in methods:
        cells = _cells(
            compared[m],
            splits,
            lambda c: f"{_signed(c['difference'])} ({_signed(c['ci_low'])} to {_signed(c['ci_high'])})",
        )
        detectable = _cells(compared[m], splits, lambda c: f"{100 * c['detectable']:.1f}" if "detectable" in c else "-")
        lines.append(f"| {method_name(m)} | " + " | ".join(cells + detectable) + " |")
    return "\n".join(lines) + "\n"


def seeds_markdown(pooled: dict[str, dict[str, dict[str, Any]]], splits: tuple[str, ...]) -> str:
    """Success of each seed, and their mean and standard deviation: how much a seed moves the result."""
    methods = ordered(pooled)
    seeds = sorted({seed for m in methods for c in pooled[m].values() for seed in c["seeds"]}, key=int)
    if len(seeds) < 2:
        return ""
    lines = [
        "",
        "Success % per seed:",
        "",
        "| method | split | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- sd |",
        "|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for m in methods:
        for split in splits:
            c = pooled[m].get(split)
            if not c:
                continue
            values = [c["seeds"][s]["success"] for s in seeds if s in c["seeds"]]
            cells = [_pct(c["seeds"][s]["success"]) if s in c["seeds"] else "-" for s in seeds]
            spread = f"{_pct(statistics.fmean(values))} +- {_pct(statistics.stdev(values))}" if len(values) > 1 else "-"
            lines.append(f"| {method_name(m)} | {split} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines) + "\n"


def markdown(
    pooled: dict[str, dict[str, dict[str, Any]]],
    splits: tuple[str, ...],
    title: str,
    evaluation: str = "",
    *,
    level: int = 1,
) -> str:
    methods = ordered(pooled)
    how = f", {evaluation}" if evaluation else ""
    lines = [
        f"{'#' * level} {title}",
        "",
        f"Success rate % over seeds{how} (95% interval resampling seeds and tasks together; n = episodes of all "
        "seeds).",
        "",
    ]
    lines.append(
        "| method | "
        + " | ".join(splits)
        + f" | mean steps ({splits[0]}) | invalid actions % ({splits[0]}) | optimizer steps | checkpoint step |"
        + " training tokens |"
    )
    lines.append("|---|" + "---|" * len(splits) + "---|---|---|---|---|")
    for m in methods:
        cells = _cells(
            pooled[m],
            splits,
            lambda c: f"{_pct(c['success'])} ({_pct(c['ci_low'])}-{_pct(c['ci_high'])}), n={c['episodes']}",
        )
        first = pooled[m][splits[0]]
        lines.append(
            f"| {method_name(m)} | "
            + " | ".join(cells)
            + f" | {first['mean_steps']:.1f} | {_pct(first['invalid_rate'])} | {first['train_steps']:,.0f} |"
            + f" {first.get('checkpoint_step', first['train_steps']):,.0f} | {first['train_tokens'] / 1e6:.2f}M |"
        )
    return "\n".join(lines) + "\n"


def plot(pooled: dict[str, dict[str, dict[str, Any]]], splits: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ordered(pooled)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3.6), dpi=120)
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        xs, ys, err, dots = [], [], [[], []], []
        for i, m in enumerate(methods):
            c = pooled[m].get(split)
            if not c:
                continue
            xs.append(i + (j - (len(splits) - 1) / 2) * width)
            ys.append(100 * c["success"])
            err[0].append(100 * (c["success"] - c["ci_low"]))
            err[1].append(100 * (c["ci_high"] - c["success"]))
            dots.append([100 * v["success"] for v in c["seeds"].values()])
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=split)
        for x, per_seed in zip(xs, dots, strict=True):
            if len(per_seed) > 1:  # each seed as a dot: the spread that the pooled interval does not show
                ax.scatter([x] * len(per_seed), per_seed, s=9, color="black", zorder=3, alpha=0.6)
    ax.set_xticks(range(len(methods)), [method_name(m).replace(" (", "\n(") for m in methods], fontsize=7)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    several = any(len(c["seeds"]) > 1 for m in methods for c in pooled[m].values())
    ax.set_title(title + ("\nbars: 95% interval over seeds and tasks; dots: each seed" if several else ""), fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG so that `path` exists only when complete, and free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def terminal_summary(results: dict[str, Any]) -> str:
    """The results as plain text within 80 columns (two splits): success with its interval, steps, and the
    paired differences from IL; results.md holds every table."""
    splits = results["splits"]
    pooled = results["results"]

    def row(name: str, cells: list[str], last: str = "", width: int = 18) -> str:
        return f"{name:<22}" + "".join(f"{c:<{width + 2}}" for c in cells) + last

    lines = [row("success %", splits, "steps"), row("", ["(95% interval)"] * len(splits))]
    for m in ordered(pooled):
        cells = _cells(
            pooled[m], tuple(splits), lambda c: f"{_pct(c['success'])} ({_pct(c['ci_low'])}-{_pct(c['ci_high'])})"
        )
        lines.append(row(method_name(m), cells, f"{pooled[m][splits[0]]['train_steps']:,.0f}"))
    for key, baseline in (("versus_il", "IL"), ("versus_il_compute", "IL, equal compute")):
        compared = results.get(key) or {}
        if compared:
            lines += ["", row(f"minus {baseline}" if len(baseline) < 16 else "minus IL, equal comp.", splits, width=22)]
            for m in ordered(compared):
                cells = _cells(
                    compared[m],
                    tuple(splits),
                    lambda c: f"{_signed(c['difference'])} ({_signed(c['ci_low'])} to {_signed(c['ci_high'])})",
                )
                lines.append(row(method_name(m), cells, width=22))
    after = results.get("after_rl") or {}
    if after:
        lines += ["", row("after RL", splits)]
        for m in ordered(after):
            cells = _cells(
                after[m], tuple(splits), lambda c: f"{_pct(c['success'])} ({_pct(c['ci_low'])}-{_pct(c['ci_high'])})"
            )
            lines.append(row(method_name(m)[:21], cells))
    for evaluation, tables in (results.get("evaluations") or {}).items():
        lines += ["", row(f"{evaluation}: success %", splits, f"minus IL ({splits[0]})", width=8)]
        for m in ordered(tables["pooled"]):
            cells = _cells(tables["pooled"][m], tuple(splits), lambda c: _pct(c["success"]))
            versus = tables["compared"].get(m, {}).get(splits[0])
            last = (
                f"{_signed(versus['difference'])} ({_signed(versus['ci_low'])} to {_signed(versus['ci_high'])})"
                if versus
                else ""
            )
            lines.append(row(method_name(m)[:21], cells, last, width=8))
    for m, why in (results.get("not_trained") or {}).items():
        lines += ["", f"{method_name(m)} was not trained: {why}"]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def rl_markdown(
    pooled: dict[str, dict[str, dict[str, Any]]],
    after: dict[str, dict[str, dict[str, Any]]],
    gains: dict[str, dict[str, dict[str, Any]]],
    splits: tuple[str, ...],
) -> str:
    """The paper's Table 3 shape: each starting point's success before RL, after it, and the change (paired
    over the same episodes)."""
    if not after:
        return ""
    lines = [
        "",
        "After RL (success %, 95% interval; change: paired over the same episodes, 95% interval):",
        "",
        "| starting point | RL | " + " | ".join(f"{s} before | {s} after | {s} change" for s in splits) + " |",
        "|---|---|" + "---|---|---|" * len(splits),
    ]
    for label in ordered(after):
        start, algo = str(Label.parse(label).start), Label.parse(label).algo
        cells = []
        for split in splits:
            before, now, gain = (
                pooled.get(start, {}).get(split),
                after[label].get(split),
                gains.get(label, {}).get(split),
            )
            cells.append(_pct(before["success"]) if before else "-")
            cells.append(f"{_pct(now['success'])} ({_pct(now['ci_low'])}-{_pct(now['ci_high'])})" if now else "-")
            cells.append(
                f"{_signed(gain['difference'])} ({_signed(gain['ci_low'])} to {_signed(gain['ci_high'])})"
                if gain
                else "-"
            )
        lines.append(f"| {method_name(start)} | {algo.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rl_curves(out: Path) -> dict[str, list[float]]:
    """Rollout success at each RL iteration per `{label}@{algo}`, the mean over seeds (from out/rl)."""
    runs: dict[str, list[list[float]]] = defaultdict(list)
    for label, _, folder in RunLayout(out).rl_runs():
        stats = folder / "iterations.jsonl"
        if not stats.exists():
            continue
        lines = [json.loads(line) for line in stats.read_text(encoding="utf-8").splitlines() if line]
        runs[str(label)].append([line["success"] for line in lines])
    return {
        label: [statistics.fmean(c[i] for c in curves if i < len(c)) for i in range(max(map(len, curves)))]
        for label, curves in runs.items()
    }


def rl_plot(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Success of the rollouts against RL iterations, one line per starting point and algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for label in ordered(curves):
        ys = [100 * y for y in curves[label]]
        style = "--" if label.endswith("@gigpo") else "-"
        ax.plot(range(1, len(ys) + 1), ys, style, marker="o", markersize=3, label=method_name(label))
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("success of the rollouts (%)")
    ax.set_title(title + "\ntraining tasks, sampled rollouts; mean over seeds", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(
    out: Path,
    preset: Any,
    rows: list[dict[str, Any]],
    not_trained: dict[str, str] | None = None,
    compute_of: dict[str, dict[str, str]] | None = None,
    aux_weights: dict[str, dict[str, Any]] | None = None,
    pooled_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """results.json, results.md and the plots of a run; `not_trained`: methods left out, with the reason;
    `compute_of`: each method's compute control in each seed (IL of its steps there); `aux_weights`: the
    lambda validation chose for each auxiliary method in each seed, with every point's score. The greedy evaluation
    makes the main tables; each other evaluation of `preset.evaluations` (the likeliest valid action,
    sampling) has its own.

    `pooled_from`: the `outcomes` and `failures` of runs of other seeds pooled into `out` (`firsthand pool`),
    read instead of evaluation files, which `out` does not hold."""
    evaluations = tuple(preset.evaluations)
    played = pooled_from["outcomes"] if pooled_from else outcomes(out, rows)
    by_evaluation: dict[str, dict[str, Any]] = {}
    for evaluation in evaluations:
        mine = [r for r in rows if r.get("evaluation", "greedy") == evaluation]
        by_evaluation[evaluation] = _tables(out, mine, outcome_wins(played, evaluation), compute_of or {})
    main = by_evaluation[evaluations[0]]
    plain = [r for r in main["rows"] if not Label.parse(r["method"]).algo]
    lost = pooled_from["failures"] if pooled_from else failures(out, plain, preset.env)
    title = f"{preset.env}: {preset.model}, {preset.train_episodes} expert trajectories, k={preset.k}"
    results = {
        "preset": preset.name,
        "env": preset.env,
        "model": preset.model,
        "seeds": list(preset.seeds),
        "splits": list(preset.splits),
        "evaluation": evaluations[0],
        "results": main["pooled"],
        "versus_il": main["compared"],
        "versus_il_compute": main["compute"],
        "compute_of": compute_of or {},
        "aux_weights": aux_weights or {},
        "failures": lost,
        "after_rl": main["after"],
        "rl_gains": main["gains"],
        "evaluations": {
            e: {k: by_evaluation[e][k] for k in ("pooled", "compared", "compute")} for e in evaluations[1:]
        },
        "per_seed": rows,
        "outcomes": played,
        "not_trained": not_trained or {},
        "config": asdict(preset),
        "versions": package_versions(("torch", "transformers", "trl")),
    }
    write_json_atomic(Path(out) / "results.json", results)
    splits = tuple(preset.splits)
    text = markdown(main["pooled"], splits, title, EVALUATION_NAMES.get(evaluations[0], evaluations[0]))
    text += _comparisons(main, splits)
    text += seeds_markdown(main["pooled"], splits) + failures_markdown(lost)
    text += rl_markdown(main["pooled"], main["after"], main["gains"], splits)
    for evaluation in evaluations[1:]:
        tables = by_evaluation[evaluation]
        text += "\n" + markdown(tables["pooled"], splits, f"{title}; {EVALUATION_NAMES[evaluation]}", "", level=2)
        text += _comparisons(tables, splits)
    text += aux_weights_markdown(aux_weights or {})
    text += "".join(f"\n**{method_name(m)} was not trained**: {why}\n" for m, why in (not_trained or {}).items())
    (Path(out) / "results.md").write_text(text, encoding="utf-8")
    plot(main["pooled"], splits, Path(out) / "results.png", title)
    curves = rl_curves(out) if main["after"] else {}
    if curves:  # the RL logs: a run's own folder only
        rl_plot(curves, Path(out) / "rl.png", title)
    return results


def arms_markdown(out: Path, arms: tuple[int, ...]) -> str:
    """The tables of each low-data arm (`Preset.arms`), under a heading of their own, one level down."""
    parts = []
    for n in arms:
        text = (Path(out) / f"demos-{n}" / "results.md").read_text(encoding="utf-8")
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        parts.append(f"\n# The arm at {n} demonstrations (demos-{n}/)\n\n{text}\n")
    return "".join(parts)


def aux_weights_markdown(aux_weights: dict[str, dict[str, Any]]) -> str:
    """Which lambda each seed's validation chose for each auxiliary method, and every point's score."""
    if not aux_weights:
        return ""
    lines = ["", "## Auxiliary weights chosen on validation", ""]
    for label, seeds in aux_weights.items():
        for seed, choice in sorted(seeds.items(), key=lambda kv: int(kv[0])):
            scores = ", ".join(f"{w}: {100 * v:.1f}" for w, v in choice["validation"].items())
            lines.append(
                f"- {method_name(label)}, seed {seed}: lambda {choice['chosen']:g} (validation score: {scores})"
            )
    return "\n".join(lines) + "\n"


EVALUATIONS: tuple[str, ...] = ("greedy", "score", "sample")
"""How `run` can evaluate a model (`Preset.evaluations`); each writes its own folder (`eval_folder`)."""


EVALUATION_NAMES = {
    "greedy": "greedy generation",
    "score": "the likeliest valid action (decisions apart from spelling)",
    "sample": "generation sampled at the paper's temperature",
}


def _tables(out: Path, rows: list[dict[str, Any]], wins: Wins, compute_of: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One evaluation's numbers: pooled success, differences from IL and from each method's compute control,
    and (greedy) the RL rows."""
    rl_rows = [r for r in rows if Label.parse(r["method"]).algo]
    plain = [r for r in rows if not Label.parse(r["method"]).algo]
    pooled = pool(plain, wins)
    return {
        "rows": plain,
        "pooled": pooled,
        "compared": versus_il(out, plain, wins=wins),
        "compute": versus_il(out, plain, lambda m, seed: compute_of.get(m, {}).get(str(seed)), wins)
        if compute_of
        else {},
        "after": pool(rl_rows, wins),
        "gains": versus_il(out, rl_rows, lambda label, seed: str(Label.parse(label).start), wins),
    }


def _comparisons(tables: dict[str, Any], splits: tuple[str, ...]) -> str:
    return comparison_markdown(tables["compared"], splits) + comparison_markdown(
        tables["compute"], splits, "IL trained for the same optimizer steps"
    )
