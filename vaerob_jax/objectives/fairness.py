"""Fair, robust and fair-and-robust training losses of 004 (Eq. 3, §6.1, §7, App. C).

* :func:`group_losses`: L(D_a), the mean loss of every group in a (mini)batch; a group absent
  from the batch is masked (``present`` False) rather than counted as zero loss.
* :func:`fairness_penalty`: Eq. 3's Σ_a |L(D_a) − L(D)| over the groups present (``reduce=
  'sum'``, the paper's default) or their mean (``'mean'``, λ/|A|·Σ_a, the form Theorem 3's
  formula assumes; spec 004 §0).
* :func:`minmax_group_loss`: max_a L(D_a), App. C's group-loss method.
* :func:`fair_robust_loss`: the BatchLoss of the λ × ε* grid: §6.1's
  L(D) + 1[ε* > 0]·(1/n)Σ_i max_{‖τ‖∞<=ε*} ℓ(f(X_i+τ), Y_i) + λ·Σ_a|L(D_a) − L(D)|, with the
  penalty on clean losses; ε* = 0 is exactly Eq. 3 and λ = ε* = 0 exactly the plain mean loss.

The group enters the penalty only; it is never a model input (§2 of 004).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.objectives.base import BatchLoss
from vaerob_jax.objectives.inner import linf_ascent
from vaerob_jax.objectives.losses import MARGIN_LOSSES, margin_loss

__all__ = [
    "METHODS",
    "PENALTY_REDUCES",
    "TRAINABLE_LOSSES",
    "GroupLosses",
    "SaturatedGroupLossWarning",
    "adversarial_inputs",
    "check_saturated_groups",
    "fair_robust_loss",
    "fairness_penalty",
    "group_losses",
    "minmax_group_loss",
    "validate_fairness_data",
    "validate_fairness_grid",
]

#: Reductions of Eq. 3's penalty over groups.
PENALTY_REDUCES = ("sum", "mean")
#: Fair training methods: Eq. 3's penalty, or App. C's min–max group loss.
METHODS = ("penalty", "minmax")
#: Losses with a gradient (the 0/1 loss of Fig. 8 is for grid search, not for training).
TRAINABLE_LOSSES = tuple(k for k in MARGIN_LOSSES if k != "zero_one")


class GroupLosses(NamedTuple):
    """Per-group means of a per-example loss over one batch.

    Attributes:
      mean: (G,) L(D_a); 0 where the group is absent.
      n: (G,) examples of each group in the batch.
      present: (G,) bool, the group has at least one example.
    """

    mean: jax.Array
    n: jax.Array
    present: jax.Array


def group_losses(losses: jax.Array, groups: jax.Array, num_groups: int) -> GroupLosses:
    """Mean loss of every group, L(D_a) = (1/|D_a|) Σ_{i∈D_a} ℓ_i (Eq. 3 of 004).

    Args:
      losses: per-example losses (B,).
      groups: integer group ids (B,) in [0, num_groups) (out-of-range ids are ignored by
        ``segment_sum``: validate the data once with :func:`validate_fairness_data`).
      num_groups: G, static.
    """
    if int(num_groups) < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    losses = jnp.asarray(losses)
    groups = jnp.asarray(groups)
    if losses.ndim != 1 or groups.shape != losses.shape:
        raise ValueError(
            f"losses and groups must be 1-D of one length, got {losses.shape} and {groups.shape}"
        )
    total = jax.ops.segment_sum(losses, groups, num_segments=int(num_groups))
    count = jax.ops.segment_sum(jnp.ones_like(losses), groups, num_segments=int(num_groups))
    present = count > 0
    mean = jnp.where(present, total / jnp.where(present, count, 1.0), 0.0)
    return GroupLosses(mean, count, present)


def fairness_penalty(
    losses: jax.Array, groups: jax.Array, num_groups: int, reduce: str = "sum"
) -> jax.Array:
    """Eq. 3's penalty Σ_a |L(D_a) − L(D)| over the groups present in the batch (without λ).

    ``reduce='mean'`` divides by the number of groups present (|A| when all are), giving
    (1/|A|)·Σ_a, the penalty of the paper's Theorem 3 formula. L(D) is the batch mean.
    """
    if reduce not in PENALTY_REDUCES:
        raise ValueError(f"penalty reduce must be one of {PENALTY_REDUCES}, got {reduce!r}")
    gl = group_losses(losses, groups, num_groups)
    overall = jnp.mean(jnp.asarray(losses))
    dev = jnp.where(gl.present, jnp.abs(gl.mean - overall), 0.0)
    total = jnp.sum(dev)
    if reduce == "sum":
        return total
    return total / jnp.maximum(jnp.sum(gl.present), 1).astype(total.dtype)


def minmax_group_loss(losses: jax.Array, groups: jax.Array, num_groups: int) -> jax.Array:
    """max_a L(D_a) over the groups present in the batch (App. C of 004, min–max fairness)."""
    gl = group_losses(losses, groups, num_groups)
    return jnp.max(jnp.where(gl.present, gl.mean, -jnp.inf))


def _spread(gl: GroupLosses) -> tuple[jax.Array, jax.Array]:
    hi = jnp.max(jnp.where(gl.present, gl.mean, -jnp.inf))
    lo = jnp.min(jnp.where(gl.present, gl.mean, jnp.inf))
    return hi, lo


def adversarial_inputs(
    clf: Any,
    params: Any,
    x: jax.Array,
    label: jax.Array,
    eps: jax.Array | float,
    key: jax.Array,
    *,
    steps: int = 5,
    step_size: jax.Array | float | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """Madry PGD training inputs: x + τ maximising the cross-entropy, ‖τ‖∞ <= eps, in ``box``.

    Uniform random start, ``steps`` signed steps of ``step_size`` (None: 2.5·eps/steps), the
    last iterate with ``stop_gradient`` (:func:`vaerob_jax.objectives.inner.linf_ascent` on the
    batch's summed CE: examples do not interact, so each gets its own PGD). eps = 0 gives x.
    """

    def value(x_adv):
        z = clf.logits(params, x_adv)
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(z, label))

    return linf_ascent(value, x, eps, key, steps=steps, step_size=step_size, box=box)


def fair_robust_loss(
    clf: Any,
    *,
    num_groups: int,
    loss: str | Sequence[str] = "ce",
    penalty_reduce: str = "sum",
    method: str = "penalty",
    pgd_steps: int = 5,
    pgd_step_size: float | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    ramp_flat_start: float = 0.0,
    ramp_warmup_steps: int = 0,
) -> BatchLoss:
    """The fair / robust / fair-and-robust BatchLoss of 004 (Eq. 3, §6.1, §7, App. C).

    Objective on a batch {'x', 'label', 'group'} with per-example loss ℓ:

        L(D) + 1[ε* > 0]·mean_i ℓ(f(x_i + τ_i), y_i) + λ·P(clean losses),

    P = :func:`fairness_penalty` (``method='penalty'``) — or max_a L(D_a) alone
    (``method='minmax'``, App. C, no λ). τ_i is Madry PGD in the L∞ ball ε* ∩ ``box``: a uniform
    random start, ``pgd_steps`` signed steps of ``pgd_step_size`` (None: 2.5ε*/steps) on the
    per-example cross-entropy (the ramp's gradient vanishes outside its slope, so the attack
    always ascends CE), ``stop_gradient`` on the result
    (:func:`adversarial_inputs`). The robust term is weighted by 1[ε* > 0]
    ([choice] of spec 004 §1) so that ε* = 0 is exactly Eq. 3, not 2L + λP.

    Ramp warm-up: the ramp loss is flat (zero gradient) for margins <= 0 and >= 1, and from a
    random initialisation nearly every example has margin ≈ 0, so training from scratch
    stalls (spec 004's prototype: 62 % error at λ = 0, 100 % at λ > 0). While
    ``hp['step'] < hp['ramp_warmup_steps']`` the ramp is replaced by cross-entropy everywhere in
    the objective; spec 004 takes ⅓ of training. Bounded losses also make "every group all
    wrong" (penalty 0) a global optimum when λ is large: see :func:`check_saturated_groups`.

    Hyperparameters (scalar arrays per model, so grids never recompile): ``lam`` (method
    'penalty'), ``eps_star`` (``pgd_steps > 0``), ``loss_id`` (index into ``loss`` when several
    losses are grid axes), optional ``ramp_warmup_steps`` (default: the argument), and the
    trainer's ``step``.

    Args:
      clf: a classifier with ``logits(params, x)`` (batched) and ``spec()``.
      num_groups: number of protected groups G (ids in [0, G)).
      loss: one of :data:`TRAINABLE_LOSSES`, or several (selected per model by ``loss_id``).
      penalty_reduce: ``'sum'`` (Eq. 3) or ``'mean'``.
      method: ``'penalty'`` (Eq. 3) or ``'minmax'`` (App. C).
      pgd_steps: inner PGD steps; 0 drops the robust term (and ``eps_star``) statically.
      pgd_step_size: fixed PGD step, or None for 2.5ε*/steps.
      box: valid input range (pixels in [0, 1]); None for unbounded inputs (Gaussian mixtures).
      ramp_flat_start: the ramp's flat start s (0 = the paper's ramp).
      ramp_warmup_steps: default number of cross-entropy steps before the ramp takes over.

    Returns:
      A :class:`BatchLoss` with aux ``error`` (clean 0/1), ``loss_clean``, ``penalty``,
      ``group_loss_max``, ``group_loss_min`` and, with PGD, ``loss_adv`` and ``error_adv``.
    """
    losses = (loss,) if isinstance(loss, str) else tuple(loss)
    bad = [k for k in losses if k not in TRAINABLE_LOSSES]
    if not losses or bad:
        raise ValueError(
            f"loss must be one or more of {TRAINABLE_LOSSES}, got {losses!r} (the 0/1 loss has "
            "no gradient: minimise it by grid search)"
        )
    if len(set(losses)) != len(losses):
        raise ValueError(f"repeated loss in {losses!r}")
    if penalty_reduce not in PENALTY_REDUCES:
        raise ValueError(f"penalty_reduce must be one of {PENALTY_REDUCES}, got {penalty_reduce!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(num_groups) < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    if int(pgd_steps) < 0:
        raise ValueError(f"pgd_steps must be >= 0, got {pgd_steps}")
    if pgd_step_size is not None and not pgd_step_size > 0:
        raise ValueError(f"pgd_step_size must be > 0 or None, got {pgd_step_size}")
    if int(ramp_warmup_steps) < 0:
        raise ValueError(f"ramp_warmup_steps must be >= 0, got {ramp_warmup_steps}")
    if box is not None and not box[0] < box[1]:
        raise ValueError(f"box must be (low, high) with low < high, got {box}")
    if not 0.0 <= ramp_flat_start < 1.0:
        raise ValueError(f"ramp_flat_start must lie in [0, 1), got {ramp_flat_start}")
    if "ramp" in losses and int(ramp_warmup_steps) == 0:
        warnings.warn(
            "ramp loss without a cross-entropy warm-up: the ramp has no gradient at margin <= 0, "
            "so training from a random start stalls; pass ramp_warmup_steps (spec 004: 1/3 of "
            "training) unless the grid sets hp 'ramp_warmup_steps'",
            stacklevel=2,
        )
    groups_n, steps = int(num_groups), int(pgd_steps)
    ramp_index = losses.index("ramp") if "ramp" in losses else -1

    def per_example(logits, label, hp):
        if len(losses) == 1:
            ell = margin_loss(losses[0], logits, label, flat_start=ramp_flat_start)
            is_ramp = jnp.asarray(ramp_index == 0)
        else:
            stack = jnp.stack(
                [margin_loss(k, logits, label, flat_start=ramp_flat_start) for k in losses]
            )
            loss_id = jnp.asarray(hp["loss_id"]).astype(jnp.int32)
            ell = jnp.take(stack, loss_id, axis=0, mode="clip")
            is_ramp = loss_id == ramp_index
        if ramp_index >= 0:
            if "step" not in hp:
                raise ValueError("the ramp warm-up reads hp['step'] (the trainer passes it)")
            warm = is_ramp & (hp["step"] < hp["ramp_warmup_steps"])
            ell = jnp.where(
                warm, optax.softmax_cross_entropy_with_integer_labels(logits, label), ell
            )
        return ell

    def fn(params, batch, key, hp):
        x, label, group = batch["x"], batch["label"], batch["group"]
        logits = clf.logits(params, x)
        ell = per_example(logits, label, hp)
        clean = jnp.mean(ell)
        penalty = fairness_penalty(ell, group, groups_n, penalty_reduce)
        gl = group_losses(ell, group, groups_n)
        if method == "penalty":
            objective = clean + hp["lam"] * penalty
        else:
            objective = minmax_group_loss(ell, group, groups_n)
        aux = {
            "error": jnp.mean((jnp.argmax(logits, -1) != label).astype(jnp.float32)),
            "loss_clean": clean,
            "penalty": penalty,
        }
        aux["group_loss_max"], aux["group_loss_min"] = _spread(gl)
        if steps > 0:
            eps = jnp.asarray(hp["eps_star"], x.dtype)
            x_adv = adversarial_inputs(
                clf, params, x, label, eps, key, steps=steps, step_size=pgd_step_size, box=box
            )
            adv_logits = clf.logits(params, x_adv)
            adv = jnp.mean(per_example(adv_logits, label, hp))
            objective = objective + jnp.where(eps > 0, adv, jnp.zeros_like(adv))
            aux["loss_adv"] = adv
            aux["error_adv"] = jnp.mean((jnp.argmax(adv_logits, -1) != label).astype(jnp.float32))
        return objective, aux

    required = (("lam",) if method == "penalty" else ()) + (("eps_star",) if steps else ())
    required += ("loss_id",) if len(losses) > 1 else ()
    defaults = (("ramp_warmup_steps", float(ramp_warmup_steps)),) if ramp_index >= 0 else ()
    options = (
        ("model", clf.spec()),
        ("losses", list(losses)),
        ("method", method),
        ("penalty_reduce", penalty_reduce),
        ("num_groups", groups_n),
        ("pgd_steps", steps),
        ("pgd_step_size", pgd_step_size),
        ("box", None if box is None else [float(box[0]), float(box[1])]),
        ("ramp_flat_start", float(ramp_flat_start)),
    )
    return BatchLoss(
        fn,
        "fair_robust",
        required=required,
        defaults=defaults,
        batch_keys=("x", "label", "group"),
        options=options,
    )


def validate_fairness_data(
    labels: Any, groups: Any, num_classes: int, num_groups: int, *, name: str = "data"
) -> None:
    """Raises ValueError before training when labels or groups cannot be used (host-side).

    Checks: 1-D integer arrays of one length; labels in [0, num_classes); groups in
    [0, num_groups); every group has at least one example (Eq. 3's L(D_a) needs D_a ≠ ∅).
    """
    y, g = np.asarray(labels), np.asarray(groups)
    if y.ndim != 1 or g.shape != y.shape:
        raise ValueError(
            f"{name}: labels and groups must be 1-D of one length, got {y.shape}, {g.shape}"
        )
    if y.size == 0:
        raise ValueError(f"{name}: no examples")
    for what, arr, top in (("labels", y, num_classes), ("groups", g, num_groups)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: {what} must be integers, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= top:
            raise ValueError(
                f"{name}: {what} must lie in [0, {top}), got range [{arr.min()}, {arr.max()}]"
            )
    empty = np.flatnonzero(np.bincount(g, minlength=num_groups) == 0)
    if empty.size:
        raise ValueError(f"{name}: group(s) {empty.tolist()} have no examples")


def validate_fairness_grid(grid: Mapping[str, Any]) -> None:
    """Raises ValueError when a grid's 'lam' or 'eps_star' values are negative or not finite."""
    for name in ("lam", "eps_star"):
        if name in grid:
            v = np.asarray(grid[name], np.float64)
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise ValueError(f"grid {name!r} must be finite and >= 0, got {v.ravel().tolist()}")


class SaturatedGroupLossWarning(UserWarning):
    """A run ended with every group at the bounded loss's maximum (the degenerate optimum)."""


def check_saturated_groups(
    group_loss: Any, bound: float = 1.0, tol: float = 0.02, *, warn: bool = True
) -> np.ndarray:
    """Flags models whose group losses ended equal and saturated (bounded losses, §7 of 004).

    With a bounded loss (ramp, 0/1: values in [0, bound]) "every example wrong" gives every
    L(D_a) = bound, a zero penalty and objective = bound, which is the global optimum of Eq. 3
    whenever good classifiers have L + λΣ|L_a − L| > bound (large λ, many groups). Such a run
    looks perfectly fair; this check names it.

    Args:
      group_loss: final per-group losses, (G,) or (..., G) for a grid of models; NaN marks an
        absent group (ignored).
      bound: the loss's upper bound (1 for the ramp and 0/1).
      tol: how close to ``bound`` and to each other the group losses must be.
      warn: issue a :class:`SaturatedGroupLossWarning` naming the flagged models.

    Returns:
      bool array of the leading shape: True where the model is saturated.
    """
    gl = np.asarray(group_loss, np.float64)
    if gl.ndim < 1 or gl.shape[-1] < 1:
        raise ValueError(f"group_loss must have a trailing group axis, got shape {gl.shape}")
    lo = np.nanmin(gl, axis=-1)
    hi = np.nanmax(gl, axis=-1)
    flagged = (hi - lo <= tol) & (lo >= bound - tol)
    if warn and np.any(flagged):
        where = np.argwhere(np.atleast_1d(flagged)).tolist()
        warnings.warn(
            f"group losses ended equal and saturated at ~{bound} (models {where[:10]}): the "
            "'all wrong' optimum of a bounded loss (penalty 0); lower lam or warm up longer",
            SaturatedGroupLossWarning,
            stacklevel=2,
        )
    return flagged
