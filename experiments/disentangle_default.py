"""The disentanglement-and-robustness study of 002 on embedded data (Figs. 1, 3, 5-8, Table 1).

Run:
    vaerob disentangle --out results/disentangle

On a prepared dSprites (Chen et al.'s MIG data set; shape is left out of MIG):
    vaerob disentangle --out results/dsprites --dataset dsprites --data-dir ~/tensorflow_datasets

What to expect in ``results/disentangle``: seven models (VAE, β-TCVAE at β 4 and 10, Seatbelt-VAE
at L = 2 with β 1 and 10 and at L = 3 with β 10, β-TCDLGM at L = 2, β 10) on the embedded
shapes faces at 32×32, each attacked with the latent and the output attack on the same five
input–target pairs at 14 λ of 002's grid 2^−20…2^20; ``summary.csv`` (mean log10 Δ with
bootstrap CIs over pairs), ``metrics.csv`` (MIG, full-data TC, β = 1 ELBO, noise, weight
norms), ``convergence.csv`` (the check attack and scipy's L-BFGS-B: the attacks' own evidence)
and ``claims.csv`` / ``report.md`` saying which of 002's claims held here.
"""

from __future__ import annotations

from vaerob_jax.studies.disentangle import DISENTANGLE_PRESETS, DisentangleStudyConfig

__all__ = ["get_config"]


def get_config() -> DisentangleStudyConfig:
    """The default disentanglement study (the 'default' preset of ``vaerob disentangle``)."""
    return DISENTANGLE_PRESETS["default"]
