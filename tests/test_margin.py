"""Known-answer tests for the margin R^r_X(x) of 001 Eq. 3 (bisection and reference scan)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.robustness.jacobian import theorem1_bound
from vaerob_jax.robustness.margin import (
    LinearGaussianVAE,
    estimate_margin,
    linear_true_margin,
    linear_worst_case_attack,
    make_margin_estimator,
    pgd_attack_fn,
    shifted_ball_probability,
)

D, LATENT, SIGMA, R_OUT = 6, 3, 0.5, 1.25


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(11)
    w, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
    params = {
        "A": jnp.asarray(rng.normal(size=(LATENT, D)), jnp.float32),
        "b": jnp.zeros(LATENT, jnp.float32),
        "logvar": jnp.full((LATENT,), 2 * np.log(SIGMA), jnp.float32),
        "W": jnp.asarray(w, jnp.float32),
        "c": jnp.zeros(D, jnp.float32),
    }
    xs = jnp.asarray(rng.uniform(size=(3, D)), jnp.float32)
    return LinearGaussianVAE(), params, xs, linear_worst_case_attack(params, (D,))


def test_bisection_finds_the_closed_form_margin(linear):
    """Linear VAE + exact worst-case attack: R_hat is where the closed-form p crosses 0.5."""
    model, params, xs, attack = linear
    n = 4000
    est = make_margin_estimator(model, attack, n_samples=n, n_iter=12)
    out = est(params, xs, R_OUT, jax.random.key(0), r_max=2.0)
    true = linear_true_margin(params, R_OUT)
    s_max = float(np.linalg.svd(np.asarray(params["A"]), compute_uv=False)[0])
    # radii where the exact p is 0.5 +- 4 MC standard errors bracket every estimate
    tol_p = 4 * np.sqrt(0.25 / n)
    radii = np.linspace(0.5 * true, 1.5 * true, 401)
    p_exact = np.asarray(shifted_ball_probability(s_max * radii, SIGMA, R_OUT, LATENT))
    r_lo = radii[p_exact < 0.5 + tol_p].min()
    r_hi = radii[p_exact > 0.5 - tol_p].max()
    width = np.asarray(out["width"])
    assert np.all(width <= 2.0 / 2**12 + 1e-6)
    assert np.all(np.asarray(out["estimate"]) >= r_lo - width)
    assert np.all(np.asarray(out["estimate"]) <= r_hi + width)
    assert r_lo <= true <= r_hi
    assert np.all(np.asarray(out["low"]) <= np.asarray(out["high"]))
    # Theorem 1's bound sits below the estimated margin (001 Fig. 6: points above y = x)
    bound = theorem1_bound(model, params, xs[0], R_OUT, jax.random.key(1), n)["bound"]
    assert float(bound) <= float(out["estimate"][0])


def test_bisection_agrees_with_a_fine_scan(linear):
    model, params, xs, attack = linear
    key, n = jax.random.key(3), 400
    bis = make_margin_estimator(model, attack, n_samples=n, n_iter=8)(
        params, xs, R_OUT, key, r_max=1.0
    )
    step = 0.01
    scan = make_margin_estimator(
        model, attack, n_samples=n, method="scan", scan_step=step, scan_max=1.0
    )(params, xs, R_OUT, key)
    diff = np.abs(np.asarray(bis["estimate"]) - np.asarray(scan["estimate"]))
    assert np.all(diff <= np.asarray(bis["width"]) / 2 + step + 1e-6)
    np.testing.assert_allclose(scan["width"], step, rtol=1e-4)
    # the reference's coarse grid (0.5 up to 10) sits at the bisection value rounded down
    coarse = make_margin_estimator(model, attack, n_samples=n, method="scan")(params, xs, 3.0, key)
    fine = make_margin_estimator(model, attack, n_samples=n, n_iter=10)(
        params, xs, 3.0, key, r_max=10.0
    )
    assert np.all(np.asarray(coarse["estimate"]) <= np.asarray(fine["high"]) + 1e-6)
    assert np.all(np.asarray(coarse["estimate"]) >= np.asarray(fine["low"]) - 0.5 - 1e-6)


def test_margin_is_monotone_in_r(tiny_model, tiny_params, tiny_images):
    """Larger output radius r, larger margin: exact under common random numbers."""
    attack = pgd_attack_fn(tiny_model, steps=3, box=None)
    x, key = tiny_images[4], jax.random.key(5)
    rs = jnp.array([0.6, 0.9, 1.2, 1.8, 2.5])
    f = jax.jit(
        jax.vmap(
            lambda r: estimate_margin(
                tiny_model, tiny_params, x, r, key, attack, n_samples=32, n_iter=6, r_max=4.0
            )["estimate"]
        )
    )
    est = np.asarray(f(rs))
    assert np.all(np.diff(est) >= 0)
    assert est[-1] > est[0]


def test_stronger_attack_gives_smaller_margin(tiny_model, tiny_params, tiny_images):
    """PGD maximum damage (Eq. 5) finds the margin no larger than a random direction does."""
    xs = tiny_images[5:7]
    direction = jax.random.normal(jax.random.key(9), xs.shape[1:])
    direction = direction / jnp.linalg.norm(direction)

    def random_dir(params, x, radius, key):
        return radius * direction

    kw = {"n_samples": 32, "n_iter": 6}
    pgd_est = make_margin_estimator(tiny_model, pgd_attack_fn(tiny_model, steps=4, box=None), **kw)
    rnd_est = make_margin_estimator(tiny_model, random_dir, **kw)
    a = pgd_est(tiny_params, xs, 1.5, jax.random.key(0), r_max=6.0)
    b = rnd_est(tiny_params, xs, 1.5, jax.random.key(0), r_max=6.0)
    assert np.all(np.asarray(a["robust_clean"]))
    assert np.all(np.asarray(a["estimate"]) <= np.asarray(b["estimate"]) + np.asarray(a["width"]))
    assert np.any(np.asarray(a["estimate"]) < np.asarray(b["estimate"]))


def test_edge_cases_censored_and_not_robust(linear):
    model, params, xs, attack = linear
    est = make_margin_estimator(model, attack, n_samples=200, n_iter=5)
    huge = est(params, xs, 100.0, jax.random.key(0), r_max=1.0)
    assert np.all(np.asarray(huge["censored"]))
    np.testing.assert_allclose(huge["estimate"], 1.0)
    assert np.all(np.isinf(np.asarray(huge["high"])))
    tiny = est(params, xs, 0.05, jax.random.key(0), r_max=1.0)
    assert not np.any(np.asarray(tiny["robust_clean"]))
    np.testing.assert_array_equal(tiny["estimate"], 0.0)
    assert float(linear_true_margin(params, 0.05)) == 0.0


def test_batched_equals_per_example_and_is_deterministic(linear):
    model, params, xs, attack = linear
    key = jax.random.key(2)
    est = make_margin_estimator(model, attack, n_samples=64, n_iter=6)
    r = jnp.array([1.0, 1.25, 1.5])
    a = est(params, xs, r, key, r_max=2.0)
    b = est(params, xs, r, key, r_max=2.0)
    np.testing.assert_array_equal(a["estimate"], b["estimate"])
    for i in range(xs.shape[0]):
        one = estimate_margin(
            model, params, xs[i], r[i], jax.random.fold_in(key, i), attack,
            n_samples=64, n_iter=6, r_max=2.0,
        )  # fmt: skip
        np.testing.assert_allclose(one["estimate"], a["estimate"][i], rtol=1e-6)


def test_bad_inputs_raise(linear):
    model, params, xs, attack = linear
    key = jax.random.key(0)
    est = make_margin_estimator(model, attack, n_samples=8, n_iter=2)
    with pytest.raises(ValueError, match="r must be"):
        est(params, xs, 0.0, key)
    with pytest.raises(ValueError, match="m must lie"):
        est(params, xs, 1.0, key, m=1.0)
    with pytest.raises(ValueError, match="r_max"):
        est(params, xs, 1.0, key, r_max=-2.0)
    with pytest.raises(ValueError, match="NaN"):
        est(params, xs.at[0, 0].set(jnp.nan), 1.0, key)
    with pytest.raises(ValueError, match="shape"):
        est(params, xs, jnp.ones(5), key)
    for kwargs, match in [
        ({"n_samples": 0}, "n_samples"),
        ({"n_iter": 0}, "n_iter"),
        ({"method": "golden"}, "method"),
        ({"apply_to": "var"}, "apply_to"),
        ({"method": "scan", "scan_step": 2.0, "scan_max": 1.0}, "scan_max"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_margin_estimator(model, attack, **kwargs)
    with pytest.raises(ValueError, match="m must lie"):
        estimate_margin(model, params, xs[0], 1.0, key, attack, m=0.0)


@pytest.mark.parametrize("method", ["bisect", "scan"])
def test_the_margin_search_counts_its_attacks_and_their_failures(
    linear, method, tiny_model, tiny_params, tiny_images
):
    """Issue 8.3: every attack of the search is counted; one that returns its random start
    (no gain) is reported per example, never silently used as a worst case; non-finite
    steps are summed. A bare-δ attack (the exact linear worst case) never fails."""
    from vaerob_jax.attacks import AttackResult

    model, params, xs, exact = linear
    kw = dict(n_samples=32, n_iter=4, n_starts=2, method=method, scan_step=0.5, scan_max=2.0)
    runs = (4 + 1) * 2 if method == "bisect" else 4 * 2

    def stuck(p, x, radius, key):  # stays at its start, two non-finite steps per run
        zero = jnp.zeros((), x.dtype)
        return AttackResult(jnp.zeros_like(x), zero, zero, jnp.asarray(2, jnp.int32))

    out = make_margin_estimator(model, stuck, **kw)(params, xs, 1.25, jax.random.key(0))
    np.testing.assert_array_equal(out["attacks"], runs)
    np.testing.assert_array_equal(out["attack_failed"], runs)
    np.testing.assert_array_equal(out["attack_nonfinite_steps"], 2 * runs)
    ok = make_margin_estimator(model, exact, **kw)(params, xs, 1.25, jax.random.key(0))
    np.testing.assert_array_equal(ok["attack_failed"], 0)
    np.testing.assert_array_equal(ok["attack_nonfinite_steps"], 0)
    # A real PGD attack reports through the same fields and gains on (nearly) every run.
    pgd = make_margin_estimator(tiny_model, pgd_attack_fn(tiny_model, steps=5), **kw)
    res = pgd(tiny_params, tiny_images[:3], 1.0, jax.random.key(0))
    np.testing.assert_array_equal(res["attacks"], runs)
    assert np.sum(res["attack_failed"]) <= 0.1 * runs * 3


def test_log_bisection_finds_the_closed_form_margin_to_a_relative_tolerance(linear):
    """'logbisect' halves [r_max / log_range, r_max] in log radius: the bracket's relative
    width is log_range^(1/2^n_iter) - 1 at any scale, and it holds the closed-form margin
    (up to the Monte-Carlo resolution of p); below r_min the margin is the bracket [0, r_min]."""
    model, params, xs, attack = linear
    n, n_iter, log_range = 4000, 8, 1e3
    true = float(linear_true_margin(params, R_OUT))
    s_max = float(np.linalg.svd(np.asarray(params["A"]), compute_uv=False)[0])
    tol_p = 4 * np.sqrt(0.25 / n)
    radii = np.linspace(0.5 * true, 1.5 * true, 401)
    p_exact = np.asarray(shifted_ball_probability(s_max * radii, SIGMA, R_OUT, LATENT))
    r_lo, r_hi = radii[p_exact < 0.5 + tol_p].min(), radii[p_exact > 0.5 - tol_p].max()
    est = make_margin_estimator(
        model, attack, n_samples=n, n_iter=n_iter, method="logbisect", log_range=log_range
    )
    rel = log_range ** (1 / 2**n_iter) - 1
    for r_max in (2.0, 200.0):  # the same relative resolution whatever the search range
        out = est(params, xs, R_OUT, jax.random.key(0), r_max=r_max)
        lo, hi = np.asarray(out["low"]), np.asarray(out["high"])
        np.testing.assert_allclose(hi / lo - 1, rel, rtol=1e-3)
        np.testing.assert_allclose(out["width_rel"], (hi - lo) / np.sqrt(lo * hi), rtol=1e-5)
        assert np.all(lo <= r_hi) and np.all(hi >= r_lo)
        np.testing.assert_array_equal(out["attacks"], n_iter + 2)
    # A search range entirely above the margin: not robust at r_min = 5 true.
    above = est(params, xs, R_OUT, jax.random.key(0), r_max=5e3 * true)
    np.testing.assert_array_equal(above["low"], 0.0)
    np.testing.assert_allclose(above["high"], 5 * true, rtol=1e-6)
    with pytest.raises(ValueError, match="log_range"):
        make_margin_estimator(model, attack, method="logbisect", log_range=1.0)
