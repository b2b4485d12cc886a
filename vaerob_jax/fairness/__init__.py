"""Fairness versus adversarial robustness (004, Tran et al.): the Gaussian-mixture theory.

* :mod:`~vaerob_jax.fairness.gmm`: the 1-D two-Gaussian model of §5 — closed forms θ*, θ_f,
  θ_r(ε), θ_f(λ) (Theorem 3, sum and mean penalty), natural/boundary/robust errors and expected
  distances to the boundary, overall and per group, in jnp (vmappable, differentiable).
* :mod:`~vaerob_jax.fairness.theorems`: Theorems 1–3 and Corollaries 1–2 checked on grids
  inside their bounds (cases checked, violations).
* :mod:`~vaerob_jax.fairness.mixtures`: seeded samplers (1-D, d-dim, the 2-D study data set),
  the exact empirical Eq. 3 objective, gradient-trained thresholds vmapped over λ, and the
  d-dimensional reduction of linear classifiers.
* :mod:`~vaerob_jax.fairness.evaluate`: the evaluation attacks (R+FGSM, PGD on the logit
  margin), the PGD-bisection distance bound, and per-example flags of a model stack.

Training losses live in :mod:`vaerob_jax.objectives.fairness` (Eq. 3 penalty, PGD, ramp) and
metrics in :mod:`vaerob_jax.robustness.boundary` (Eqs. 4–7 per group, parity, distances).
"""

from vaerob_jax.fairness.evaluate import (
    EvalSettings,
    Evaluation,
    distance_upper_bound,
    evaluate_classifiers,
    pgd_flips,
    rfgsm,
)
from vaerob_jax.fairness.gmm import (
    REDUCES,
    b_k,
    b_k_bar,
    boundary_error,
    check_mixture,
    expected_distance,
    fair_objective,
    fairness_gap,
    gaussian_abs_deviation,
    group_boundary_errors,
    group_distances,
    group_errors,
    group_robust_errors,
    lambda_critical,
    natural_error,
    psi_inverse,
    robust_error,
    theta_fair,
    theta_fair_lambda,
    theta_robust,
    theta_star,
)
from vaerob_jax.fairness.mixtures import (
    THRESHOLD_LOSSES,
    empirical_fair_objective,
    empirical_group_errors,
    make_gmm2d,
    optimal_linear,
    project_linear,
    sample_gmm,
    sample_gmm_1d,
    train_linear,
    train_thresholds,
)
from vaerob_jax.fairness.theorems import (
    TheoremCheck,
    check_all,
    check_corollary2,
    check_theorem1,
    check_theorem3,
    theorem_grid,
)

__all__ = [
    "REDUCES",
    "EvalSettings",
    "Evaluation",
    "distance_upper_bound",
    "evaluate_classifiers",
    "pgd_flips",
    "rfgsm",
    "THRESHOLD_LOSSES",
    "TheoremCheck",
    "b_k",
    "b_k_bar",
    "boundary_error",
    "check_all",
    "check_corollary2",
    "check_mixture",
    "check_theorem1",
    "check_theorem3",
    "empirical_fair_objective",
    "empirical_group_errors",
    "expected_distance",
    "fair_objective",
    "fairness_gap",
    "gaussian_abs_deviation",
    "group_boundary_errors",
    "group_distances",
    "group_errors",
    "group_robust_errors",
    "lambda_critical",
    "make_gmm2d",
    "natural_error",
    "optimal_linear",
    "project_linear",
    "psi_inverse",
    "robust_error",
    "sample_gmm",
    "sample_gmm_1d",
    "theorem_grid",
    "theta_fair",
    "theta_fair_lambda",
    "theta_robust",
    "theta_star",
    "train_linear",
    "train_thresholds",
]
