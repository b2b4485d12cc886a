"""GMM prior of 003 (Eqs. 3 and 5): CDF vs numerical integration, covariance, sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from vaerob_jax.models.gmm_prior import make_gmm_prior


def _mixture_pdf(t, prior, d):
    mu = prior.means()[:, d]
    s = prior.sigma
    return float(np.mean(np.exp(-0.5 * ((t - mu) / s) ** 2)) / (s * np.sqrt(2 * np.pi)))


@pytest.mark.parametrize("dim", [0, 3, 9])
def test_marginal_cdf_matches_quadrature(dim):
    # spec 003 §4.1: F_GMM,d vs scipy.integrate.quad of the mixture pdf, float64, 1e-7.
    prior = make_gmm_prior(10, 10)
    zs = np.array([-8.0, -1.0, 0.0, 0.5, 5.0, 10.0, 25.0])
    want = []
    for z in zs:
        tail, _ = integrate.quad(_mixture_pdf, -np.inf, -30.0, args=(prior, dim))
        pts = [p for p in (0.0, 10.0) if -30.0 < p < z]
        body, _ = integrate.quad(
            _mixture_pdf,
            -30.0,
            z,
            args=(prior, dim),
            points=pts or None,
            limit=200,
            epsabs=1e-13,
            epsrel=1e-13,
        )
        want.append(tail + body)
    with jax.enable_x64(True):
        z = np.zeros((len(zs), 10))
        z[:, dim] = zs
        got = np.asarray(prior.marginal_cdf(jnp.asarray(z, jnp.float64)))[:, dim]
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)


def test_marginal_cdf_is_monotone_and_its_derivative_is_the_pdf():
    prior = make_gmm_prior(4, 3, sigma=0.7)
    with jax.enable_x64(True):
        t = jnp.linspace(-6.0, 16.0, 2001)

        @jax.jit
        def evaluate(t):
            z = jnp.tile(t[:, None], (1, 4))
            dfdz = jax.vmap(jax.grad(lambda s: prior.marginal_cdf(jnp.full((4,), s))[0]))(t)
            return prior.marginal_cdf(z), dfdz, prior.marginal_pdf(z)[:, 0]

        f, dfdz, pdf = (np.asarray(a) for a in evaluate(t))
        norm = np.asarray(jax.scipy.stats.norm.cdf(t / 0.7))
    assert np.all(np.diff(f, axis=0) >= 0)
    assert f[0].max() < 1e-9 and f[-1].min() > 1 - 1e-9
    # dim 3 carries no mode (K = 3 < D = 4): F is Φ(z/σ) there.
    np.testing.assert_allclose(f[:, 3], norm, atol=1e-12, rtol=0)
    np.testing.assert_allclose(dfdz, pdf, rtol=1e-10, atol=1e-14)


def test_marginal_cdf_matches_empirical_cdf_of_samples():
    # spec 003 §4.1: two-sided KS statistic < 0.002 for 10⁶ seeded prior samples, per dim.
    prior = make_gmm_prior(10, 10)
    n = 1_000_000

    @jax.jit
    def ks_statistic(key):
        f = prior.marginal_cdf(jnp.sort(prior.sample(key, n), axis=0))
        i = jnp.arange(1, n + 1, dtype=f.dtype)[:, None] / n
        return jnp.maximum(jnp.abs(f - i), jnp.abs(f - (i - 1.0 / n))).max(axis=0)

    ks = np.asarray(ks_statistic(jax.random.key(0)))
    assert ks.max() < 0.002, ks


def test_sample_moments_and_seeding():
    prior = make_gmm_prior(6, 4, scale=5.0, sigma=0.5)
    z = np.asarray(prior.sample(jax.random.key(1), 200_000), np.float64)
    np.testing.assert_allclose(z.mean(0), prior.mean(), atol=0.03)
    np.testing.assert_allclose(np.cov(z, rowvar=False), prior.covariance(), atol=0.06)
    np.testing.assert_array_equal(
        prior.sample(jax.random.key(1), 5), prior.sample(jax.random.key(1), 5)
    )
    assert not np.allclose(prior.sample(jax.random.key(2), 5), prior.sample(jax.random.key(1), 5))


def test_covariance_closed_form():
    # spec 003 §1.2: default prior Σ_GMM = 11·I − 𝟙𝟙ᵀ, mean(Σ²) = 10.9.
    sigma = make_gmm_prior(10, 10).covariance()
    np.testing.assert_allclose(sigma, 11 * np.eye(10) - np.ones((10, 10)), atol=1e-12)
    assert np.mean(sigma**2) == pytest.approx(10.9)
    # K < D: modes span K dims, the rest is the component variance; brute force over modes.
    p = make_gmm_prior(5, 3, scale=2.0, sigma=0.5)
    mu = p.means()
    want = 0.25 * np.eye(5) + np.cov(mu, rowvar=False, ddof=0)
    np.testing.assert_allclose(p.covariance(), want, atol=1e-12)


def test_reference_std_option_uses_sigma_as_variance():
    p = make_gmm_prior(3, 3, sigma=2.0, component_cov="reference_std")
    q = make_gmm_prior(3, 3, sigma=2.0)
    np.testing.assert_allclose(p.covariance() - q.covariance(), (2.0 - 4.0) * np.eye(3))
    # Sampling too: with all modes at the origin the sample covariance is σ·I = 2·I.
    p0 = make_gmm_prior(3, 3, scale=0.0, sigma=2.0, component_cov="reference_std")
    z = np.asarray(p0.sample(jax.random.key(0), 100_000), np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), 2.0 * np.eye(3), atol=0.05)
    # The CDF keeps σ as the standard deviation (the public code's CDF).
    np.testing.assert_allclose(p.marginal_cdf(jnp.ones(3)), q.marginal_cdf(jnp.ones(3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_dim": 3, "num_modes": 4}, "num_modes"),
        ({"latent_dim": 3, "sigma": 0.0}, "sigma"),
        ({"latent_dim": 3, "component_cov": "std"}, "component_cov"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_bad_prior_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_gmm_prior(**kwargs)


def test_cdf_rejects_wrong_latent_size():
    with pytest.raises(ValueError, match="latent dimension"):
        make_gmm_prior(4).marginal_cdf(jnp.zeros((3, 5)))
