"""Theorems 1–3 and Corollaries 1–2 of 004 checked on grids inside their stated bounds.

Each check evaluates the closed forms of :mod:`vaerob_jax.fairness.gmm` on a grid of
(d, ε, K[, λ]) that satisfies the statement's hypotheses (d = μ̄ − μ_, typos fixed as in spec
004 §0), vmapped and in float64 (``jax.enable_x64``: near K = 1 the three thresholds nearly
coincide and float32 noise would read as violations), and returns one :class:`TheoremCheck`
per claim: how many cases were checked, how many violated the claim by more than ``tol``, and
the worst margin (negative = violated). The paper proves the statements; these checks are what
a reader can rerun (spec 004 §3, check 2: 0 violations expected).

Grids: d ∈ linspace(0.5, 4, n_d); for each d, ε on a uniform grid of the statement's range and
K = 1 + (B − 1)·j/n_k, j = 1..n_k, with B the statement's bound at that (d, ε) (cases with
B <= 1 are empty). Theorem 3 uses ε = 0, K <= B_K(0) = e^{d²/2}, and λ on [0, 2λ_c].

Example:
    >>> for row in check_all():
    ...     print(row.statement, row.cases, row.violations)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.fairness import gmm

__all__ = [
    "TheoremCheck",
    "check_all",
    "check_corollary2",
    "check_theorem1",
    "check_theorem3",
    "theorem_grid",
]


class TheoremCheck(NamedTuple):
    """One claim checked on a grid.

    Attributes:
      statement: which claim (e.g. ``"Theorem 1: theta_f <= theta_r"``).
      cases: grid points inside the claim's hypotheses.
      violations: cases where the claim fails by more than the tolerance.
      worst: the smallest margin over the cases (>= −tol when nothing is violated).
    """

    statement: str
    cases: int
    violations: int
    worst: float


def _row(statement: str, margin: jax.Array, tol: float) -> TheoremCheck:
    m = np.asarray(margin, np.float64).ravel()
    if not np.all(np.isfinite(m)):
        raise FloatingPointError(
            f"{statement}: {int((~np.isfinite(m)).sum())} non-finite margins on the grid"
        )
    return TheoremCheck(statement, int(m.size), int(np.sum(m < -tol)), float(m.min()))


def theorem_grid(
    bound: str = "theorem1",
    d_values: np.ndarray | None = None,
    n_eps: int = 25,
    n_k: int = 20,
) -> dict[str, np.ndarray]:
    """Flat (d, eps, k) arrays of the cases inside a statement's hypotheses.

    Args:
      bound: ``"theorem1"`` (ε ∈ [0, d/2], K ∈ (1, B_K]; also Corollary 1 and Theorem 2) or
        ``"corollary2"`` (ε ∈ [0, d/4], K ∈ (1, B̄_K]).
      d_values: mean gaps d; default linspace(0.5, 4, 8).
      n_eps: ε values per d.
      n_k: K values per (d, ε).
    """
    if bound not in ("theorem1", "corollary2"):
        raise ValueError(f"bound must be 'theorem1' or 'corollary2', got {bound!r}")
    if n_eps < 1 or n_k < 1:
        raise ValueError(f"n_eps and n_k must be >= 1, got {n_eps}, {n_k}")
    ds = np.linspace(0.5, 4.0, 8) if d_values is None else np.asarray(d_values, np.float64)
    if ds.ndim != 1 or ds.size == 0 or np.any(ds <= 0):
        raise ValueError(f"d_values must be a non-empty 1-D array of gaps > 0, got {ds}")
    top = 0.5 if bound == "theorem1" else 0.25
    fn = gmm.b_k if bound == "theorem1" else gmm.b_k_bar
    out: dict[str, list[np.ndarray]] = {"d": [], "eps": [], "k": []}
    frac = np.arange(1, n_k + 1) / n_k
    with jax.enable_x64(True):
        for d in ds:
            eps = np.linspace(0.0, top * d, n_eps)
            bounds = np.asarray(fn(eps, d))
            for e, b in zip(eps, bounds):
                if not b > 1.0:
                    continue
                out["d"].append(np.full(n_k, d))
                out["eps"].append(np.full(n_k, e))
                out["k"].append(1.0 + (b - 1.0) * frac)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


@jax.jit
def _theorem1_margins(d: jax.Array, eps: jax.Array, k: jax.Array) -> dict[str, jax.Array]:
    """Margins (>= 0 when the claim holds) by statement (jit returns dicts sorted by key)."""
    lo, hi = -d / 2.0, d / 2.0
    t_f = gmm.theta_fair(k, lo, hi)
    t_s = gmm.theta_star(k, lo, hi)
    t_r = gmm.theta_robust(eps, k, lo, hi)
    slope_r = jax.vmap(jax.grad(gmm.theta_robust))(eps, k, lo, hi)
    # One stacked evaluation per metric: XLA's CPU compile time grows with every traced ndtr.
    thetas = jnp.stack([t_f, t_s, t_r])
    rob = gmm.robust_error(thetas, eps, k, lo, hi)
    dist = gmm.expected_distance(thetas, k, lo, hi)
    slope_f = jax.vmap(jax.grad(gmm.expected_distance))(t_f, k, lo, hi)
    return {
        "Theorem 1: mu_lo + eps <= theta_f": t_f - (lo + eps),
        "Theorem 1: theta_f <= theta_r": t_r - t_f,
        "Theorem 1: theta_r <= mu_hi - eps": (hi - eps) - t_r,
        "Theorem 1: theta_f <= theta_star": t_s - t_f,
        "Theorem 1: theta_r increasing in eps": slope_r,
        "Corollary 1: rob(theta_f) >= rob(theta_star)": rob[0] - rob[1],
        "Corollary 1: rob(theta_star) >= rob(theta_r)": rob[1] - rob[2],
        "Theorem 2: dist(theta_r) >= dist(theta_star)": dist[2] - dist[1],
        "Theorem 2: dist(theta_star) >= dist(theta_f)": dist[1] - dist[0],
        "Theorem 2: theta_f = argmin dist": -jnp.abs(slope_f),
    }


def check_theorem1(
    d_values: np.ndarray | None = None, n_eps: int = 25, n_k: int = 20, tol: float = 1e-10
) -> list[TheoremCheck]:
    """Theorem 1 (Eq. 8, θ_f <= θ*, θ_r increasing), Corollary 1 and Theorem 2 of 004.

    With μ_ = −d/2, μ̄ = d/2 on :func:`theorem_grid` ("theorem1"):

    * Eq. 8: μ_ + ε <= θ_f <= θ_r(ε) <= μ̄ − ε (three claims); θ_f <= θ* = θ_r(0);
    * θ_r increasing in ε: ∂θ_r/∂ε >= 0 (autodiff of the closed form);
    * Corollary 1: L^rob(θ_f) >= L^rob(θ*) >= L^rob(θ_r) at the same ε;
    * Theorem 2: EΔ(θ_r) >= EΔ(θ*) >= EΔ(θ_f), and θ_f = argmin_θ E|X − θ|, checked as
      |∂EΔ/∂θ (θ_f)| <= tol (EΔ is convex in θ, so a zero slope is the global minimum).
    """
    grid = theorem_grid("theorem1", d_values, n_eps, n_k)
    with jax.enable_x64(True):
        margins = _theorem1_margins(*(jnp.asarray(grid[n]) for n in ("d", "eps", "k")))
        return [_row(name, m, tol) for name, m in margins.items()]


@jax.jit
def _corollary2_margins(d: jax.Array, eps: jax.Array, k: jax.Array) -> dict[str, jax.Array]:
    lo, hi = -d / 2.0, d / 2.0
    thetas = jnp.stack(
        [gmm.theta_fair(k, lo, hi), gmm.theta_star(k, lo, hi), gmm.theta_robust(eps, k, lo, hi)]
    )
    bdy = gmm.boundary_error(thetas, eps, k, lo, hi)
    return {
        "Corollary 2: bdy(theta_f) >= bdy(theta_star)": bdy[0] - bdy[1],
        "Corollary 2: bdy(theta_star) >= bdy(theta_r)": bdy[1] - bdy[2],
    }


def check_corollary2(
    d_values: np.ndarray | None = None, n_eps: int = 25, n_k: int = 20, tol: float = 1e-10
) -> list[TheoremCheck]:
    """Corollary 2 of 004: L^bdy(θ_f) >= L^bdy(θ*) >= L^bdy(θ_r) for ε <= d/4, K <= B̄_K."""
    grid = theorem_grid("corollary2", d_values, n_eps, n_k)
    with jax.enable_x64(True):
        margins = _corollary2_margins(*(jnp.asarray(grid[n]) for n in ("d", "eps", "k")))
        return [_row(name, m, tol) for name, m in margins.items()]


@functools.partial(jax.jit, static_argnames=("n_lam", "n_theta", "reduce"))
def _theorem3_margins(
    d: jax.Array, k: jax.Array, n_lam: int, n_theta: int, reduce: str
) -> dict[str, jax.Array]:
    lo, hi = -d / 2.0, d / 2.0
    lam_c = gmm.lambda_critical(k, reduce=reduce)
    lam = lam_c[:, None] * jnp.linspace(0.0, 2.0, n_lam)[None, :]  # (cases, n_lam)
    kc, loc, hic = k[:, None], lo[:, None], hi[:, None]
    theta = gmm.theta_fair_lambda(lam, kc, loc, hic, reduce=reduce, clip=True)
    at_closed = gmm.fair_objective(theta, lam, kc, loc, hic, reduce=reduce)
    frac = jnp.linspace(0.0, 1.0, n_theta)

    def grid_min(case):
        lam_row, k_, lo_, hi_ = case
        ts = lo_ + (hi_ - lo_) * frac
        obj = gmm.fair_objective(ts[None, :], lam_row[:, None], k_, lo_, hi_, reduce=reduce)
        return jnp.min(obj, axis=1)

    # One case at a time: (n_lam, n_theta) objectives, not the whole grid at once.
    brute = jax.lax.map(grid_min, (lam, k, lo, hi))
    # The paper states the kink for λ in ((K−1)/(K+1), ∞): strictly above λ_c.
    above = lam > lam_c[:, None]
    kink = jnp.where(above, -jnp.abs(theta - gmm.theta_fair(kc, loc, hic)), jnp.nan)
    dist = gmm.expected_distance(theta, kc, loc, hic)
    tag = f"Theorem 3 ({reduce})"
    return {
        f"{tag}: theta_f(lam) minimises Eq. 3": brute - at_closed,
        f"{tag}: theta_f(lam) = theta_f for lam > lam_c": kink,
        f"{tag}: theta_f(lam) decreasing": theta[:, :-1] - theta[:, 1:],
        f"{tag}: dist(theta_f(lam)) decreasing": dist[:, :-1] - dist[:, 1:],
    }


def check_theorem3(
    d_values: np.ndarray | None = None,
    n_k: int = 20,
    n_lam: int = 41,
    n_theta: int = 4001,
    reduce: str = "sum",
    tol: float = 1e-10,
) -> list[TheoremCheck]:
    """Theorem 3 of 004 for one reduction of Eq. 3's penalty (0/1 loss, ε = 0).

    On K ∈ (1, e^{d²/2}] (θ* <= μ̄), λ ∈ linspace(0, 2λ_c, n_lam):

    * θ_f(λ) minimises Eq. 3 over θ ∈ [μ_, μ̄]: objective(θ_f(λ)) <= min over a dense θ grid
      (``n_theta`` points) — exact as a check, since the grid minimum is at least the true one;
    * θ_f(λ) = θ_f for λ > λ_c;
    * θ_f(λ) and EΔ(θ_f(λ)) are non-increasing in λ (consecutive grid points).
    """
    if n_lam < 2 or n_theta < 2:
        raise ValueError(f"n_lam and n_theta must be >= 2, got {n_lam}, {n_theta}")
    if reduce not in gmm.REDUCES:
        raise ValueError(f"reduce must be one of {gmm.REDUCES}, got {reduce!r}")
    grid = theorem_grid("theorem1", d_values, n_eps=1, n_k=n_k)  # ε = 0 only
    with jax.enable_x64(True):
        d, k = jnp.asarray(grid["d"]), jnp.asarray(grid["k"])
        margins = _theorem3_margins(d, k, n_lam, n_theta, reduce)
        rows = []
        for name, m in margins.items():
            m = np.asarray(m)
            rows.append(_row(name, m[~np.isnan(m)], tol))
        return rows


def check_all(
    d_values: np.ndarray | None = None, n_eps: int = 25, n_k: int = 20, tol: float = 1e-10
) -> list[TheoremCheck]:
    """Every check: Theorem 1, Corollary 1, Theorem 2, Corollary 2, Theorem 3 (both forms)."""
    return (
        check_theorem1(d_values, n_eps, n_k, tol)
        + check_corollary2(d_values, n_eps, n_k, tol)
        + check_theorem3(d_values, n_k, reduce="sum", tol=tol)
        + check_theorem3(d_values, n_k, reduce="mean", tol=tol)
    )
