"""The margin study of 001 end to end (``vaerob margins``): Theorem 1 against the estimate.

For every model of a β × τ grid and every chosen example, one compiled program computes
Theorem 1's lower bound (Eq. 4 of 001), the numerically estimated margin R^r_X(x) (Eq. 3,
bisection with the Eq. 5 output attack) and a random-probe ‖J_μ‖_F
(:mod:`vaerob_jax.robustness.certificates`). The pieces: ``config``, ``study`` (inputs,
training or reuse of a subgroup study's grid, cells), ``tables``, ``readings``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaerob_jax.studies.margins.config import (
    EXTRA_COLUMNS,
    MARGIN_COLUMNS,
    MARGIN_PRESETS,
    MARGIN_SUMMARY_COLUMNS,
    MarginStudyConfig,
    validate_margin_config,
)
from vaerob_jax.studies.margins.study import MarginStudy, prepare_margin_inputs
from vaerob_jax.studies.margins.tables import summarize_margins
from vaerob_jax.studies.runner import run_study

__all__ = [
    "EXTRA_COLUMNS",
    "MARGIN_COLUMNS",
    "MARGIN_PRESETS",
    "MARGIN_SUMMARY_COLUMNS",
    "MarginStudy",
    "MarginStudyConfig",
    "prepare_margin_inputs",
    "run_margin_study",
    "summarize_margins",
    "validate_margin_config",
]


def run_margin_study(
    config: MarginStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the margin study into ``out_dir`` and returns the paths of what it wrote.

    Raises:
      ValueError: a bad config (named field), unknown subgroup attributes, too few examples.
      FingerprintMismatchError: ``out_dir`` holds cells of another config and not ``fresh``.
    """
    return run_study(MarginStudy(), config, out_dir, fresh=fresh, progress=progress, log=log)
