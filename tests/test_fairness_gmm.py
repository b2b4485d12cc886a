"""Gaussian-mixture theory of 004 §5 (spec 004 §3): closed forms, errors, distances, theorems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from vaerob_jax.fairness import gmm, theorems


def _errors_np(theta, k, lo, hi):
    return stats.norm.sf(theta - lo), stats.norm.cdf((theta - hi) / k)


def _minimise(fn, lo, hi, *args):
    res = optimize.minimize_scalar(
        fn, bounds=(lo, hi), method="bounded", args=args, options={"xatol": 1e-12, "maxiter": 2000}
    )
    return res.x


def _nat(theta, k, lo, hi, p):
    e_neg, e_pos = _errors_np(theta, k, lo, hi)
    return (1 - p) * e_neg + p * e_pos


def _eq3(theta, lam, k, lo, hi, p, reduce):
    e_neg, e_pos = _errors_np(theta, k, lo, hi)
    total = (1 - p) * e_neg + p * e_pos
    pen = abs(e_neg - total) + abs(e_pos - total)
    return total + (lam if reduce == "sum" else lam / 2) * pen


@pytest.mark.parametrize(
    ("k", "lo", "hi", "p"),
    [
        (2.0, -1.0, 1.0, 0.5),
        (3.0, 0.0, 1.5, 0.5),
        (1.3, -1.0, 1.0, 0.5),
        (2.0, -1.0, 1.0, 0.3),
        (2.5, -1.0, 1.0, 0.6),
    ],
)
def test_closed_forms_match_bounded_minimisation(k, lo, hi, p):
    # Check 1 of spec 004 §3: every closed form vs scipy's bounded minimiser (float64), 1e-5.
    with jax.enable_x64(True):
        ts = float(gmm.theta_star(k, lo, hi, p, clip=True))
        want = _minimise(_nat, lo, hi, k, lo, hi, p)
        assert abs(ts - want) < 1e-5
        for eps in (0.05, 0.2):
            tr = float(gmm.theta_robust(eps, k, lo, hi, p, clip=True))
            want = _minimise(_nat, lo, hi, k, lo + eps, hi - eps, p)
            assert abs(tr - want) < 1e-5, eps
        # θ_f zeroes the violation |e₋ − e₊| (root of a monotone difference).
        tf = float(gmm.theta_fair(k, lo, hi))
        root = optimize.brentq(lambda t: np.subtract(*_errors_np(t, k, lo, hi)), lo, hi, xtol=1e-14)
        assert abs(tf - root) < 1e-9
        for reduce in ("sum", "mean"):
            lam_c = float(gmm.lambda_critical(k, p, reduce=reduce))
            for lam in (0.0, 0.3 * lam_c, 0.8 * lam_c, 1.5 * lam_c, 3.0):
                got = float(gmm.theta_fair_lambda(lam, k, lo, hi, p, reduce=reduce, clip=True))
                want = _minimise(_eq3, lo, hi, lam, k, lo, hi, p, reduce)
                assert abs(got - want) < 1e-5, (reduce, lam)


def test_reference_table_values():
    # Spec 004 §3 reference values (μ = ±1, ε = 0.1; natural / fair / robust).
    table = {
        2.0: dict(
            theta=(0.2376, -0.3333, 0.3134),
            nat=(0.2297, 0.2525, 0.2301),
            bdy=(0.0192, 0.0246, 0.0185),
            rob=(0.2489, 0.2771, 0.2486),
            dist=(1.526, 1.453, 1.545),
        ),
        5.0: dict(
            theta=(0.7946, -0.6667, 0.8941),
            nat=(0.2600, 0.3694, 0.2603),
            bdy=(0.0083, 0.0229, 0.0076),
            rob=(0.2683, 0.3924, 0.2680),
            dist=(2.908, 2.525, 2.953),
        ),
    }
    for k, ref in table.items():
        th = jnp.stack([gmm.theta_star(k), gmm.theta_fair(k), gmm.theta_robust(0.1, k)])
        np.testing.assert_allclose(th, ref["theta"], atol=6e-5)
        np.testing.assert_allclose(gmm.natural_error(th, k), ref["nat"], atol=6e-5)
        np.testing.assert_allclose(gmm.boundary_error(th, 0.1, k), ref["bdy"], atol=6e-5)
        np.testing.assert_allclose(gmm.robust_error(th, 0.1, k), ref["rob"], atol=6e-5)
        np.testing.assert_allclose(gmm.expected_distance(th, k), ref["dist"], atol=6e-4)
    # Per-group distances at K = 2: fair (−1, +1) = (.969, 1.938), natural (1.341, 1.710).
    np.testing.assert_allclose(
        gmm.group_distances(gmm.theta_fair(2.0), 2.0), (0.969, 1.938), atol=6e-4
    )
    np.testing.assert_allclose(
        gmm.group_distances(gmm.theta_star(2.0), 2.0), (1.341, 1.710), atol=6e-4
    )
    # Fair models' robust error grows with K: .277/.333/.392 for K = 2/3/5 at ε = 0.1.
    ks = jnp.array([2.0, 3.0, 5.0])
    np.testing.assert_allclose(
        gmm.robust_error(gmm.theta_fair(ks), 0.1, ks), (0.277, 0.333, 0.392), atol=6e-4
    )
    # Fig. 2's K = 10 lies outside Theorem 1: θ* = 1.146 > μ̄, clipped to μ̄.
    assert abs(float(gmm.theta_star(10.0)) - 1.146) < 1e-3
    assert float(gmm.theta_star(10.0, clip=True)) == 1.0


def test_theorem3_values_k3():
    lams = jnp.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.9])
    want = [0.4919, 0.3571, 0.2067, 0.0312, -0.5, -0.5]
    np.testing.assert_allclose(gmm.theta_fair_lambda(lams, 3.0, reduce="mean"), want, atol=6e-5)
    # The sum form of Eq. 3 reaches the same thresholds at half the λ (spec 004 §0).
    np.testing.assert_allclose(gmm.theta_fair_lambda(lams / 2, 3.0), want, atol=6e-5)
    assert float(gmm.lambda_critical(3.0, reduce="mean")) == pytest.approx(0.5)
    assert float(gmm.lambda_critical(3.0)) == pytest.approx(0.25)


def test_vmappable_over_theta_eps_k_lambda():
    ks = jnp.array([1.5, 2.0, 4.0])
    eps = jnp.array([0.0, 0.1, 0.3])
    lams = jnp.array([0.0, 0.05, 0.4])
    np.testing.assert_allclose(jax.vmap(gmm.theta_robust)(eps, ks), gmm.theta_robust(eps, ks))
    got = jax.vmap(lambda lam, k: gmm.theta_fair_lambda(lam, k))(lams, ks)
    np.testing.assert_allclose(got, gmm.theta_fair_lambda(lams, ks), rtol=1e-6)
    th = jnp.linspace(-1, 1, 5)
    grid = jax.vmap(jax.vmap(gmm.boundary_error, (None, 0, None)), (0, None, None))(th, eps, 2.0)
    np.testing.assert_allclose(grid, gmm.boundary_error(th[:, None], eps[None, :], 2.0), rtol=1e-6)
    # Differentiable: dθ*/dK by autodiff equals a central difference.
    with jax.enable_x64(True):
        g = jax.grad(gmm.theta_star)(2.0)
        fd = (gmm.theta_star(2.0 + 1e-6) - gmm.theta_star(2.0 - 1e-6)) / 2e-6
        assert abs(float(g) - float(fd)) < 1e-6


def test_float32_closed_form_is_stable_near_k_one():
    # The cancellation-free root keeps float32 accurate where (−d + K√D)/(K² − 1) is not.
    with jax.enable_x64(True):
        want = np.asarray(gmm.theta_star(jnp.array([1.0001, 1.01, 1.2])))
    got = np.asarray(gmm.theta_star(jnp.array([1.0001, 1.01, 1.2], jnp.float32)))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_boundary_error_and_distance_formula_vs_quad_vs_monte_carlo():
    # Check 6 of spec 004 §3.
    k, lo, hi, eps = 2.5, -1.0, 1.0, 0.15
    rng = np.random.default_rng(0)
    n = 400_000
    x_neg, x_pos = rng.normal(lo, 1.0, n), rng.normal(hi, k, n)
    for theta in (-0.4, 0.1, 0.6):
        with jax.enable_x64(True):
            b_neg, b_pos = (float(v) for v in gmm.group_boundary_errors(theta, eps, k, lo, hi))
            g_neg, g_pos = (float(v) for v in gmm.group_distances(theta, k, lo, hi))
        q_b_neg = integrate.quad(lambda x: stats.norm.pdf(x, lo, 1), theta - eps, theta)[0]
        q_b_pos = integrate.quad(lambda x: stats.norm.pdf(x, hi, k), theta, theta + eps)[0]

        def abs_moment(m, s, t=theta):
            f = lambda x: abs(x - t) * stats.norm.pdf(x, m, s)  # noqa: E731
            return integrate.quad(f, -np.inf, t)[0] + integrate.quad(f, t, np.inf)[0]

        q_g_neg, q_g_pos = abs_moment(lo, 1.0), abs_moment(hi, k)
        np.testing.assert_allclose(
            [b_neg, b_pos, g_neg, g_pos], [q_b_neg, q_b_pos, q_g_neg, q_g_pos], atol=1e-9
        )
        # Monte Carlo: correct points within ε of θ, and mean |x − θ| (standard errors ~1e-3).
        mc = [
            np.mean((x_neg <= theta) & (x_neg > theta - eps)),
            np.mean((x_pos > theta) & (x_pos <= theta + eps)),
            np.mean(np.abs(x_neg - theta)),
            np.mean(np.abs(x_pos - theta)),
        ]
        np.testing.assert_allclose(mc, [b_neg, b_pos, g_neg, g_pos], atol=5e-3)
        # Eq. 5 per group: robust = natural + boundary.
        r = gmm.group_robust_errors(theta, eps, k, lo, hi)
        e = gmm.group_errors(theta, k, lo, hi)
        np.testing.assert_allclose(
            np.asarray(r), np.asarray(e) + np.array([b_neg, b_pos]), atol=1e-6
        )


def test_theorem_grids_have_no_violations():
    # Check 2 of spec 004 §3 on a smaller grid (the full default grid is what the study runs).
    ds = np.array([0.5, 1.5, 2.5, 4.0])
    rows = (
        theorems.check_theorem1(ds, n_eps=9, n_k=8)
        + theorems.check_corollary2(ds, n_eps=9, n_k=8)
        + theorems.check_theorem3(ds, n_k=8, n_lam=11, n_theta=801, reduce="sum")
        + theorems.check_theorem3(ds, n_k=8, n_lam=11, n_theta=801, reduce="mean")
    )
    assert len(rows) == 10 + 2 + 4 + 4
    for row in rows:
        assert row.cases > 0, row
        assert row.violations == 0, row
    # Theorem 1's grid: 8 K values for each (d, ε) with B_K > 1 (ε = d/2 gives B_K = 1).
    assert rows[0].cases == 4 * 8 * 8


def test_bounds_matter_outside_theorem1():
    # Outside B_K the ordering of Eq. 8 fails: K = 10, d = 2 puts θ* beyond μ̄ (Fig. 2 right).
    assert float(gmm.b_k(0.0, 2.0)) == pytest.approx(np.exp(2.0))
    assert float(gmm.theta_robust(0.1, 10.0)) > 1.0 - 0.1
    # ψ⁻¹ inverts ψ(x) = x + 1/x on [1, ∞).
    x = jnp.array([1.0, 1.5, 4.0])
    np.testing.assert_allclose(gmm.psi_inverse(x + 1 / x), x, rtol=1e-5)


def test_group_size_option_matches_brute_force():
    # Spec 004 "Group size": θ* and θ_r use ln(K(1−p)/p); θ_f does not depend on p.
    with jax.enable_x64(True):
        for p in (0.2, 0.35, 0.65):
            want = _minimise(_nat, -1.0, 1.0, 2.0, -1.0, 1.0, p)
            assert abs(float(gmm.theta_star(2.0, p=p, clip=True)) - want) < 1e-5
        # Beyond the threshold where the natural error has no stationary point (p near 1),
        # the clipped θ* is the left end.
        assert float(gmm.theta_star(2.0, p=0.999, clip=True)) == -1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="K must be > 1"):
        gmm.theta_star(1.0)
    with pytest.raises(ValueError, match="mu_hi must exceed mu_lo"):
        gmm.theta_fair(2.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="p must lie in"):
        gmm.theta_star(2.0, p=1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        gmm.theta_robust(-0.1, 2.0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        gmm.theta_fair_lambda(-1.0, 2.0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        gmm.theta_fair_lambda(0.1, 2.0, reduce="max")
