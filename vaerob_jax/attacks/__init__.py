"""Compiled, vmapped maximum-damage attacks (Eq. 4 of 000; Eq. 5 of 001).

An attack is composed from a random start, an objective, a step rule and a projection
(:func:`pgd`); ``attack.run(params, x, eps, key)`` attacks one example and
:func:`attack_batch` / :func:`attack_models` lift it over samples × ε grid × models
(:func:`attack_each`: one ε per sample).
"""

from vaerob_jax.attacks.constraints import (
    CONSTRAINTS,
    NORMS,
    norm_of,
    project_l2_box,
    projection,
    random_start,
)
from vaerob_jax.attacks.driver import (
    DRIVER_ENV_VAR,
    DRIVERS,
    attack_batch,
    attack_each,
    attack_models,
    example_keys,
    loop_driver,
)
from vaerob_jax.attacks.objectives import (
    NORMALIZATIONS,
    Objective,
    latent_damage,
    output_damage,
    perturbed_input,
    safe_norm,
)
from vaerob_jax.attacks.pgd import Attack, AttackState, pgd, validate_inputs
from vaerob_jax.attacks.steps import RULES, StepRule, adam_rule, make_rule, sign_rule

__all__ = [
    "CONSTRAINTS",
    "DRIVERS",
    "DRIVER_ENV_VAR",
    "NORMALIZATIONS",
    "NORMS",
    "RULES",
    "Attack",
    "AttackState",
    "Objective",
    "StepRule",
    "adam_rule",
    "attack_batch",
    "attack_each",
    "attack_models",
    "example_keys",
    "latent_damage",
    "loop_driver",
    "make_rule",
    "norm_of",
    "output_damage",
    "perturbed_input",
    "pgd",
    "project_l2_box",
    "projection",
    "random_start",
    "safe_norm",
    "sign_rule",
    "validate_inputs",
]
