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
    its stronger variants ('doubled', 'strong'), by name."""

    frac = config.attack_step
    attacked = with_compute_dtype(model, config.attack_dtype)

    def attack(steps: int, restarts: int) -> atk.Attack:
        return atk.pgd(
            atk.latent_damage(attacked),
            norm=config.norm,
            steps=steps,
            step_size=None if frac is None else (lambda eps: frac * eps),
            rule=config.attack_rule,
            restarts=restarts,
            schedule=config.attack_schedule,
        )

    s, r = config.attack_steps, config.restarts
    if config.convergence_factor == 0:
        return {"default": attack(s, r)}
    return {
        "default": attack(s, r),
        "doubled": attack(2 * s, r),
        "strong": attack(config.convergence_factor * s, config.convergence_restarts),
    }


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

    def delta_c(attack: atk.Attack, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        res = atk.run_attack(attack, params, {"x": xs}, budget, key)
        m = evaluate_attacks(model, params, xs, res.delta, kind=config.deviation_kind)
        return np.asarray(m["delta_c"][0], np.float64), np.asarray(res.value[0], np.float64)

    # Same start as the study's attack: the arms differ only in steps (and restarts).
    key = study_key(config.seed, "attack")
    for arm in CONVERGENCE_ARMS:
        out[f"dc_{arm}"], out[f"obj_{arm}"] = delta_c(attacks[arm], key)
    for k in range(1, config.attack_seeds):
        out[f"dc_seed{k}"] = delta_c(attacks["default"], study_key(config.seed, f"attack/{k}"))[0]
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
