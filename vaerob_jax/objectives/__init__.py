"""Training objectives: batch-level losses for the grid trainer, and their per-example parts."""

from vaerob_jax.objectives.base import BatchLoss, per_example_mean
from vaerob_jax.objectives.classification import cross_entropy
from vaerob_jax.objectives.elbo import KL_REDUCTIONS, beta_elbo, beta_vae_loss, gaussian_kl
from vaerob_jax.objectives.inner import linf_ascent

__all__ = [
    "KL_REDUCTIONS",
    "BatchLoss",
    "beta_elbo",
    "beta_vae_loss",
    "cross_entropy",
    "gaussian_kl",
    "linf_ascent",
    "per_example_mean",
]
