"""Training objectives: batch-level losses for the grid trainer, and their per-example parts.

* 000/001: :func:`beta_elbo` (Eq. 2 of 000, with 001's τ); :func:`cross_entropy`;
* 002: :func:`beta_tcvae_loss` (MWS / correct MSS), :func:`seatbelt_loss`,
  :func:`tcdlgm_loss`, and the full-data :func:`tc_decomposition` for reports;
* 003: :func:`gmm_dae_loss` (GMM-DAE), :func:`augmented_dae_loss`, :func:`coupled_dae_loss`
  (the paper's method) and their KS / two-point KS / covariance terms;
* 004: :func:`fair_robust_loss` (Eq. 3's penalty, PGD training, the combined objective,
  margin losses incl. the ramp), :func:`fairness_penalty`;
* :func:`linf_ascent`: the inner maximisation adversarial-training losses share.
"""

from vaerob_jax.objectives.base import BatchLoss, per_example_mean
from vaerob_jax.objectives.classification import cross_entropy
from vaerob_jax.objectives.elbo import KL_REDUCTIONS, beta_elbo, beta_vae_loss, gaussian_kl
from vaerob_jax.objectives.fairness import fair_robust_loss, fairness_penalty, group_losses
from vaerob_jax.objectives.gmm_dae import augmented_dae_loss, coupled_dae_loss, gmm_dae_loss
from vaerob_jax.objectives.gmm_losses import (
    coupled_covariance_loss,
    covariance_loss,
    ks_loss,
    two_point_ks_loss,
)
from vaerob_jax.objectives.gmm_weights import closed_form_expectations
from vaerob_jax.objectives.hierarchical import hierarchical_tc_loss, seatbelt_loss, tcdlgm_loss
from vaerob_jax.objectives.inner import linf_ascent
from vaerob_jax.objectives.losses import MARGIN_LOSSES, margin_loss, ramp_loss
from vaerob_jax.objectives.tc import (
    ESTIMATORS,
    beta_tcvae_loss,
    elbo_decomposition,
    tc_decomposition,
)

__all__ = [
    "ESTIMATORS",
    "KL_REDUCTIONS",
    "MARGIN_LOSSES",
    "BatchLoss",
    "augmented_dae_loss",
    "beta_elbo",
    "beta_tcvae_loss",
    "beta_vae_loss",
    "closed_form_expectations",
    "coupled_covariance_loss",
    "coupled_dae_loss",
    "covariance_loss",
    "cross_entropy",
    "elbo_decomposition",
    "fair_robust_loss",
    "fairness_penalty",
    "gaussian_kl",
    "gmm_dae_loss",
    "group_losses",
    "hierarchical_tc_loss",
    "ks_loss",
    "linf_ascent",
    "margin_loss",
    "per_example_mean",
    "ramp_loss",
    "seatbelt_loss",
    "tc_decomposition",
    "tcdlgm_loss",
    "two_point_ks_loss",
]
