"""Diagonal Gaussian distributions as a pytree (what ``model.posterior`` returns per layer).

A :class:`DiagGaussian` is a NamedTuple of ``mean`` and ``logvar`` arrays of the same shape, so
it passes through ``jit``, ``vmap`` and ``stop_gradient`` like any pytree; every method works
elementwise (per latent dimension) and leaves reductions to the caller, as the per-example
losses and metrics of the package do.

Example:
    >>> q = model.posterior(params, x)             # DiagGaussian, fields of shape (d,)
    >>> z = q.sample(key)                          # reparameterised draw
    >>> kl = jnp.sum(q.kl_standard())              # KL(q ‖ N(0, I)), summed over dims
    >>> kl_t = jnp.sum(q.kl(model.posterior(params, x_t)))   # KL(q(z|x) ‖ q(z|x_t))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["DiagGaussian", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, 1) per entry."""
    return -0.5 * (jnp.square(z) + _LOG_2PI)


class DiagGaussian(NamedTuple):
    """N(mean, diag(exp(logvar))), elementwise.

    Attributes:
      mean: the mean (μ).
      logvar: the log-variance log σ² (models soft-clamp it, so exp never overflows).
    """

    mean: jax.Array
    logvar: jax.Array

    @property
    def std(self) -> jax.Array:
        """σ = exp(logvar / 2)."""
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array, tau: jax.Array | float = 0.0) -> jax.Array:
        """Reparameterised draw μ + (σ + τ)·η, η ~ N(0, I).

        τ is the encoder-std offset of 001 Fig. 7 (models whose encoder std is σ + τ).
        """
        eta = jax.random.normal(key, jnp.shape(self.mean), jnp.result_type(self.mean))
        return self.mean + (self.std + tau) * eta

    def log_prob(self, z: jax.Array) -> jax.Array:
        """log N(z; μ, σ²) per entry (broadcasts z against the parameters)."""
        return -0.5 * (jnp.square(z - self.mean) * jnp.exp(-self.logvar) + self.logvar + _LOG_2PI)

    def kl_standard(self, tau: jax.Array | float = 0.0) -> jax.Array:
        """KL(N(μ, (σ + τ)²) ‖ N(0, 1)) per entry, in closed form (τ: 001 Fig. 7's offset).

        With τ = 0 (a Python number) this is ½(σ² + μ² − 1 − log σ²), Eq. 2 of 000's KL term.
        """
        if isinstance(tau, (int, float)) and tau == 0:
            return 0.5 * (jnp.exp(self.logvar) + jnp.square(self.mean) - 1.0 - self.logvar)
        sigma = self.std + tau
        return 0.5 * (jnp.square(sigma) + jnp.square(self.mean) - 1.0) - jnp.log(sigma)

    def kl(self, other: DiagGaussian) -> jax.Array:
        """KL(self ‖ other) per entry: ½[σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1 + log σ₂² − log σ₁²].

        The variances (not the standard deviations) enter the ratio: 002's public attack code
        used σ where σ² belongs (REFERENCE_NOTES 002), which this formula does not repeat.
        """
        inv_var2 = jnp.exp(-other.logvar)
        return 0.5 * (
            jnp.exp(self.logvar) * inv_var2
            + jnp.square(self.mean - other.mean) * inv_var2
            - 1.0
            + other.logvar
            - self.logvar
        )
