"""Known-answer tests for per-subgroup summaries, bootstrap CIs and permutation tests."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from vaerob_jax.robustness.stats import (
    bootstrap_medians,
    disparity,
    friedman_test,
    holm,
    median_range_test,
    permutation_test_median,
    summarize,
)


def test_summary_statistics_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.exponential(size=37)
    groups = np.array(list("abc") * 12 + ["a"])
    rows = summarize(values, groups, 0, n_boot=200)
    assert [r["group"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        x = values[groups == r["group"]]
        assert r["n"] == x.size
        assert r["median"] == pytest.approx(np.median(x))
        assert r["iqr"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
        assert r["mean"] == pytest.approx(np.mean(x))
        assert x.min() <= r["ci_low"] <= r["median"] <= r["ci_high"] <= x.max()


def test_names_and_order():
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    groups = np.array([0, 0, 0, 2, 2])
    rows = summarize(values, groups, 1, n_boot=50, names=("yw", "ym", "ow"))
    assert [(r["group"], r["median"]) for r in rows] == [("yw", 2.0), ("ow", 15.0)]
    rows = summarize(values, groups, 1, n_boot=50, order=[2, 0])
    assert [r["group"] for r in rows] == [2, 0]


def test_bootstrap_medians_brute_force():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])
    meds = bootstrap_medians(x, 500, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    idx = rng.integers(0, x.size, size=(500, x.size))
    want = np.array([np.median(x[row]) for row in idx])
    np.testing.assert_array_equal(meds, want)


def test_bootstrap_ci_covers_true_median_at_nominal_rate():
    # 400 independent samples of n = 60 from Exp(1) (true median ln 2), each its own group.
    rng = np.random.default_rng(123)
    trials, n = 400, 60
    values = rng.exponential(size=trials * n)
    groups = np.repeat(np.arange(trials), n)
    rows = summarize(values, groups, 7, n_boot=1000, ci=0.9)
    covered = np.mean([r["ci_low"] <= np.log(2) <= r["ci_high"] for r in rows])
    assert 0.84 <= covered <= 0.96, covered


def test_summarize_is_seeded():
    rng = np.random.default_rng(2)
    values, groups = rng.normal(size=50), rng.integers(0, 3, size=50)
    a = summarize(values, groups, 11, n_boot=300)
    b = summarize(values, groups, 11, n_boot=300)
    c = summarize(values, groups, 12, n_boot=300)
    assert a == b
    assert a != c
    d = summarize(values, groups, jax.random.key(4), n_boot=300)
    assert d == summarize(values, groups, jax.random.key(4), n_boot=300)


def _brute_force_exact_p(a, b):
    """p over all n! orderings of the pooled sample (each split counted n_a!·n_b! times)."""
    pooled = np.concatenate([a, b])
    t_obs = abs(np.median(a) - np.median(b))
    hits = total = 0
    for perm in itertools.permutations(range(pooled.size)):
        p = pooled[list(perm)]
        t = abs(np.median(p[: a.size]) - np.median(p[a.size :]))
        hits += t >= t_obs - 1e-12
        total += 1
    return hits / total


def test_permutation_p_value_exact_and_monte_carlo_agree_with_enumeration():
    a = np.array([0.3, 1.2, 2.5])
    b = np.array([0.1, 0.2, 0.4, 0.15])
    want = _brute_force_exact_p(a, b)  # 7! = 5040 orderings
    exact = permutation_test_median(a, b, 0, method="exact")
    assert exact == pytest.approx(want, abs=1e-12)
    mc = permutation_test_median(a, b, 0, n_perm=20000, method="monte_carlo")
    assert mc == pytest.approx(want, abs=0.015)
    # 'auto' enumerates when the 35 splits are fewer than n_perm.
    assert permutation_test_median(a, b, 0, n_perm=1000) == exact


def test_permutation_p_small_for_shifted_and_large_for_identical():
    rng = np.random.default_rng(9)
    p_shift = permutation_test_median(rng.normal(size=60), rng.normal(2.0, size=60), 1, n_perm=2000)
    assert p_shift <= 1.0 / 2001 + 1e-12  # no permutation is as extreme: the smallest p
    # Under H0 the p-values are ~uniform: ~10 % below 0.1, mean ~0.5.
    ps = np.array(
        [
            permutation_test_median(rng.normal(size=30), rng.normal(size=30), s, n_perm=300)
            for s in range(60)
        ]
    )
    assert 0.35 <= ps.mean() <= 0.65
    assert np.mean(ps < 0.1) <= 0.25


def test_disparity_reference_ratio_and_p():
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.exponential(1.0, 40), rng.exponential(3.0, 40), rng.exponential(1.0, 40)]
    )
    groups = np.repeat([0, 1, 2], 40)
    names = ("young-women", "old-women", "young-men")
    rows = disparity(values, groups, 0, reference="most_robust", n_perm=2000, names=names)
    meds = [np.median(values[groups == g]) for g in range(3)]
    ref = int(np.argmin(meds))
    by = {r["group"]: r for r in rows}
    for g, name in enumerate(names):
        assert by[name]["reference"] == names[ref]
        assert by[name]["ratio"] == pytest.approx(meds[g] / meds[ref])
        assert by[name]["difference"] == pytest.approx(meds[g] - meds[ref])
    assert np.isnan(by[names[ref]]["p_value"])
    assert by["old-women"]["p_value"] < 0.01
    assert by["old-women"]["ratio"] > 1.5
    # Explicit reference by name; deterministic for the same seed.
    rows2 = disparity(values, groups, 0, reference="old-women", n_perm=2000, names=names)
    assert {r["reference"] for r in rows2} == {"old-women"}
    again = disparity(values, groups, 0, reference="most_robust", n_perm=2000, names=names)
    np.testing.assert_array_equal([r["p_value"] for r in rows], [r["p_value"] for r in again])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length mismatch"):
        summarize(np.ones(3), np.zeros(4), 0)
    with pytest.raises(ValueError, match="empty"):
        summarize(np.ones(0), np.zeros(0), 0)
    with pytest.raises(ValueError, match="NaN"):
        summarize(np.array([1.0, np.nan]), np.zeros(2), 0)
    with pytest.raises(ValueError, match="no examples"):
        summarize(np.ones(3), np.zeros(3), 0, order=[0, 1])
    with pytest.raises(ValueError, match="ci"):
        summarize(np.ones(3), np.zeros(3), 0, ci=95)
    with pytest.raises(ValueError, match="at least 2 groups"):
        disparity(np.ones(3), np.zeros(3), 0)
    with pytest.raises(ValueError, match="reference"):
        disparity(np.ones(4), np.array([0, 0, 1, 1]), 0, reference=5)
    with pytest.raises(ValueError, match="non-empty"):
        permutation_test_median(np.ones(0), np.ones(3), 0)
    with pytest.raises(ValueError, match="key_or_seed"):
        summarize(np.ones(3), np.zeros(3), "seed")


def test_default_reference_is_the_largest_group_and_holm_adjusts_the_family():
    rng = np.random.default_rng(4)
    sizes = (30, 50, 30, 30)  # group 1 is the largest: the reference fixed in advance
    values = np.concatenate([rng.exponential(1.0 + i, n) for i, n in enumerate(sizes)])
    groups = np.repeat(np.arange(4), sizes)
    rows = disparity(values, groups, 0, n_perm=500)
    assert {r["reference"] for r in rows} == {1}
    raw = np.array([r["p_value"] for r in rows if r["group"] != 1])
    adj = np.array([r["p_holm"] for r in rows if r["group"] != 1])
    np.testing.assert_allclose(adj, holm(raw))
    assert np.all(adj >= raw) and np.isnan([r["p_holm"] for r in rows if r["group"] == 1]).all()


def test_holm_matches_its_definition_by_brute_force():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9):
        p = rng.uniform(size=m) ** 3
        p[rng.integers(m)] = p[0]  # a tie
        srt = np.sort(p)
        expect_sorted = [max(min(1.0, (m - j) * srt[j]) for j in range(k + 1)) for k in range(m)]
        got = holm(p)
        np.testing.assert_allclose(np.sort(got), expect_sorted)
        # adjusted values keep the order of the raw ones
        assert np.all(np.diff(got[np.argsort(p, kind="stable")]) >= 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def _binomial_99(n: int, p: float) -> tuple[float, float]:
    from scipy.stats import binom

    lo, hi = binom.interval(0.99, n, p)
    return lo / n, hi / n


def test_omnibus_median_range_test_is_calibrated_under_the_null_and_has_power():
    """4 identically distributed groups × 64: the p < 0.05 rate of the selection-aware
    omnibus test lies in the binomial 99 % interval around 0.05, while the naive p-value of
    the highest-median group against the lowest one (what the report used to quote) is far
    too liberal; a real shift of one group is found almost always."""
    trials, n, alpha = 240, 64, 0.05
    rng = np.random.default_rng(2024)
    groups = np.repeat(np.arange(4), n)
    omni, naive = [], []
    for t in range(trials):
        v = rng.exponential(1.0, 4 * n)
        res = median_range_test(v, groups, t, n_perm=400)
        omni.append(res["p_value"])
        if t < 80:
            hi, lo = res["highest"], res["lowest"]
            naive.append(permutation_test_median(v[groups == hi], v[groups == lo], t, n_perm=400))
    lo_rate, hi_rate = _binomial_99(trials, alpha)
    rate = float(np.mean(np.asarray(omni) < alpha))
    assert lo_rate <= rate <= hi_rate, rate
    assert np.mean(np.asarray(naive) < alpha) > 0.1  # the bug this test guards against
    shifted = []
    for t in range(40):
        v = rng.exponential(1.0, 4 * n)
        v[groups == 2] *= 2.5
        shifted.append(median_range_test(v, groups, t, n_perm=400)["p_value"])
    assert np.mean(np.asarray(shifted) < alpha) > 0.9


def test_holm_keeps_the_family_wise_error_under_the_null():
    """Pairwise tests of 3 groups against a fixed reference, all groups equal: the chance of
    ANY Holm-adjusted p < 0.05 lies in the binomial 99 % interval around (at most) 0.05."""
    trials, n, alpha = 240, 64, 0.05
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(4), n)
    any_reject = []
    for t in range(trials):
        rows = disparity(rng.normal(size=4 * n), groups, t, reference=0, n_perm=300)
        any_reject.append(min(r["p_holm"] for r in rows if r["group"] != 0) < alpha)
    rate = float(np.mean(any_reject))
    assert rate <= _binomial_99(trials, alpha)[1], rate


def test_median_range_test_statistic_groups_and_errors():
    values = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 5.0, 6.0, 7.0])
    groups = np.repeat([0, 1, 2], 3)
    res = median_range_test(values, groups, 0, n_perm=200, names=("a", "b", "c"))
    assert res["statistic"] == pytest.approx(11.0 - 2.0)
    assert (res["highest"], res["lowest"], res["n_groups"]) == ("b", "a", 3)
    # Exact p by brute force over all 9!/(3!3!3!) = 1680 labelings; the Monte Carlo p with
    # many permutations agrees within 4 standard errors.
    spreads = []
    for idx in set(itertools.permutations(groups.tolist())):
        lab = np.asarray(idx)
        med = [np.median(values[lab == k]) for k in range(3)]
        spreads.append(max(med) - min(med))
    exact = float(np.mean(np.asarray(spreads) >= res["statistic"] - 1e-12))
    mc = median_range_test(values, groups, 1, n_perm=20000)["p_value"]
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4, (mc, exact)
    assert res == median_range_test(values, groups, 0, n_perm=200, names=("a", "b", "c"))
    with pytest.raises(ValueError, match="at least 2 groups"):
        median_range_test(values, np.zeros(9), 0)
    with pytest.raises(ValueError, match="n_perm"):
        median_range_test(values, groups, 0, n_perm=0)


# ---- Friedman's test over replicates ------------------------------------------------------
def _friedman_brute_force(table):
    """P(Q* >= Q) over all (G!)^K within-row orderings, enumerated arrangement by arrangement
    (average ranks for ties), and the largest Q* (independent of the library's histogram)."""
    from scipy.stats import rankdata

    ranks = np.stack([rankdata(row) for row in np.asarray(table, float)])
    k, g = ranks.shape

    def q(r):
        return 12 / (k * g * (g + 1)) * np.sum(r.sum(axis=0) ** 2) - 3 * k * (g + 1)

    q_obs = q(ranks)
    perms = list(itertools.permutations(range(g)))
    qs = np.array(
        [
            q(np.stack([ranks[i][list(p)] for i, p in enumerate(arr)]))
            for arr in itertools.product(perms, repeat=k)
        ]
    )
    return float(np.mean(qs >= q_obs - 1e-9)), float(np.mean(qs >= qs.max() - 1e-9)), q_obs


def test_friedman_exact_p_matches_brute_force_enumeration_and_scipy_statistic():
    from scipy.stats import friedmanchisquare

    rng = np.random.default_rng(7)
    for shape in [(3, 4), (2, 3), (4, 3)]:
        table = rng.normal(size=shape)
        res = friedman_test(table)
        p, p_min, q = _friedman_brute_force(table)
        assert res["exact"] and res["n_blocks"] == shape[0] and res["n_groups"] == shape[1]
        assert res["p_value"] == pytest.approx(p, abs=1e-12)
        assert res["min_p"] == pytest.approx(p_min, abs=1e-12)
        assert res["statistic"] == pytest.approx(q)
        assert res["statistic"] == pytest.approx(friedmanchisquare(*table.T).statistic)
        assert 0 <= res["kendall_w"] <= 1
    tied = np.array([[1.0, 1.0, 2.0], [3.0, 1.0, 1.0], [0.5, 0.2, 0.9]])  # average ranks
    res = friedman_test(tied, method="exact")
    p, p_min, q = _friedman_brute_force(tied)
    assert res["p_value"] == pytest.approx(p, abs=1e-12) and res["statistic"] == pytest.approx(q)


def test_friedman_same_ordering_everywhere_reaches_its_smallest_p_and_names_the_group():
    names = ["a", "b", "c", "d"]
    rng = np.random.default_rng(3)
    base = np.array([1.0, 3.0, 2.0, 0.5])
    table = base * rng.uniform(1.0, 1.2, (3, 1)) + np.arange(3)[:, None]  # same order, rescaled
    res = friedman_test(table, names=names)
    assert res["p_value"] == pytest.approx(1 / 576) == res["min_p"]
    assert res["kendall_w"] == pytest.approx(1.0)
    assert (res["highest"], res["lowest"], res["times_highest"]) == ("b", "d", 3)
    assert res["mean_ranks"] == {"a": 2.0, "b": 4.0, "c": 3.0, "d": 1.0}
    # three replicates that disagree completely: W = 0 and p = 1
    cyclic = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0]])
    res = friedman_test(cyclic)
    assert res["kendall_w"] == pytest.approx(0.0, abs=1e-12) and res["p_value"] == pytest.approx(
        1.0
    )


def test_friedman_is_calibrated_under_the_null_exactly_and_by_monte_carlo():
    """Replicates that rank the groups at random: the exact test rejects at 0.05 at the rate
    of its largest attainable level <= 0.05 (computed by enumeration), the Monte-Carlo
    version at about 0.05, and both agree on one table within Monte-Carlo error."""
    rng = np.random.default_rng(11)
    alpha, trials = 0.05, 600
    # The exact null law of p for K = 3, G = 4 from one enumeration: P(p <= alpha).
    ranks = np.tile(np.arange(4.0), (3, 1))
    levels = []
    for arr in itertools.product(itertools.permutations(range(4)), repeat=2):
        t = np.stack([ranks[0], ranks[1][list(arr[0])], ranks[2][list(arr[1])]])
        levels.append(t.sum(axis=0) @ t.sum(axis=0))
    levels = np.asarray(levels)
    p_of = {v: np.mean(levels >= v) for v in np.unique(levels)}
    size = sum(np.mean(levels == v) for v, p in p_of.items() if p <= alpha)
    rate = np.mean(
        [friedman_test(rng.normal(size=(3, 4)))["p_value"] <= alpha for _ in range(trials)]
    )
    lo, hi = _binomial_99(trials, size)
    assert lo <= rate <= hi, (rate, size)
    mc = [
        friedman_test(rng.exponential(size=(8, 6)), t, n_perm=199, method="monte_carlo")["p_value"]
        for t in range(300)
    ]
    lo, hi = _binomial_99(300, alpha)
    assert lo <= np.mean(np.asarray(mc) <= alpha) <= hi
    table = rng.normal(size=(5, 4)) + np.array([0.0, 0.3, 0.6, 0.9])
    exact = friedman_test(table)["p_value"]
    approx = friedman_test(table, 1, n_perm=20_000, method="monte_carlo")
    assert not approx["exact"]
    assert abs(approx["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    # a consistent shift of one group over 8 replicates is found
    shifted = rng.normal(size=(8, 4))
    shifted[:, 2] += 3.0
    assert friedman_test(shifted)["p_value"] < 0.01


def test_friedman_bad_input_is_refused():
    with pytest.raises(ValueError, match="replicates K >= 2"):
        friedman_test(np.ones((1, 4)))
    with pytest.raises(ValueError, match="replicates K >= 2"):
        friedman_test(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        friedman_test(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="names"):
        friedman_test(np.ones((2, 3)), names=["a", "b"])
    with pytest.raises(ValueError, match="method"):
        friedman_test(np.ones((2, 3)), method="asymptotic")
    with pytest.raises(ValueError, match="too large"):
        friedman_test(np.random.default_rng(0).normal(size=(12, 6)), method="exact")
