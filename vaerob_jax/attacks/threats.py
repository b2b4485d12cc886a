"""Threat models: what a budget means, as a start, a projection and a penalty.

An attack maximises ``objective(δ) − threat.penalty(δ, budget)`` over
``{δ : threat.project(x, δ, budget) = δ}``, so one driver serves both kinds of budget:

* :func:`ball` — a hard constraint: the budget is a radius ε and δ ranges over
  {‖δ‖ ≤ ε} ∩ {lo ≤ x + δ ≤ hi} (L∞ or L2; 000, 001, 003, 004). ``constraint='rescale'`` is
  000's public code (‖δ‖ = ε exactly, no pixel clipping). No penalty.
* :func:`penalty` — a soft constraint: the budget is a weight λ ≥ 0 and the objective is
  charged λ‖δ‖ (002's Δ + λ‖d‖₂ over the 2⁻²⁰…2²⁰ grid, Eq. 13 of 002); δ only has to keep
  x + δ in the pixel box. The norm is exact — ‖δ‖₂ with a zero subgradient at δ = 0 — not a
  smoothed √(Σδ² + tiny), whose offset would add λ·1e−6 (≈ 1 nat at λ = 2²⁰) to every value.

All functions act on ONE example and take the budget as an array, so a new grid of budgets
never recompiles. Threats are NamedTuples of pure functions (hashable: usable as static jit
arguments inside an :class:`~vaerob_jax.attacks.engine.Attack`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaerob_jax.attacks.constraints import Box, check_threat_model, projection, random_start

__all__ = ["PENALTY_NORMS", "Threat", "ball", "exact_norm", "penalty"]

PENALTY_NORMS = ("l2", "l2_squared", "linf")


class Threat(NamedTuple):
    """A threat model for one example.

    Attributes:
      kind: 'ball' (budget = radius) or 'penalty' (budget = weight).
      norm: 'linf', 'l2' (or 'l2_squared' for a penalty).
      box: pixel range of x + δ, or None.
      constraint: 'project' or 'rescale' (balls only).
      start: ``(key, x, budget) -> δ₀``, a random point of the feasible set.
      project: ``(x, δ, budget) -> δ``, onto the feasible set.
      penalty: ``(δ, budget) -> scalar`` charged against the objective (0 for a ball).
    """

    kind: str
    norm: str
    box: Box
    constraint: str
    start: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    project: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    penalty: Callable[[jax.Array, jax.Array], jax.Array]


def _no_penalty(delta: jax.Array, budget: jax.Array) -> jax.Array:
    del budget
    return jnp.zeros((), delta.dtype)


def ball(norm: str = "linf", box: Box = (0.0, 1.0), constraint: str = "project") -> Threat:
    """A hard budget: {‖δ‖ ≤ ε} ∩ pixel box, ε the budget (see the module docstring).

    Args:
      norm: 'linf' or 'l2'.
      box: valid pixel range (lo, hi) of x + δ, or None.
      constraint: 'project' (exact Euclidean projection onto ball ∩ box) or 'rescale'
        (000's reference code: δ ← ε·δ/‖δ‖, box ignored).
    """
    check_threat_model(norm, box, constraint)
    box = None if box is None else (float(box[0]), float(box[1]))
    return Threat(
        "ball",
        norm,
        box,
        constraint,
        random_start(norm, box, constraint),
        projection(norm, box, constraint),
        _no_penalty,
    )


def exact_norm(delta: jax.Array, norm: str = "l2") -> jax.Array:
    """‖δ‖₂ (or ‖δ‖₂², ‖δ‖∞) with a finite zero (sub)gradient at δ = 0.

    The double ``where`` keeps the value exact everywhere and the gradient of the square root
    finite: at δ = 0 the square root is evaluated at 1 and its output discarded.
    """
    if norm == "linf":
        return jnp.max(jnp.abs(delta))
    sq = jnp.sum(jnp.square(delta))
    if norm == "l2_squared":
        return sq
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def penalty(norm: str = "l2", box: Box = (0.0, 1.0), start_scale: float = 1e-8) -> Threat:
    """A soft budget: the objective is charged λ‖δ‖, λ the budget; x + δ stays in the box.

    Args:
      norm: 'l2' (002's default, unsquared), 'l2_squared' (the public codes' form) or 'linf'.
      box: valid pixel range of x + δ, or None.
      start_scale: δ₀ ~ U(−s, s) per pixel (002 starts from U(±1e−8): the targeted objectives
        have a nonzero gradient at δ = 0, unlike the maximum-damage ones).
    """
    if norm not in PENALTY_NORMS:
        raise ValueError(f"unknown penalty norm {norm!r}; choose one of {PENALTY_NORMS}")
    check_threat_model("l2", box, "project")
    if not start_scale >= 0:
        raise ValueError(f"start_scale must be >= 0, got {start_scale}")
    box = None if box is None else (float(box[0]), float(box[1]))

    def project(x: jax.Array, delta: jax.Array, budget: jax.Array) -> jax.Array:
        del budget
        if box is None:
            return delta
        return jnp.clip(delta, box[0] - x, box[1] - x)

    def start(key: jax.Array, x: jax.Array, budget: jax.Array) -> jax.Array:
        d = start_scale * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
        return project(x, d, budget)

    def charge(delta: jax.Array, budget: jax.Array) -> jax.Array:
        return jnp.asarray(budget, delta.dtype) * exact_norm(delta, norm)

    return Threat("penalty", norm, box, "project", start, project, charge)
