"""Compiled, vmapped attacks composed from an objective, a threat, a step rule and restarts.

* threats: :func:`ball` (hard L∞/L2 budget ∩ pixel box) and :func:`penalty` (λ‖δ‖ charged
  against the objective, pixel box only);
* step rules (optax transformations with extra arguments): :func:`sign_rule`,
  :func:`adam_rule`, :func:`apgd_rule` (Auto-PGD's momentum and step halving),
  :func:`lbfgs_rule`;
* objectives ``(params, inputs, delta, key) -> scalar`` to maximise: :func:`latent_damage`
  (Eq. 4 of 000), :func:`output_damage` (Eq. 5 of 001, Eq. 13 of 003);
* :func:`make_attack` / :func:`pgd` build an :class:`Attack` for one example;
  :func:`run_attack` lifts it over samples × budgets (× models) and returns an
  :class:`AttackResult` (best δ, its value, the start's value, non-finite step count);
* 002's targeted attacks: :func:`targeted_attack` (a batched, vmappable fixed-iteration
  box-constrained L-BFGS, :func:`lbfgsb_minimize`) and its scipy reference
  :func:`targeted_attack_scipy` (:func:`lbfgsb_scipy`).

Example:
    >>> attack = pgd(latent_damage(model), norm="linf", steps=40)
    >>> res = run_attack(attack, params, {"x": xs}, jnp.array([0.03, 0.1]), jax.random.key(0))
    >>> res.delta.shape            # (2, N, H, W, C)
"""

from vaerob_jax.attacks.constraints import CONSTRAINTS, NORMS, norm_of, project_l2_box
from vaerob_jax.attacks.driver import DRIVER_ENV_VAR, DRIVERS, loop_driver, run_attack
from vaerob_jax.attacks.engine import (
    SCHEDULES,
    Attack,
    AttackFailedError,
    AttackResult,
    Objective,
    best_of,
    make_attack,
    validate_inputs,
)
from vaerob_jax.attacks.lbfgsb import (
    LBFGSBResult,
    lbfgsb_minimize,
    lbfgsb_scipy,
    targeted_attack,
    targeted_attack_scipy,
)
from vaerob_jax.attacks.objectives import (
    NORMALIZATIONS,
    latent_damage,
    output_damage,
    perturbed_input,
)
from vaerob_jax.attacks.pgd import PGD_RULES, pgd
from vaerob_jax.attacks.steps import (
    RULES,
    adam_rule,
    apgd_checkpoints,
    apgd_rule,
    lbfgs_rule,
    sign_rule,
)
from vaerob_jax.attacks.targeted import (
    code_distance_objective,
    dlgm_latent_objective,
    lambda_grid,
    latent_objective,
    output_objective,
    sample_pairs,
    seatbelt_latent_objective,
)
from vaerob_jax.attacks.threats import PENALTY_NORMS, Threat, ball, exact_norm, penalty

__all__ = [
    "CONSTRAINTS",
    "DRIVERS",
    "DRIVER_ENV_VAR",
    "NORMALIZATIONS",
    "NORMS",
    "PENALTY_NORMS",
    "PGD_RULES",
    "SCHEDULES",
    "RULES",
    "Attack",
    "AttackFailedError",
    "AttackResult",
    "LBFGSBResult",
    "Objective",
    "Threat",
    "adam_rule",
    "apgd_checkpoints",
    "apgd_rule",
    "ball",
    "best_of",
    "code_distance_objective",
    "dlgm_latent_objective",
    "exact_norm",
    "lambda_grid",
    "latent_objective",
    "latent_damage",
    "lbfgs_rule",
    "lbfgsb_minimize",
    "lbfgsb_scipy",
    "loop_driver",
    "make_attack",
    "norm_of",
    "output_damage",
    "output_objective",
    "penalty",
    "perturbed_input",
    "pgd",
    "project_l2_box",
    "run_attack",
    "sample_pairs",
    "seatbelt_latent_objective",
    "sign_rule",
    "targeted_attack",
    "targeted_attack_scipy",
    "validate_inputs",
]
