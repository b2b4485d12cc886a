"""Known-answer tests for r-robustness (001 Eq. 1-3, §3.2.2, §4.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.robustness.margin import LinearGaussianVAE, shifted_ball_probability
from vaerob_jax.robustness.r_robust import (
    chi2_cdf,
    deviation_norms,
    min_r_for_level,
    p_r_robust,
    p_r_under_perturbation,
    r_robust,
    relative_loglik_degradation,
)

D, LATENT, SIGMA = 6, 3, 0.5


@pytest.fixture(scope="module")
def linear():
    """Linear VAE with isotropic sigma = 0.5 and orthonormal decoder columns."""
    rng = np.random.default_rng(1)
    w, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
    params = {
        "A": jnp.asarray(rng.normal(size=(LATENT, D)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=LATENT), jnp.float32),
        "logvar": jnp.full((LATENT,), 2 * np.log(SIGMA), jnp.float32),
        "W": jnp.asarray(w, jnp.float32),
        "c": jnp.asarray(rng.normal(size=D), jnp.float32),
    }
    x = jnp.asarray(rng.uniform(size=D), jnp.float32)
    return LinearGaussianVAE(), params, x


def test_chi2_cdf_closed_forms():
    q = jnp.array([0.1, 1.0, 3.0, 7.5])
    # dof 2 is the exponential distribution with mean 2; dof 1 is |N(0,1)|^2
    np.testing.assert_allclose(chi2_cdf(q, 2), 1 - np.exp(-np.asarray(q) / 2), rtol=1e-5)
    erf = np.vectorize(__import__("math").erf)
    np.testing.assert_allclose(chi2_cdf(q, 1), erf(np.sqrt(np.asarray(q) / 2)), rtol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 0.25])
def test_p_r_matches_chi_square_for_linear_vae(linear, tau):
    """||Delta||^2 / s^2 ~ chi2_d with s = sigma + tau (Eq. 1-2 of 001)."""
    model, params, x = linear
    n = 4000
    r = jnp.array([0.5, 0.9, 1.25, 2.0])
    p, se = p_r_robust(model, params, x, r, jax.random.key(3), n, tau=tau)
    s = SIGMA + tau
    exact = chi2_cdf(r**2 / s**2, LATENT)
    assert p.shape == r.shape
    # MC error: binomial SE of the exact p (the reported SE can be 0 at p in {0, 1})
    tol = 4 * np.sqrt(np.asarray(exact) * (1 - np.asarray(exact)) / n) + 1e-3
    np.testing.assert_array_less(np.abs(np.asarray(p - exact)), tol)
    np.testing.assert_allclose(se, np.sqrt(p * (1 - p) / n), rtol=1e-5)


def test_p_r_is_monotone_in_r_and_deterministic(tiny_model, tiny_params, tiny_images):
    r = jnp.linspace(0.05, 3.0, 12)
    key = jax.random.key(0)
    p1, _ = p_r_robust(tiny_model, tiny_params, tiny_images[0], r, key, 64)
    p2, _ = p_r_robust(tiny_model, tiny_params, tiny_images[0], r, key, 64)
    np.testing.assert_array_equal(p1, p2)
    assert np.all(np.diff(np.asarray(p1)) >= 0)
    assert float(p1[0]) < float(p1[-1])


def test_r_robust_is_p_greater_than_m(linear):
    model, params, x = linear
    key = jax.random.key(5)
    r = jnp.array([0.3, 0.7, 1.0, 1.5])
    p, _ = p_r_robust(model, params, x, r, key, 200)
    np.testing.assert_array_equal(r_robust(model, params, x, r, key, 200, m=0.6), p > 0.6)


def test_min_r_for_level_is_the_smallest_radius_reaching_m(linear):
    model, params, x = linear
    key, n = jax.random.key(7), 1000
    m = jnp.array([0.25, 0.5, 0.9])
    radii = min_r_for_level(model, params, x, key, n, m=m)
    p_at, _ = p_r_robust(model, params, x, radii, key, n)
    p_below, _ = p_r_robust(model, params, x, radii * (1 - 1e-5), key, n)
    assert np.all(np.asarray(p_at) >= np.asarray(m))
    assert np.all(np.asarray(p_below) < np.asarray(m))
    # and the population quantile: chi2 CDF at the returned radius is m up to MC error
    exact = chi2_cdf(radii**2 / SIGMA**2, LATENT)
    np.testing.assert_array_less(np.abs(np.asarray(exact - m)), 4 * np.sqrt(0.25 / n))


def test_perturbation_of_the_mean_is_a_shifted_chi(linear):
    """Delta(x, delta) = A delta + sigma eta after the orthonormal decoder (§3.2.2)."""
    model, params, x = linear
    n = 4000
    direction = jnp.asarray(np.linalg.svd(np.asarray(params["A"]))[2][0], jnp.float32)
    radius = 0.2
    delta = radius * direction
    t = radius * float(np.linalg.svd(np.asarray(params["A"]), compute_uv=False)[0])
    r = jnp.array([0.8, 1.25, 1.8])
    p, _ = p_r_under_perturbation(model, params, x, delta, r, jax.random.key(2), n)
    exact = shifted_ball_probability(t, SIGMA, r, LATENT)
    tol = 4 * np.sqrt(np.asarray(exact) * (1 - np.asarray(exact)) / n) + 1e-3
    np.testing.assert_array_less(np.abs(np.asarray(p - exact)), tol)
    # the shift strictly lowers p relative to the clean input
    p0, _ = p_r_robust(model, params, x, r, jax.random.key(2), n)
    assert np.all(np.asarray(p) < np.asarray(p0))


def test_shifted_ball_probability_matches_closed_forms():
    r = jnp.array([0.4, 1.0, 2.0])
    # t = 0: chi-square CDF
    np.testing.assert_allclose(
        shifted_ball_probability(0.0, 0.7, r, 4), chi2_cdf(r**2 / 0.49, 4), atol=1e-4
    )
    # dim 2 against brute-force Monte Carlo
    eta = jax.random.normal(jax.random.key(0), (100_000, 2))
    norms = jnp.linalg.norm(jnp.array([0.6, 0.0]) + 0.5 * eta, axis=1)
    mc = jnp.mean(norms[:, None] <= r, axis=0)
    np.testing.assert_allclose(shifted_ball_probability(0.6, 0.5, r, 2), mc, atol=6e-3)


def test_apply_to_modes(tiny_model, tiny_params, tiny_images, linear):
    """'mean' / 'sigma' / 'both' move exactly the encoder outputs they name (001 Fig. 4)."""
    x = tiny_images[1]
    delta = 0.3 * jax.random.normal(jax.random.key(1), x.shape)
    key, n = jax.random.key(4), 5

    @jax.jit
    def by_hand(x, delta):  # Delta(x, delta) written out for each mode, same eta draws
        mu, lv = tiny_model.posterior(tiny_params, x)
        mu_p, lv_p = tiny_model.posterior(tiny_params, x + delta)
        center = tiny_model.decode(tiny_params, mu)
        eta = jax.vmap(lambda k: jax.random.normal(k, mu.shape))(jax.random.split(key, n))
        out = {}
        for mode, (m_, l_) in {
            "mean": (mu_p, lv),
            "sigma": (mu, lv_p),
            "both": (mu_p, lv_p),
        }.items():
            z = m_ + (jnp.exp(0.5 * l_) + 0.1) * eta
            dev = (tiny_model.decode(tiny_params, z) - center).reshape(n, -1)
            out[mode] = jnp.linalg.norm(dev, axis=1)
        return out

    want = by_hand(x, delta)
    for mode in ("mean", "sigma", "both"):
        got = deviation_norms(tiny_model, tiny_params, x, key, n, 0.1, delta, mode)
        np.testing.assert_allclose(got, want[mode], rtol=1e-4, atol=1e-5)
    # constant-variance model: perturbing sigma only changes nothing; 'both' equals 'mean'
    lin, params, xl = linear
    d_l = jnp.full_like(xl, 0.1)
    clean = deviation_norms(lin, params, xl, key, 50)
    np.testing.assert_array_equal(
        deviation_norms(lin, params, xl, key, 50, 0.0, d_l, "sigma"), clean
    )
    np.testing.assert_array_equal(
        deviation_norms(lin, params, xl, key, 50, 0.0, d_l, "both"),
        deviation_norms(lin, params, xl, key, 50, 0.0, d_l, "mean"),
    )


def test_vmap_jit_match_per_example_and_r_grid_does_not_retrace(
    tiny_model, tiny_params, tiny_images
):
    traces = []

    def one(x, r):
        traces.append(1)
        return p_r_robust(tiny_model, tiny_params, x, r, jax.random.key(0), 16)[0]

    f = jax.jit(jax.vmap(one, in_axes=(0, None)))
    xs = tiny_images[:4]
    a = f(xs, jnp.array([0.5, 1.0]))
    b = f(xs, jnp.array([0.7, 1.3]))
    assert len(traces) == 1
    for i in range(4):
        want = p_r_robust(
            tiny_model, tiny_params, xs[i], jnp.array([0.7, 1.3]), jax.random.key(0), 16
        )
        np.testing.assert_allclose(b[i], want[0])
    assert a.shape == (4, 2)


def test_relative_loglik_degradation(linear):
    model, params, x = linear
    z = model.embed(params, x)
    z_star = z + jnp.array([0.5, -0.2, 0.1])
    assert float(relative_loglik_degradation(model, params, x, z, z)) == 0.0

    def ll(zz):  # Gaussian log-likelihood with unit std, by hand
        res = np.asarray(x) - (np.asarray(params["W"]) @ np.asarray(zz) + np.asarray(params["c"]))
        return np.sum(-0.5 * res**2 - 0.5 * np.log(2 * np.pi))

    want = abs(ll(z_star) - ll(z)) / abs(ll(z))
    got = relative_loglik_degradation(model, params, x, z_star, z)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"r": 0.0}, "r must be"),
        ({"r": jnp.array([1.0, -1.0])}, "r must be"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"x": "nan"}, "NaN"),
        ({"tau": -0.1}, "tau"),
    ],
)
def test_bad_inputs_raise(tiny_model, tiny_params, tiny_images, kwargs, match):
    args = {"r": 1.0, "n_samples": 8, "x": tiny_images[0], "tau": 0.0}
    args.update(kwargs)
    if isinstance(args["x"], str):
        args["x"] = tiny_images[0].at[0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=match):
        p_r_robust(
            tiny_model, tiny_params, args["x"], args["r"], jax.random.key(0), args["n_samples"],
            tau=args["tau"],
        )  # fmt: skip


def test_bad_level_and_mode_raise(tiny_model, tiny_params, tiny_images):
    x, key = tiny_images[0], jax.random.key(0)
    for m in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="m must lie"):
            min_r_for_level(tiny_model, tiny_params, x, key, 8, m=m)
        with pytest.raises(ValueError, match="m must lie"):
            r_robust(tiny_model, tiny_params, x, 1.0, key, 8, m=m)
    with pytest.raises(ValueError, match="apply_to"):
        p_r_under_perturbation(tiny_model, tiny_params, x, x * 0, 1.0, key, 8, apply_to="logvar")
    with pytest.raises(ValueError, match="delta"):
        p_r_under_perturbation(tiny_model, tiny_params, x, x * jnp.nan, 1.0, key, 8)
