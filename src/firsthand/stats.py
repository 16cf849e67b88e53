"""Pure functions for the numbers: confidence intervals, paired differences and training budgets."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 one bound is exactly 0 or 1; say so rather than trust rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over `examples` (the last partial batch counts)."""
    return math.ceil(examples / batch_size)


def iwm_schedule(budget: int, iwm_examples: int, batch_size: int, max_share: float) -> tuple[int, int]:
    """Split an IL step budget into (world-model steps, imitation steps) that add up to `budget`.

    Stage 1 is one epoch over the IWM data, capped at `max_share` of the budget (when the rollout data is
    larger, stage 1 sees a subsample of it); stage 2 spends the rest on the expert data.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 step, got {budget}")
    first = min(steps_per_epoch(iwm_examples, batch_size), math.floor(budget * max_share))
    return first, budget - first


BUDGET_RULES: tuple[str, ...] = ("auto", "paper", "matched")
"""How each method's steps follow from IL's budget (`plan_steps`); `auto` is `paper` from a budget chosen on
validation."""


def plan_steps(
    method: str,
    rule: str,
    *,
    expert: int,
    iwm: int = 0,
    sr: int = 0,
    batch_size: int,
    epochs: float,
    iwm_share: float = 0.5,
    il_steps: int | None = None,
) -> list[tuple[str, int]]:
    """A method's training stages as (data, optimizer steps), from the sizes of its datasets.

    IL's budget is `il_steps` when given (the step IL's validation picked: rule `auto`), else `epochs` passes
    over the `expert` examples. Under `paper` and `auto` (the authors' released configurations) IWM trains one
    full epoch of world-model data and then IL's whole budget, and SR trains IL's epochs over the mixed set,
    so both take more steps than IL. Under `matched` (a compute-matched variant) every method gets exactly
    IL's steps: IWM's world-model stage takes one epoch of its data, at most `iwm_share` of the budget, and
    imitation the rest; SR trains on reflections mixed with the expert data. ``iwm+sr`` runs IWM's
    world-model stage, then SR's mixed stage in the place of imitation.
    """
    if rule not in BUDGET_RULES:
        raise ValueError(f"unknown budget rule {rule!r}; valid rules: {', '.join(BUDGET_RULES)}")
    if il_steps is not None:
        if il_steps < 1:
            raise ValueError(f"il_steps must be at least 1, got {il_steps}")
        budget = il_steps
        epochs = il_steps / steps_per_epoch(expert, batch_size)  # the passes over the expert data IL made
    else:
        budget = max(1, math.ceil(steps_per_epoch(expert, batch_size) * epochs))
    if method == "il":
        return [("expert", budget)]
    if rule == "matched":
        first, rest = iwm_schedule(budget, iwm, batch_size, iwm_share) if "iwm" in method else (0, budget)
    else:
        first = steps_per_epoch(iwm, batch_size) if "iwm" in method else 0
        rest = max(1, math.ceil(steps_per_epoch(expert + sr, batch_size) * epochs)) if "sr" in method else budget
    second = "sr+expert" if "sr" in method else "expert"
    return ([("iwm", first)] if "iwm" in method else []) + [(second, rest)]


def paired_difference(
    baseline: Sequence[bool], other: Sequence[bool], z: float = 1.959963984540054
) -> tuple[float, float, float]:
    """Difference in success rate `other - baseline` over the same episodes, with a 95% interval.

    Both methods played the same tasks, so what varies is the per-episode difference d_i = other_i -
    baseline_i (-1, 0 or +1): the interval is far narrower than two independent ones when the methods
    win overlapping episodes. It is Agresti and Min's (2005) adjusted Wald interval for matched pairs:
    half an episode is added to each of the four cells of the paired table (both won, only one, only the
    other, neither) before mean(d) +- z * sqrt(var(d) / n). Unlike the plain Wald interval it does not
    collapse to zero width when no episode differs. Returns (observed difference, low, high).
    """
    if len(baseline) != len(other):
        raise ValueError(f"need the same episodes for both, got {len(baseline)} and {len(other)}")
    n = len(baseline)
    if n == 0:
        return 0.0, -1.0, 1.0
    gained = sum(bool(o) and not bool(b) for b, o in zip(baseline, other, strict=True))
    lost = sum(bool(b) and not bool(o) for b, o in zip(baseline, other, strict=True))
    total = n + 2
    up, down = (gained + 0.5) / total, (lost + 0.5) / total
    centre = up - down
    half = z * math.sqrt(max(up + down - centre * centre, 0.0) / total)
    return (gained - lost) / n, max(-1.0, centre - half), min(1.0, centre + half)


Z_95 = 1.959963984540054
Z_POWER_80 = 0.8416212335729143


def two_level_bootstrap(
    grid: Sequence[Sequence[float]], *, replicates: int = 4000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """Mean of a seeds x tasks grid (every seed played the same tasks) with a percentile interval that
    resamples seeds and tasks together, and the standard error of that mean: (mean, low, high, se).

    Seeds and tasks are crossed, two sources of variance: a replicate draws seeds with replacement and,
    independently, tasks with replacement, and averages the grid over both draws. Pooling the episodes of all
    seeds as if independent (a Wilson interval over seeds x tasks) ignores that every seed played the same
    tasks and that a seed moves all its episodes together. With one seed it is the bootstrap over tasks.
    """
    import numpy as np

    values = np.asarray(grid, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"need a non-empty seeds x tasks grid, got shape {values.shape}")
    seeds, tasks = values.shape
    rng = np.random.default_rng(seed)
    # counts of each seed and each task in a replicate's draw: the replicate's mean is v . G . w / (S T)
    v = rng.multinomial(seeds, [1 / seeds] * seeds, size=replicates).astype(float)
    w = rng.multinomial(tasks, [1 / tasks] * tasks, size=replicates).astype(float)
    means = np.einsum("bs,st,bt->b", v, values, w) / (seeds * tasks)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(values.mean()), float(low), float(high), float(means.std(ddof=1))


def detectable_difference(se: float, *, z: float = Z_95, z_power: float = Z_POWER_80) -> float:
    """The smallest true difference a two-sided test at 5% finds with 80% power, for an estimate with standard
    error `se`: (z_0.975 + z_0.8) x se = 2.80 se."""
    return (z + z_power) * se


def paired_comparison(grid: Sequence[Sequence[float]], *, seed: int = 0) -> dict[str, float]:
    """A method minus its baseline, per (seed, task) of `grid` (-1, 0 or +1 each): the difference, its 95%
    interval resampling seeds and tasks, and the difference detectable at 80% power.

    When no episode differs in any seed the bootstrap has nothing to resample and its interval has no width;
    Agresti and Min's interval over the pooled pairs (`paired_difference`), which half an episode in each cell
    keeps open, stands in for it, and its standard error for the detectable difference."""
    diff, low, high, se = two_level_bootstrap(grid, seed=seed)
    if high - low == 0:
        flat = [d for row in grid for d in row]
        baseline = [d < 0 for d in flat]
        other = [d > 0 for d in flat]
        _, low, high = paired_difference(baseline, other)
        se = (high - low) / (2 * Z_95)
    return {"difference": diff, "ci_low": low, "ci_high": high, "detectable": detectable_difference(se)}
