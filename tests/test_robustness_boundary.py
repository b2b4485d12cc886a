"""004's boundary metrics: margins, exact linear distances, Eqs. 4–7 per group, parity, CIs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from fairlearn.metrics import MetricFrame

from vaerob_jax.fairness import gmm
from vaerob_jax.fairness.mixtures import sample_gmm_1d
from vaerob_jax.robustness.boundary import (
    bootstrap_errors,
    decomposition_rows,
    error_decomposition,
    group_mean,
    linear_distance,
    logit_margin,
    parity_violations,
    softmax_margin,
)


def _random_flags(seed, shape, n_groups):
    rng = np.random.default_rng(seed)
    correct = rng.uniform(size=shape) < 0.7
    flipped = rng.uniform(size=shape) < 0.3
    groups = rng.integers(0, n_groups, shape[-1])
    return correct, flipped, groups


def test_natural_plus_boundary_is_robust_per_example_and_group():
    correct, flipped, groups = _random_flags(0, (3, 200), 4)
    dec = error_decomposition(correct, flipped, groups)
    rob_flags = ~correct | flipped
    np.testing.assert_array_equal(dec.counts["robust"], rob_flags.sum(-1))
    for a in range(4):
        m = groups == a
        np.testing.assert_array_equal(dec.counts["group_robust"][:, a], rob_flags[:, m].sum(-1))
        np.testing.assert_allclose(dec.group_robust[:, a], rob_flags[:, m].mean(-1), rtol=1e-15)
        np.testing.assert_allclose(dec.group_natural[:, a], (~correct[:, m]).mean(-1))
    np.testing.assert_array_equal(dec.natural + dec.boundary, dec.robust)
    np.testing.assert_array_equal(dec.group_natural + dec.group_boundary, dec.group_robust)
    np.testing.assert_allclose(dec.robust, rob_flags.mean(-1), rtol=1e-15)
    rows = decomposition_rows(
        error_decomposition(correct[0], flipped[0], groups), names=["a", "b", "c", "d"]
    )
    assert [r["group"] for r in rows] == ["all", "a", "b", "c", "d"]
    assert sum(r["n"] for r in rows[1:]) == rows[0]["n"] == 200


def test_constant_classifier_has_no_boundary_error():
    # A linear model with w = 0 predicts one class everywhere: never flipped, bdy = 0.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    w, b = np.zeros((3, 2)), np.array([0.5, 0.0])
    dist = linear_distance(x, w, b, norm="linf")
    assert np.all(np.isinf(dist))
    labels = rng.integers(0, 2, 50)
    correct = labels == 0
    dec = error_decomposition(correct, np.asarray(dist) <= 0.3, labels)
    assert dec.boundary == 0.0 and np.all(dec.group_boundary == 0.0)
    assert dec.robust == dec.natural


def test_threshold_model_boundary_error_is_fraction_within_eps():
    # 1-D threshold 1{x > θ}: flipped iff |x − θ| <= ε; bdy = correct points within ε of θ.
    k, theta, eps = 2.0, 0.2, 0.15
    data = sample_gmm_1d(0, 100_000, k)
    x, y = np.asarray(data["x"]), np.asarray(data["label"])
    dist = np.asarray(linear_distance(jnp.asarray(x)[:, None], jnp.ones(1), jnp.float32(-theta)))
    np.testing.assert_allclose(dist, np.abs(x - theta), atol=1e-6)
    correct = (x > theta) == (y == 1)
    dec = error_decomposition(correct, dist <= eps, y)
    want = np.mean(correct & (np.abs(x - theta) <= eps))
    assert dec.boundary == pytest.approx(want, abs=1e-12)
    for a in (0, 1):
        m = y == a
        assert dec.group_boundary[a] == pytest.approx(
            np.mean(correct[m] & (np.abs(x[m] - theta) <= eps)), abs=1e-12
        )
    # ... and it estimates the closed form of Eq. 7 (MC standard error ~1e-3).
    closed = np.asarray(gmm.group_boundary_errors(theta, eps, k))
    np.testing.assert_allclose(dec.group_boundary, closed, atol=4e-3)
    np.testing.assert_allclose(dec.group_natural, np.asarray(gmm.group_errors(theta, k)), atol=6e-3)


def test_parity_forms_hand_computed():
    groups = np.array([0, 0, 0, 1, 1, 2])
    wrong = np.array([True, False, False, True, True, False])
    # err = 1/2; groups: 1/3, 1, 0.
    got = parity_violations(wrong, groups)
    assert got["to_overall"] == pytest.approx(0.5)
    assert got["sum"] == pytest.approx(1 / 6 + 0.5 + 0.5)
    assert got["between_groups"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"group\(s\) \[3\] have no examples"):
        parity_violations(wrong, groups, num_groups=4)
    with pytest.raises(ValueError, match="boolean"):
        parity_violations(wrong.astype(int), groups)


def test_group_tables_agree_with_fairlearn_metricframe():
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(size=(n, 4))
    labels = rng.integers(0, 3, n)
    groups = rng.integers(0, 4, n)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    pred = np.argmax(x @ w + b, axis=1)
    dist = np.asarray(linear_distance(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), "l2"))
    correct, flipped = pred == labels, dist <= 0.2
    dec = error_decomposition(correct, flipped, groups)

    def nat(yt, yp):
        return np.mean(yt != yp)

    # Boundary/robust errors as metrics of (correct, flipped) pairs.
    frame = MetricFrame(
        metrics={"natural": nat}, y_true=labels, y_pred=pred, sensitive_features=groups
    )
    np.testing.assert_allclose(frame.by_group["natural"].to_numpy(), dec.group_natural)
    assert frame.overall["natural"] == pytest.approx(dec.natural)
    par = parity_violations(~correct, groups)
    assert frame.difference(method="to_overall")["natural"] == pytest.approx(par["to_overall"])
    assert frame.difference(method="between_groups")["natural"] == pytest.approx(
        par["between_groups"]
    )
    flags = MetricFrame(
        metrics={"boundary": lambda c, f: np.mean(c & f), "robust": lambda c, f: np.mean(~c | f)},
        y_true=correct,
        y_pred=flipped,
        sensitive_features=groups,
    )
    np.testing.assert_allclose(flags.by_group["boundary"].to_numpy(), dec.group_boundary)
    np.testing.assert_allclose(flags.by_group["robust"].to_numpy(), dec.group_robust)
    # Per-group mean distances.
    capped = np.minimum(dist, 5.0).astype(np.float64)
    overall, per_group = group_mean(capped, groups)
    mf = MetricFrame(
        metrics=lambda d, _: np.mean(d),
        y_true=capped,
        y_pred=pred,
        sensitive_features=groups,
    )
    np.testing.assert_allclose(per_group, mf.by_group.to_numpy().ravel())
    assert overall == pytest.approx(mf.overall)


def test_linear_distances_are_analytic():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 5))
    w, b = rng.normal(size=5), 0.3
    z = x @ w + b
    np.testing.assert_allclose(
        linear_distance(x, w, b, "l2"), np.abs(z) / np.linalg.norm(w), rtol=1e-5
    )
    d_inf = np.asarray(linear_distance(x, w, b, "linf"))
    np.testing.assert_allclose(d_inf, np.abs(z) / np.abs(w).sum(), rtol=1e-5)
    # The worst L∞ perturbation −sign(z)·ε·sign(w) flips exactly when ε > Δ∞.
    for scale, flips in ((1.001, True), (0.999, False)):
        tau = -np.sign(z)[:, None] * (scale * d_inf)[:, None] * np.sign(w)[None, :]
        assert np.all((np.sign((x + tau) @ w + b) != np.sign(z)) == flips)
    # Multi-class: min over j of (z_ŷ − z_j)/‖w_ŷ − w_j‖; the L2 step to that boundary flips.
    wm, bm = rng.normal(size=(5, 4)), rng.normal(size=4)
    zm = x @ wm + bm
    pred = zm.argmax(1)
    want = np.array(
        [
            min(
                (zm[i, pred[i]] - zm[i, j]) / np.linalg.norm(wm[:, pred[i]] - wm[:, j])
                for j in range(4)
                if j != pred[i]
            )
            for i in range(20)
        ]
    )
    got = np.asarray(linear_distance(x, wm, bm, "l2"))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for i in range(20):
        j = min(
            (j for j in range(4) if j != pred[i]),
            key=lambda j, i=i: (
                (zm[i, pred[i]] - zm[i, j]) / np.linalg.norm(wm[:, pred[i]] - wm[:, j])
            ),
        )
        d = wm[:, pred[i]] - wm[:, j]
        step = -d / np.linalg.norm(d)
        assert np.argmax((x[i] + 1.001 * got[i] * step) @ wm + bm) != pred[i]
        assert np.argmax((x[i] + 0.999 * got[i] * step) @ wm + bm) == pred[i]
    with pytest.raises(ValueError, match="norm"):
        linear_distance(x, w, b, "l3")


def test_softmax_gap_one_hot_and_tie():
    assert float(softmax_margin(jnp.array([50.0, 0.0, 0.0]))) == pytest.approx(1.0, abs=1e-6)
    assert float(softmax_margin(jnp.array([1.0, 1.0, -2.0]))) == 0.0
    assert float(logit_margin(jnp.array([1.0, 3.0, 2.5]))) == pytest.approx(0.5)
    p = np.exp([0.2, 1.0, -0.3])
    p /= p.sum()
    assert float(softmax_margin(jnp.array([[0.2, 1.0, -0.3]]))[0]) == pytest.approx(
        np.sort(p)[-1] - np.sort(p)[-2], rel=1e-5
    )


def test_bootstrap_intervals():
    correct, flipped, groups = _random_flags(5, (3, 2000), 2)
    rows = bootstrap_errors(correct, flipped, groups, 0, n_boot=400, over="examples")
    by = {(r["error"], r["statistic"], r["group"]): r for r in rows}
    nat = by[("natural", "rate", "all")]
    assert nat["value"] == pytest.approx(np.mean(~correct))
    assert nat["ci_low"] < nat["value"] < nat["ci_high"]
    # Width ≈ 2·1.96·sd of the mean over 2000 examples shared by 3 seeds (independent flags:
    # the seed average has variance p(1−p)/(3N)).
    p = nat["value"]
    want = 2 * 1.96 * np.sqrt(p * (1 - p) / (3 * 2000))
    assert 0.7 * want < nat["ci_high"] - nat["ci_low"] < 1.3 * want
    for form in ("to_overall", "sum", "between_groups"):
        r = by[("robust", form, "all")]
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    # One seed and over='seeds' has nothing to resample: a degenerate interval.
    one = bootstrap_errors(correct[:1], flipped[:1], groups, 0, n_boot=50, over="seeds")
    assert all(r["ci_low"] == pytest.approx(r["value"]) == pytest.approx(r["ci_high"]) for r in one)
    again = bootstrap_errors(correct, flipped, groups, 0, n_boot=400, over="examples")
    assert again == rows  # seeded
    with pytest.raises(ValueError, match="over must be"):
        bootstrap_errors(correct, flipped, groups, 0, over="models")
