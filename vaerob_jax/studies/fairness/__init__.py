"""The fairness-versus-robustness study of 004 end to end (``vaerob fairness``).

(a) the theory panel of the 1-D two-Gaussian model (closed forms, theorem checks, trained
thresholds); (b) a λ × ε* × seed grid of MLPs on a 2-D Gaussian mixture; (c) the same on the
embedded digits with cross-entropy and the ramp loss; per-group natural / boundary / robust
errors under R+FGSM and PGD, distances, parity violations with bootstrap CIs, and the paper's
claims checked one by one. The pieces: ``config``, ``study``, ``tables``, ``readings``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaerob_jax.studies.fairness.config import (
    DATASETS,
    FAIRNESS_PRESETS,
    FairnessStudyConfig,
    validate_fairness_config,
)
from vaerob_jax.studies.fairness.readings import CLAIM_COLUMNS, claim_rows
from vaerob_jax.studies.fairness.study import FairnessStudy, prepare_parts
from vaerob_jax.studies.runner import run_study

__all__ = [
    "CLAIM_COLUMNS",
    "DATASETS",
    "FAIRNESS_PRESETS",
    "FairnessStudy",
    "FairnessStudyConfig",
    "claim_rows",
    "prepare_parts",
    "run_fairness_study",
    "validate_fairness_config",
]


def run_fairness_study(
    config: FairnessStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the fairness study into ``out_dir`` and returns the paths of what it wrote.

    Raises:
      ValueError: a bad config (the field is named) or unusable data, before training.
      FingerprintMismatchError: ``out_dir`` holds cells of another config and not ``fresh``.
    """
    return run_study(FairnessStudy(), config, out_dir, fresh=fresh, progress=progress, log=log)
