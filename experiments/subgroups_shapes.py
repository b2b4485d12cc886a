"""The main job: the subgroup robustness study of 000 on the embedded ``shapes`` faces.

Run:
    make study                                   # = vaerob subgroups --out results/subgroups

What it does: trains β ∈ {1, 5, 10} β-VAEs (burgess64, latent 16, 32×32, 1,000 steps) as one
grid, trains age and gender classifiers, samples 64 examples per Young × Male subgroup with
CelebA's subgroup shares, attacks them at L∞ ε ∈ {0.03, 0.06, 0.1} with Auto-PGD (80 steps,
best of 6 random starts) on Eq. 4 of 000, checks at ε = 0.1 that a stronger attack finds no
more, and writes ``results/subgroups/report.md`` with ``deviation.csv``,
``summary.csv``, ``disparity.csv``, classifier-accuracy and neighbourhood tables and figures.
The README states the measured time and the headline readings of the last run.
"""

from __future__ import annotations

from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, SubgroupStudyConfig

__all__ = ["get_config"]


def get_config() -> SubgroupStudyConfig:
    """The default subgroup study (the 'shapes' preset of ``vaerob subgroups``)."""
    return SUBGROUP_PRESETS["shapes"]
