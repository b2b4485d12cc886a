"""The robust deterministic-autoencoder study of 003 end to end (``vaerob dae``).

VAE, β-VAE, β-TCVAE, GMM-DAE, Augmented and 003's coupled method (over α and the latent
noise) trained on one architecture and data set; the latent attack (Eq. 12) and the
maximum-damage attack (Eq. 13) under hard L2 bounds, batched over pairs × λ × models, with
a stronger check attack and an L-BFGS-B cross-check; MS-SSIM and L2 metrics (Tables 1-2),
FD-clf, Table 3's latent classifier, and 003's claims checked with paired bootstrap CIs.
The pieces: ``config``, ``study``, ``tables``, ``readings``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaerob_jax.studies.dae.config import (
    DAE_DATASETS,
    DAE_PRESETS,
    MODEL_KINDS,
    DAEStudyConfig,
    validate_dae_config,
)
from vaerob_jax.studies.dae.readings import CLAIM_COLUMNS, claim_rows
from vaerob_jax.studies.dae.study import DAEStudy, attack_pairs, prepare_dae_inputs
from vaerob_jax.studies.runner import run_study

__all__ = [
    "CLAIM_COLUMNS",
    "DAE_DATASETS",
    "DAE_PRESETS",
    "MODEL_KINDS",
    "DAEStudy",
    "DAEStudyConfig",
    "attack_pairs",
    "claim_rows",
    "prepare_dae_inputs",
    "run_dae_study",
    "validate_dae_config",
]


def run_dae_study(
    config: DAEStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the DAE study into ``out_dir`` and returns the paths of what it wrote.

    Raises:
      ValueError: a bad config (the field is named) or unusable data, before training.
      FingerprintMismatchError: ``out_dir`` holds cells of another config and not ``fresh``.
    """
    return run_study(DAEStudy(), config, out_dir, fresh=fresh, progress=progress, log=log)
