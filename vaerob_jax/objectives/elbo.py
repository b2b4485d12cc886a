"""β-VAE objective (Eq. 2 of 000_2a5470c3dc126c07), per example and as a batch loss.

L(θ, φ) = E_{q(z|x)}[log p(x|z)] − β · KL(q(z|x) ‖ N(0, I)); we minimise its negative.
Paper form (default, ``kl_reduction='sum'``): reconstruction summed over pixels, KL summed over
latent dims, per example; the batch mean is taken by :func:`beta_elbo`.
Reference-code form (``kl_reduction='reference_mean'``): the public code of 000 adds β times
the KL *averaged* over batch and latent dims to a reconstruction summed over batch and pixels,
which divides β by batch_size·latent_dim. Per example that is
recon + β · KL_sum / (batch_size · latent_dim).
τ (001 Fig. 7) offsets the encoder std: z = μ + (σ + τ)·η, with the KL computed for σ + τ.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.vae import VAE
from vaerob_jax.objectives.base import BatchLoss

KL_REDUCTIONS = ("sum", "reference_mean")


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, diag(exp(logvar))) ‖ N(0, I)) per latent dim (closed form)."""
    return DiagGaussian(mu, logvar).kl_standard()


def beta_vae_loss(
    model: VAE,
    params: Any,
    x: jax.Array,
    key: jax.Array,
    beta: jax.Array | float,
    *,
    kl_reduction: str = "sum",
    batch_size: int = 1,
    tau: jax.Array | float = 0.0,
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
      tau: τ added to the encoder std (0 gives the plain VAE).

    Returns:
      (loss, aux) where aux holds 'recon' (−log p(x|z), summed over pixels), 'kl' (summed over
      latent dims) and 'elbo'.
    """
    q = model.posterior(params, x)
    z = q.sample(key, tau)
    recon = -model.log_likelihood(params, x, z)
    kl = jnp.sum(q.kl_standard(jnp.asarray(tau, q.mean.dtype)))
    if kl_reduction == "sum":
        kl_term = beta * kl
    elif kl_reduction == "reference_mean":
        kl_term = beta * kl / (batch_size * q.mean.shape[-1])
    else:
        raise ValueError(f"unknown kl_reduction {kl_reduction!r}; choose one of {KL_REDUCTIONS}")
    return recon + kl_term, {"recon": recon, "kl": kl, "elbo": -(recon + kl)}


def beta_elbo(model: VAE, kl_reduction: str = "sum") -> BatchLoss:
    """The batch mean of :func:`beta_vae_loss`, as a :class:`BatchLoss` for the grid trainer.

    Hyperparameters: ``beta`` (required), ``tau`` (default 0), both checked >= 0 before
    training. Example i of the batch draws its latent noise from ``jax.random.split(key, B)[i]``.
    Aux: batch means of 'recon' and 'kl'.

    The same (model, kl_reduction) gives the same loss object, so the trainer's compiled step
    (cached per loss) is reused by every grid trained with it.
    """
    if kl_reduction not in KL_REDUCTIONS:
        raise ValueError(f"unknown kl_reduction {kl_reduction!r}; choose one of {KL_REDUCTIONS}")
    return _beta_elbo(model, kl_reduction)


def _nonnegative(*names: str):
    def validate(grid: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> None:
        del data
        for name in names:
            if name in grid and np.any(np.asarray(grid[name]) < 0):
                raise ValueError(f"{name} must be >= 0, got {np.asarray(grid[name]).tolist()}")

    return validate


@functools.lru_cache(maxsize=64)
def _beta_elbo(model: VAE, kl_reduction: str) -> BatchLoss:
    def fn(params, batch, key, hp):
        xs = batch["x"]
        size = xs.shape[0]
        keys = jax.random.split(key, size)

        def one(x, k):
            return beta_vae_loss(
                model,
                params,
                x,
                k,
                hp["beta"],
                kl_reduction=kl_reduction,
                batch_size=size,
                tau=hp["tau"],
            )

        losses, aux = jax.vmap(one)(xs, keys)
        return jnp.mean(losses), {"recon": jnp.mean(aux["recon"]), "kl": jnp.mean(aux["kl"])}

    return BatchLoss(
        fn,
        "beta_elbo",
        required=("beta",),
        defaults=(("tau", 0.0),),
        options=(("kl_reduction", kl_reduction), ("model", model.spec())),
        validate=_nonnegative("beta", "tau"),
    )
