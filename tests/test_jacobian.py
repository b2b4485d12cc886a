"""Known-answer tests for the encoder Jacobian norm and 001 Theorem 1's bound (Eq. 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.robustness.jacobian import (
    encoder_jacobian,
    encoder_jacobian_fro,
    encoder_jacobian_fro_probe,
    theorem1_bound,
)
from vaerob_jax.robustness.margin import LinearGaussianVAE, linear_true_margin
from vaerob_jax.robustness.r_robust import chi2_cdf

D, LATENT, SIGMA = 6, 3, 0.5


def _linear_params(a: np.ndarray, sigma: float = SIGMA) -> dict:
    rng = np.random.default_rng(2)
    w, _ = np.linalg.qr(rng.normal(size=(D, a.shape[0])))
    return {
        "A": jnp.asarray(a, jnp.float32),
        "b": jnp.zeros(a.shape[0], jnp.float32),
        "logvar": jnp.full((a.shape[0],), 2 * np.log(sigma), jnp.float32),
        "W": jnp.asarray(w, jnp.float32),
        "c": jnp.zeros(D, jnp.float32),
    }


def test_jacobian_matches_finite_differences(tiny_model, tiny_params, tiny_images):
    """Exact VJP norm vs central differences over all 64 pixels of the 8x8x1 tiny model."""
    x = tiny_images[2]
    mu_fn = jax.jit(lambda xx: tiny_model.embed(tiny_params, xx))
    h = 1e-2
    eye = jnp.eye(x.size, dtype=x.dtype).reshape(x.size, *x.shape)
    cols = jax.vmap(lambda e: (mu_fn(x + h * e) - mu_fn(x - h * e)) / (2 * h))(eye)  # (P, d)
    fd = float(jnp.linalg.norm(cols))
    exact = float(encoder_jacobian_fro(tiny_model, tiny_params, x))
    np.testing.assert_allclose(exact, fd, rtol=1e-2)
    # the full Jacobian agrees with jacfwd entry by entry (fine on an 8x8 input only)
    rows = encoder_jacobian(tiny_model, tiny_params, x)
    np.testing.assert_allclose(rows, jax.jacfwd(mu_fn)(x), rtol=1e-4, atol=1e-6)
    assert rows.shape == (4, *x.shape)


def test_jacobian_of_linear_encoder_is_a():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(LATENT, D))
    params = _linear_params(a)
    fro = encoder_jacobian_fro(LinearGaussianVAE(), params, jnp.ones(D))
    np.testing.assert_allclose(fro, np.linalg.norm(a), rtol=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_probe_estimator_agrees_with_exact(tiny_model, tiny_params, tiny_images, probe):
    x = tiny_images[3]
    exact_sq = float(encoder_jacobian_fro(tiny_model, tiny_params, x)) ** 2
    est, se = encoder_jacobian_fro_probe(tiny_model, tiny_params, x, jax.random.key(1), 64, probe)
    assert float(se) > 0
    assert abs(float(est) - exact_sq) < 4 * float(se)
    # unbiased: the mean over many independent estimates converges to the exact value
    keys = jax.random.split(jax.random.key(2), 200)
    ests, _ = jax.vmap(
        lambda k: encoder_jacobian_fro_probe(tiny_model, tiny_params, x, k, 2, probe)
    )(keys)
    mean, sem = float(jnp.mean(ests)), float(jnp.std(ests) / np.sqrt(200))
    assert abs(mean - exact_sq) < 4 * sem


def test_rademacher_probe_is_exact_for_orthogonal_rows():
    """tr(J J^T) with J J^T diagonal: every Rademacher probe gives it exactly (SE 0)."""
    a = np.zeros((LATENT, D))
    a[0, 0], a[1, 2], a[2, 5] = 2.0, -1.0, 0.5
    est, se = encoder_jacobian_fro_probe(
        LinearGaussianVAE(), _linear_params(a), jnp.ones(D), jax.random.key(0), 8
    )
    np.testing.assert_allclose(est, 4.0 + 1.0 + 0.25, rtol=1e-6)
    assert float(se) == 0.0


@pytest.mark.parametrize("tau", [0.0, 0.2])
def test_theorem1_bound_fields_and_true_margin(tau):
    """Bound = min sigma * Phi^-1(p) / ||J||_F, and it never exceeds the linear model's margin."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(LATENT, D))
    params = _linear_params(a)
    model, x = LinearGaussianVAE(), jnp.asarray(rng.uniform(size=D), jnp.float32)
    r = jnp.array([1.25, 1.6, 2.2])  # p > 0.5 for sigma + tau in {0.5, 0.7}
    n = 2000
    out = theorem1_bound(model, params, x, r, jax.random.key(0), n, tau=tau)
    s = SIGMA + tau
    np.testing.assert_allclose(out["sigma_min"], s, rtol=1e-6)
    np.testing.assert_allclose(out["jac_fro"], np.linalg.norm(a), rtol=1e-5)
    p = np.asarray(out["p_r"])
    probit = np.asarray(jax.scipy.special.ndtri(jnp.minimum(out["p_r"], 1 - 0.5 / n)))
    np.testing.assert_allclose(out["bound"], s * probit / np.linalg.norm(a), rtol=1e-5)
    assert bool(np.all(out["bound_defined"]))
    for i, ri in enumerate(np.asarray(r)):
        true_margin = linear_true_margin(params, float(ri), 0.5, tau=tau)
        p_exact = float(chi2_cdf(ri**2 / s**2, LATENT))
        bound_exact = s * float(jax.scipy.special.ndtri(p_exact)) / np.linalg.norm(a)
        assert abs(p[i] - p_exact) < 4 * np.sqrt(p_exact * (1 - p_exact) / n) + 1e-3
        assert 0 < bound_exact <= true_margin
        assert float(out["bound"][i]) <= true_margin


@pytest.mark.parametrize("m", [0.3, 0.7, 0.85])
def test_theorem1_bound_at_level_m_stays_below_the_true_margin(m):
    """At a level m != 0.5 the bound uses Phi^-1(p) - Phi^-1(m); without the second probit a
    bound at 0.5 would exceed the true margin at m = 0.7 (the level mismatch it prevents)."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(LATENT, D))
    params, model = _linear_params(a), LinearGaussianVAE()
    x = jnp.asarray(rng.uniform(size=D), jnp.float32)
    r, n = 1.645, 20000
    out = theorem1_bound(model, params, x, r, jax.random.key(1), n, m=m)
    true_margin = linear_true_margin(params, r, m)
    p = float(out["p_r"])
    assert bool(out["bound_defined"]) == (p > m)
    expected = (
        SIGMA
        * (float(jax.scipy.special.ndtri(min(p, 1 - 0.5 / n))) - float(jax.scipy.special.ndtri(m)))
        / np.linalg.norm(a)
    )
    np.testing.assert_allclose(out["bound"], expected, rtol=1e-4)
    assert float(out["bound"]) <= true_margin


def test_theorem1_bound_rejects_bad_level(tiny_model, tiny_params, tiny_images):
    with pytest.raises(ValueError, match="m must lie"):
        theorem1_bound(tiny_model, tiny_params, tiny_images[0], 1.0, jax.random.key(0), 8, m=1.5)


def test_theorem1_bound_undefined_and_clipped():
    a = np.random.default_rng(4).normal(size=(LATENT, D))
    params, model = _linear_params(a), LinearGaussianVAE()
    x = jnp.zeros(D)
    n = 100
    # r far below the noise scale: p ~ 0 <= 0.5, not r-robust, bound undefined
    small = theorem1_bound(model, params, x, 0.05, jax.random.key(0), n)
    assert not bool(small["bound_defined"]) and bool(jnp.isnan(small["bound"]))
    # r far above it: p = 1 exactly, clipped to 1 - 1/(2n) -> finite bound
    big = theorem1_bound(model, params, x, 50.0, jax.random.key(0), n)
    assert float(big["p_r"]) == 1.0
    want = SIGMA * float(jax.scipy.special.ndtri(1 - 0.5 / n)) / np.linalg.norm(a)
    np.testing.assert_allclose(big["bound"], want, rtol=1e-5)
    raw = theorem1_bound(model, params, x, 50.0, jax.random.key(0), n, clip_p=False)
    assert bool(jnp.isinf(raw["bound"]))


def test_theorem1_bound_vmaps_over_examples(tiny_model, tiny_params, tiny_images):
    xs = tiny_images[:3]
    f = jax.jit(
        jax.vmap(lambda x: theorem1_bound(tiny_model, tiny_params, x, 1.5, jax.random.key(0), 32))
    )
    batched = f(xs)
    for i in range(3):
        one = theorem1_bound(tiny_model, tiny_params, xs[i], 1.5, jax.random.key(0), 32)
        for k in ("sigma_min", "jac_fro", "p_r"):
            np.testing.assert_allclose(batched[k][i], one[k], rtol=1e-5)
        mu, lv = tiny_model.posterior(tiny_params, xs[i])
        np.testing.assert_allclose(one["sigma_min"], jnp.min(jnp.exp(0.5 * lv)), rtol=1e-6)


def test_bad_inputs_raise(tiny_model, tiny_params, tiny_images):
    x, key = tiny_images[0], jax.random.key(0)
    bad_x = x.at[1, 1, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        encoder_jacobian_fro(tiny_model, tiny_params, bad_x)
    with pytest.raises(ValueError, match="NaN"):
        theorem1_bound(tiny_model, tiny_params, bad_x, 1.0, key, 8)
    with pytest.raises(ValueError, match="n_probes"):
        encoder_jacobian_fro_probe(tiny_model, tiny_params, x, key, 0)
    with pytest.raises(ValueError, match="probe must be"):
        encoder_jacobian_fro_probe(tiny_model, tiny_params, x, key, 4, probe="sphere")
    with pytest.raises(ValueError, match="r must be"):
        theorem1_bound(tiny_model, tiny_params, x, -1.0, key, 8)
    with pytest.raises(ValueError, match="n_samples"):
        theorem1_bound(tiny_model, tiny_params, x, 1.0, key, 0)


def test_clopper_pearson_lower_limit_closed_form_and_coverage():
    from vaerob_jax.robustness import clopper_pearson_lower

    n, level = 32, 0.95
    # k = n: the limit solves p^n = 1 - level; k = 0: nothing is excluded.
    np.testing.assert_allclose(clopper_pearson_lower(n, n, level), (1 - level) ** (1 / n))
    assert clopper_pearson_lower(0, n, level) == 0.0
    # Coverage: over many binomial draws the limit is below the true p at least 95 % of the time.
    rng = np.random.default_rng(0)
    for p in (0.6, 0.8, 0.95):
        k = rng.binomial(n, p, size=4000)
        cover = np.mean(clopper_pearson_lower(k, n, level) <= p)
        assert cover >= level - 0.01, (p, cover)
    with pytest.raises(ValueError, match="level"):
        clopper_pearson_lower(3, n, 1.5)


def test_conservative_bound_is_theorem1_at_the_lower_limit_and_never_above_the_point_bound():
    from statistics import NormalDist

    from vaerob_jax.robustness import clopper_pearson_lower, conservative_bound

    n, m = 32, 0.5
    sigma, jac = np.array([0.5, 0.5, 0.2, 0.3]), np.array([2.0, 2.0, 1.0, 4.0])
    p = np.array([1.0, 0.9, 0.55, 0.75])
    got = conservative_bound(sigma, jac, p, n, m, 0.95)
    lo = clopper_pearson_lower(np.rint(p * n), n, 0.95)
    phi = NormalDist().inv_cdf
    for i in range(4):
        if lo[i] > m:
            assert got[i] == pytest.approx(sigma[i] * (phi(lo[i]) - phi(m)) / jac[i])
            point = sigma[i] * (phi(min(p[i], 1 - 0.5 / n)) - phi(m)) / jac[i]
            assert got[i] <= point
        else:
            assert np.isnan(got[i])
    assert np.isnan(got[2])  # p = 0.55 from 32 draws: its lower limit is below 0.5
