"""Projected-gradient attacks composed from a start, an objective, a step rule and a projection.

``pgd(objective, ...)`` returns an :class:`Attack` of pure functions for ONE example; the
drivers in :mod:`vaerob_jax.attacks.driver` vmap them over samples × ε grid × models.
The optimisation is the maximum-damage attack of Eq. 4 of 000_2a5470c3dc126c07 (or Eq. 5 of
001 with :func:`output_damage`): max_δ objective(x, δ) s.t. ‖δ‖ ≤ ε, x+δ in the pixel box.

Algorithm per example and restart r (keys: k_r = fold_in(key, r); (k_start, k_steps) =
split(k_r); the objective's key at step t is fold_in(k_steps, t), so a resumed or re-chunked
run reproduces the uninterrupted one):

1. δ₀ = random point of the threat set (:func:`random_start`).
2. For t = 0..steps−1: v_t, g_t = value_and_grad(objective)(δ_t); remember the best
   (δ_t, v_t) seen so far; u_t = rule(g_t); δ_{t+1} = Π(δ_t + α u_t).
3. Evaluate δ_steps too; return the best iterate of the best restart (argmax over restarts).

Keeping the best iterate makes the result monotone in the number of steps and restarts:
restart 0 of an R-restart attack follows the 1-restart trajectory of the same key, and the
argmax can only improve on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.constraints import Box, check_threat_model, projection, random_start
from vaerob_jax.attacks.objectives import Objective
from vaerob_jax.attacks.steps import RULES, make_rule

StepSize = float | Callable[[jax.Array], jax.Array] | None


class AttackState(NamedTuple):
    """State of one example's attack; every leaf has a leading restart axis R except ``t``.

    Attributes:
      delta: current iterates (R, H, W, C).
      rule_state: step-rule state (Adam moments), leading axis R.
      best_delta: best iterate seen so far per restart (R, H, W, C).
      best_value: its objective value (R,).
      step_keys: base key of each restart's per-step keys (R,).
      t: number of steps taken (int32 scalar).
    """

    delta: jax.Array
    rule_state: Any
    best_delta: jax.Array
    best_value: jax.Array
    step_keys: jax.Array
    t: jax.Array


class Attack(NamedTuple):
    """An attack as pure functions of one example (hashable: usable as a jit static argument).

    Attributes:
      init: (params, x, eps, key) -> AttackState.
      step: (params, x, eps, state) -> AttackState, one ascent step for every restart.
      finalize: (params, x, eps, state) -> delta, the best iterate of the best restart.
      run: (params, x, eps, key) -> delta; init, ``steps`` steps (lax.fori_loop), finalize.
      steps, restarts, norm, rule, constraint, box, image_shape: the configuration, used by
        the drivers for input validation and loop lengths.
    """

    init: Callable[..., AttackState]
    step: Callable[..., AttackState]
    finalize: Callable[..., jax.Array]
    run: Callable[..., jax.Array]
    steps: int
    restarts: int
    norm: str
    rule: str
    constraint: str
    box: Box
    image_shape: tuple[int, ...] | None


def _is_concrete(*arrays: Any) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def validate_inputs(attack: Attack, xs: Any, eps: Any, batched: bool) -> None:
    """Host-side checks run before anything is compiled; raises ValueError naming the problem.

    Args:
      attack: the attack (for image shape, box and constraint).
      xs: one image (H, W, C) or, if ``batched``, images (N, H, W, C).
      eps: a scalar budget or a 1-D grid of budgets.
      batched: whether ``xs`` has a leading sample axis.
    """
    shape = tuple(np.shape(xs))
    want = attack.image_shape
    if batched:
        ok = len(shape) == 4 if want is None else shape[1:] == tuple(want)
        if not ok or shape[0] == 0:
            raise ValueError(f"xs must be a non-empty batch (N, {want or 'H, W, C'}), got {shape}")
        if np.ndim(eps) != 1 or np.size(eps) == 0:
            raise ValueError(f"eps_grid must be a non-empty 1-D array, got shape {np.shape(eps)}")
    else:
        ok = len(shape) == 3 if want is None else shape == tuple(want)
        if not ok:
            raise ValueError(f"x must be one image of shape {want or '(H, W, C)'}, got {shape}")
        if np.ndim(eps) != 0:
            raise ValueError(f"eps must be a scalar for one example, got shape {np.shape(eps)}")
    if not _is_concrete(xs, eps):
        return
    e = np.asarray(eps, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"eps must be finite and >= 0, got {e}")
    x = np.asarray(xs)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf pixels")
    if attack.box is not None and attack.constraint == "project":
        lo, hi = attack.box
        if x.min() < lo or x.max() > hi:
            raise ValueError(
                f"pixels must lie in the box {attack.box} (got range [{x.min()}, {x.max()}]); "
                "rescale the images or pass box=None"
            )


def pgd(
    objective: Objective,
    norm: str = "linf",
    steps: int = 100,
    step_size: StepSize = None,
    rule: str = "sign",
    restarts: int = 1,
    box: Box = (0.0, 1.0),
    *,
    constraint: str = "project",
    image_shape: tuple[int, ...] | None = None,
) -> Attack:
    """Builds a projected-gradient maximum-damage attack (Eq. 4 of 000; Eq. 5 of 001).

    Args:
      objective: ``(params, x, delta, key) -> scalar`` to maximise (e.g. :func:`latent_damage`).
      norm: 'linf' (000's threat model) or 'l2' (001/003's).
      steps: number of gradient steps.
      step_size: None (default) for 2.5·ε/steps (relative to ε, so an array expression); a
        float for an absolute step; or a callable ``eps -> step``.
      rule: 'sign' (signed/normalised-gradient PGD) or 'adam' (000's reference optimiser).
      restarts: random starts per example; the best final damage is kept (vmapped, argmax).
      box: valid pixel range of x + δ, or None.
      constraint: 'project' (default, exact projection onto ball ∩ box) or 'rescale' (000's
        reference code: ‖δ‖ = ε exactly after every step, no pixel clipping).
      image_shape: expected (H, W, C), for input validation; taken from the objective
        (``objective.image_shape``, set by this package's objectives) when omitted.

    Returns:
      An :class:`Attack`; ``attack.run(params, x, eps, key)`` attacks one example.

    Example:
      >>> attack = pgd(latent_damage(model), norm="linf", steps=40)
      >>> delta = attack.run(params, x, jnp.float32(0.05), jax.random.key(0))
    """
    check_threat_model(norm, box, constraint)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if int(restarts) < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if isinstance(step_size, (int, float)) and not (np.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be finite and >= 0, got {step_size}")
    steps, restarts = int(steps), int(restarts)
    if image_shape is None:
        image_shape = getattr(objective, "image_shape", None)
    image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
    if box is not None:
        box = (float(box[0]), float(box[1]))

    start = random_start(norm, box, constraint)
    project = projection(norm, box, constraint)
    step_rule = make_rule(rule, norm)
    value_and_grad = jax.value_and_grad(objective, argnums=2)

    def alpha(eps: jax.Array) -> jax.Array:
        if step_size is None:
            return 2.5 * eps / max(steps, 1)
        if callable(step_size):
            return jnp.asarray(step_size(eps), eps.dtype)
        return jnp.asarray(step_size, eps.dtype)

    def init(params: Any, x: jax.Array, eps: jax.Array, key: jax.Array) -> AttackState:
        eps = jnp.asarray(eps, x.dtype)

        def one(r: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
            k_start, k_steps = jax.random.split(jax.random.fold_in(key, r))
            delta = start(k_start, x, eps)
            return delta, step_rule.init(delta), k_steps

        delta, rule_state, step_keys = jax.vmap(one)(jnp.arange(restarts))
        best_value = jnp.full((restarts,), -jnp.inf, x.dtype)
        return AttackState(delta, rule_state, delta, best_value, step_keys, jnp.int32(0))

    def step(params: Any, x: jax.Array, eps: jax.Array, state: AttackState) -> AttackState:
        eps = jnp.asarray(eps, x.dtype)
        a = alpha(eps)

        def one(delta, rule_state, best_delta, best_value, k_steps):
            value, grad = value_and_grad(params, x, delta, jax.random.fold_in(k_steps, state.t))
            better = value > best_value
            best_delta = jnp.where(better, delta, best_delta)
            best_value = jnp.where(better, value, best_value)
            u, rule_state = step_rule.update(grad, rule_state)
            delta = project(x, delta + a * u, eps)
            return delta, rule_state, best_delta, best_value

        delta, rule_state, best_delta, best_value = jax.vmap(one)(
            state.delta, state.rule_state, state.best_delta, state.best_value, state.step_keys
        )
        return AttackState(delta, rule_state, best_delta, best_value, state.step_keys, state.t + 1)

    def finalize(params: Any, x: jax.Array, eps: jax.Array, state: AttackState) -> jax.Array:
        def last_value(delta, k_steps):
            return objective(params, x, delta, jax.random.fold_in(k_steps, state.t))

        value = jax.vmap(last_value)(state.delta, state.step_keys)
        better = value > state.best_value
        best_value = jnp.where(better, value, state.best_value)
        mask = better.reshape(better.shape + (1,) * x.ndim)
        best_delta = jnp.where(mask, state.delta, state.best_delta)
        return best_delta[jnp.argmax(best_value)]

    attack_ref: list[Attack] = []

    def run(params: Any, x: jax.Array, eps: jax.Array, key: jax.Array) -> jax.Array:
        validate_inputs(attack_ref[0], x, eps, batched=False)
        x = jnp.asarray(x)
        eps = jnp.asarray(eps, x.dtype)
        state = init(params, x, eps, key)
        state = jax.lax.fori_loop(0, steps, lambda _, s: step(params, x, eps, s), state)
        return finalize(params, x, eps, state)

    attack = Attack(
        init, step, finalize, run, steps, restarts, norm, rule, constraint, box, image_shape
    )
    attack_ref.append(attack)
    return attack
