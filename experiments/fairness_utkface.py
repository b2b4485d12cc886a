"""The fairness study of 004 on UTKFace (§6, Figs. 3–5: ethnicity groups, the paper's CNN).

Run (on a GPU/TPU machine; UTKFace is not downloadable here: put its aligned-and-cropped
``age_gender_race_date.jpg.chip.jpg`` files into ``data/UTKFace`` or name the folder):
    vaerob fairness --preset utkface --utkface-dir ~/data/UTKFace --out results/fairness_utk

The age task (nine age bins as label and group): add ``--utkface-label age_bin``.

What to expect: the same tables as the default run for one part, 'utkface', with five race
groups; files whose names do not parse are reported with their count. The grid is λ ∈ {0, .1,
.5, 1, 2} × ε* ∈ {0, 2, 4, 8}/255 × 3 seeds (60 CNNs, 8,000 steps at 32×32), evaluated at
ε ∈ {1, 2, 4, 8, 16}/255. On CPU the CNNs train one at a time (vmapped convolutions are slow
there); this preset's time has not been measured on any machine yet (no UTKFace folder and
no accelerator were available), so it is meant for accelerators.
"""

from __future__ import annotations

from vaerob_jax.studies.fairness import FAIRNESS_PRESETS, FairnessStudyConfig

__all__ = ["get_config"]


def get_config() -> FairnessStudyConfig:
    """The UTKFace fairness study (the 'utkface' preset of ``vaerob fairness``)."""
    return FAIRNESS_PRESETS["utkface"]
