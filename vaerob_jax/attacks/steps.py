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
* :func:`apgd_rule` — the step-size control of Auto-PGD (Croce & Hein, ICML 2020): momentum
  0.75 on the projected signed (L∞) or normalised (L2) step, and at checkpoints spread over
  the steps the step size halves and the search moves back to the best point found when the
  objective rose in fewer than 75 % of the steps since the last checkpoint, or when neither
  the step size nor the best value changed there. ``step_size`` is the initial step (2ε in
  Auto-PGD); the rule needs the number of steps (its checkpoints) and the threat's projection
  (the engine passes ``project``).
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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "RULES",
    "adam_rule",
    "apgd_checkpoints",
    "apgd_rule",
    "lbfgs_rule",
    "make_rule",
    "sign_rule",
]

RULES = ("sign", "adam", "apgd", "lbfgs")
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


def _steepest(grads: jax.Array, norm: str) -> jax.Array:
    """The unit steepest-ascent direction of ``grads`` for the norm (sign, or g/‖g‖₂)."""
    if norm == "linf":
        return jnp.sign(grads)
    n = jnp.sqrt(jnp.sum(jnp.square(grads)))
    return jnp.where(n > 0, grads / jnp.maximum(n, _TINY), 0.0)


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
    """Auto-PGD's checkpoints w_j = ⌈p_j·steps⌉: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), while p_j ≤ 1 (distinct, increasing)."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    return tuple(sorted({int(np.ceil(q * steps - 1e-9)) for q in p if q * steps >= 1 - 1e-9}))


class ApgdState(NamedTuple):
    """Per-restart state of :func:`apgd_rule` (losses: the engine's descent convention)."""

    t: jax.Array  # steps taken so far (the step of the δ this update sees)
    scale: jax.Array  # current step / initial step: 1, 1/2, 1/4, ...
    prev: jax.Array  # δ of the previous step (for the momentum)
    last_loss: jax.Array  # loss at the previous δ
    best: jax.Array  # the best δ so far
    best_grad: jax.Array  # the loss gradient there
    best_loss: jax.Array
    ckpt_loss: jax.Array  # best loss at the last checkpoint
    ckpt_t: jax.Array  # step of the last checkpoint
    ups: jax.Array  # steps since the last checkpoint whose loss fell (objective rose)
    halved: jax.Array  # whether the step halved at the last checkpoint


def apgd_rule(
    steps: int, norm: str = "linf", momentum: float = 0.75, rho: float = 0.75
) -> optax.GradientTransformationExtraArgs:
    """Auto-PGD's momentum and step-size halving (see the module docstring).

    At step t the engine hands over δ_t, its loss and gradient. With η = scale·step_size:
    z = Π(δ_t − η·d(g_t)) for the steepest-descent direction d of the norm, and
    δ_{t+1} = Π(δ_t + a·(z − δ_t) + (1 − a)·(δ_t − δ_{t−1})), a = 1 at t = 0, else
    ``momentum``. At a checkpoint w_j (:func:`apgd_checkpoints`) the step halves when fewer
    than ``rho``·(w_j − w_{j−1}) of the steps since w_{j−1} lowered the loss, or when the step
    did not halve at w_{j−1} and the best loss has not improved since; the step is then taken
    from the best δ with its stored gradient and no momentum.

    Args:
      steps: the attack's number of steps (places the checkpoints).
      norm: 'linf' (signed steps) or 'l2' (normalised gradient).
      momentum: weight a of the new projected step (Auto-PGD: 0.75).
      rho: the share of improving steps below which the step halves (Auto-PGD: 0.75).
    """
    table = np.zeros(max(int(steps), 1) + 1, bool)
    table[list(apgd_checkpoints(int(steps)))] = True

    def init(params: jax.Array) -> ApgdState:
        inf = jnp.asarray(jnp.inf, params.dtype)
        zero = jnp.int32(0)
        return ApgdState(
            zero,
            jnp.ones((), params.dtype),
            params,
            inf,
            params,
            jnp.zeros_like(params),
            inf,
            inf,
            zero,
            zero,
            jnp.asarray(False),
        )

    def update(grads, state, params=None, *, value, step_size, project, **extra_args):
        del extra_args
        delta, t = params, state.t
        ups = state.ups + ((value < state.last_loss) & (t > 0)).astype(jnp.int32)
        better = value < state.best_loss
        best = jnp.where(better, delta, state.best)
        best_grad = jnp.where(better, grads, state.best_grad)
        best_loss = jnp.where(better, value, state.best_loss)
        at_ckpt = jnp.asarray(table)[jnp.minimum(t, table.size - 1)] & (t > 0)
        few_ups = ups < rho * (t - state.ckpt_t)
        stalled = ~state.halved & (best_loss >= state.ckpt_loss)
        halve = at_ckpt & (few_ups | stalled)
        scale = jnp.where(halve, 0.5 * state.scale, state.scale)
        base = jnp.where(halve, best, delta)
        prev = jnp.where(halve, best, state.prev)
        g = jnp.where(halve, best_grad, grads)
        z = project(base - (step_size * scale) * _steepest(g, norm))
        a = jnp.where(t == 0, 1.0, momentum).astype(delta.dtype)
        new = project(base + a * (z - base) + (1 - a) * (base - prev))
        new_state = ApgdState(
            t + 1,
            scale,
            base,
            jnp.where(halve, best_loss, value),
            best,
            best_grad,
            best_loss,
            jnp.where(at_ckpt | (t == 0), best_loss, state.ckpt_loss),  # w_0 = 0 too
            jnp.where(at_ckpt, t, state.ckpt_t),
            jnp.where(at_ckpt, 0, ups),
            jnp.where(at_ckpt, halve, state.halved),
        )
        return new - delta, new_state

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


def make_rule(
    rule: str | optax.GradientTransformationExtraArgs, norm: str, steps: int = 100
) -> Any:
    """A rule by name ('sign', 'adam', 'apgd', 'lbfgs'), or a given transformation unchanged.

    ``steps`` places the checkpoints of 'apgd'; the other rules ignore it.
    """
    if isinstance(rule, optax.GradientTransformation):
        return rule
    if rule == "sign":
        return sign_rule(norm)
    if rule == "adam":
        return adam_rule()
    if rule == "apgd":
        return apgd_rule(steps, norm)
    if rule == "lbfgs":
        return lbfgs_rule()
    raise ValueError(f"unknown rule {rule!r}; choose one of {RULES} or pass a transformation")


def tree_finite(tree: Any) -> jax.Array:
    """True when every leaf of ``tree`` is finite (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
