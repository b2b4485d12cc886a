"""Sampled Gaussian mixtures of §5 of 004, empirical objectives and trained thresholds.

* :func:`sample_gmm_1d` / :func:`sample_gmm`: the 1-D model N(μ_, 1) vs N(μ̄, K²) and its
  d-dimensional version N(μ_, I) vs N(μ̄, K²I) (Appendix of 004), seeded by an explicit key;
  :func:`make_gmm2d` is the 2-D data set of the MLP study. Label 0 ↔ Y = −1, label 1 ↔ Y = +1,
  and group = label as in the theory (A = Y).
* :func:`empirical_fair_objective`: the exact empirical Eq. 3 with the 0/1 loss for thresholds
  1{x > θ} on a θ grid (sorted samples + searchsorted: O((N + T) log N)).
* :func:`train_thresholds` / :func:`train_linear`: gradient descent (Adam) on Eq. 3 with a
  smooth per-example loss, vmapped over λ — what the closed forms of
  :mod:`vaerob_jax.fairness.gmm` predict. The default loss is the sigmoid surrogate
  σ(−m/τ) of the 0/1 loss (τ = 0.05, spec 004 §3 check 4); Fig. 8's ramp, logistic and
  exponential losses are options. The penalty is :func:`vaerob_jax.objectives.fairness.
  fairness_penalty`, the same code that trains the networks.
* :func:`project_linear` / :func:`optimal_linear`: the d-dimensional reduction. For a linear
  classifier 1{w·x + b > 0}, w·X/‖w‖ is N(ŵ·μ_, 1) vs N(ŵ·μ̄, K²) for every direction, and the
  L2 distance to the hyperplane is |ŵ·x + b/‖w‖|: the 1-D model with means ŵ·μ_, ŵ·μ̄ and
  θ = −b/‖w‖ gives every error and distance exactly (L2 ε). The gap ŵ·(μ̄ − μ_) is largest for
  ŵ ∥ μ̄ − μ_, so the optimal classifiers use that direction and the 1-D d = ‖μ̄ − μ_‖.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.fairness import gmm
from vaerob_jax.objectives.fairness import fairness_penalty
from vaerob_jax.objectives.losses import exponential_loss, logistic_loss, ramp_loss

__all__ = [
    "THRESHOLD_LOSSES",
    "empirical_fair_objective",
    "empirical_group_errors",
    "make_gmm2d",
    "optimal_linear",
    "project_linear",
    "sample_gmm",
    "sample_gmm_1d",
    "train_linear",
    "train_thresholds",
]

#: Per-example losses of the trained thresholds: the 0/1 surrogate, then Fig. 8's losses.
THRESHOLD_LOSSES = ("sigmoid", "ramp", "logistic", "exp")


def _key(key_or_seed: Any) -> jax.Array:
    if isinstance(key_or_seed, int | np.integer):
        return jax.random.key(int(key_or_seed))
    return key_or_seed


def _class_sizes(n: int, p: float) -> tuple[int, int]:
    if int(n) < 2:
        raise ValueError(f"n must be >= 2 (one example per class at least), got {n}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p (share of label 1) must lie in (0, 1), got {p}")
    n_pos = int(round(p * n))
    n_pos = min(max(n_pos, 1), int(n) - 1)
    return int(n) - n_pos, n_pos


def sample_gmm(
    key: Any,
    n: int,
    mu_lo: Sequence[float] | jax.Array,
    mu_hi: Sequence[float] | jax.Array,
    k: float,
    p: float = 0.5,
) -> dict[str, jax.Array]:
    """n points of N(μ_, I) (label 0) and N(μ̄, K²I) (label 1), shuffled.

    Exactly round(p·n) points have label 1 (stratified, not Bernoulli, so group sizes are
    fixed). Seeded by ``key`` (a JAX key or an int seed).

    Returns:
      ``{'x': (n, D) float32, 'label': (n,) int32, 'group': (n,) int32}`` with group = label.
    """
    lo = jnp.atleast_1d(jnp.asarray(mu_lo, jnp.float32))
    hi = jnp.atleast_1d(jnp.asarray(mu_hi, jnp.float32))
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(
            f"mu_lo and mu_hi must be vectors of one length, got {lo.shape}, {hi.shape}"
        )
    gmm.check_mixture(k=k)
    if not float(jnp.linalg.norm(hi - lo)) > 0:
        raise ValueError("mu_hi must differ from mu_lo")
    n_neg, n_pos = _class_sizes(n, p)
    return _sample(_key(key), lo, hi, jnp.float32(k), n_neg, n_pos)


@functools.partial(jax.jit, static_argnames=("n_neg", "n_pos"))
def _sample(key, lo, hi, k, n_neg, n_pos):
    k_noise, k_perm = jax.random.split(key)
    z = jax.random.normal(k_noise, (n_neg + n_pos, lo.shape[0]), jnp.float32)
    label = jnp.concatenate([jnp.zeros(n_neg, jnp.int32), jnp.ones(n_pos, jnp.int32)])
    scale = jnp.where(label[:, None] == 1, k, 1.0)
    x = jnp.where(label[:, None] == 1, hi, lo) + scale * z
    perm = jax.random.permutation(k_perm, n_neg + n_pos)
    return {"x": x[perm], "label": label[perm], "group": label[perm]}


def sample_gmm_1d(
    key: Any, n: int, k: float, mu_lo: float = -1.0, mu_hi: float = 1.0, p: float = 0.5
) -> dict[str, jax.Array]:
    """The 1-D mixture of §5.1 of 004; like :func:`sample_gmm` with ``'x'`` of shape (n,)."""
    gmm.check_mixture(k=k, mu_lo=mu_lo, mu_hi=mu_hi, p=p)
    out = sample_gmm(key, n, [mu_lo], [mu_hi], k, p)
    return {**out, "x": out["x"][:, 0]}


def make_gmm2d(
    key: Any,
    n: int,
    k: float = 2.0,
    mu_lo: Sequence[float] = (-1.0, 0.0),
    mu_hi: Sequence[float] = (1.0, 0.0),
    p: float = 0.5,
) -> dict[str, jax.Array]:
    """The 2-D mixture data set of the MLP study (spec 004 §6): N(μ_, I₂) vs N(μ̄, K²I₂).

    Defaults [choice]: μ = (∓1, 0), so d = 2 along the first axis as in Fig. 2, and K = 2
    (the reference table's first row); inputs are unbounded (train with ``box=None``).
    Draw train and test sets from different keys.
    """
    return sample_gmm(key, n, mu_lo, mu_hi, k, p)


def empirical_group_errors(
    theta: jax.Array, x: jax.Array, label: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Exact empirical 0/1 errors (e₋, e₊) of 1{x > θ} for every θ (any shape).

    e₋ = #{label 0 with x > θ}/n₀ and e₊ = #{label 1 with x <= θ}/n₁, from the sorted samples of
    each class (labels must be concrete: the class sizes set the array shapes).
    """
    xs = np.asarray(x, np.float64).ravel()
    ys = np.asarray(label).ravel()
    if xs.shape != ys.shape or not np.isin(ys, [0, 1]).all():
        raise ValueError("x and label must be 1-D of one length with labels in {0, 1}")
    neg, pos = np.sort(xs[ys == 0]), np.sort(xs[ys == 1])
    if neg.size == 0 or pos.size == 0:
        raise ValueError("both classes need at least one sample")
    t = jnp.asarray(theta)
    e_neg = 1.0 - jnp.searchsorted(jnp.asarray(neg, t.dtype), t, side="right") / neg.size
    e_pos = jnp.searchsorted(jnp.asarray(pos, t.dtype), t, side="right") / pos.size
    return e_neg, e_pos


def empirical_fair_objective(
    theta: jax.Array, lam: Any, x: jax.Array, label: jax.Array, *, reduce: str = "sum"
) -> jax.Array:
    """Exact empirical Eq. 3 with the 0/1 loss for thresholds θ: L + λ·Σ_a|L_a − L| (or mean)."""
    if reduce not in gmm.REDUCES:
        raise ValueError(f"reduce must be one of {gmm.REDUCES}, got {reduce!r}")
    e_neg, e_pos = empirical_group_errors(theta, x, label)
    share = float(np.mean(np.asarray(label) == 1))
    total = (1.0 - share) * e_neg + share * e_pos
    pen = jnp.abs(e_neg - total) + jnp.abs(e_pos - total)
    lam_eff = jnp.asarray(lam) if reduce == "sum" else jnp.asarray(lam) / 2.0
    return total + lam_eff * pen


def _threshold_loss(kind: str, margin: jax.Array, temperature: float) -> jax.Array:
    if kind == "sigmoid":
        return jax.nn.sigmoid(-margin / temperature)
    if kind == "ramp":
        return ramp_loss(margin)
    if kind == "logistic":
        return logistic_loss(margin)
    return exponential_loss(margin)


@functools.partial(
    jax.jit, static_argnames=("loss", "reduce", "steps", "fit_direction", "temperature")
)
def _fit(x, label, lams, w0, b0, lr, scale, *, loss, reduce, steps, fit_direction, temperature):
    sign = 2.0 * label.astype(x.dtype) - 1.0  # Y ∈ {−1, +1}
    opt = optax.adam(lr)

    def objective(params, lam):
        w = params["w"] / jnp.linalg.norm(params["w"]) if fit_direction else params["w"]
        margin = scale * sign * (x @ w + params["b"])
        ell = _threshold_loss(loss, margin, temperature)
        return jnp.mean(ell) + lam * fairness_penalty(ell, label, 2, reduce)

    def one(lam):
        params = {"w": w0, "b": b0}

        def step(carry, _):
            params, state = carry
            grads = jax.grad(objective)(params, lam)
            if not fit_direction:
                grads = {"w": jnp.zeros_like(grads["w"]), "b": grads["b"]}
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        w = params["w"] / jnp.linalg.norm(params["w"]) if fit_direction else params["w"]
        return w, params["b"], objective(params, lam)

    return jax.vmap(one)(lams)


def _check_fit_args(
    lams: Any, loss: str, reduce: str, steps: int, temperature: float, lr: float, scale: float
) -> jax.Array:
    lam = np.asarray(lams, np.float64)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError(f"lams must be a non-empty 1-D array of finite values >= 0, got {lam}")
    if loss not in THRESHOLD_LOSSES:
        raise ValueError(f"loss must be one of {THRESHOLD_LOSSES}, got {loss!r}")
    if reduce not in gmm.REDUCES:
        raise ValueError(f"reduce must be one of {gmm.REDUCES}, got {reduce!r}")
    if int(steps) < 1 or not temperature > 0 or not lr > 0 or not scale > 0:
        raise ValueError(
            f"steps >= 1 and temperature, learning_rate, margin_scale > 0 needed; got {steps}, "
            f"{temperature}, {lr}, {scale}"
        )
    return jnp.asarray(lam, jnp.float32)


def train_thresholds(
    x: Any,
    label: Any,
    lams: Any,
    *,
    loss: str = "sigmoid",
    reduce: str = "sum",
    steps: int = 1000,
    learning_rate: float = 0.01,
    temperature: float = 0.05,
    margin_scale: float = 1.0,
    theta0: float | None = None,
) -> dict[str, jax.Array]:
    """Trained thresholds θ(λ) of 1{x > θ} on 1-D samples, one per λ (vmapped, one compile).

    Minimises mean ℓ + λ·Σ_a|L_a − L| (Eq. 3, groups = labels) over θ with w = 1 fixed, by
    ``steps`` Adam steps from ``theta0`` (default: the midpoint of the two class means), with
    ℓ = σ(−m/τ) (``'sigmoid'``, a smooth 0/1 loss) or Fig. 8's ``'ramp'``, ``'logistic'``,
    ``'exp'`` on the margin m = s·Y·(x − θ), s = ``margin_scale`` (the losses other than the
    sigmoid are not scale-free: s sets how far from θ a point still counts). New λ values of the
    same length reuse the compile.

    Returns:
      ``{'theta': (L,), 'objective': (L,)}`` (the surrogate objective at the result).
    """
    lam = _check_fit_args(lams, loss, reduce, steps, temperature, learning_rate, margin_scale)
    xs = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(label, jnp.int32)
    if xs.ndim != 1 or y.shape != xs.shape:
        raise ValueError(f"x and label must be 1-D of one length, got {xs.shape}, {y.shape}")
    if theta0 is None:
        theta0 = 0.5 * float(jnp.mean(xs[y == 0]) + jnp.mean(xs[y == 1]))
    _, b, obj = _fit(
        xs[:, None],
        y,
        lam,
        jnp.ones(1, jnp.float32),
        jnp.float32(-theta0),
        jnp.float32(learning_rate),
        jnp.float32(margin_scale),
        loss=loss,
        reduce=reduce,
        steps=int(steps),
        fit_direction=False,
        temperature=float(temperature),
    )
    return {"theta": -b, "objective": obj}


def train_linear(
    x: Any,
    label: Any,
    lams: Any,
    *,
    loss: str = "sigmoid",
    reduce: str = "sum",
    steps: int = 1000,
    learning_rate: float = 0.01,
    temperature: float = 0.05,
    margin_scale: float = 1.0,
    key: Any = 0,
) -> dict[str, jax.Array]:
    """Trained linear classifiers 1{ŵ·x + b > 0} (‖ŵ‖ = 1) on d-dim samples, one per λ.

    As :func:`train_thresholds` with the direction learnt too (ŵ = w/‖w‖, so the temperature
    stays in input units); w starts from a random unit vector drawn from ``key``, b from 0.

    Returns:
      ``{'w': (L, D) unit vectors, 'b': (L,), 'objective': (L,)}``.
    """
    lam = _check_fit_args(lams, loss, reduce, steps, temperature, learning_rate, margin_scale)
    xs = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(label, jnp.int32)
    if xs.ndim != 2 or y.shape != xs.shape[:1]:
        raise ValueError(f"x must be (N, D) and label (N,), got {xs.shape}, {y.shape}")
    w0 = jax.random.normal(_key(key), (xs.shape[1],), jnp.float32)
    w, b, obj = _fit(
        xs,
        y,
        lam,
        w0 / jnp.linalg.norm(w0),
        jnp.float32(0.0),
        jnp.float32(learning_rate),
        jnp.float32(margin_scale),
        loss=loss,
        reduce=reduce,
        steps=int(steps),
        fit_direction=True,
        temperature=float(temperature),
    )
    return {"w": w, "b": b, "objective": obj}


def project_linear(
    w: jax.Array, b: jax.Array, mu_lo: jax.Array, mu_hi: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The 1-D model of a linear classifier 1{w·x + b > 0} on the d-dim mixture.

    Returns:
      (μ_', μ̄', θ) = (ŵ·μ_, ŵ·μ̄, −b/‖w‖): pass them to :mod:`~vaerob_jax.fairness.gmm` with
      the same K for every error (L2 ε) and distance. Requires ŵ·(μ̄ − μ_) > 0.
    """
    w = jnp.asarray(w)
    norm = jnp.linalg.norm(w, axis=-1)
    return (
        jnp.asarray(mu_lo) @ w.T / norm,
        jnp.asarray(mu_hi) @ w.T / norm,
        -jnp.asarray(b) / norm,
    )


def optimal_linear(
    mu_lo: Any,
    mu_hi: Any,
    k: float,
    which: str = "natural",
    *,
    eps: float = 0.0,
    lam: float = 0.0,
    p: float = 0.5,
    reduce: str = "sum",
) -> tuple[jax.Array, jax.Array]:
    """Closed-form optimal linear classifier (w, b) on the d-dim mixture (‖w‖ = 1).

    w = (μ̄ − μ_)/‖μ̄ − μ_‖ and b = −θ for the 1-D threshold of ``which``: ``'natural'`` (θ*),
    ``'fair'`` (θ_f), ``'robust'`` (θ_r(ε), L2 ε) or ``'fair_lambda'`` (θ_f(λ), Theorem 3),
    computed on the projected means.
    """
    lo, hi = jnp.asarray(mu_lo, jnp.float32), jnp.asarray(mu_hi, jnp.float32)
    w = (hi - lo) / jnp.linalg.norm(hi - lo)
    a, c = lo @ w, hi @ w
    thetas = {
        "natural": lambda: gmm.theta_star(k, a, c, p),
        "fair": lambda: gmm.theta_fair(k, a, c),
        "robust": lambda: gmm.theta_robust(eps, k, a, c, p),
        "fair_lambda": lambda: gmm.theta_fair_lambda(lam, k, a, c, p, reduce=reduce),
    }
    if which not in thetas:
        raise ValueError(f"which must be one of {tuple(thetas)}, got {which!r}")
    return w, -thetas[which]()
