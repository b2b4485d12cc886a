"""End-to-end studies: each is a config and a few small pieces run by one runner.

* :mod:`~vaerob_jax.studies.runner`: validate → output folder checked and locked → data →
  stored config checked → train-or-load → resumable cells tied to their models → tables →
  figures → ``report.md``, shared by every study;
* :mod:`~vaerob_jax.studies.subgroups`: 000's subgroup robustness (``vaerob subgroups``);
* :mod:`~vaerob_jax.studies.margins`: 001's margins and Theorem 1 (``vaerob margins``);
* :mod:`~vaerob_jax.studies.fairness`: 004's fairness versus robustness (``vaerob fairness``).
"""

from vaerob_jax.studies.common import override
from vaerob_jax.studies.fairness import (
    FAIRNESS_PRESETS,
    FairnessStudyConfig,
    run_fairness_study,
)
from vaerob_jax.studies.margins import MARGIN_PRESETS, MarginStudyConfig, run_margin_study
from vaerob_jax.studies.runner import CellPlan, RunInterrupted, Study, StudyRun, run_study
from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, SubgroupStudyConfig, run_subgroup_study

__all__ = [
    "FAIRNESS_PRESETS",
    "MARGIN_PRESETS",
    "SUBGROUP_PRESETS",
    "CellPlan",
    "FairnessStudyConfig",
    "MarginStudyConfig",
    "RunInterrupted",
    "Study",
    "StudyRun",
    "SubgroupStudyConfig",
    "override",
    "run_fairness_study",
    "run_margin_study",
    "run_study",
    "run_subgroup_study",
]
