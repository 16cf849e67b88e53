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


BUDGET_RULES: tuple[str, ...] = ("matched", "paper")


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
) -> list[tuple[str, int]]:
    """A method's training stages as (data, optimizer steps), from the sizes of its datasets.

    IL's budget is `epochs` passes over the `expert` examples. Under `matched` (the paper's text) every
    method gets exactly that many steps: IWM's world-model stage takes one epoch of its data, at most
    `iwm_share` of the budget, and imitation the rest; SR trains on reflections mixed with the expert data.
    Under `paper` (its released configurations) IWM trains one full epoch of world-model data and then
    IL's whole budget, and SR trains `epochs` passes over the mixed set, so both take more steps than IL.
    ``iwm+sr`` runs IWM's world-model stage, then SR's mixed stage in the place of imitation.
    """
    if rule not in BUDGET_RULES:
        raise ValueError(f"unknown budget rule {rule!r}; valid rules: {', '.join(BUDGET_RULES)}")
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
