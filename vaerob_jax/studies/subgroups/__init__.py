"""The subgroup robustness study of 000 end to end (``vaerob subgroups``).

One call trains (or loads) a β grid, samples n examples per intersectional subgroup, attacks
them over an ε grid with the maximum-damage attack (Eq. 4 of 000) for every β in compiled,
vmapped programs, and evaluates Δc (Eq. 5), per-subgroup and per-attribute summaries and
disparities, downstream attribute classifiers (Tables 1-2) and latent neighbourhoods
(Figs. 7-9); ``run_replicates`` repeats it over training seeds and tests whether the runs
rank the subgroups alike. The pieces: ``config`` (settings and presets), ``study`` (inputs,
training, the attack cells), ``tables`` (tables and figures), ``readings`` (the report's
computed text), ``replicates`` (the comparison of runs); the runner
(:mod:`vaerob_jax.studies.runner`) does the rest.

Example:
    >>> from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, run_subgroup_study
    >>> paths = run_subgroup_study(SUBGROUP_PRESETS["tiny"], "results/tiny")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaerob_jax.studies.runner import run_study
from vaerob_jax.studies.subgroups.config import SUBGROUP_PRESETS, SubgroupStudyConfig
from vaerob_jax.studies.subgroups.replicates import run_replicates
from vaerob_jax.studies.subgroups.study import SubgroupStudy, prepare_inputs, validate_config

__all__ = [
    "SUBGROUP_PRESETS",
    "SubgroupStudy",
    "SubgroupStudyConfig",
    "prepare_inputs",
    "run_replicates",
    "run_subgroup_study",
    "validate_config",
]


def run_subgroup_study(
    config: SubgroupStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the whole study into ``out_dir`` and returns the paths of what it wrote.

    Args:
      config: the study settings.
      out_dir: output folder; an existing one of the same config is resumed.
      fresh: discard what the folder holds for another config.
      progress: progress bars / periodic lines with ETA.
      log: where one-line status messages go.

    Returns:
      Mapping from artefact name to path (tables, figures, report, timings).
    """
    return run_study(SubgroupStudy(), config, out_dir, fresh=fresh, progress=progress, log=log)
