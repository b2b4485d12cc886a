"""Inner maximisations for adversarial training losses (003's FGSM, 004's PGD), per example.

``linf_ascent`` runs ``steps`` signed-gradient ascent steps on ``value_fn(x_adv)`` inside the
L∞ ball of radius ``eps`` around ``x`` intersected with the pixel box, from a uniform random
start, and returns the LAST iterate with ``stop_gradient`` (training differentiates the outer
loss at x_adv, not through the attack):

* 003 Eq. 6 (fast FGSM of Wong et al.): ``steps=1, step_size=1.25 * eps``;
* 004's Madry PGD training: ``steps=5..7, step_size=2.5 * eps / steps``.

Unlike :func:`vaerob_jax.attacks.pgd` it keeps no best iterate (003 §1.5 of the spec: FGSM must
return δ₁ itself) and runs inside the jitted train step. ``eps`` and ``step_size`` are arrays,
so an ε* grid never recompiles; ``eps = 0`` returns ``x`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["linf_ascent"]


def linf_ascent(
    value_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    eps: jax.Array | float,
    key: jax.Array,
    *,
    steps: int = 1,
    step_size: jax.Array | float | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    clip_start: bool = True,
) -> jax.Array:
    """Signed-gradient ascent on ``value_fn`` in {‖x' − x‖∞ ≤ eps} ∩ box; returns x' (no grad).

    Args:
      value_fn: scalar function of the perturbed input to maximise (e.g. the latent distance
        ‖g(x') − sg(g(x))‖² of 003 Eq. 6, or a classifier's cross-entropy for 004).
      x: the clean input (any shape; one example or a batch if ``value_fn`` sums over it).
      eps: the L∞ radius (array or float, >= 0).
      key: PRNG key of the uniform random start δ₀ ~ U[−eps, eps].
      steps: number of ascent steps (static, >= 1).
      step_size: step length per step; None means 2.5·eps/steps (Madry et al.).
      box: valid range of x' (clipped after every step), or None.
      clip_start: clip the random start to the box before the first gradient (Madry/Wong
        practice); False evaluates the first gradient at the unclipped x + δ₀, as 003's
        Eq. 6 is written (the final iterate is clipped either way).

    Returns:
      ``stop_gradient(x + δ)`` with ‖δ‖∞ ≤ eps and x + δ in the box.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = jax.lax.stop_gradient(x)
    eps = jnp.asarray(eps, x.dtype)
    alpha = 2.5 * eps / steps if step_size is None else jnp.asarray(step_size, x.dtype)
    lo = -eps if box is None else jnp.maximum(-eps, box[0] - x)
    hi = eps if box is None else jnp.minimum(eps, box[1] - x)
    delta = eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    if clip_start:
        delta = jnp.clip(delta, lo, hi)
    grad_fn = jax.grad(lambda d: value_fn(x + d))
    for _ in range(int(steps)):  # a few steps, unrolled inside the train step
        delta = jnp.clip(delta + alpha * jnp.sign(grad_fn(delta)), lo, hi)
    return jax.lax.stop_gradient(x + delta)
