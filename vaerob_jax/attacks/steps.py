"""Step rules: turn the objective's gradient into an ascent direction u; δ ← Π(δ + α·u).

* ``sign``: steepest ascent for the attack norm — sign(g) for L∞ (signed-gradient PGD), the
  normalised gradient g/‖g‖₂ for L2 (its L2 analogue).
* ``adam``: optax's ``scale_by_adam`` (bias-corrected m̂/(√v̂ + ε)), the optimiser of 000's
  public code; its state lives in the attack state. The step size α multiplies the update
  outside optax so that α can be an array expression of ε (no recompilation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

RULES = ("sign", "adam")


class StepRule(NamedTuple):
    """A pure ascent-direction rule with state, optax style.

    Attributes:
      init: delta -> rule state.
      update: (grad, state) -> (direction, new state).
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def sign_rule(norm: str = "linf") -> StepRule:
    """Signed gradient (L∞) or L2-normalised gradient (L2); stateless."""

    def init(delta: jax.Array) -> Any:
        return ()

    def update(grad: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        if norm == "linf":
            return jnp.sign(grad), state
        n = jnp.sqrt(jnp.sum(jnp.square(grad)))
        return jnp.where(n > 0, grad / jnp.maximum(n, 1e-30), 0.0), state

    return StepRule(init, update)


def adam_rule(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> StepRule:
    """Adam direction (optax.scale_by_adam) for gradient ASCENT; multiply by the step size."""
    tx = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update(grad: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        return tx.update(grad, state)

    return StepRule(tx.init, update)


def make_rule(rule: str, norm: str) -> StepRule:
    """Looks up a step rule by name ('sign' or 'adam')."""
    if rule == "sign":
        return sign_rule(norm)
    if rule == "adam":
        return adam_rule()
    raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
