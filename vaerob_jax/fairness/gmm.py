"""The 1-D two-Gaussian model of §5 of 004 (Tran et al.): closed forms, errors, distances.

Setting (§5.1 of 004, typos fixed as in spec 004 §0): X | Y=−1 ~ N(μ_, 1) and
X | Y=+1 ~ N(μ̄, K²) with d = μ̄ − μ_ > 0 and K > 1; the protected group is the class
(A = Y); the classifier is f_θ(x) = 1{x > θ} (predicts +1 above θ). ``p = Pr(Y=+1)`` is the
share of group +1: the paper's balanced setting is p = ½ (default); other p follow spec 004's
"Group size" derivation (not in the paper).

Every function is elementwise jnp (arguments broadcast), so it is vmappable over θ, ε, K, λ
and the means, and differentiable. Each public function is jit-compiled (values are traced,
so a new K, ε or λ never recompiles) after host-side checks of concrete arguments
(:func:`check_mixture`: K > 1, μ̄ > μ_, p ∈ (0, 1), ε, λ >= 0; traced values are not checked).
Float precision follows the inputs: run under ``jax.enable_x64(True)`` for float64 (the
theorem checks do).

Closed forms (spec 004 §3; each is the "+" root of a quadratic, written in the
cancellation-free form u = (d² + 2K²L)/(d + K√(d² + 2(K²−1)L)) of
u = (−d + K√(d² + 2(K²−1)L))/(K²−1), which loses digits as K → 1 in float32):

* θ* (natural, Bayes): L = ln(K(1−p)/p);
* θ_f = μ_ + d/(K+1) (equal group errors Φ(−d/(K+1)); for p = ½ the mixture median);
* θ_r(ε) (robust): θ* with μ_ → μ_+ε and d → d − 2ε;
* θ_f(λ) (Theorem 3, 0/1 loss in Eq. 3): L = ln(K(1−p−λ')/(p+λ')) until λ reaches λ_c, then θ_f;
  λ' = λ for Eq. 3's sum over groups (``reduce='sum'``, the default) and λ' = λ/|A| = λ/2 for
  the mean over groups (``reduce='mean'``, the form the paper's Theorem 3 formula assumes).

The closed forms return the unconstrained stationary point; ``clip=True`` restricts it to the
paper's family θ ∈ [μ_, μ̄] (the minimiser there: each objective decreases between the two roots
of its quadratic and the lower root lies below μ_). Fig. 2's K = 10 case needs the clip.

Example:
    >>> theta_star(2.0), theta_fair(2.0), theta_robust(0.1, 2.0)   # .2376, −.3333, .3134
    >>> robust_error(theta_fair(5.0), 0.1, 5.0)                    # .3924
    >>> theta_fair_lambda(jnp.array([0.0, 0.1, 0.2]), 3.0, reduce="mean")   # .4919 .3571 .2067
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

__all__ = [
    "REDUCES",
    "b_k",
    "b_k_bar",
    "boundary_error",
    "check_mixture",
    "expected_distance",
    "fair_objective",
    "fairness_gap",
    "gaussian_abs_deviation",
    "group_boundary_errors",
    "group_distances",
    "group_errors",
    "group_robust_errors",
    "lambda_critical",
    "natural_error",
    "psi_inverse",
    "robust_error",
    "theta_fair",
    "theta_fair_lambda",
    "theta_robust",
    "theta_star",
]

#: Reductions of Eq. 3's penalty over groups: the paper's sum, or the mean over groups.
REDUCES = ("sum", "mean")

F = TypeVar("F", bound=Callable[..., Any])
Scalar = Any  # a float, or a jnp/np array broadcastable against the other arguments


def _concrete(x: Any) -> np.ndarray | None:
    """x as a numpy array when it is a concrete value, None under tracing (jit/vmap/grad)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x, dtype=np.float64)


def check_mixture(
    k: Scalar = None,
    mu_lo: Scalar = None,
    mu_hi: Scalar = None,
    p: Scalar = None,
    eps: Scalar = None,
    lam: Scalar = None,
) -> None:
    """Raises ValueError naming the field when a concrete argument is outside the model.

    Traced values (inside jit/vmap/grad) cannot be checked and are skipped; check the grid on
    the host before lifting.
    """
    checks = [
        ("K", k, lambda v: v > 1.0, "must be > 1 (group +1 has the larger spread)"),
        ("p", p, lambda v: (v > 0.0) & (v < 1.0), "must lie in (0, 1)"),
        ("eps", eps, lambda v: v >= 0.0, "must be >= 0"),
        ("lam", lam, lambda v: v >= 0.0, "must be >= 0"),
    ]
    for name, value, ok, why in checks:
        arr = None if value is None else _concrete(value)
        if arr is not None and not np.all(ok(arr) & np.isfinite(arr)):
            raise ValueError(f"{name} {why}; got {arr.ravel()[:5].tolist()}")
    lo = None if mu_lo is None else _concrete(mu_lo)
    hi = None if mu_hi is None else _concrete(mu_hi)
    if lo is not None and hi is not None and not np.all(hi > lo):
        raise ValueError(
            f"mu_hi must exceed mu_lo (d = mu_hi - mu_lo > 0); got mu_lo={lo.ravel()[:3].tolist()}"
            f", mu_hi={hi.ravel()[:3].tolist()}"
        )


def _compiled(*static: str, check: tuple[str, ...] = ()) -> Callable[[F], F]:
    """jit a public function (eager op-by-op dispatch of ndtr is slow) after host-side checks.

    ``check`` names the arguments passed to :func:`check_mixture` before compiling (inside
    jit they would be tracers and go unchecked); ``static`` are the non-array options.
    """

    def deco(fn: F) -> F:
        jitted = jax.jit(fn, static_argnames=static)
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if check:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                check_mixture(**{name: bound.arguments[name] for name in check})
            return jitted(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def _float(*xs: Any) -> tuple[jax.Array, ...]:
    """The arguments as jnp arrays of one floating dtype (float64 under enable_x64)."""
    arrs = [jnp.asarray(x) for x in xs]
    dtype = jnp.result_type(*arrs)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.asarray(0.0).dtype
    return tuple(a.astype(dtype) for a in arrs)


def _lam_eff(lam: jax.Array, reduce: str) -> jax.Array:
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    return lam if reduce == "sum" else lam / 2.0


def _stationary(lo: jax.Array, d: jax.Array, k: jax.Array, log_ratio: jax.Array) -> jax.Array:
    """The "+" root θ of K²(θ−lo)² = (θ−lo−d)² + 2K²(ln K + log_ratio); −inf when none exists.

    It is the stationary point of a₋·(1−Φ(θ−lo)) + a₊·Φ((θ−lo−d)/K) with ln(a₋/a₊) = log_ratio
    (a local minimum); with no real root that objective increases everywhere (−inf: its
    infimum lies to the left).
    """
    big_l = jnp.log(k) + log_ratio
    disc = d * d + 2.0 * (k * k - 1.0) * big_l
    ok = disc >= 0.0
    root = jnp.sqrt(jnp.where(ok, disc, 1.0))
    u = (d * d + 2.0 * k * k * big_l) / (d + k * root)
    return jnp.where(ok, lo + u, -jnp.inf)


def _restrict(theta: jax.Array, mu_lo: jax.Array, mu_hi: jax.Array, clip: bool) -> jax.Array:
    return jnp.clip(theta, mu_lo, mu_hi) if clip else theta


@_compiled("clip", check=("k", "mu_lo", "mu_hi", "p"))
def theta_star(
    k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0, p: Scalar = 0.5, *, clip: bool = False
) -> jax.Array:
    """Optimal natural (Bayes) threshold θ* of §5.1 (p = ½: the formula after Theorem 1).

    With group share p, ln K becomes ln(K(1−p)/p) (spec 004 "Group size"); −inf (or μ_ with
    ``clip``) when the natural error has no stationary point (possible only for p > ½).
    """
    k, mu_lo, mu_hi, p = _float(k, mu_lo, mu_hi, p)
    theta = _stationary(mu_lo, mu_hi - mu_lo, k, jnp.log((1.0 - p) / p))
    return _restrict(theta, mu_lo, mu_hi, clip)


@_compiled(check=("k", "mu_lo", "mu_hi"))
def theta_fair(k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0) -> jax.Array:
    """Optimal fair threshold θ_f = μ_ + d/(K+1) of §5.1: both group errors equal Φ(−d/(K+1)).

    θ_f(∞) of Eq. 3 (lexicographic: zero violation first); independent of p; for p = ½ it is
    the mixture's median, hence argmin_θ E|X − θ| (Theorem 2).
    """
    k, mu_lo, mu_hi = _float(k, mu_lo, mu_hi)
    return mu_lo + (mu_hi - mu_lo) / (k + 1.0)


@_compiled("clip", check=("eps", "k", "mu_lo", "mu_hi", "p"))
def theta_robust(
    eps: Scalar,
    k: Scalar,
    mu_lo: Scalar = -1.0,
    mu_hi: Scalar = 1.0,
    p: Scalar = 0.5,
    *,
    clip: bool = False,
) -> jax.Array:
    """Optimal robust threshold θ_r(ε) of §5.1, the minimiser of the robust error (Eq. 4).

    L^rob(θ, ε) is the natural error of the mixture with μ_ + ε and μ̄ − ε, so θ_r(ε) is θ* with
    d − 2ε: θ_r = μ_ − (d − (K²+1)ε)/(K²−1) + K/(K²−1)·√(2(K²−1)ln K + (d−2ε)²); θ_r(0) = θ*.
    """
    eps, k, mu_lo, mu_hi, p = _float(eps, k, mu_lo, mu_hi, p)
    d = mu_hi - mu_lo - 2.0 * eps
    theta = _stationary(mu_lo + eps, d, k, jnp.log((1.0 - p) / p))
    return _restrict(theta, mu_lo, mu_hi, clip)


@_compiled("reduce", check=("k", "p"))
def lambda_critical(k: Scalar, p: Scalar = 0.5, *, reduce: str = "sum") -> jax.Array:
    """λ_c of Theorem 3: θ_f(λ) = θ_f for λ ≥ λ_c (when θ* ≥ θ_f, always so for p = ½).

    Mean form (the paper's statement): λ_c = (K−1)/(K+1); Eq. 3's sum form: (K−1)/(2(K+1)).
    With group share p (sum form): (K(1−p) − p)/(K+1).
    """
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    k, p = _float(k, p)
    lam_eff = (k * (1.0 - p) - p) / (k + 1.0)  # λ' at which the stationary point hits θ_f
    return lam_eff if reduce == "sum" else 2.0 * lam_eff


@_compiled("reduce", "clip", check=("lam", "k", "mu_lo", "mu_hi", "p"))
def theta_fair_lambda(
    lam: Scalar,
    k: Scalar,
    mu_lo: Scalar = -1.0,
    mu_hi: Scalar = 1.0,
    p: Scalar = 0.5,
    *,
    reduce: str = "sum",
    clip: bool = False,
) -> jax.Array:
    """Minimiser θ_f(λ) of Eq. 3 with the 0/1 loss (Theorem 3 of 004).

    With λ' = λ (``reduce='sum'``, Eq. 3) or λ/2 (``'mean'``), the objective for two groups is
    (1−p)e₋ + p·e₊ + λ'|e₋ − e₊| (Σ_a|e_a − L| = |e₋ − e₊| for any p). On the side of
    θ_f where θ* lies (sign s) it is a₋e₋ + a₊e₊ with a₋ = 1−p−sλ', a₊ = p+sλ', whose
    stationary point is θ* with ln K → ln(K a₋/a₊) (p = ½, mean form: ln(K(1−λ)/(1+λ)), the
    paper's formula). It moves monotonically toward θ_f as λ grows and is θ_f from λ_c on.

    Args:
      lam: the penalty weight λ >= 0.
      k, mu_lo, mu_hi, p: the mixture.
      reduce: ``'sum'`` (Eq. 3, default) or ``'mean'`` (λ/|A| Σ_a, the paper's Theorem 3).
      clip: restrict to [μ_, μ̄].
    """
    lam, k, mu_lo, mu_hi, p = _float(lam, k, mu_lo, mu_hi, p)
    lam_eff = _lam_eff(lam, reduce)
    d = mu_hi - mu_lo
    t_fair = mu_lo + d / (k + 1.0)
    side = jnp.sign(_stationary(mu_lo, d, k, jnp.log((1.0 - p) / p)) - t_fair)
    a_neg = 1.0 - p - side * lam_eff
    a_pos = p + side * lam_eff
    valid = (a_neg > 0.0) & (a_pos > 0.0)
    ratio = jnp.where(valid, a_neg / jnp.where(valid, a_pos, 1.0), 1.0)
    stat = _stationary(mu_lo, d, k, jnp.log(ratio))
    # The branch's stationary point counts only on its own side of the kink θ_f; otherwise
    # the objective is monotone toward θ_f on that side and the kink is the minimiser.
    use = valid & (side * (stat - t_fair) > 0.0)
    theta = jnp.where(use, stat, t_fair)
    return _restrict(theta, mu_lo, mu_hi, clip)


@_compiled()
def group_errors(
    theta: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Natural errors per group (e₋, e₊) = (1 − Φ(θ−μ_), Φ((θ−μ̄)/K)) of f_θ = 1{x > θ}."""
    theta, k, mu_lo, mu_hi = _float(theta, k, mu_lo, mu_hi)
    return ndtr(mu_lo - theta), ndtr((theta - mu_hi) / k)


@_compiled()
def natural_error(
    theta: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0, p: Scalar = 0.5
) -> jax.Array:
    """Natural error (Eq. 6): (1−p)e₋ + p·e₊ (p = ½: (e₋ + e₊)/2)."""
    e_neg, e_pos = group_errors(theta, k, mu_lo, mu_hi)
    (p,) = _float(p)
    return (1.0 - p) * e_neg + p * e_pos


@_compiled()
def fairness_gap(theta: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0) -> jax.Array:
    """|e₋ − e₊|: Eq. 3's sum penalty Σ_a|L_a − L| with the 0/1 loss, for any group share p."""
    e_neg, e_pos = group_errors(theta, k, mu_lo, mu_hi)
    return jnp.abs(e_neg - e_pos)


@_compiled("reduce")
def fair_objective(
    theta: Scalar,
    lam: Scalar,
    k: Scalar,
    mu_lo: Scalar = -1.0,
    mu_hi: Scalar = 1.0,
    p: Scalar = 0.5,
    *,
    reduce: str = "sum",
) -> jax.Array:
    """Population Eq. 3 with the 0/1 loss: L + λ·Σ_a|e_a − L| (``'mean'``: λ/2·Σ_a)."""
    e_neg, e_pos = group_errors(theta, k, mu_lo, mu_hi)
    lam, p = _float(lam, p)
    total = (1.0 - p) * e_neg + p * e_pos
    penalty = jnp.abs(e_neg - total) + jnp.abs(e_pos - total)
    return total + _lam_eff(lam, reduce) * penalty


@_compiled()
def group_robust_errors(
    theta: Scalar, eps: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Robust errors per group (Eq. 4): (1 − Φ(θ−ε−μ_), Φ((θ+ε−μ̄)/K))."""
    theta, eps, k, mu_lo, mu_hi = _float(theta, eps, k, mu_lo, mu_hi)
    return ndtr(mu_lo + eps - theta), ndtr((theta + eps - mu_hi) / k)


@_compiled()
def robust_error(
    theta: Scalar,
    eps: Scalar,
    k: Scalar,
    mu_lo: Scalar = -1.0,
    mu_hi: Scalar = 1.0,
    p: Scalar = 0.5,
) -> jax.Array:
    """Robust error L^rob(θ, ε) (Eq. 4) = natural + boundary error (Eq. 5)."""
    r_neg, r_pos = group_robust_errors(theta, eps, k, mu_lo, mu_hi)
    (p,) = _float(p)
    return (1.0 - p) * r_neg + p * r_pos


@_compiled()
def group_boundary_errors(
    theta: Scalar, eps: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Boundary errors per group (Eq. 7): correct points within ε of θ.

    Group −1: Φ(θ−μ_) − Φ(θ−ε−μ_); group +1: Φ((θ+ε−μ̄)/K) − Φ((θ−μ̄)/K). Each is its group's
    robust minus natural error, so Eq. 5 holds per group.
    """
    r_neg, r_pos = group_robust_errors(theta, eps, k, mu_lo, mu_hi)
    e_neg, e_pos = group_errors(theta, k, mu_lo, mu_hi)
    return r_neg - e_neg, r_pos - e_pos


@_compiled()
def boundary_error(
    theta: Scalar,
    eps: Scalar,
    k: Scalar,
    mu_lo: Scalar = -1.0,
    mu_hi: Scalar = 1.0,
    p: Scalar = 0.5,
) -> jax.Array:
    """Boundary error L^bdy(θ, ε) (Eq. 7), the (1−p, p)-weighted group boundary errors."""
    b_neg, b_pos = group_boundary_errors(theta, eps, k, mu_lo, mu_hi)
    (p,) = _float(p)
    return (1.0 - p) * b_neg + p * b_pos


@_compiled()
def gaussian_abs_deviation(theta: Scalar, mean: Scalar, std: Scalar) -> jax.Array:
    """E|X − θ| for X ~ N(mean, std²): s·[2φ(c) + c·(2Φ(c) − 1)] with c = (θ − mean)/s."""
    theta, mean, std = _float(theta, mean, std)
    c = (theta - mean) / std
    pdf = jnp.exp(-0.5 * c * c) / jnp.sqrt(2.0 * jnp.pi).astype(c.dtype)
    return std * (2.0 * pdf + c * (2.0 * ndtr(c) - 1.0))


@_compiled()
def group_distances(
    theta: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Expected distance E[Δ(X, f_θ)] = E|X − θ| per group (−1, +1) (§5.3 of 004).

    In 1-D the distance to the boundary of 1{x > θ} is |x − θ| in every ℓ_p norm.
    """
    return gaussian_abs_deviation(theta, mu_lo, 1.0), gaussian_abs_deviation(theta, mu_hi, k)


@_compiled()
def expected_distance(
    theta: Scalar, k: Scalar, mu_lo: Scalar = -1.0, mu_hi: Scalar = 1.0, p: Scalar = 0.5
) -> jax.Array:
    """Mean distance to the decision boundary E[Δ(X, f_θ)] (Theorem 2 of 004)."""
    g_neg, g_pos = group_distances(theta, k, mu_lo, mu_hi)
    (p,) = _float(p)
    return (1.0 - p) * g_neg + p * g_pos


@_compiled()
def b_k(eps: Scalar, d: Scalar) -> jax.Array:
    """Theorem 1's bound B_K = min{exp((d − 2ε)²/2), d/ε − 1} (∞ for the second at ε = 0)."""
    eps, d = _float(eps, d)
    second = jnp.where(eps > 0.0, d / jnp.where(eps > 0.0, eps, 1.0) - 1.0, jnp.inf)
    return jnp.minimum(jnp.exp(0.5 * (d - 2.0 * eps) ** 2), second)


@_compiled()
def psi_inverse(y: Scalar) -> jax.Array:
    """Inverse of ψ(x) = x + 1/x on [1, ∞): (y + √(y² − 4))/2 for y >= 2 (Corollary 2's ϕ⁻¹)."""
    (y,) = _float(y)
    return 0.5 * (y + jnp.sqrt(jnp.maximum(y * y - 4.0, 0.0)))


@_compiled()
def b_k_bar(eps: Scalar, d: Scalar) -> jax.Array:
    """Corollary 2's bound B̄_K = min{exp((d − 2ε)²/2), ψ⁻¹(d/ε − 2)} (for ε <= d/4)."""
    eps, d = _float(eps, d)
    second = jnp.where(eps > 0.0, psi_inverse(d / jnp.where(eps > 0.0, eps, 1.0) - 2.0), jnp.inf)
    return jnp.minimum(jnp.exp(0.5 * (d - 2.0 * eps) ** 2), second)
