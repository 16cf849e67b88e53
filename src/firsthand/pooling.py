"""A study run in parts: runs that differ only in their seeds pooled into one set of tables.

A study too long for one sitting runs one seed per part (`firsthand run --preset standard --seeds 0 --out
runs/standard-0`, then seed 1, ...). Each part's results.json carries every episode's outcome
(`stages.report.outcomes`), so the parts' results.json files alone (kept where the run folders are not, they
are small) give the pooled tables, with intervals that resample all their seeds and tasks together.

    firsthand pool runs/standard-0 runs/standard-1 ... --out runs/standard
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firsthand.artifacts import config_differences, write_json_atomic
from firsthand.contract import InvalidInputError
from firsthand.layout import RunLayout
from firsthand.pipeline import ADDED_LATER
from firsthand.settings import preset_from_dict
from firsthand.stages.report import arms_markdown, merge_outcomes, write_report

log = logging.getLogger(__name__)

__all__ = ["pool_runs"]


def pool_runs(parts: Sequence[Path], out: Path) -> dict[str, Any]:
    """Pool the finished runs `parts` (folders holding results.json; their settings equal but for disjoint
    seeds) into results.json, results.md and results.png in `out`; each low-data arm (`Preset.arms`) that
    parts finished is pooled into out/demos-N. Returns the pooled results."""
    out = Path(out)
    loaded = [_finished(Path(p)) for p in parts]
    if not loaded:
        raise InvalidInputError("no runs to pool: name the run folders of each part (firsthand pool RUN... --out OUT)")
    if any(out.resolve() == Path(p).resolve() for p in parts):
        raise InvalidInputError(f"--out {str(out)!r} is one of the runs to pool; choose another folder")
    _check_alike(parts, loaded)
    seeds = sorted(s for r in loaded for s in r["seeds"])
    preset = preset_from_dict({**loaded[0]["config"], "seeds": seeds})
    out.mkdir(parents=True, exist_ok=True)
    results = write_report(
        out,
        preset,
        [row for r in loaded for row in r["per_seed"]],
        not_trained={m: why for r in loaded for m, why in r.get("not_trained", {}).items()},
        compute_of=_by_seed(r.get("compute_of", {}) for r in loaded),
        aux_weights=_by_seed(r.get("aux_weights", {}) for r in loaded),
        pooled_from={"outcomes": merge_outcomes([r["outcomes"] for r in loaded]), "failures": _failures(loaded)},
    )
    results["pooled_from"] = {str(p): r["seeds"] for p, r in zip(parts, loaded, strict=True)}
    arms = []
    for n in sorted({n for r in loaded for n in r["config"].get("arms", [])}):
        finished = [arm for arm in (RunLayout(Path(p)).arm(n) for p in parts) if (arm / "results.json").exists()]
        if not finished:
            log.warning("no part has finished the arm at %d demonstrations: it is left out", n)
            continue
        results.setdefault("arms", {})[str(n)] = pool_runs(finished, RunLayout(out).arm(n))["results"]
        arms.append(n)
    write_json_atomic(out / "results.json", results)
    if arms:
        with (out / "results.md").open("a", encoding="utf-8") as f:
            f.write(arms_markdown(out, tuple(arms)))
    return results


def _finished(part: Path) -> dict[str, Any]:
    path = part / "results.json"
    if not path.is_file():
        raise InvalidInputError(
            f"{str(part)!r} holds no results.json: finish that run first (firsthand run ... --out {part})"
        )
    results = json.loads(path.read_text(encoding="utf-8"))
    if "outcomes" not in results:
        raise InvalidInputError(
            f"{str(path)!r} has no episode outcomes (written before they were recorded): resume that run with "
            f"this version to rewrite its report, then pool it"
        )
    return results


def _check_alike(parts: Sequence[Path], loaded: list[dict[str, Any]]) -> None:
    """The parts are one study: the same settings (work added later apart) and no seed twice."""

    def settings(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r["config"].items() if k not in ("seeds", *ADDED_LATER)}

    first = settings(loaded[0])
    for part, r in zip(parts[1:], loaded[1:], strict=True):
        differences = config_differences(settings(r), first)
        if differences:
            named = "; ".join(
                f"{key}: {b!r} in {str(parts[0])!r}, {a!r} in {str(part)!r}" for key, a, b in differences[:5]
            )
            raise InvalidInputError(f"only runs that differ in their seeds can be pooled ({named})")
    seen: dict[int, Path] = {}
    for part, r in zip(parts, loaded, strict=True):
        for seed in r["seeds"]:
            if seed in seen:
                raise InvalidInputError(
                    f"seed {seed} is in both {str(seen[seed])!r} and {str(part)!r}; pool each seed once"
                )
            seen[seed] = part


def _by_seed(tables: Any) -> dict[str, dict[str, Any]]:
    """{label: {seed: value}} tables of several runs as one."""
    merged: dict[str, dict[str, Any]] = {}
    for table in tables:
        for label, seeds in table.items():
            merged.setdefault(label, {}).update(seeds)
    return merged


def _failures(loaded: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Lost episodes by failure category, added up over the parts (a part without the table: none at all)."""
    if not all(r.get("failures") for r in loaded):
        return {}
    total: dict[str, dict[str, int]] = {}
    for r in loaded:
        for method, tally in r["failures"].items():
            mine = total.setdefault(method, {})
            for category, count in tally.items():
                mine[category] = mine.get(category, 0) + count
    return total
