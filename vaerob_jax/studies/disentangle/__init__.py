"""The disentanglement-and-robustness study of 002 end to end (``vaerob disentangle``).

A vanilla VAE, β-TCVAEs, Seatbelt-VAEs and β-TCDLGMs trained as vmapped β stacks on one
backbone and a data set with ground-truth factors; the latent (Eqs. 13-15) and output
(Eq. 12) attacks over 002's λ grid on seeded input–target pairs shared by every model,
models × pairs × λ in one batched L-BFGS program per mode, checked against a stronger attack
and scipy's L-BFGS-B; MIG, full-data TC, the β = 1 ELBO, Gaussian-noise robustness and
weight-norm changes; 002's claims checked with paired bootstrap CIs. The pieces: ``config``,
``study``, ``tables``, ``readings``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaerob_jax.studies.disentangle.config import (
    DISENTANGLE_DATASETS,
    DISENTANGLE_PRESETS,
    DisentangleStudyConfig,
    ModelSpec,
    parse_model,
    validate_disentangle_config,
)
from vaerob_jax.studies.disentangle.study import DisentangleStudy, prepare_disentangle_inputs
from vaerob_jax.studies.runner import run_study

__all__ = [
    "DISENTANGLE_DATASETS",
    "DISENTANGLE_PRESETS",
    "DisentangleStudy",
    "DisentangleStudyConfig",
    "ModelSpec",
    "parse_model",
    "prepare_disentangle_inputs",
    "run_disentangle_study",
    "validate_disentangle_config",
]


def run_disentangle_study(
    config: DisentangleStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the disentanglement study into ``out_dir`` and returns the paths of what it wrote.

    Raises:
      ValueError: a bad config (the field is named) or unusable data, before training.
      FingerprintMismatchError: ``out_dir`` holds cells of another config and not ``fresh``.
    """
    return run_study(DisentangleStudy(), config, out_dir, fresh=fresh, progress=progress, log=log)
