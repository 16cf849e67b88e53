"""Reports: results.json, results.md (a table like the paper's Table 2) and results.png."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from firsthand.artifacts import package_versions, write_json_atomic
from firsthand.stats import wilson_interval

METHOD_NAMES = {"random": "Random", "prompt": "Prompt", "il": "IL", "iwm": "IWM", "sr": "SR"}
ORDER = ("random", "prompt", "il", "iwm", "sr")


def pool(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and split: success pooled over seeds (episodes added up) with its Wilson interval."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        grouped[(r["method"], r["split"])].append(r)
    pooled: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (method, split), group in grouped.items():
        wins = sum(r["wins"] for r in group)
        n = sum(r["episodes"] for r in group)
        low, high = wilson_interval(wins, n)
        steps = sum(r["mean_steps"] * r["episodes"] for r in group)
        pooled[method][split] = {
            "success": wins / n if n else 0.0,
            "ci_low": low,
            "ci_high": high,
            "episodes": n,
            "mean_steps": steps / n if n else 0.0,
            "invalid_rate": sum(r["invalid_rate"] * r["mean_steps"] * r["episodes"] for r in group) / steps
            if steps
            else 0.0,
            "seeds": {
                str(r["seed"]): {k: r[k] for k in ("success", "ci_low", "ci_high", "episodes")}
                for r in sorted(group, key=lambda r: r["seed"])
            },
        }
    return dict(pooled)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(pooled: dict[str, dict[str, dict[str, Any]]], splits: tuple[str, ...], title: str) -> str:
    methods = [m for m in ORDER if m in pooled]
    lines = [f"# {title}", "", "Success rate % (95% Wilson interval), pooled over seeds.", ""]
    lines.append("| method | " + " | ".join(splits) + " | mean steps | invalid actions % |")
    lines.append("|---|" + "---|" * len(splits) + "---|---|")
    for m in methods:
        cells = []
        for s in splits:
            c = pooled[m].get(s)
            cells.append(
                f"{_pct(c['success'])} ({_pct(c['ci_low'])}-{_pct(c['ci_high'])}), n={c['episodes']}" if c else "-"
            )
        first = pooled[m][splits[0]]
        lines.append(
            f"| {METHOD_NAMES.get(m, m)} | "
            + " | ".join(cells)
            + f" | {first['mean_steps']:.1f} | {_pct(first['invalid_rate'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(pooled: dict[str, dict[str, dict[str, Any]]], splits: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ORDER if m in pooled]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3.6), dpi=120)
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        xs, ys, err = [], [], [[], []]
        for i, m in enumerate(methods):
            c = pooled[m].get(split)
            if not c:
                continue
            xs.append(i + (j - (len(splits) - 1) / 2) * width)
            ys.append(100 * c["success"])
            err[0].append(100 * (c["success"] - c["ci_low"]))
            err[1].append(100 * (c["ci_high"] - c["success"]))
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=split)
    ax.set_xticks(range(len(methods)), [METHOD_NAMES.get(m, m) for m in methods])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_report(out: Path, preset: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = pool(rows)
    title = f"{preset.env}: {preset.model}, {preset.train_episodes} expert trajectories, k={preset.k}"
    results = {
        "preset": preset.name,
        "env": preset.env,
        "model": preset.model,
        "seeds": list(preset.seeds),
        "splits": list(preset.splits),
        "results": pooled,
        "per_seed": rows,
        "config": asdict(preset),
        "versions": package_versions(("torch", "transformers", "trl")),
    }
    write_json_atomic(Path(out) / "results.json", results)
    (Path(out) / "results.md").write_text(markdown(pooled, tuple(preset.splits), title), encoding="utf-8")
    plot(pooled, tuple(preset.splits), Path(out) / "results.png", title)
    return results
