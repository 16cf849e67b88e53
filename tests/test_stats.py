from __future__ import annotations

import math

import pytest

from firsthand.stats import BUDGET_RULES, iwm_schedule, paired_difference, plan_steps, steps_per_epoch, wilson_interval


def naive_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    # Solve |p - p_hat| = z * sqrt(p (1 - p) / n) for p: the textbook quadratic.
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 128), (1, 1), (99, 200)])
def test_wilson_matches_the_quadratic(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    nlo, nhi = naive_wilson(k, n)
    assert lo == pytest.approx(max(nlo, 0.0), abs=1e-12) and hi == pytest.approx(min(nhi, 1.0), abs=1e-12)
    assert lo <= k / n <= hi


def test_wilson_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_iwm_schedule_adds_up_to_the_budget() -> None:
    assert steps_per_epoch(33, 16) == 3
    assert iwm_schedule(100, 160, 16, 0.5) == (10, 90)  # one IWM epoch fits
    assert iwm_schedule(100, 16000, 16, 0.5) == (50, 50)  # capped at half the budget
    for budget in (1, 7, 100):
        first, second = iwm_schedule(budget, 999, 8, 0.5)
        assert first + second == budget and second >= budget / 2


def naive_plan(method: str, rule: str, expert: int, iwm: int, sr: int, batch: int, epochs: float) -> list:
    """The budget rules spelt out case by case, as METHOD.md states them."""
    il = math.ceil(math.ceil(expert / batch) * epochs)
    one_iwm_epoch = math.ceil(iwm / batch)
    sr_epochs = math.ceil(math.ceil((expert + sr) / batch) * epochs)
    capped = min(one_iwm_epoch, math.floor(il / 2))
    table = {
        ("il", "matched"): [("expert", il)],
        ("il", "paper"): [("expert", il)],
        ("iwm", "matched"): [("iwm", capped), ("expert", il - capped)],
        ("iwm", "paper"): [("iwm", one_iwm_epoch), ("expert", il)],
        ("sr", "matched"): [("sr+expert", il)],
        ("sr", "paper"): [("sr+expert", sr_epochs)],
        ("iwm+sr", "matched"): [("iwm", capped), ("sr+expert", il - capped)],
        ("iwm+sr", "paper"): [("iwm", one_iwm_epoch), ("sr+expert", sr_epochs)],
    }
    return table[(method, rule)]


@pytest.mark.parametrize("rule", BUDGET_RULES)
@pytest.mark.parametrize("method", ["il", "iwm", "sr", "iwm+sr"])
def test_plan_steps_follows_each_budget_rule(method: str, rule: str) -> None:
    for expert, iwm, sr, batch, epochs in [(1843, 16587, 1843, 4, 6), (100, 48, 90, 16, 2), (100, 900, 100, 16, 2.5)]:
        plan = plan_steps(method, rule, expert=expert, iwm=iwm, sr=sr, batch_size=batch, epochs=epochs)
        assert plan == naive_plan(method, rule, expert, iwm, sr, batch, epochs)
    with pytest.raises(ValueError, match="matched, paper"):
        plan_steps(method, "equal", expert=10, batch_size=4, epochs=1)


def test_the_quickstart_plans_of_the_issue() -> None:
    """The step counts measured by hand on the quickstart's data (300 trajectories, batch 4, 6 epochs)."""
    sizes = dict(expert=1843, iwm=16587, sr=1843, batch_size=4, epochs=6)
    assert plan_steps("il", "paper", **sizes) == [("expert", 2766)]
    assert plan_steps("iwm", "matched", **sizes) == [("iwm", 1383), ("expert", 1383)]
    assert plan_steps("iwm", "paper", **sizes) == [("iwm", 4147), ("expert", 2766)]


def naive_paired_difference(a: list[bool], b: list[bool], z: float = 1.959963984540054) -> tuple[float, float, float]:
    # Agresti-Min: the per-episode differences plus four pseudo-episodes of weight 1/2, one in each cell
    # of the paired table (+1, -1, and two ties); then a Wald interval on their weighted mean.
    d = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    values, weights = d + [1, -1, 0, 0], [1.0] * len(d) + [0.5] * 4
    total = sum(weights)
    mean = sum(w * v for w, v in zip(weights, values, strict=True)) / total
    variance = sum(w * (v - mean) ** 2 for w, v in zip(weights, values, strict=True)) / total
    half = z * math.sqrt(variance / total)
    return sum(d) / len(d), mean - half, mean + half


@pytest.mark.parametrize("seed", range(5))
def test_paired_difference_matches_the_adjusted_per_episode_differences(seed: int) -> None:
    import random

    rng = random.Random(seed)
    a = [rng.random() < 0.4 for _ in range(120)]
    b = [x if rng.random() < 0.7 else rng.random() < 0.6 for x in a]  # correlated with a, as two policies are
    got = paired_difference(a, b)
    want = naive_paired_difference(a, b)
    assert got == pytest.approx(want, abs=1e-12)
    assert got[1] <= got[0] <= got[2]


def test_paired_difference_edge_cases() -> None:
    diff, low, high = paired_difference([False] * 4, [False] * 4)  # nothing differs: still not certain
    assert diff == 0.0 and low == pytest.approx(-high) and 0.3 < high < 0.5
    diff, low, high = paired_difference([False] * 50, [True] * 50)
    assert diff == 1.0 and 0.85 < low < high == 1.0
    assert paired_difference([], []) == (0.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([True], [True, False])
