"""Per-example classification losses on the logit margin (§7 and Fig. 8 of 004).

The margin of example (z, y) is m = z_y − max_{j≠y} z_j: positive iff the label wins the
argmax. 004's ramp loss ℓ_Ramp = min(1, max(0, 1 − Y·f(X))) is written for Y ∈ {±1} and a real
score f; for C classes we apply the same formula to m ([choice] of spec 004 §1; for C = 2 with
logits (−s/2, s/2), m = Y·s). Fig. 8 adds the 0/1, logistic and exponential losses:

* ``"ce"``: softmax cross-entropy of the logits (not a function of m alone for C > 2; for C = 2
  it equals the logistic loss of m);
* ``"ramp"``: min(1 − s, max(0, 1 − m))/(1 − s) with flat start s ∈ [0, 1) (s = 0 is the
  paper's ramp: 1 for m <= 0, 1 − m on [0, 1], 0 beyond). Bounded in [0, 1] and with ZERO
  gradient for m <= s and m >= 1: from a random start most examples sit at m ≈ 0, so train with
  cross-entropy first (see :func:`vaerob_jax.objectives.fairness.fair_robust_loss`);
* ``"logistic"``: log(1 + e^{−m}) (softplus, stable for any m);
* ``"exp"``: e^{−m}, with the exponent capped at :data:`EXP_CAP` so a badly wrong example gives a
  large finite loss (and zero gradient beyond the cap) instead of inf;
* ``"zero_one"``: 1[m <= 0] (a tie counts as an error); no gradient — for evaluation and grid
  search only.

Everything is per example (vmappable; logits ``(..., C)``, labels ``(...)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "EXP_CAP",
    "MARGIN_LOSSES",
    "exponential_loss",
    "label_margin",
    "logistic_loss",
    "margin_loss",
    "ramp_loss",
    "zero_one_loss",
]

#: Loss names accepted by :func:`margin_loss` (``"ce"`` uses the full logits).
MARGIN_LOSSES = ("ce", "ramp", "logistic", "exp", "zero_one")

#: Largest exponent of the exponential loss (e^50 ≈ 5e21, finite in float32).
EXP_CAP = 50.0


def label_margin(logits: jax.Array, label: jax.Array) -> jax.Array:
    """m = z_y − max_{j≠y} z_j for logits ``(..., C)`` and integer labels ``(...)``."""
    logits = jnp.asarray(logits)
    label = jnp.asarray(label)
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(f"logits need at least 2 classes on the last axis, got {logits.shape}")
    onehot = jax.nn.one_hot(label, num_classes, dtype=bool)
    z_y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    others = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    return z_y - others


def ramp_loss(margin: jax.Array, flat_start: float = 0.0) -> jax.Array:
    """Ramp loss of §7 of 004 on the margin: min(1 − s, max(0, 1 − m))/(1 − s), s = flat start.

    s = 0 (default) is the paper's min(1, max(0, 1 − m)): values 1, 1, .5, 0, 0 at
    m = −1, 0, .5, 1, 2.
    """
    s = float(flat_start)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"flat_start must lie in [0, 1), got {flat_start}")
    return jnp.minimum(1.0 - s, jnp.maximum(0.0, 1.0 - margin)) / (1.0 - s)


def logistic_loss(margin: jax.Array) -> jax.Array:
    """log(1 + e^{−m}) (Fig. 8's log loss), computed as softplus(−m)."""
    return jax.nn.softplus(-margin)


def exponential_loss(margin: jax.Array) -> jax.Array:
    """e^{−m} (Fig. 8's exponential loss), exponent capped at :data:`EXP_CAP`."""
    return jnp.exp(jnp.minimum(-margin, EXP_CAP))


def zero_one_loss(margin: jax.Array) -> jax.Array:
    """1[m <= 0] as floats: the example is misclassified (a tie counts as an error)."""
    return (margin <= 0.0).astype(jnp.result_type(margin, jnp.float32))


def margin_loss(
    kind: str, logits: jax.Array, label: jax.Array, *, flat_start: float = 0.0
) -> jax.Array:
    """Per-example loss ``kind`` (one of :data:`MARGIN_LOSSES`) of logits ``(..., C)``.

    Args:
      kind: ``"ce"``, ``"ramp"``, ``"logistic"``, ``"exp"`` or ``"zero_one"``.
      logits: class scores, classes on the last axis.
      label: integer labels, the leading shape of ``logits``.
      flat_start: the ramp's s (ignored by the other losses).

    Returns:
      Losses of shape ``logits.shape[:-1]``.
    """
    if kind not in MARGIN_LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {MARGIN_LOSSES}")
    if kind == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, label)
    m = label_margin(logits, label)
    if kind == "ramp":
        return ramp_loss(m, flat_start)
    if kind == "logistic":
        return logistic_loss(m)
    if kind == "exp":
        return exponential_loss(m)
    return zero_one_loss(m)
