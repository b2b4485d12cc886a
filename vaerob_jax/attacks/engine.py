"""The attack engine: an attack composed from an objective, a threat, a step rule and restarts.

``make_attack(objective, threat, rule, steps, ...)`` returns an :class:`Attack` of pure
functions for ONE example; :func:`vaerob_jax.attacks.run_attack` lifts them over samples ×
budget grid × models. The attack solves

    max_δ  objective(params, inputs, δ, key) − threat.penalty(δ, budget)
    s.t.   δ in the threat's feasible set for ``budget`` (ball ∩ pixel box, or the box),

which covers 000's maximum-damage attack (Eq. 4, L∞ ball), 001's output attack (Eq. 5, L2
ball), 002's targeted attacks with a λ penalty (Eqs. 12-15), 003's latent and maximum-damage
attacks (Eqs. 12-13) and 004's classifier attacks (objectives that read ``inputs['label']``).

Algorithm per example and restart r (keys: k_r = fold_in(key, r), r counted from
``first_restart``; (k_start, k_steps) = split(k_r); the objective's key at step t is
fold_in(k_steps, t), so a resumed or re-chunked run reproduces the uninterrupted one):

1. δ₀ = threat.start(k_start, x, budget); with ``start='ods'`` then one output-diversified
   step from there, its weight w drawn from fold_in(k_start, 1).
2. For t = 0..steps−1: v_t, g_t = value_and_grad of the total at δ_t; remember the best
   (δ_t, v_t) seen so far (v_0 is also kept as the start's value); if v_t or g_t is not
   finite the step is counted and skipped (δ and the rule's state stay); else
   δ_{t+1} = Π(δ_t + rule.update(−g_t, ...)).
3. Evaluate δ_steps too; return the best iterate of the best restart with its value, the
   start's value and the number of non-finite steps (:class:`AttackResult`).

Keeping the best iterate makes the result monotone in the number of restarts (restart 0 of
an R-restart attack follows the 1-restart trajectory of the same key) and, for a constant
step size, in the number of steps; a cosine schedule and the 'apgd' rule's checkpoints are
laid out over the steps, so there a longer attack takes another path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.attacks.steps import make_rule, tree_finite
from vaerob_jax.attacks.threats import Threat

__all__ = [
    "Attack",
    "AttackFailedError",
    "AttackResult",
    "AttackState",
    "SCHEDULES",
    "STARTS",
    "Objective",
    "as_inputs",
    "best_of",
    "make_attack",
    "validate_inputs",
]

#: Step-size schedules over the steps of an attack (see :func:`make_attack`).
SCHEDULES = ("constant", "cosine")

#: Where each restart starts (see :func:`make_attack`).
STARTS = ("random", "ods")

Objective = Callable[[Any, Mapping[str, jax.Array], jax.Array, jax.Array], jax.Array]
StepSize = float | Callable[[jax.Array], jax.Array] | None


class AttackFailedError(RuntimeError):
    """An attack gained nothing over its random start for every example of a computation
    (its "result" would measure the random start): raised instead of storing it."""


class AttackResult(NamedTuple):
    """What an attack returns per example (leading axes added by the drivers).

    Attributes:
      delta: the best perturbation found.
      value: its total objective (objective − penalty), the quantity maximised.
      start_value: the total objective at the random start of the best restart.
      nonfinite: number of steps (over all restarts) whose value or gradient was not finite;
        those steps were skipped.
    """

    delta: jax.Array
    value: jax.Array
    start_value: jax.Array
    nonfinite: jax.Array

    @property
    def improved(self) -> jax.Array:
        """Whether the attack gained over its random start (False flags a failed attack)."""
        return self.value > self.start_value


class AttackState(NamedTuple):
    """State of one example's attack; every leaf has a leading restart axis R except ``t``."""

    delta: jax.Array
    rule_state: Any
    best_delta: jax.Array
    best_value: jax.Array
    start_value: jax.Array
    nonfinite: jax.Array
    step_keys: jax.Array
    t: jax.Array


class Attack(NamedTuple):
    """An attack as pure functions of one example (hashable: usable as a jit static argument).

    Attributes:
      init: (params, inputs, budget, key) -> AttackState.
      step: (params, inputs, budget, state) -> AttackState, one step for every restart.
      finalize: (params, inputs, budget, state) -> AttackResult.
      run: (params, inputs, budget, key) -> AttackResult; init, ``steps`` steps, finalize.
      objective, threat, rule: the pieces; steps, restarts: loop lengths; image_shape: the
        expected (H, W, C) of ``inputs['x']`` (None: unchecked); requires: input names the
        objective reads; first_restart: index of the first restart (its keys are
        fold_in(key, first_restart + r)).
    """

    init: Callable[..., AttackState]
    step: Callable[..., AttackState]
    finalize: Callable[..., AttackResult]
    run: Callable[..., AttackResult]
    objective: Objective
    threat: Threat
    rule: Any
    steps: int
    restarts: int
    image_shape: tuple[int, ...] | None
    requires: tuple[str, ...]
    first_restart: int = 0


def best_of(*results: AttackResult) -> AttackResult:
    """The best of several attacks' results on the same examples, elementwise by ``value``
    (ties to the first); non-finite step counts add up.

    Restarts are independent, so ``best_of(a, b)`` with ``a`` the first R restarts of a key
    and ``b`` restarts R..R+R'−1 (``first_restart=R``) of the same key equals the (R + R')-
    restart attack of that key to float32 rounding: a stronger check can reuse a finished
    attack instead of repeating its restarts.
    """
    if not results:
        raise ValueError("best_of needs at least one AttackResult")
    best = results[0]
    for other in results[1:]:
        if np.shape(other.value) != np.shape(best.value):
            raise ValueError(
                f"best_of needs results of one shape, got {np.shape(best.value)} and "
                f"{np.shape(other.value)}"
            )
        take = other.value > best.value
        lead = take.reshape(take.shape + (1,) * (best.delta.ndim - take.ndim))
        best = AttackResult(
            jnp.where(lead, other.delta, best.delta),
            jnp.where(take, other.value, best.value),
            jnp.where(take, other.start_value, best.start_value),
            best.nonfinite + other.nonfinite,
        )
    return best


def as_inputs(inputs: Any) -> dict[str, Any]:
    """An inputs dict: a bare array means ``{'x': array}``; a mapping must contain 'x'."""
    if isinstance(inputs, Mapping):
        if "x" not in inputs:
            raise ValueError(f"attack inputs need an 'x' entry, got {sorted(inputs)}")
        return dict(inputs)
    return {"x": inputs}


def _is_concrete(*arrays: Any) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays))


def validate_inputs(attack: Attack, inputs: Any, budgets: Any, batched: bool) -> None:
    """Host-side checks run before anything is compiled; raises ValueError naming the problem.

    Args:
      attack: the attack (for image shape, threat and required inputs).
      inputs: one example's inputs dict or, if ``batched``, arrays with a leading axis N.
      budgets: a scalar budget or a 1-D grid of budgets.
      batched: whether ``inputs`` have a leading sample axis.
    """
    inputs = as_inputs(inputs)
    missing = [k for k in attack.requires if k not in inputs]
    if missing:
        raise ValueError(f"the attack's objective reads inputs {missing}; got {sorted(inputs)}")
    shape = tuple(np.shape(inputs["x"]))
    want = attack.image_shape
    if batched:
        ok = len(shape) == 4 if want is None else shape[1:] == tuple(want)
        if not ok or shape[0] == 0:
            raise ValueError(f"xs must be a non-empty batch (N, {want or 'H, W, C'}), got {shape}")
        sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in inputs.items()}
        bad = {k: n for k, n in sizes.items() if n != shape[0]}
        if bad:
            raise ValueError(f"every input needs the leading size {shape[0]} of 'x', got {bad}")
        if np.ndim(budgets) != 1 or np.size(budgets) == 0:
            raise ValueError(
                f"budgets must be a non-empty 1-D array, got shape {np.shape(budgets)}"
            )
    else:
        ok = len(shape) == 3 if want is None else shape == tuple(want)
        if not ok:
            raise ValueError(f"x must be one image of shape {want or '(H, W, C)'}, got {shape}")
        if np.ndim(budgets) != 0:
            raise ValueError(f"budget must be a scalar for one example, got {np.shape(budgets)}")
    if not _is_concrete(inputs, budgets):
        return
    e = np.asarray(budgets, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"budgets must be finite and >= 0, got {e}")
    x = np.asarray(inputs["x"])
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf pixels")
    box = attack.threat.box
    if box is not None and attack.threat.constraint == "project":
        lo, hi = box
        if x.min() < lo or x.max() > hi:
            raise ValueError(
                f"pixels must lie in the box {box} (got range [{x.min()}, {x.max()}]); "
                "rescale the images or pass box=None"
            )


def make_attack(
    objective: Objective,
    threat: Threat,
    rule: str | optax.GradientTransformationExtraArgs = "sign",
    steps: int = 100,
    step_size: StepSize = None,
    restarts: int = 1,
    *,
    image_shape: tuple[int, ...] | None = None,
    requires: tuple[str, ...] | None = None,
    schedule: str = "constant",
    start: str = "random",
    first_restart: int = 0,
) -> Attack:
    """Builds an attack from its pieces (see the module docstring).

    Args:
      objective: ``(params, inputs, delta, key) -> scalar`` to maximise.
      threat: :func:`~vaerob_jax.attacks.ball` or :func:`~vaerob_jax.attacks.penalty`.
      rule: 'sign', 'adam', 'apgd' (Auto-PGD's momentum and step halving), 'lbfgs' or an
        optax ``GradientTransformationExtraArgs``.
      steps: number of steps (>= 0).
      step_size: None: 2.5·ε/steps for a ball (2ε for 'apgd', its initial step; relative
        to the budget, an array expression),
        required for a penalty with a first-order rule (the budget is a weight, not a
        length); a float for an absolute step; or a callable ``budget -> step``.
      restarts: random starts per example; the best final value is kept (vmapped, argmax).
      image_shape: expected (H, W, C) of ``inputs['x']``; taken from ``objective.image_shape``
        (set by this package's objectives) when omitted.
      requires: input names the objective reads; from ``objective.requires`` when omitted.
      schedule: 'constant' (every step the same size) or 'cosine' (step t is the step size
        times ``0.5 * (1 + cos(π t / steps))``, from the full step down to ~0: large moves
        first, then a refinement of the best point instead of sign steps oscillating at the
        full size around it). A cosine schedule depends on ``steps``, so an attack with more
        steps no longer repeats the shorter one's trajectory.
      start: 'random' (each restart starts at ``threat.start``, a uniform point of the ball)
        or 'ods' (output-diversified starts, Tashiro et al. 2020: from that point, one step
        of 2ε along the gradient of ``w · objective.output(δ)`` for a random w ~ U[−1, 1]
        of the output's shape (sign step for L∞, normalised for L2), projected back:
        restarts then start at different corners of the ball in directions that move the
        model's output apart instead of all near the encoder's top singular directions).
        Needs a ball threat and an objective with an ``output`` function (this package's
        ``latent_damage`` and ``output_damage`` have one); costs one extra gradient per
        restart.
      first_restart: restart r uses the keys of restart ``first_restart + r``, so an attack
        with ``first_restart=R`` runs restarts R, R+1, ... of the same key and
        :func:`best_of` it with the R-restart attack equals the longer attack.

    Returns:
      An :class:`Attack`.
    """
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if int(restarts) < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if int(first_restart) < 0:
        raise ValueError(f"first_restart must be >= 0, got {first_restart}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if isinstance(step_size, int | float) and not (np.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be finite and >= 0, got {step_size}")
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {STARTS}")
    output_fn = getattr(objective, "output", None)
    if start == "ods" and (threat.kind != "ball" or output_fn is None):
        raise ValueError(
            "start='ods' needs a ball threat and an objective with an 'output' function "
            f"(got a {threat.kind!r} threat and an objective "
            f"{'with' if output_fn is not None else 'without'} one)"
        )
    if rule == "apgd" and schedule != "constant":
        raise ValueError(
            "the 'apgd' rule halves its own step size; use schedule='constant' with it"
        )
    step_rule = make_rule(rule, threat.norm if threat.norm in ("linf", "l2") else "l2", steps)
    if threat.kind == "penalty" and step_size is None and rule in ("sign", "adam"):
        raise ValueError(
            "a penalty budget is a weight, not a radius: give the first-order rule an explicit "
            "step_size (or use rule='lbfgs', whose line search picks the step)"
        )
    steps, restarts, first_restart = int(steps), int(restarts), int(first_restart)
    if image_shape is None:
        image_shape = getattr(objective, "image_shape", None)
    image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
    if requires is None:
        requires = tuple(getattr(objective, "requires", ("x",)))

    def total(params, inputs, delta, budget, key):
        return objective(params, inputs, delta, key) - threat.penalty(delta, budget)

    value_and_grad = jax.value_and_grad(total, argnums=2)

    def alpha(budget: jax.Array) -> jax.Array:
        if step_size is None:  # Auto-PGD starts at 2ε and halves from there
            return 2.0 * budget if rule == "apgd" else 2.5 * budget / max(steps, 1)
        if callable(step_size):
            return jnp.asarray(step_size(budget), budget.dtype)
        return jnp.asarray(step_size, budget.dtype)

    def diversify(params, inputs, delta, budget, key):
        # One output-diversified step (ODS): ascend w · output(δ) for a random weight w.
        out, pullback = jax.vjp(lambda d: output_fn(params, inputs, d, key), delta)
        (g,) = pullback(jax.random.uniform(key, out.shape, out.dtype, -1.0, 1.0))
        if threat.norm == "linf":
            direction = jnp.sign(g)
        else:
            direction = g / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(g))), 1e-30)
        moved = threat.project(inputs["x"], delta + 2.0 * budget * direction, budget)
        return jnp.where(tree_finite(g), moved, delta)

    def init(params: Any, inputs: Any, budget: jax.Array, key: jax.Array) -> AttackState:
        x = inputs["x"]
        budget = jnp.asarray(budget, x.dtype)

        def one(r: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
            k_start, k_steps = jax.random.split(jax.random.fold_in(key, r))
            delta = threat.start(k_start, x, budget)
            if start == "ods":
                delta = diversify(params, inputs, delta, budget, jax.random.fold_in(k_start, 1))
            return delta, step_rule.init(delta), k_steps

        delta, rule_state, step_keys = jax.vmap(one)(first_restart + jnp.arange(restarts))
        minus_inf = jnp.full((restarts,), -jnp.inf, x.dtype)
        zeros = jnp.zeros((restarts,), jnp.int32)
        return AttackState(
            delta, rule_state, delta, minus_inf, minus_inf, zeros, step_keys, jnp.int32(0)
        )

    def step(params: Any, inputs: Any, budget: jax.Array, state: AttackState) -> AttackState:
        x = inputs["x"]
        budget = jnp.asarray(budget, x.dtype)
        a = alpha(budget)
        if schedule == "cosine":
            a = a * (0.5 * (1.0 + jnp.cos(jnp.pi * state.t / max(steps, 1)))).astype(a.dtype)

        def one(delta, rule_state, best_delta, best_value, start_value, nonfinite, k_steps):
            k_t = jax.random.fold_in(k_steps, state.t)
            value, grad = value_and_grad(params, inputs, delta, budget, k_t)
            start_value = jnp.where(state.t == 0, value, start_value)
            better = value > best_value
            best_delta = jnp.where(better, delta, best_delta)
            best_value = jnp.where(better, value, best_value)

            def loss_fn(d: jax.Array) -> jax.Array:
                return -total(params, inputs, d, budget, k_t)

            updates, new_rule_state = step_rule.update(
                -grad,
                rule_state,
                delta,
                value=-value,
                grad=-grad,
                value_fn=loss_fn,
                step_size=a,
                project=lambda d: threat.project(x, d, budget),
            )
            ok = jnp.isfinite(value) & tree_finite(grad) & tree_finite(updates)
            new_delta = threat.project(x, delta + updates, budget)
            delta = jnp.where(ok, new_delta, delta)
            rule_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_rule_state, rule_state)
            nonfinite = nonfinite + (~ok).astype(jnp.int32)
            return delta, rule_state, best_delta, best_value, start_value, nonfinite

        delta, rule_state, best_delta, best_value, start_value, nonfinite = jax.vmap(one)(
            state.delta,
            state.rule_state,
            state.best_delta,
            state.best_value,
            state.start_value,
            state.nonfinite,
            state.step_keys,
        )
        return AttackState(
            delta,
            rule_state,
            best_delta,
            best_value,
            start_value,
            nonfinite,
            state.step_keys,
            state.t + 1,
        )

    def finalize(params: Any, inputs: Any, budget: jax.Array, state: AttackState) -> AttackResult:
        x = inputs["x"]
        budget = jnp.asarray(budget, x.dtype)

        def last_value(delta, k_steps):
            return total(params, inputs, delta, budget, jax.random.fold_in(k_steps, state.t))

        value = jax.vmap(last_value)(state.delta, state.step_keys)
        start_value = jnp.where(state.t == 0, value, state.start_value)
        nonfinite = state.nonfinite + (~jnp.isfinite(value)).astype(jnp.int32)
        better = value > state.best_value
        best_value = jnp.where(better, value, state.best_value)
        mask = better.reshape(better.shape + (1,) * x.ndim)
        best_delta = jnp.where(mask, state.delta, state.best_delta)
        # A restart whose every value was NaN keeps best_value = -inf and loses the argmax.
        r = jnp.argmax(best_value)
        return AttackResult(best_delta[r], best_value[r], start_value[r], jnp.sum(nonfinite))

    attack_ref: list[Attack] = []

    def run(params: Any, inputs: Any, budget: jax.Array, key: jax.Array) -> AttackResult:
        inputs = as_inputs(inputs)
        validate_inputs(attack_ref[0], inputs, budget, batched=False)
        inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
        budget = jnp.asarray(budget, inputs["x"].dtype)
        state = init(params, inputs, budget, key)
        state = jax.lax.fori_loop(0, steps, lambda _, s: step(params, inputs, budget, s), state)
        return finalize(params, inputs, budget, state)

    attack = Attack(
        init,
        step,
        finalize,
        run,
        objective,
        threat,
        step_rule,
        steps,
        restarts,
        image_shape,
        requires,
        first_restart,
    )
    attack_ref.append(attack)
    return attack
