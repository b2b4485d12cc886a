"""β-VAE objective (Eq. 2 of 000): closed-form KL vs Monte-Carlo, hand-computed ELBO, options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import DiagGaussian
from vaerob_jax.objectives import beta_vae_loss, gaussian_kl


def test_kl_closed_form_matches_monte_carlo():
    mu = jnp.array([0.5, -1.0, 2.0])
    logvar = jnp.log(jnp.array([0.3, 1.5, 0.8]))
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(0), (400_000, 3))
    log_q = -0.5 * ((z - mu) ** 2 / jnp.exp(logvar) + logvar + jnp.log(2 * jnp.pi))
    log_p = -0.5 * (z**2 + jnp.log(2 * jnp.pi))
    mc = jnp.mean(log_q - log_p, axis=0)
    np.testing.assert_allclose(gaussian_kl(mu, logvar), mc, atol=0.01)


def test_kl_is_zero_at_prior_and_offset_matches_plain():
    assert float(jnp.abs(gaussian_kl(jnp.zeros(4), jnp.zeros(4))).max()) < 1e-7
    mu, logvar = jnp.array([0.3, -0.2]), jnp.array([-1.0, 0.5])
    q = DiagGaussian(mu, logvar)
    np.testing.assert_allclose(q.kl_standard(jnp.float32(0.0)), gaussian_kl(mu, logvar), rtol=1e-6)
    # With an offset tau the std is sigma + tau: compare with the plain KL at that std.
    tau = 0.5
    std = jnp.exp(0.5 * logvar) + tau
    np.testing.assert_allclose(q.kl_standard(tau), gaussian_kl(mu, 2 * jnp.log(std)), rtol=1e-6)


def test_loss_equals_hand_computed_value(tiny_model, tiny_params, tiny_images):
    x, key, beta = tiny_images[3], jax.random.key(7), 4.0
    loss, aux = beta_vae_loss(tiny_model, tiny_params, x, key, beta)
    # By hand: the same reparameterised sample, Bernoulli log-likelihood summed over pixels.
    mu, logvar = tiny_model.posterior(tiny_params, x)
    eps = jax.random.normal(key, mu.shape)
    z = mu + jnp.exp(0.5 * logvar) * eps
    p = np.asarray(tiny_model.decode(tiny_params, z), np.float64)
    xn = np.asarray(x, np.float64)
    recon = -np.sum(xn * np.log(p) + (1 - xn) * np.log(1 - p))
    mu_n, lv_n = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    kl = 0.5 * np.sum(np.exp(lv_n) + mu_n**2 - 1 - lv_n)
    np.testing.assert_allclose(aux["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, recon + beta * kl, rtol=1e-5)
    np.testing.assert_allclose(aux["elbo"], -(recon + kl), rtol=1e-5)


def test_reference_mean_divides_beta(tiny_model, tiny_params, tiny_images):
    x, key = tiny_images[0], jax.random.key(1)
    _, aux = beta_vae_loss(tiny_model, tiny_params, x, key, 10.0)
    loss_ref, _ = beta_vae_loss(
        tiny_model, tiny_params, x, key, 10.0, kl_reduction="reference_mean", batch_size=64
    )
    np.testing.assert_allclose(loss_ref, aux["recon"] + 10.0 * aux["kl"] / (64 * 4), rtol=1e-5)


def test_beta_is_traceable_without_recompile(tiny_model, tiny_params, tiny_images):
    traces = []

    @jax.jit
    def f(beta):
        traces.append(1)
        return beta_vae_loss(tiny_model, tiny_params, tiny_images[0], jax.random.key(0), beta)[0]

    a, b = f(jnp.float32(1.0)), f(jnp.float32(5.0))
    assert len(traces) == 1 and float(b) > float(a)


def test_unknown_reduction(tiny_model, tiny_params, tiny_images):
    with pytest.raises(ValueError, match="kl_reduction"):
        beta_vae_loss(
            tiny_model, tiny_params, tiny_images[0], jax.random.key(0), 1.0, kl_reduction="avg"
        )
