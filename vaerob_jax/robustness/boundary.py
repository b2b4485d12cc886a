"""Decision-boundary metrics of 004: margins, linear distances, Eq. 4–7 errors per group.

Per-example quantities come first (jnp, vmappable); reductions over examples come last, on the
host (numpy), overall and per group:

* :func:`softmax_margin`: the top-2 softmax gap p₍₁₎ − p₍₂₎, the paper's proxy for the distance
  to the decision boundary of a non-linear model (§6 of 004, after Wang & Loog 2022);
  :func:`logit_margin`: the top-2 logit gap z₍₁₎ − z₍₂₎.
* :func:`linear_distance`: the exact distance Δ(x, f) (§3 of 004) of a linear classifier:
  binary |w·x + b|/‖w‖_q, multi-class min_{j≠ŷ}(z_ŷ − z_j)/‖w_ŷ − w_j‖_q, with q the dual of
  the attack norm (L2 → 2, L∞ → 1, L1 → ∞).
* :func:`error_decomposition`: from per-example booleans ``correct`` (f(x) = y) and ``flipped``
  (an attack within ε changed the prediction; several attacks: OR them first, the per-point
  worst case): natural error (Eq. 6) = mean ¬correct, boundary error (Eq. 7) = mean
  (correct ∧ flipped), robust error (Eq. 4) = natural + boundary, so Eq. 5 holds exactly (the
  integer counts add up exactly, and the robust rate is defined as the sum of the two rates).
* :func:`parity_violations`: accuracy parity (Eq. 2) in three forms: ``to_overall``
  max_a|err_a − err| (the paper's α̂; fairlearn's ``difference(method='to_overall')``), ``sum``
  Σ_a|err_a − err| (Eq. 3's penalty on 0/1 errors), ``between_groups`` max_a err_a − min_a err_a.
* :func:`bootstrap_errors`: percentile-bootstrap CIs of every rate and violation over examples
  (stratified by group), over seeds, or both.

The attack-based distance upper bound and the evaluation attacks live with the attack engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.robustness.stats import _chunked_rows, _rng

__all__ = [
    "BOOTSTRAP_OVER",
    "DUAL_NORMS",
    "ERRORS",
    "PARITY_FORMS",
    "ErrorDecomposition",
    "bootstrap_errors",
    "decomposition_rows",
    "error_decomposition",
    "group_mean",
    "linear_distance",
    "logit_margin",
    "parity_from_rates",
    "parity_violations",
    "softmax_margin",
]

#: Attack norm -> the dual norm's order used in the linear distance.
DUAL_NORMS = {"l2": 2.0, "linf": 1.0, "l1": float("inf")}
#: The three errors of Eq. 5 of 004.
ERRORS = ("natural", "boundary", "robust")
#: Forms of the accuracy-parity violation (Eq. 2 of 004).
PARITY_FORMS = ("to_overall", "sum", "between_groups")
#: What :func:`bootstrap_errors` resamples.
BOOTSTRAP_OVER = ("examples", "seeds", "both")


def softmax_margin(logits: jax.Array) -> jax.Array:
    """Top-2 softmax gap p₍₁₎ − p₍₂₎ per example (classes on the last axis): 1 one-hot, 0 tie."""
    top2 = jax.lax.top_k(jax.nn.softmax(jnp.asarray(logits), axis=-1), 2)[0]
    return top2[..., 0] - top2[..., 1]


def logit_margin(logits: jax.Array) -> jax.Array:
    """Top-2 logit gap z₍₁₎ − z₍₂₎ per example (>= 0; label-free, unlike the training margin)."""
    top2 = jax.lax.top_k(jnp.asarray(logits), 2)[0]
    return top2[..., 0] - top2[..., 1]


def linear_distance(x: jax.Array, w: jax.Array, b: jax.Array, norm: str = "l2") -> jax.Array:
    """Exact distance to the decision boundary of a linear classifier (§3 of 004), per example.

    Args:
      x: inputs (..., D) (flatten images first).
      w: (D,) for a binary classifier 1{w·x + b > 0}, or (D, C) for argmax_c (x·W + b)_c.
      b: scalar (binary) or (C,).
      norm: the perturbation norm: ``'l2'``, ``'linf'`` or ``'l1'`` (distance in that norm).

    Returns:
      (...,) the largest ε such that no ‖τ‖ <= ε changes the prediction (a strict boundary:
      points on it have distance 0; classes with identical weights are never crossed: inf).
    """
    if norm not in DUAL_NORMS:
        raise ValueError(f"norm must be one of {tuple(DUAL_NORMS)}, got {norm!r}")
    q = DUAL_NORMS[norm]
    x, w, b = jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)
    if w.ndim == 1:
        if x.shape[-1] != w.shape[0] or b.ndim != 0:
            raise ValueError(
                f"binary: x (..., {w.shape[0]}) and scalar b needed, got {x.shape}, b {b.shape}"
            )
        return jnp.abs(x @ w + b) / jnp.linalg.norm(w, ord=q)
    if w.ndim != 2 or x.shape[-1] != w.shape[0] or b.shape != (w.shape[1],):
        raise ValueError(
            f"multi-class: x (..., D), w (D, C), b (C,) needed, got {x.shape}, {w.shape}, {b.shape}"
        )
    z = x @ w + b
    pred = jnp.argmax(z, axis=-1)
    gap = jnp.take_along_axis(z, pred[..., None], axis=-1) - z  # z_ŷ − z_j >= 0
    diff = jnp.take(w.T, pred, axis=0)[..., None, :] - w.T  # (..., C, D): w_ŷ − w_j
    den = jnp.linalg.norm(diff, ord=q, axis=-1)
    safe = den > 0
    ratio = jnp.where(safe, gap / jnp.where(safe, den, 1.0), jnp.inf)
    not_pred = jnp.arange(w.shape[1]) != pred[..., None]
    return jnp.min(jnp.where(not_pred, ratio, jnp.inf), axis=-1)


class ErrorDecomposition(NamedTuple):
    """Natural, boundary and robust errors (Eqs. 4–7 of 004), overall and per group.

    Leading axes of the inputs (models, seeds, budgets) are kept; G groups on the last axis of
    the ``group_*`` fields. Counts are exact integers with robust = natural + boundary; rates
    are float64 with ``robust`` defined as ``natural + boundary``.
    """

    n: int
    group_n: np.ndarray
    natural: np.ndarray
    boundary: np.ndarray
    robust: np.ndarray
    group_natural: np.ndarray
    group_boundary: np.ndarray
    group_robust: np.ndarray
    counts: dict[str, np.ndarray]


def _groups(groups: Any, n: int, num_groups: int | None) -> tuple[np.ndarray, int]:
    g = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one id per example), got {g.shape}")
    if n == 0:
        raise ValueError("no examples to reduce")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be integer ids, got dtype {g.dtype}")
    n_groups = int(g.max()) + 1 if num_groups is None else int(num_groups)
    if g.min() < 0 or g.max() >= n_groups:
        raise ValueError(f"group ids must lie in [0, {n_groups}), got [{g.min()}, {g.max()}]")
    empty = np.flatnonzero(np.bincount(g, minlength=n_groups) == 0)
    if empty.size:
        raise ValueError(f"group(s) {empty.tolist()} have no examples (relabel or drop them)")
    return g.astype(np.int64), n_groups


def _bools(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be boolean per-example flags, got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"{name} needs an example axis (last), got a scalar")
    return arr


def error_decomposition(
    correct: Any, flipped: Any, groups: Any = None, num_groups: int | None = None
) -> ErrorDecomposition:
    """Eqs. 4–7 of 004 from per-example booleans (the reduction comes last).

    Args:
      correct: bool (..., N), f(x) = y.
      flipped: bool (..., N), some perturbation within the budget changed f(x) (the OR over
        attacks for several attacks).
      groups: int (N,) group ids in [0, G) (None: one group); every group needs an example.
      num_groups: G (default max id + 1).

    Returns:
      :class:`ErrorDecomposition`.
    """
    c, f = _bools("correct", correct), _bools("flipped", flipped)
    if c.shape != f.shape:
        raise ValueError(f"correct and flipped must have one shape, got {c.shape}, {f.shape}")
    n = c.shape[-1]
    g, n_groups = _groups(groups, n, num_groups)
    onehot = np.zeros((n, n_groups), np.int64)
    onehot[np.arange(n), g] = 1
    group_n = onehot.sum(axis=0)
    nat = (~c).astype(np.int64)
    bdy = (c & f).astype(np.int64)
    counts = {
        "natural": nat.sum(-1),
        "boundary": bdy.sum(-1),
        "group_natural": nat @ onehot,
        "group_boundary": bdy @ onehot,
    }
    counts["robust"] = counts["natural"] + counts["boundary"]
    counts["group_robust"] = counts["group_natural"] + counts["group_boundary"]
    rate = {k: v / (group_n if k.startswith("group_") else n) for k, v in counts.items()}
    return ErrorDecomposition(
        n=int(n),
        group_n=group_n,
        natural=rate["natural"],
        boundary=rate["boundary"],
        robust=rate["natural"] + rate["boundary"],
        group_natural=rate["group_natural"],
        group_boundary=rate["group_boundary"],
        group_robust=rate["group_natural"] + rate["group_boundary"],
        counts=counts,
    )


def parity_from_rates(group_rates: Any, overall: Any) -> dict[str, np.ndarray]:
    """The three accuracy-parity forms from group error rates (..., G) and the overall (...)."""
    r = np.asarray(group_rates, np.float64)
    o = np.asarray(overall, np.float64)[..., None]
    dev = np.abs(r - o)
    return {
        "to_overall": dev.max(axis=-1),
        "sum": dev.sum(axis=-1),
        "between_groups": r.max(axis=-1) - r.min(axis=-1),
    }


def parity_violations(
    wrong: Any, groups: Any, num_groups: int | None = None
) -> dict[str, np.ndarray]:
    """Accuracy-parity violation (Eq. 2 of 004) of per-example errors ``wrong`` (..., N).

    ``to_overall`` = max_a|err_a − err| (the α̂ of Eq. 2), ``sum`` = Σ_a|err_a − err|,
    ``between_groups`` = max_a err_a − min_a err_a; err is the error over all examples.
    """
    w = _bools("wrong", wrong)
    dec = error_decomposition(~w, np.zeros_like(w), groups, num_groups)
    return parity_from_rates(dec.group_natural, dec.natural)


def group_mean(
    values: Any, groups: Any = None, num_groups: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a per-example metric (..., N) overall and per group (..., G) (e.g. distances).

    Raises ValueError on non-finite values (a failed distance is reported, not averaged).
    """
    v = np.asarray(values, np.float64)
    if v.ndim < 1:
        raise ValueError("values need an example axis (last)")
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"values contain {int(bad.sum())} non-finite entries")
    g, n_groups = _groups(groups, v.shape[-1], num_groups)
    onehot = np.zeros((v.shape[-1], n_groups))
    onehot[np.arange(v.shape[-1]), g] = 1.0
    return v.mean(axis=-1), (v @ onehot) / onehot.sum(axis=0)


def decomposition_rows(
    dec: ErrorDecomposition, names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Tidy rows ``{group, n, natural, boundary, robust}`` ('all' first) of a 1-model result."""
    if np.ndim(dec.natural) != 0:
        raise ValueError("decomposition_rows takes one model's result (no leading axes)")
    labels = list(names) if names is not None else [str(a) for a in range(len(dec.group_n))]
    if len(labels) != len(dec.group_n):
        raise ValueError(f"{len(labels)} names for {len(dec.group_n)} groups")
    rows = [{"group": "all", "n": dec.n, **{e: float(getattr(dec, e)) for e in ERRORS}}]
    for a, name in enumerate(labels):
        rows.append(
            {
                "group": name,
                "n": int(dec.group_n[a]),
                **{e: float(getattr(dec, f"group_{e}")[a]) for e in ERRORS},
            }
        )
    return rows


def _statistics(nat_w: np.ndarray, bdy_w: np.ndarray, n_w: np.ndarray) -> dict[str, np.ndarray]:
    """Rates and violations from weighted per-group counts (..., S, G) and sizes (..., G)."""
    out: dict[str, np.ndarray] = {}
    group = {"natural": nat_w / n_w[..., None, :], "boundary": bdy_w / n_w[..., None, :]}
    total = n_w.sum(-1)[..., None]
    overall = {"natural": nat_w.sum(-1) / total, "boundary": bdy_w.sum(-1) / total}
    group["robust"] = group["natural"] + group["boundary"]
    overall["robust"] = overall["natural"] + overall["boundary"]
    for err in ERRORS:
        out[f"{err}/rate/all"] = overall[err]
        for a in range(group[err].shape[-1]):
            out[f"{err}/rate/{a}"] = group[err][..., a]
        for form, v in parity_from_rates(group[err], overall[err]).items():
            out[f"{err}/{form}/all"] = v
    return out  # each (..., S): per seed


def bootstrap_errors(
    correct: Any,
    flipped: Any,
    groups: Any,
    key_or_seed: Any,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    over: str = "both",
    num_groups: int | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Percentile-bootstrap CIs of the errors and parity violations (Eqs. 2, 4–7 of 004).

    The point estimate of each statistic is its mean over seeds of the per-seed value
    (violations are computed per seed, then averaged). Resampling:

    * ``'examples'``: the N test examples with replacement, within each group (stratified, so
      every group keeps its size and no resample loses a group), shared by all seeds (they saw
      the same test set);
    * ``'seeds'``: the S seeds (models) with replacement;
    * ``'both'``: both at once (a two-level bootstrap).

    Args:
      correct, flipped: bool (S, N) (seeds × examples) or (N,).
      groups: int (N,).
      key_or_seed: seeds the resampling (int, numpy Generator or JAX key).
      n_boot: resamples; ci: confidence level in (0, 1).
      over: ``'examples'``, ``'seeds'`` or ``'both'``.
      num_groups, names: G and optional group names.

    Returns:
      Rows ``{error, statistic, group, value, ci_low, ci_high, n_seeds, n_boot, over}`` with
      statistic ``'rate'`` (group 'all' or a name) or a parity form (group 'all').
    """
    if over not in BOOTSTRAP_OVER:
        raise ValueError(f"over must be one of {BOOTSTRAP_OVER}, got {over!r}")
    if n_boot < 1 or not 0.0 < ci < 1.0:
        raise ValueError(f"n_boot must be >= 1 and ci in (0, 1), got {n_boot}, {ci}")
    c, f = _bools("correct", correct), _bools("flipped", flipped)
    c, f = np.atleast_2d(c), np.atleast_2d(f)
    if c.ndim != 2 or c.shape != f.shape:
        raise ValueError(
            f"correct and flipped must be (S, N) of one shape, got {c.shape}, {f.shape}"
        )
    n_seeds, n = c.shape
    g, n_groups = _groups(groups, n, num_groups)
    labels = list(names) if names is not None else [str(a) for a in range(n_groups)]
    if len(labels) != n_groups:
        raise ValueError(f"{len(labels)} names for {n_groups} groups")
    onehot = np.zeros((n, n_groups))
    onehot[np.arange(n), g] = 1.0
    nat = (~c).astype(np.float64)[..., None] * onehot  # (S, N, G)
    bdy = (c & f).astype(np.float64)[..., None] * onehot
    point = {k: v.mean(-1) for k, v in _statistics(nat.sum(1), bdy.sum(1), onehot.sum(0)).items()}

    rng = _rng(key_or_seed)
    members = [np.flatnonzero(g == a) for a in range(n_groups)]
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for m in _chunked_rows(n_boot, n * max(n_seeds, 1)):
        w = np.ones((m, n))
        if over in ("examples", "both"):
            for idx in members:  # stratified: each group keeps its size
                w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=m)
        sw = np.ones((m, n_seeds))
        if over in ("seeds", "both"):
            sw = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=m).astype(float)
        nat_w = np.einsum("bn,sng->bsg", w, nat)
        bdy_w = np.einsum("bn,sng->bsg", w, bdy)
        stats = _statistics(nat_w, bdy_w, w @ onehot)
        for key, v in stats.items():
            draws[key].append((v * sw).sum(-1) / sw.sum(-1))
    alpha = 0.5 * (1.0 - ci)
    rows = []
    for key, value in point.items():
        err, stat, grp = key.split("/")
        lo, hi = np.quantile(np.concatenate(draws[key]), [alpha, 1.0 - alpha])
        rows.append(
            {
                "error": err,
                "statistic": stat,
                "group": grp if grp == "all" else labels[int(grp)],
                "value": float(value),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "n_seeds": int(n_seeds),
                "n_boot": int(n_boot),
                "over": over,
            }
        )
    return rows
