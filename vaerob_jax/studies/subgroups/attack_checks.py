"""The subgroup study's evidence about its own attack: per-example failure diagnostics and
the convergence check (stronger attacks and independent random starts at the largest ε).

``attack_diagnostics`` turns an :class:`~vaerob_jax.attacks.AttackResult` into the
``deviation.csv`` columns; ``check_attack_cells`` raises
:class:`~vaerob_jax.attacks.AttackFailedError` before a cell whose attack never moved is
stored; ``study_attacks`` / ``run_convergence`` compute the arrays that
``attack_convergence.csv`` summarises (stored with the cell, so a resumed run reuses them).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax import attacks as atk
from vaerob_jax.models import VAE, with_compute_dtype
from vaerob_jax.robustness import evaluate_attacks
from vaerob_jax.studies.common import study_key
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig

__all__ = [
    "CONVERGENCE_ARMS",
    "attack_diagnostics",
    "check_attack_cells",
    "run_convergence",
    "study_attacks",
]


CONVERGENCE_ARMS = ("doubled", "strong")


def study_attacks(config: SubgroupStudyConfig, model: VAE) -> dict[str, atk.Attack]:
    """The study's attack ('default', Eq. 4 of 000) and, unless the convergence check is off,
    its stronger variants ('doubled', 'strong'), by name. Where the strong attack has the
    doubled one's steps and more restarts, 'strong_rest' holds just its extra restarts
    (``first_restart`` = the doubled attack's restarts): :func:`run_convergence` combines it
    with the doubled attack's result instead of repeating those restarts."""

    frac = config.attack_step
    attacked = with_compute_dtype(model, config.attack_dtype)

    def attack(steps: int, restarts: int, first_restart: int = 0) -> atk.Attack:
        return atk.pgd(
            atk.latent_damage(attacked),
            norm=config.norm,
            steps=steps,
            step_size=None if frac is None else (lambda eps: frac * eps),
            rule=config.attack_rule,
            restarts=restarts,
            schedule=config.attack_schedule,
            first_restart=first_restart,
        )

    s, r = config.attack_steps, config.restarts
    if config.convergence_factor == 0:
        return {"default": attack(s, r)}
    strong_steps, strong_restarts = config.convergence_factor * s, config.convergence_restarts
    attacks = {
        "default": attack(s, r),
        "doubled": attack(2 * s, r),
        "strong": attack(strong_steps, strong_restarts),
    }
    if strong_steps == 2 * s and strong_restarts > r:
        attacks["strong_rest"] = attack(strong_steps, strong_restarts - r, first_restart=r)
    return attacks


def run_convergence(
    attacks: dict[str, atk.Attack],
    model: VAE,
    params: Any,
    xs: jax.Array,
    eps: float,
    config: SubgroupStudyConfig,
) -> dict[str, np.ndarray]:
    """Δc of every example under the stronger attacks and under the default attack from
    ``attack_seeds - 1`` other random starts, at one ε: arrays ``dc_<arm>`` and
    ``dc_seed<k>`` (N,), and the stronger attacks' best objective values ``obj_<arm>`` (the
    latent shift they maximise), stored with the cell so a resumed run reuses them."""
    budget = jnp.asarray([eps], jnp.float32)
    out: dict[str, np.ndarray] = {}

    def attacked(attack: atk.Attack, key: jax.Array) -> atk.AttackResult:
        return atk.run_attack(attack, params, {"x": xs}, budget, key)

    def delta_c(res: atk.AttackResult) -> tuple[np.ndarray, np.ndarray]:
        m = evaluate_attacks(model, params, xs, res.delta, kind=config.deviation_kind)
        return np.asarray(m["delta_c"][0], np.float64), np.asarray(res.value[0], np.float64)

    # Same start as the study's attack: the arms differ only in steps (and restarts).
    key = study_key(config.seed, "attack")
    doubled = attacked(attacks["doubled"], key)
    if "strong_rest" in attacks:  # restarts are independent: reuse the doubled attack's
        strong = atk.best_of(doubled, attacked(attacks["strong_rest"], key))
    else:
        strong = attacked(attacks["strong"], key)
    for arm, res in zip(CONVERGENCE_ARMS, (doubled, strong), strict=True):
        out[f"dc_{arm}"], out[f"obj_{arm}"] = delta_c(res)
    for k in range(1, config.attack_seeds):
        seed_key = study_key(config.seed, f"attack/{k}")
        out[f"dc_seed{k}"] = delta_c(attacked(attacks["default"], seed_key))[0]
    return out


def attack_diagnostics(result: atk.AttackResult) -> dict[str, np.ndarray]:
    """Per budget and example: the best objective, the objective at the random start, the
    number of non-finite steps, and 1 where the attack gained nothing over its start (its
    Δc would then measure the random start, not an attack)."""
    return {
        "attack_value": np.asarray(result.value, np.float64),
        "attack_start_value": np.asarray(result.start_value, np.float64),
        "attack_nonfinite_steps": np.asarray(result.nonfinite, np.int64),
        "attack_failed": (~np.asarray(result.improved)).astype(np.int64),
    }


def check_attack_cells(
    cells: list[Any], diagnostics: dict[str, np.ndarray], log: Any = print
) -> None:
    """Raises before anything is stored if a whole cell failed; logs partial failures."""
    failed = diagnostics["attack_failed"]
    nonfinite = diagnostics["attack_nonfinite_steps"]
    for e, cell in enumerate(cells):
        n_fail, n = int(failed[e].sum()), int(failed[e].size)
        where = f"β={float(cell['beta']):g}, ε={float(cell['eps']):g}"
        if n_fail == n:
            raise atk.AttackFailedError(
                f"the attack gained nothing over its random start for all {n} examples at "
                f"{where} (non-finite steps: {int(nonfinite[e].sum())}); check the objective "
                "and the step size before trusting any Δc of this cell"
            )
        if n_fail or nonfinite[e].any():
            log(
                f"warning: at {where}, {n_fail} of {n} examples gained nothing over the random "
                f"start and {int((nonfinite[e] > 0).sum())} had non-finite steps "
                "(attack_failed / attack_nonfinite_steps in deviation.csv)"
            )
