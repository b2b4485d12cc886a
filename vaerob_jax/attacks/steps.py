"""Step rules as optax transformations with extra arguments (descent convention).

The attack engine minimises ``loss(δ) = −(objective(δ) − penalty(δ))`` and calls, every step,

    updates, state = rule.update(grad, state, delta, value=loss(δ), grad=grad,
                                 value_fn=loss, step_size=α(budget))

then sets δ ← Π(δ + updates). The rules:

* :func:`sign_rule` — steepest descent for the attack norm, scaled by ``step_size``:
  −α·sign(g) for L∞ (signed-gradient PGD), −α·g/‖g‖₂ for L2 (its L2 analogue). Stateless.
* :func:`adam_rule` — −α·Adam(g) (``optax.scale_by_adam``: bias-corrected m̂/(√v̂ + ε)), the
  optimiser of 000's public code. For the L2 ball the step size α is the length scale of
  one Adam step per coordinate (|Adam(g)_i| ≲ 1), so α = 2.5ε/steps moves each pixel by at
  most about that much per step before the projection.
* :func:`lbfgs_rule` — ``optax.lbfgs`` with its zoom line search on ``value_fn`` (it ignores
  ``step_size``). With an active box the engine projects after the step, i.e. projected
  L-BFGS, a heuristic (no bound-aware Cauchy point as in L-BFGS-B); use it with penalty
  budgets, where the box rarely binds, and deterministic objectives (the line search calls
  ``value_fn`` several times per step).

``step_size`` is an array expression of the budget (e.g. 2.5ε/steps), so a new ε never
recompiles. All rules are ``optax.GradientTransformationExtraArgs``; a custom rule only needs
to accept ``**extra_args`` and return updates to ADD to δ.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["RULES", "adam_rule", "lbfgs_rule", "make_rule", "sign_rule"]

RULES = ("sign", "adam", "lbfgs")
_TINY = 1e-30


def sign_rule(norm: str = "linf") -> optax.GradientTransformationExtraArgs:
    """Signed gradient (L∞) or L2-normalised gradient (L2) descent, times ``step_size``."""

    def init(params: Any) -> Any:
        del params
        return optax.EmptyState()

    def update(grads, state, params=None, *, step_size, **extra_args):
        del params, extra_args
        if norm == "linf":
            return -step_size * jnp.sign(grads), state
        n = jnp.sqrt(jnp.sum(jnp.square(grads)))
        return jnp.where(n > 0, -step_size * grads / jnp.maximum(n, _TINY), 0.0), state

    return optax.GradientTransformationExtraArgs(init, update)


def adam_rule(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    """Adam direction (``optax.scale_by_adam``) times ``−step_size``."""
    tx = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update(grads, state, params=None, *, step_size, **extra_args):
        del params, extra_args
        direction, state = tx.update(grads, state)
        return -step_size * direction, state

    return optax.GradientTransformationExtraArgs(tx.init, update)


def lbfgs_rule(
    memory_size: int = 10, max_linesearch_steps: int = 20
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a zoom line search on ``value_fn`` (``optax.lbfgs``); ignores ``step_size``."""
    tx = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"
        ),
    )

    def update(grads, state, params=None, *, value, grad, value_fn, **extra_args):
        del extra_args  # step_size: the line search chooses the step
        return tx.update(grads, state, params, value=value, grad=grad, value_fn=value_fn)

    return optax.GradientTransformationExtraArgs(tx.init, update)


def make_rule(rule: str | optax.GradientTransformationExtraArgs, norm: str) -> Any:
    """A rule by name ('sign', 'adam', 'lbfgs'), or a given transformation unchanged."""
    if isinstance(rule, optax.GradientTransformation):
        return rule
    if rule == "sign":
        return sign_rule(norm)
    if rule == "adam":
        return adam_rule()
    if rule == "lbfgs":
        return lbfgs_rule()
    raise ValueError(f"unknown rule {rule!r}; choose one of {RULES} or pass a transformation")


def tree_finite(tree: Any) -> jax.Array:
    """True when every leaf of ``tree`` is finite (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
