from __future__ import annotations

import math
import statistics

import pytest

from firsthand.stats import (
    BUDGET_RULES,
    detectable_difference,
    iwm_schedule,
    paired_comparison,
    paired_difference,
    plan_steps,
    steps_per_epoch,
    two_level_bootstrap,
    wilson_interval,
)


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


def naive_plan(
    method: str, rule: str, expert: int, iwm: int, sr: int, batch: int, epochs: float, il_steps: int | None = None
) -> list:
    """The budget rules spelt out case by case, as METHOD.md states them (auto: paper's, from IL's validated
    budget `il_steps` when there is one)."""
    rule = "paper" if rule == "auto" else rule
    if il_steps is not None:
        epochs = il_steps / math.ceil(expert / batch)
    il = il_steps if il_steps is not None else math.ceil(math.ceil(expert / batch) * epochs)
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
        for il_steps in (1, 37, 2718):  # a budget IL's validation chose: epochs no longer matter
            plan = plan_steps(
                method, rule, expert=expert, iwm=iwm, sr=sr, batch_size=batch, epochs=99, il_steps=il_steps
            )
            assert plan == naive_plan(method, rule, expert, iwm, sr, batch, 99, il_steps)
    with pytest.raises(ValueError, match="auto, paper, matched"):
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


def naive_two_level_bootstrap(grid: list[list[float]], replicates: int, seed: int) -> tuple[float, float, float]:
    """The same resampling written as loops: draw seeds, draw tasks, average the grid over both draws."""
    import random

    rng = random.Random(seed)
    seeds, tasks = len(grid), len(grid[0])
    means = []
    for _ in range(replicates):
        rows = [rng.randrange(seeds) for _ in range(seeds)]
        cols = [rng.randrange(tasks) for _ in range(tasks)]
        means.append(sum(grid[r][c] for r in rows for c in cols) / (seeds * tasks))
    means.sort()
    return means[int(0.025 * replicates)], means[int(0.975 * replicates) - 1], statistics.stdev(means)


def test_two_level_bootstrap_matches_a_naive_loop() -> None:
    import random

    rng = random.Random(3)
    # 3 seeds of different strength on 40 shared tasks of different difficulty
    strength, difficulty = [0.2, 0.5, 0.35], [rng.random() for _ in range(40)]
    grid = [[float(rng.random() < (s + d) / 2) for d in difficulty] for s in strength]
    mean, low, high, se = two_level_bootstrap(grid, replicates=4000, seed=0)
    n_low, n_high, n_se = naive_two_level_bootstrap(grid, 4000, seed=1)
    assert mean == pytest.approx(statistics.fmean(v for row in grid for v in row))
    assert low == pytest.approx(n_low, abs=0.03) and high == pytest.approx(n_high, abs=0.03)
    assert se == pytest.approx(n_se, rel=0.1)
    assert two_level_bootstrap(grid, seed=5) == two_level_bootstrap(grid, seed=5)  # deterministic by seed


def test_seeds_widen_the_interval_that_pooling_hides() -> None:
    """Two seeds that disagree entirely on 300 shared tasks: pooling 600 episodes as independent gives a
    Wilson interval of +-4 points; resampling seeds shows that a seed moves the result by 100."""
    grid = [[1.0] * 300, [0.0] * 300]
    mean, low, high, _ = two_level_bootstrap(grid)
    wilson = wilson_interval(300, 600)
    assert mean == 0.5 and wilson[1] - wilson[0] < 0.1
    assert low == 0.0 and high == 1.0
    # with one seed it is the bootstrap over tasks: its standard error is sd / sqrt(n)
    one = [[float(i % 4 == 0) for i in range(400)]]
    _, _, _, se = two_level_bootstrap(one)
    assert se == pytest.approx(statistics.pstdev(one[0]) / 400**0.5, rel=0.1)


def test_paired_comparison_states_its_detectable_difference() -> None:
    grid = [[1.0 if i % 5 == 0 else 0.0 for i in range(300)] for _ in range(5)]
    c = paired_comparison(grid)
    assert c["difference"] == pytest.approx(0.2) and c["ci_low"] < 0.2 < c["ci_high"]
    _, _, _, se = two_level_bootstrap(grid)
    assert c["detectable"] == pytest.approx(detectable_difference(se)) == pytest.approx(2.8016 * se, rel=1e-3)
    # nothing differs anywhere: the interval stays open (Agresti-Min over the pairs), and so does what it detects
    none = paired_comparison([[0.0] * 50, [0.0] * 50])
    assert none["difference"] == 0 and none["ci_low"] < 0 < none["ci_high"] and none["detectable"] > 0
    # more episodes detect smaller differences
    assert paired_comparison([row * 4 for row in grid])["detectable"] < c["detectable"]
