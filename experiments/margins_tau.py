"""001 Fig. 7: the margin against the encoder-std offset τ, on a β × τ grid on ``shapes``.

Run:
    vaerob margins --out results/margins_tau --taus 0,0.1,0.5,1

Trains the default study's β ∈ {1, 5, 10} models for every τ (σ + τ in training and in the
Monte-Carlo draws; 12 models), then computes Theorem 1's bound and the estimated margin for
the subgroup study's 256 examples per model. Expected: ``figures/margin_vs_tau.png`` (mean ±
sd of the margin and the bound against τ, one line per β; 001 finds the margin grows with τ)
and one ``sigma_jacobian_margin_vs_beta_tau<τ>.png`` per τ. It trains four times the default
grid, so it takes about four times the main job's training time.
"""

from __future__ import annotations

import dataclasses

from vaerob_jax.studies.margins import MARGIN_PRESETS, MarginStudyConfig

__all__ = ["get_config"]


def get_config() -> MarginStudyConfig:
    """The default margin study with 001 Fig. 7's τ grid."""
    return dataclasses.replace(MARGIN_PRESETS["shapes"], taus=(0.0, 0.1, 0.5, 1.0))
