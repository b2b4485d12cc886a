"""Sampled mixtures of 004 §5: samplers, empirical Eq. 3, trained thresholds, d-dim reduction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from vaerob_jax.fairness import gmm
from vaerob_jax.fairness.mixtures import (
    empirical_fair_objective,
    empirical_group_errors,
    make_gmm2d,
    optimal_linear,
    project_linear,
    sample_gmm,
    sample_gmm_1d,
    train_linear,
    train_thresholds,
)


def test_samplers_are_seeded_stratified_and_have_the_right_moments():
    a = sample_gmm_1d(0, 40_001, 3.0, -1.0, 1.0)
    b = sample_gmm_1d(jax.random.key(0), 40_001, 3.0, -1.0, 1.0)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], sample_gmm_1d(1, 40_001, 3.0)["x"])
    x, y = np.asarray(a["x"]), np.asarray(a["label"])
    np.testing.assert_array_equal(a["group"], y)
    assert (y == 1).sum() == 20_000 and (y == 0).sum() == 20_001
    assert x[y == 0].mean() == pytest.approx(-1.0, abs=0.03)
    assert x[y == 1].mean() == pytest.approx(1.0, abs=0.06)
    assert x[y == 0].std() == pytest.approx(1.0, rel=0.02)
    assert x[y == 1].std() == pytest.approx(3.0, rel=0.02)
    skew = sample_gmm_1d(0, 1000, 2.0, p=0.3)
    assert int(skew["label"].sum()) == 300
    two = make_gmm2d(0, 500)
    assert two["x"].shape == (500, 2) and two["x"].dtype == jnp.float32
    assert two["label"].dtype == jnp.int32
    with pytest.raises(ValueError, match="K must be > 1"):
        sample_gmm_1d(0, 10, 0.5)
    with pytest.raises(ValueError, match="p \\(share"):
        sample_gmm(0, 10, [0.0], [1.0], 2.0, p=1.5)


def test_empirical_objective_is_exact_and_close_to_population():
    # Check 3 of spec 004 §3: exact empirical 0/1 objective vs the closed form (flat optimum:
    # the argmin agrees only to ~0.05, the objective value much better).
    data = sample_gmm_1d(2, 200_000, 3.0)
    x, y = np.asarray(data["x"]), np.asarray(data["label"])
    ts = jnp.linspace(-1.0, 1.0, 2001)
    for theta in (-0.7, 0.0, 0.33):  # brute-force counts
        e_neg, e_pos = empirical_group_errors(jnp.float32(theta), x, y)
        assert float(e_neg) == pytest.approx(np.mean(x[y == 0] > theta), abs=1e-6)
        assert float(e_pos) == pytest.approx(np.mean(x[y == 1] <= theta), abs=1e-6)
    for lam, reduce in ((0.0, "sum"), (0.1, "mean"), (0.4, "sum")):
        obj = np.asarray(empirical_fair_objective(ts, lam, x, y, reduce=reduce))
        closed = float(gmm.theta_fair_lambda(lam, 3.0, reduce=reduce))
        assert abs(float(ts[obj.argmin()]) - closed) < 0.05, lam
        assert obj.min() == pytest.approx(
            float(gmm.fair_objective(closed, lam, 3.0, reduce=reduce)), abs=5e-3
        )


def test_trained_thresholds_match_closed_forms_on_objective_values():
    # Check 4 of spec 004 §3: sigmoid surrogate, Adam, vmapped over λ; compare objectives.
    k = 3.0
    data = sample_gmm_1d(3, 40_000, k)
    lams = jnp.array([0.0, 0.1, 0.2, 0.4])  # sum form: λ_c = 0.25
    res = train_thresholds(data["x"], data["label"], lams, steps=1000)
    closed = gmm.theta_fair_lambda(lams, k)
    at_trained = gmm.fair_objective(res["theta"], lams, k)
    at_closed = gmm.fair_objective(closed, lams, k)
    np.testing.assert_allclose(at_trained, at_closed, atol=1e-3)
    assert np.all(np.asarray(at_trained) >= np.asarray(at_closed) - 1e-6)  # closed = optimum
    e_neg, e_pos = gmm.group_errors(res["theta"][3], k)
    assert abs(float(e_neg - e_pos)) < 0.01  # λ > λ_c: equal group errors
    # The mean form needs twice the λ for the same thresholds.
    mean = train_thresholds(data["x"], data["label"], 2 * lams, steps=1000, reduce="mean")
    np.testing.assert_allclose(mean["theta"], res["theta"], atol=0.03)
    with pytest.raises(ValueError, match="lams"):
        train_thresholds(data["x"], data["label"], [-0.1])


def _population_ramp_minimiser(k, scale):
    def ramp(m):
        return np.clip(1.0 - m, 0.0, 1.0)

    def risk(t):
        neg = integrate.quad(
            lambda x: ramp(scale * (t - x)) * stats.norm.pdf(x, -1, 1),
            -20,
            20,
            points=[t, t - 1 / scale],
        )[0]
        pos = integrate.quad(
            lambda x: ramp(scale * (x - t)) * stats.norm.pdf(x, 1, k),
            -40,
            40,
            points=[t, t + 1 / scale],
        )[0]
        return 0.5 * neg + 0.5 * pos

    return optimize.minimize_scalar(risk, bounds=(-1.0, 2.0), method="bounded").x


def test_fig8_losses_reach_their_population_minimisers():
    # Fig. 8's losses at λ = 0 on the K = 3 mixture: each trained threshold is the population
    # minimiser of its own loss. Exponential: E e^{x−θ} (class −1) + E e^{θ−x} (class +1) is
    # minimal at θ = (μ_ + 1/2 + μ̄ − K²/2)/2; ramp: by quadrature. A narrow ramp (margin
    # scale 20) approaches the 0/1 (Bayes) threshold; the unit ramp does not.
    k = 3.0
    data = sample_gmm_1d(4, 40_000, k)

    def fit(loss, scale=1.0):
        res = train_thresholds(
            data["x"],
            data["label"],
            [0.0],
            loss=loss,
            steps=1500,
            learning_rate=0.02,
            margin_scale=scale,
        )
        return float(res["theta"][0])

    assert fit("exp") == pytest.approx((-1.0 + 0.5 + 1.0 - k * k / 2) / 2, abs=0.1)
    for scale in (1.0, 20.0):
        assert fit("ramp", scale) == pytest.approx(_population_ramp_minimiser(k, scale), abs=0.06)
    assert abs(fit("ramp", 20.0) - float(gmm.theta_star(k))) < 0.06


def test_d_dimensional_reduction():
    # Check 5 of spec 004 §3: N(μ_, I) vs N(μ̄, K²I) with a linear model reduces to 1-D.
    lo = np.zeros(5, np.float32)
    hi = np.array([1.0, 1.0, 0.5, 0.0, 0.0], np.float32)
    k = 2.0
    data = sample_gmm(5, 40_000, lo, hi, k)
    res = train_linear(data["x"], data["label"], [0.0], steps=1500, key=1)
    u = (hi - lo) / np.linalg.norm(hi - lo)
    assert float(res["w"][0] @ u) > 0.99
    a, c, theta = project_linear(res["w"][0], res["b"][0], lo, hi)
    d = float(np.linalg.norm(hi - lo))
    w_opt, b_opt = optimal_linear(lo, hi, k)
    np.testing.assert_allclose(w_opt, u, rtol=1e-6)
    a0, c0, theta0 = project_linear(w_opt, b_opt, lo, hi)
    assert float(c0 - a0) == pytest.approx(d, rel=1e-6)
    assert float(theta0 - a0) == pytest.approx(float(gmm.theta_star(k, 0.0, d)), abs=1e-5)
    nat_trained = float(gmm.natural_error(theta, k, a, c))
    nat_opt = float(gmm.natural_error(gmm.theta_star(k, 0.0, d), k, 0.0, d))
    assert nat_opt - 1e-6 <= nat_trained < nat_opt + 2e-3
    # The projected formulas give a linear model's errors and L2 distances (Monte Carlo).
    w, b = np.array([0.8, 0.3, 0.0, -0.2, 0.1], np.float32), np.float32(-0.4)
    x, y = np.asarray(data["x"]), np.asarray(data["label"])
    a, c, theta = project_linear(w, b, lo, hi)
    score = x @ w + b
    e_neg, e_pos = gmm.group_errors(theta, k, a, c)
    assert np.mean(score[y == 0] > 0) == pytest.approx(float(e_neg), abs=6e-3)
    assert np.mean(score[y == 1] <= 0) == pytest.approx(float(e_pos), abs=6e-3)
    dist = np.abs(score) / np.linalg.norm(w)
    g_neg, g_pos = gmm.group_distances(theta, k, a, c)
    assert dist[y == 0].mean() == pytest.approx(float(g_neg), rel=0.02)
    assert dist[y == 1].mean() == pytest.approx(float(g_pos), rel=0.02)
    r_neg, r_pos = gmm.group_robust_errors(theta, 0.2, k, a, c)  # L2 ε = 0.2
    wrong = (score > 0) != (y == 1)
    assert np.mean((wrong | (dist <= 0.2))[y == 0]) == pytest.approx(float(r_neg), abs=6e-3)
    assert np.mean((wrong | (dist <= 0.2))[y == 1]) == pytest.approx(float(r_pos), abs=6e-3)
