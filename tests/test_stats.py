"""Known-answer tests for per-subgroup summaries, bootstrap CIs and permutation tests."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from vaerob_jax.robustness.stats import (
    bootstrap_medians,
    disparity,
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
