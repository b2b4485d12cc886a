"""The robust deterministic-autoencoder study of 003 on embedded data (Tables 1-3, Figs. 2-3).

Run:
    vaerob dae --out results/dae

On a prepared TFDS dataset (the paper's MNIST setting; grey images use 003's MLP):
    vaerob dae --out results/dae_mnist --dataset mnist --data-dir ~/tensorflow_datasets

What to expect in ``results/dae``: nine models (VAE, β-VAE, β-TCVAE, GMM-DAE, Augmented,
003's method at α ∈ {0, 0.5, 1} and at α = 0.5 with the public code's latent noise 0.1) on
the sklearn digits at 32×32, each attacked on the same 320 (source, target) pairs at
λ ∈ {1, 3, 5}; ``table1.csv`` / ``table2.csv`` / ``table3.csv`` in the layout of 003's
tables, ``quality.csv`` (FD-clf, never called FID), ``convergence.csv`` and
``lbfgs_check.csv`` (the attacks' own evidence) and ``claims.csv`` / ``report.md`` saying
which of 003's orderings held here, with paired bootstrap CIs.

Cost on the 2-core CPU: about 11 minutes from nothing (training 4.9, attacks and metrics 5.7).
"""

from __future__ import annotations

from vaerob_jax.studies.dae import DAE_PRESETS, DAEStudyConfig

__all__ = ["get_config"]


def get_config() -> DAEStudyConfig:
    """The default DAE study (the 'default' preset of ``vaerob dae``)."""
    return DAE_PRESETS["default"]
