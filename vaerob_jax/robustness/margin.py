"""Numerical estimate of the r-robustness margin R^r_X(x) of 001 (Eq. 3), plus a linear
reference model on which the margin is known in closed form.

001 Eq. 3 defines the margin as the largest L2 input radius R such that every perturbation
with ||delta||_2 < R keeps p(||Delta(x, delta)||_2 <= r) > m (m = 0.5). It is estimated
numerically (001 §4, Appendix D, Fig. 5/7/9a) with a maximum-damage attack (Eq. 5): at a
candidate radius R the attack looks for the worst delta in the ball, and the model counts as
r-robust at R when the Monte-Carlo p of the attacked input still exceeds m.

Two searches over R:
  * ``method='bisect'`` (default): bisection on R in [0, r_max] for a fixed number of
    iterations. The state is one (low, high) bracket per example, lifted with vmap, so a
    batch of examples is one compiled program. ``n_iter`` iterations give a bracket of width
    r_max / 2**n_iter.
  * ``method='scan'``: the public reference's descending scan (REFERENCE_NOTES, 001): radii
    step, 2 step, ..., r_max (0.5 up to 10 there), several attack starts each; the margin is
    the largest radius where p > m for every start. Kept to compare with bisection.

Both use the same Monte-Carlo key at every radius (the same eta draws: common random
numbers) and the same attack key per start, so the estimate is a deterministic function of
``key`` and p_hat(R) is as smooth in R as the attack allows. Keys are derived with
``jax.random.fold_in``.

The attack is a plain callable ``attack_fn(params, x, radius, key)`` for one example (L2
ball of that radius) returning ``delta`` or an :class:`~vaerob_jax.attacks.AttackResult`:
:func:`pgd_attack_fn` builds 001's output maximum-damage PGD attack from
:mod:`vaerob_jax.attacks` and returns its full result, so the margin search counts, per
example, the attacks that gained nothing over their random start (``attack_failed``) and the
non-finite steps (``attack_nonfinite_steps``) over every radius it tried;
:func:`linear_worst_case_attack` is the exact worst case for :class:`LinearGaussianVAE`
(a bare ``delta``, never a failure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.robustness.r_robust import (
    _check_apply_to,
    _check_count,
    _check_finite,
    _check_level,
    _check_nonnegative,
    _check_positive,
    chi2_cdf,
    deviation_norms,
)

Params = Any
Model = Any
AttackFn = Callable[[Any, jax.Array, jax.Array, jax.Array], Any]  # delta or AttackResult

METHODS = ("bisect", "logbisect", "scan")


# -- attacks ----------------------------------------------------------------------------------
def pgd_attack_fn(
    model: Model,
    steps: int = 20,
    step_size: Any = None,
    rule: str = "sign",
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    use_mean: bool = True,
) -> AttackFn:
    """001's output maximum-damage attack (Eq. 5) as an L2 PGD ``attack_fn`` for the margin.

    Maximises ||g(mu(x + delta)) - g(mu(x))||_2 (``use_mean=True``) or its noisy form with
    eta * sigma(x + delta) (``use_mean=False``, Eq. 5 as printed) over the L2 ball of the
    given radius intersected with the pixel ``box``. Thin wrapper over
    ``vaerob_jax.attacks.pgd(output_damage(model), norm='l2', ...)``.
    """
    from vaerob_jax.attacks import output_damage, pgd

    attack = pgd(
        output_damage(model, use_mean=use_mean),
        norm="l2",
        steps=steps,
        step_size=step_size,
        rule=rule,
        restarts=restarts,
        box=box,
    )

    def attack_fn(params: Any, x: jax.Array, radius: jax.Array, key: jax.Array) -> Any:
        return attack.run(params, {"x": x}, radius, key)

    return attack_fn


def _attack_record(out: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(delta, failed 0/1, non-finite steps) of an ``attack_fn`` output (delta or result)."""
    from vaerob_jax.attacks import AttackResult

    if isinstance(out, AttackResult):
        return out.delta, (~out.improved).astype(jnp.int32), out.nonfinite.astype(jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    return out, zero, zero


# -- margin search ----------------------------------------------------------------------------
def _robust_p(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array,
    radius: jax.Array,
    k_mc: jax.Array,
    k_attack: jax.Array,
    attack_fn: AttackFn,
    n_samples: int,
    n_starts: int,
    apply_to: str,
    tau: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(min over attack starts of p_hat(||Delta(x, delta_s)||_2 <= r), the starts' attack
    record: [failed attacks, non-finite steps]), delta_s = the attack at ``radius``."""

    def one_start(s: jax.Array) -> tuple[jax.Array, jax.Array]:
        delta, failed, nonfinite = _attack_record(
            attack_fn(params, x, radius, jax.random.fold_in(k_attack, s))
        )
        norms = deviation_norms(model, params, x, k_mc, n_samples, tau, delta, apply_to)
        return jnp.mean((norms <= r).astype(norms.dtype)), jnp.stack([failed, nonfinite])

    p, record = jax.vmap(one_start)(jnp.arange(n_starts))
    return jnp.min(p), jnp.sum(record, axis=0)


def _margin_one(
    model: Model,
    attack_fn: AttackFn,
    n_samples: int,
    n_iter: int,
    n_starts: int,
    method: str,
    scan_radii: tuple[float, ...] | None,
    log_range: float,
    apply_to: str,
    params: Params,
    x: jax.Array,
    r: jax.Array,
    key: jax.Array,
    m: jax.Array,
    r_max: jax.Array,
    tau: jax.Array,
) -> dict[str, jax.Array]:
    k_mc = jax.random.fold_in(key, 0)
    k_attack = jax.random.fold_in(key, 1)
    clean = deviation_norms(model, params, x, k_mc, n_samples, tau)
    p_clean = jnp.mean((clean <= r).astype(clean.dtype))
    robust_clean = p_clean > m

    def p_at(radius: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _robust_p(
            model, params, x, r, radius, k_mc, k_attack, attack_fn, n_samples, n_starts,
            apply_to, tau,
        )  # fmt: skip

    inf = jnp.asarray(jnp.inf, clean.dtype)
    zero = jnp.zeros((), clean.dtype)
    if method in ("bisect", "logbisect"):
        r_max = jnp.asarray(r_max, clean.dtype)
        p_top, record = p_at(r_max)
        robust_top = p_top > m
        log = method == "logbisect"
        if log:  # bracket [r_max / log_range, r_max], halved in log radius
            r_min = r_max / log_range
            p_bottom, rec_bottom = p_at(r_min)
            robust_bottom = p_bottom > m
            record = record + rec_bottom
            start = (r_min, r_max)
        else:
            start = (zero, r_max)

        def body(
            _: int, carry: tuple[jax.Array, jax.Array, jax.Array]
        ) -> tuple[jax.Array, jax.Array, jax.Array]:
            lo, hi, rec = carry
            mid = jnp.sqrt(lo * hi) if log else 0.5 * (lo + hi)
            p_mid, rec_mid = p_at(mid)
            ok = p_mid > m
            return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid), rec + rec_mid

        lo, hi, record = jax.lax.fori_loop(0, n_iter, body, (*start, record))
        n_attacks = (n_iter + 1 + int(log)) * n_starts
        if log:  # not robust even at r_min: the margin lies in [0, r_min]
            lo = jnp.where(robust_bottom, lo, zero)
            hi = jnp.where(robust_bottom, hi, r_min)
        lo = jnp.where(robust_top, r_max, lo)
        hi = jnp.where(robust_top, inf, hi)
        mid = jnp.where(lo > 0, jnp.sqrt(lo * hi), 0.5 * hi) if log else 0.5 * (lo + hi)
        estimate = jnp.where(robust_top, r_max, mid)
    else:
        assert scan_radii is not None
        radii = jnp.asarray(scan_radii, clean.dtype)
        p_radii, records = jax.vmap(p_at)(radii)
        ok = p_radii > m
        record = jnp.sum(records, axis=0)
        n_attacks = len(scan_radii) * n_starts
        # largest robust radius; the next grid radius up failed (descending scan stops there)
        idx = jnp.where(ok, jnp.arange(radii.shape[0]), -1).max()
        lo = jnp.where(idx >= 0, radii[jnp.maximum(idx, 0)], zero)
        nxt = jnp.minimum(idx + 1, radii.shape[0] - 1)
        hi = jnp.where(idx == radii.shape[0] - 1, inf, radii[nxt])
        robust_top = idx == radii.shape[0] - 1
        estimate = lo
    lo = jnp.where(robust_clean, lo, zero)
    hi = jnp.where(robust_clean, hi, zero)
    estimate = jnp.where(robust_clean, estimate, zero)
    return {
        "estimate": estimate,
        "low": lo,
        "high": hi,
        "width": hi - lo,
        "width_rel": jnp.where(estimate > 0, (hi - lo) / jnp.maximum(estimate, 1e-30), jnp.nan),
        "p_clean": p_clean,
        "robust_clean": robust_clean,
        "censored": robust_clean & robust_top,
        "attacks": jnp.asarray(n_attacks, jnp.int32),
        "attack_failed": record[0],
        "attack_nonfinite_steps": record[1],
    }


# static: model, attack_fn, n_samples, n_iter, n_starts, method, scan radii (tuple), log_range,
# apply_to
_margin_one_jit = jax.jit(_margin_one, static_argnums=tuple(range(9)))


def _scan_grid(method: str, scan_step: float, scan_max: float) -> tuple[float, ...] | None:
    """The reference scan's radii (scan_step, 2 scan_step, ..., <= scan_max) as a static tuple."""
    if method != "scan":
        return None
    _check_positive("scan_step", scan_step)
    _check_positive("scan_max", scan_max)
    count = int(np.floor(float(scan_max) / float(scan_step) + 1e-9))
    if count < 1:
        raise ValueError(f"scan_max ({scan_max}) must be >= scan_step ({scan_step})")
    return tuple(float(scan_step) * k for k in range(1, count + 1))


def _log_range(value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 1.0):
        raise ValueError(f"log_range (r_max / r_min) must be a finite number > 1, got {value}")
    return value


def make_margin_estimator(
    model: Model,
    attack_fn: AttackFn,
    *,
    n_samples: int = 40,
    n_iter: int = 10,
    n_starts: int = 1,
    method: str = "bisect",
    scan_step: float = 0.5,
    scan_max: float = 10.0,
    log_range: float = 1e3,
    apply_to: str = "mean",
) -> Callable[..., dict[str, jax.Array]]:
    """Builds a jitted, batched estimator of 001's margin R^r_X(x) (Eq. 3) for a fixed model.

    Returns ``estimate(params, xs, r, key, m=0.5, r_max=10.0, tau=0.0) -> dict``
    where ``xs`` is a batch ``(N, *x_shape)``, ``r`` a scalar or ``(N,)`` output radius, and
    example ``i`` uses ``jax.random.fold_in(key, i)``. ``r``, ``m``, ``r_max`` and
    ``tau`` are array arguments: new values never recompile.

    Args:
      model: the VAE (models contract).
      attack_fn: ``(params, x, radius, key) -> delta``, the worst-case search in the L2 ball of
        that radius (e.g. :func:`pgd_attack_fn`).
      n_samples: eta draws for each Monte-Carlo p (the public reference used 40).
      n_iter: bisection iterations (bracket width r_max / 2**n_iter).
      n_starts: attack starts per radius; robust at R iff p > m after every start (the
        reference used 5).
      method: 'bisect' (default: halve [0, r_max]), 'logbisect' (halve
        [r_max / log_range, r_max] in log radius: one more attack, and a bracket of the same
        *relative* width (log_range^(1/2**n_iter) - 1) at every scale, which bisection on a
        fixed grid gives only to large margins) or 'scan' (radii scan_step, 2 scan_step, ...,
        scan_max).
      scan_step, scan_max: the scan grid (static; the reference used 0.5 up to 10).
      log_range: r_max / r_min of 'logbisect' (static); a margin below r_min is reported as
        the bracket [0, r_min].
      apply_to: which encoder output sees x + delta when p is measured: 'mean' (001 Eq. 3,
        the definition Theorem 1 bounds; default), 'sigma' or 'both' (001 Fig. 6 also
        attacks both).

    Returns:
      A function giving per-example arrays: ``estimate`` (the bracket midpoint for bisection;
      the largest robust grid radius for the scan; ``r_max``/top radius when censored; 0 when
      not r-robust even unperturbed), ``low`` (largest radius verified robust), ``high``
      (smallest radius found non-robust; inf when censored), ``width``, ``width_rel``
      (width / estimate; NaN where the estimate is 0), ``p_clean`` (Eq. 2's
      p at delta = 0), ``robust_clean`` and ``censored`` (robust at the largest radius tried),
      and the attack record over every radius tried: ``attacks`` (attack runs per example),
      ``attack_failed`` (runs that gained nothing over their random start: at that radius the
      "robust" verdict rests on a random perturbation) and ``attack_nonfinite_steps``.
    """
    n_samples = _check_count("n_samples", n_samples)
    n_iter = _check_count("n_iter", n_iter)
    n_starts = _check_count("n_starts", n_starts)
    _check_apply_to(apply_to)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    scan_radii = _scan_grid(method, scan_step, scan_max)
    log_range = _log_range(log_range)

    def one(params, x, r, key, m, r_max, tau):
        return _margin_one(
            model, attack_fn, n_samples, n_iter, n_starts, method, scan_radii, log_range,
            apply_to, params, x, r, key, m, r_max, tau,
        )  # fmt: skip

    @jax.jit
    def batched(params, xs, r, key, m, r_max, tau):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(xs.shape[0]))
        return jax.vmap(one, in_axes=(None, 0, 0, 0, None, None, None))(
            params, xs, r, keys, m, r_max, tau
        )

    def estimate(
        params: Params,
        xs: jax.Array,
        r: jax.Array | float,
        key: jax.Array,
        m: jax.Array | float = 0.5,
        r_max: jax.Array | float = 10.0,
        tau: jax.Array | float = 0.0,
    ) -> dict[str, jax.Array]:
        xs = jnp.asarray(xs)
        if xs.ndim < 1 or xs.shape[0] == 0:
            raise ValueError(f"xs must be a non-empty batch of examples, got shape {xs.shape}")
        _check_finite("xs", xs)
        _check_positive("r", r)
        _check_level("m", m)
        _check_positive("r_max", r_max)
        _check_nonnegative("tau", tau)
        r_arr = jnp.asarray(r, xs.dtype)
        if r_arr.ndim > 1 or (r_arr.ndim == 1 and r_arr.shape[0] != xs.shape[0]):
            raise ValueError(
                f"r must be a scalar or have shape ({xs.shape[0]},), got {r_arr.shape}"
            )
        r_arr = jnp.broadcast_to(r_arr, (xs.shape[0],))
        return batched(
            params,
            xs,
            r_arr,
            key,
            jnp.asarray(m, xs.dtype),
            jnp.asarray(r_max, xs.dtype),
            jnp.asarray(tau, xs.dtype),
        )

    return estimate


def estimate_margin(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    attack_fn: AttackFn,
    *,
    n_samples: int = 40,
    m: jax.Array | float = 0.5,
    r_max: jax.Array | float = 10.0,
    n_iter: int = 10,
    n_starts: int = 1,
    method: str = "bisect",
    scan_step: float = 0.5,
    scan_max: float = 10.0,
    log_range: float = 1e3,
    apply_to: str = "mean",
    tau: jax.Array | float = 0.0,
) -> dict[str, jax.Array]:
    """Margin R^r_X(x) of 001 Eq. 3 for ONE example; pure, jitted, vmappable.

    Same search and fields as :func:`make_margin_estimator` (which also batches); the key is
    used as-is (no per-example fold_in). Input checks run when arguments are concrete.
    ``attack_fn`` must be hashable (functions are) since it is a static argument.
    """
    n_samples = _check_count("n_samples", n_samples)
    n_iter = _check_count("n_iter", n_iter)
    n_starts = _check_count("n_starts", n_starts)
    _check_apply_to(apply_to)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_finite("x", x)
    _check_positive("r", r)
    _check_level("m", m)
    _check_positive("r_max", r_max)
    _check_nonnegative("tau", tau)
    scan_radii = _scan_grid(method, scan_step, scan_max)
    log_range = _log_range(log_range)
    x = jnp.asarray(x)
    return _margin_one_jit(
        model, attack_fn, n_samples, n_iter, n_starts, method, scan_radii, log_range, apply_to,
        params, x, jnp.asarray(r, x.dtype), key, jnp.asarray(m, x.dtype),
        jnp.asarray(r_max, x.dtype), jnp.asarray(tau, x.dtype),
    )  # fmt: skip


# -- closed-form reference: a linear Gaussian VAE ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class LinearGaussianVAE:
    """A VAE with linear encoder mean, constant encoder variance and linear decoder.

    mu(x) = A vec(x) + b,   logvar(x) = logvar (constant),   g(z) = W z + c.

    With isotropic sigma = exp(logvar/2) + tau and orthonormal decoder columns (W^T W = I):
      * ||Delta(x)||_2 = sigma ||eta||_2, so p(||Delta(x)||_2 <= r) = F_chi2_d(r^2 / sigma^2);
      * ||Delta(x, delta)||_2 = ||A delta + sigma eta||_2, whose law depends only on
        t = ||A delta||_2 and whose p(<= r) decreases in t (Anderson's theorem: a centred ball
        loses Gaussian mass when shifted). The worst delta of norm R is R times the top right
        singular vector of A (t = s_max(A) R), so the true margin is R* = t* / s_max(A), with
        t* solving p(||t e_1 + sigma eta|| <= r) = m (:func:`linear_true_margin`).
      * Theorem 1 of 001: the half-space of Gaussian mass p0 shifted by t has mass
        Phi(Phi^{-1}(p0) - t / sigma), the least any set of mass p0 can keep (Neyman-Pearson),
        so t* >= sigma Phi^{-1}(p0), and with ||A||_F >= s_max(A) the bound
        sigma Phi^{-1}(p0) / ||A||_F <= R*: the bound never exceeds the true margin.

    Params: ``{'A': (d, D), 'b': (d,), 'logvar': (d,), 'W': (D, d), 'c': (D,)}``; inputs of
    any shape with D entries (flattened); outputs are flat ``(D,)`` vectors.
    """

    likelihood_std: float = 1.0

    def spec(self) -> dict[str, Any]:
        return {"kind": "linear_gaussian_vae", "likelihood_std": self.likelihood_std}

    def posterior(self, params: Params, x: jax.Array) -> DiagGaussian:
        mu = params["A"] @ jnp.ravel(x) + params["b"]
        return DiagGaussian(mu, params["logvar"])

    def embed(self, params: Params, x: jax.Array) -> jax.Array:
        return self.posterior(params, x).mean

    def decode(self, params: Params, z: jax.Array) -> jax.Array:
        return params["W"] @ z + params["c"]

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        return self.decode(params, self.embed(params, x))

    def log_likelihood(self, params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """Gaussian log p(x|z) with std ``likelihood_std``, summed over entries."""
        s = self.likelihood_std
        resid = (jnp.ravel(x) - self.decode(params, z)) / s
        return jnp.sum(-0.5 * resid**2 - jnp.log(s) - 0.5 * jnp.log(2 * jnp.pi))


def linear_worst_case_attack(params: Params, x_shape: tuple[int, ...]) -> AttackFn:
    """Exact maximum-damage attack for :class:`LinearGaussianVAE`: radius * top singular vector.

    Maximises ||A delta||_2 over ||delta||_2 <= radius (no pixel box).
    """
    _, _, vt = np.linalg.svd(np.asarray(params["A"], dtype=np.float64))
    direction = jnp.asarray(vt[0].reshape(x_shape), jnp.float32)

    def attack_fn(p: Params, x: jax.Array, radius: jax.Array, key: jax.Array) -> jax.Array:
        return radius * direction.astype(x.dtype)

    return attack_fn


def shifted_ball_probability(
    t: jax.Array | float,
    sigma: jax.Array | float,
    r: jax.Array | float,
    dim: int,
    n_nodes: int = 400,
) -> jax.Array:
    """p(||t e_1 + sigma eta||_2 <= r), eta ~ N(0, I_dim), without scipy.

    dim = 1: Phi((r - t)/sigma) - Phi((-r - t)/sigma). dim >= 2: condition on the first
    coordinate u; the rest is chi-square with dim - 1 degrees of freedom:
    E_u[F_chi2_{dim-1}((r^2 - (t + sigma u)^2) / sigma^2)] over |t + sigma u| <= r, by
    Gauss-Legendre quadrature. t = 0 gives F_chi2_dim(r^2 / sigma^2). Broadcasts over t,
    sigma and r; jitted (dim and n_nodes static).
    """
    return _shifted_ball_jit(t, sigma, r, int(dim), int(n_nodes))


def _shifted_ball(t: Any, sigma: Any, r: Any, dim: int, n_nodes: int) -> jax.Array:
    t, sigma, r = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (t, sigma, r)))
    ndtr = jax.scipy.special.ndtr
    if dim == 1:
        return ndtr((r - t) / sigma) - ndtr((-r - t) / sigma)
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    lo, hi = (-r - t) / sigma, (r - t) / sigma
    u = 0.5 * (hi - lo)[..., None] * jnp.asarray(nodes, jnp.float32) + 0.5 * (hi + lo)[..., None]
    rest = (r[..., None] ** 2 - (t[..., None] + sigma[..., None] * u) ** 2) / sigma[..., None] ** 2
    dens = jnp.exp(-0.5 * u**2) / jnp.sqrt(2 * jnp.pi)
    vals = dens * chi2_cdf(rest, dim - 1)
    return 0.5 * (hi - lo) * jnp.sum(vals * jnp.asarray(weights, jnp.float32), axis=-1)


_shifted_ball_jit = jax.jit(_shifted_ball, static_argnames=("dim", "n_nodes"))


@jax.jit(static_argnames=("dim", "n_bisect"))
def _critical_shift(sigma: Any, r: Any, m: Any, dim: int, n_bisect: int) -> jax.Array:
    """t* with p(||t* e_1 + sigma eta|| <= r) = m, by bisection (p decreases in t)."""

    def body(_: int, bracket: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        ok = _shifted_ball(mid, sigma, r, dim, 400) > m
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    start = (jnp.zeros((), jnp.float32), jnp.asarray(r + 10.0 * sigma, jnp.float32))
    lo, hi = jax.lax.fori_loop(0, n_bisect, body, start)
    return 0.5 * (lo + hi)


def linear_true_margin(
    params: Params,
    r: float,
    m: float = 0.5,
    tau: float = 0.0,
    n_bisect: int = 40,
) -> float:
    """The exact margin R* of 001 Eq. 3 for :class:`LinearGaussianVAE` (see its docstring).

    R* = t* / s_max(A), t* solving p(||t* e_1 + sigma eta||_2 <= r) = m. Requires an
    isotropic ``logvar`` and orthonormal decoder columns. Returns 0 when the clean model is
    not r-robust at level m.
    """
    logvar = np.asarray(params["logvar"], dtype=np.float64)
    if not np.allclose(logvar, logvar[0]):
        raise ValueError("linear_true_margin needs an isotropic encoder variance")
    w = np.asarray(params["W"], dtype=np.float64)
    if not np.allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-5):
        raise ValueError("linear_true_margin needs orthonormal decoder columns (W^T W = I)")
    sigma = float(np.exp(0.5 * logvar[0]) + tau)
    dim = int(logvar.shape[0])
    s_max = float(np.linalg.svd(np.asarray(params["A"], dtype=np.float64), compute_uv=False)[0])
    if float(shifted_ball_probability(0.0, sigma, r, dim)) <= m:
        return 0.0
    return float(_critical_shift(sigma, float(r), float(m), dim, n_bisect)) / s_max


__all__ = [
    "METHODS",
    "AttackFn",
    "LinearGaussianVAE",
    "estimate_margin",
    "linear_true_margin",
    "linear_worst_case_attack",
    "make_margin_estimator",
    "pgd_attack_fn",
    "shifted_ball_probability",
]
