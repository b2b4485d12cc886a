"""Robustness metrics: adversarial deviation, summaries, latent neighbourhoods, margins,
image similarity and decision-boundary errors.

000: Δc and companions (``deviation``), per-subgroup statistics (``stats``), neighbourhoods;
001: r-robustness, Theorem 1's bound, margins (``r_robust``, ``jacobian``, ``margin``,
``certificates``); 003: MS-SSIM, Fréchet distance of features; 004: natural / boundary /
robust errors, parity violations, boundary distances (``boundary``).
"""

from vaerob_jax.robustness.boundary import (
    bootstrap_errors,
    error_decomposition,
    linear_distance,
    logit_margin,
    parity_violations,
    softmax_margin,
)
from vaerob_jax.robustness.certificates import make_margin_program
from vaerob_jax.robustness.deviation import (
    DEVIATION_KINDS,
    NORMALIZATIONS,
    RECON_KINDS,
    adversarial_deviation,
    evaluate_attacks,
    latent_shift,
    perturbed_input,
    reconstruction_loss,
)
from vaerob_jax.robustness.disentangle import (
    elbo_evaluation,
    mutual_information_gap,
    noise_robustness,
    relative_weight_norm_change,
)
from vaerob_jax.robustness.frechet import frechet_distance
from vaerob_jax.robustness.jacobian import (
    PROBES,
    clopper_pearson_lower,
    conservative_bound,
    encoder_jacobian,
    encoder_jacobian_fro,
    encoder_jacobian_fro_probe,
    theorem1_bound,
)
from vaerob_jax.robustness.margin import METHODS as MARGIN_METHODS
from vaerob_jax.robustness.margin import (
    AttackFn,
    LinearGaussianVAE,
    estimate_margin,
    linear_true_margin,
    linear_worst_case_attack,
    make_margin_estimator,
    pgd_attack_fn,
    shifted_ball_probability,
)
from vaerob_jax.robustness.msssim import ms_ssim
from vaerob_jax.robustness.neighbours import (
    NeighbourhoodPull,
    knn,
    knn_subgroup_shares,
    neighbourhood_pull,
    tsne_embedding,
)
from vaerob_jax.robustness.r_robust import (
    APPLY_TO,
    chi2_cdf,
    deviation_norms,
    min_r_for_level,
    p_r_robust,
    p_r_under_perturbation,
    r_robust,
    relative_loglik_degradation,
)
from vaerob_jax.robustness.stats import (
    bootstrap_medians,
    disparity,
    friedman_test,
    holm,
    median_range_test,
    permutation_test_median,
    summarize,
)

__all__ = [
    "APPLY_TO",
    "DEVIATION_KINDS",
    "MARGIN_METHODS",
    "NORMALIZATIONS",
    "PROBES",
    "RECON_KINDS",
    "AttackFn",
    "LinearGaussianVAE",
    "NeighbourhoodPull",
    "adversarial_deviation",
    "bootstrap_errors",
    "bootstrap_medians",
    "chi2_cdf",
    "clopper_pearson_lower",
    "conservative_bound",
    "deviation_norms",
    "disparity",
    "elbo_evaluation",
    "encoder_jacobian",
    "encoder_jacobian_fro",
    "encoder_jacobian_fro_probe",
    "error_decomposition",
    "estimate_margin",
    "evaluate_attacks",
    "frechet_distance",
    "friedman_test",
    "holm",
    "knn",
    "knn_subgroup_shares",
    "latent_shift",
    "linear_distance",
    "linear_true_margin",
    "linear_worst_case_attack",
    "logit_margin",
    "make_margin_estimator",
    "make_margin_program",
    "median_range_test",
    "min_r_for_level",
    "ms_ssim",
    "mutual_information_gap",
    "neighbourhood_pull",
    "noise_robustness",
    "p_r_robust",
    "p_r_under_perturbation",
    "parity_violations",
    "permutation_test_median",
    "perturbed_input",
    "pgd_attack_fn",
    "r_robust",
    "reconstruction_loss",
    "relative_loglik_degradation",
    "relative_weight_norm_change",
    "shifted_ball_probability",
    "softmax_margin",
    "summarize",
    "theorem1_bound",
    "tsne_embedding",
]
