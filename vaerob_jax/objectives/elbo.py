"""β-VAE objective, per example (Eq. 2 of 000_2a5470c3dc126c07).

L(θ, φ) = E_{q(z|x)}[log p(x|z)] − β · KL(q(z|x) ‖ N(0, I)); we minimise its negative.
Paper form (default, ``kl_reduction='sum'``): reconstruction summed over pixels, KL summed over
latent dims, per example; the batch mean is taken by the caller.
Reference-code form (``kl_reduction='reference_mean'``): the public code of 000 adds β times
the KL *averaged* over batch and latent dims to a reconstruction summed over batch and pixels,
which divides β by batch_size·latent_dim. Per example that is
recon + β · KL_sum / (batch_size · latent_dim).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vaerob_jax.models.vae import VAE

KL_REDUCTIONS = ("sum", "reference_mean")


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, diag(exp(logvar))) ‖ N(0, I)) per latent dim (closed form)."""
    return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def gaussian_kl_offset(
    mu: jax.Array, logvar: jax.Array, sigma_offset: jax.Array | float
) -> jax.Array:
    """Closed-form KL per dim when the encoder std is sigma + sigma_offset (001 σ-offset models)."""
    sigma = jnp.exp(0.5 * logvar) + sigma_offset
    return 0.5 * (jnp.square(sigma) + jnp.square(mu) - 1.0) - jnp.log(sigma)


def beta_vae_loss(
    model: VAE,
    params: Any,
    x: jax.Array,
    key: jax.Array,
    beta: jax.Array | float,
    *,
    kl_reduction: str = "sum",
    batch_size: int = 1,
    sigma_offset: jax.Array | float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative β-ELBO of one example with a one-sample reparameterised estimate.

    Args:
      model: the VAE.
      params: its params.
      x: one image (H, W, C) in [0, 1].
      key: PRNG key for the latent sample.
      beta: KL weight (an array in grids so a new β never recompiles).
      kl_reduction: 'sum' (Eq. 2, default) or 'reference_mean' (000's public code).
      batch_size: only used by 'reference_mean'.
      sigma_offset: τ added to the encoder std (0 gives the plain VAE).

    Returns:
      (loss, aux) where aux holds 'recon' (−log p(x|z), summed over pixels), 'kl' (summed over
      latent dims) and 'elbo'.
    """
    mu, logvar = model.encode(params, x)
    z = model.sample_latent(key, mu, logvar, sigma_offset)
    recon = -model.log_likelihood(params, x, z)
    kl = jnp.sum(gaussian_kl_offset(mu, logvar, sigma_offset))
    if kl_reduction == "sum":
        kl_term = beta * kl
    elif kl_reduction == "reference_mean":
        kl_term = beta * kl / (batch_size * mu.shape[-1])
    else:
        raise ValueError(f"unknown kl_reduction {kl_reduction!r}; choose one of {KL_REDUCTIONS}")
    return recon + kl_term, {"recon": recon, "kl": kl, "elbo": -(recon + kl)}
