"""Per-example training objectives."""

from vaerob_jax.objectives.elbo import (
    KL_REDUCTIONS,
    beta_vae_loss,
    gaussian_kl,
    gaussian_kl_offset,
)

__all__ = ["KL_REDUCTIONS", "beta_vae_loss", "gaussian_kl", "gaussian_kl_offset"]
