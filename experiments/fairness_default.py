"""The fairness-versus-robustness study of 004 on embedded data (Figs. 2, 4–7, Theorems 1–3).

Run:
    vaerob fairness --out results/fairness

A quicker look at the mixture alone, with a wider λ range:
    vaerob fairness --out results/fairness_gmm --parts gmm2d --gmm-lambdas 0,0.5,1,2,4

What to expect in ``results/fairness``: the theory panel (``theory_classifiers.csv``,
``theorem_checks.csv`` with 0 violations on 91,200 cases, ``theory_lambda.csv`` with trained
thresholds within ~0.1 of Theorem 3's closed form), 45 mixture and 48 digits models'
per-group errors (``errors.csv``, ``error_summary.csv`` with CIs over 3 seeds and the test
examples), distances, the attack check and ``claims.csv`` / ``report.md`` saying which of the
paper's claims held. On the default digits grid the penalty (λ 0 → 2) raises the natural
error and lowers the softmax margin and the distance bound; the ramp at λ = 2 collapses to
chance and is set aside by the report.

Cost on the 2-core CPU: about 6.5 minutes (training 2.7, evaluation 2.7, outputs 0.9).
"""

from __future__ import annotations

from vaerob_jax.studies.fairness import FAIRNESS_PRESETS, FairnessStudyConfig

__all__ = ["get_config"]


def get_config() -> FairnessStudyConfig:
    """The default fairness study (the 'default' preset of ``vaerob fairness``)."""
    return FAIRNESS_PRESETS["default"]
