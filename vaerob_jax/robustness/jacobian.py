"""Encoder-mean Jacobian norms and the margin bound of 001 Theorem 1 (Eq. 4).

Theorem 1 of 001 lower-bounds the r-robustness margin of a diagonal-Gaussian VAE:

    R^r_X(x) >= min_i sigma_i(x) * Phi^{-1}(p(||Delta(x)||_2 <= r)) / ||J_mu(x)||_F  (+ O(eps))

with ``J_mu(x)[i, j] = d mu_i(x) / d x_j``. The Jacobian has only ``latent_dim`` rows, so its
Frobenius norm is computed exactly from ``latent_dim`` vector-Jacobian products (one backward
pass with a batch of ``d`` one-hot cotangents); ``jacfwd`` over image pixels would need one
forward pass per pixel (~250x slower on 64x64x3) and is never used.

All functions are per example, pure, vmappable and jittable; ``r`` and ``tau`` are
array arguments.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.robustness.r_robust import (
    _check_count,
    _check_finite,
    _check_level,
    _check_nonnegative,
    _check_positive,
    _p_and_se,
    deviation_norms,
)

Params = Any
Model = Any

PROBES = ("rademacher", "gaussian")


def _mean_vjp(model: Model, params: Params, x: jax.Array):
    mu, vjp_fn = jax.vjp(lambda xx: model.embed(params, xx), x)
    return mu, vjp_fn


def encoder_jacobian(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """The full encoder-mean Jacobian J_mu(x), shape ``(latent_dim, *x.shape)``.

    Row ``i`` is ``d mu_i / d x``, obtained as the VJP with the ``i``-th latent basis vector;
    the ``latent_dim`` VJPs share one forward pass and run as one batched backward pass.
    """
    _check_finite("x", x)
    return _jacobian_jit(model, params, x)


def _jacobian_rows(model: Model, params: Params, x: jax.Array) -> jax.Array:
    mu, vjp_fn = _mean_vjp(model, params, x)
    basis = jnp.eye(mu.shape[0], dtype=mu.dtype)
    (rows,) = jax.vmap(vjp_fn)(basis)
    return rows


def _fro(model: Model, params: Params, x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(_jacobian_rows(model, params, x))))


_jacobian_jit = jax.jit(_jacobian_rows, static_argnames=("model",))
_fro_jit = jax.jit(_fro, static_argnames=("model",))


def encoder_jacobian_fro(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """Exact ||J_mu(x)||_F (the denominator of 001 Theorem 1, Eq. 4; 001 Fig. 9d).

    Cost: one forward pass plus a backward pass batched over ``latent_dim`` cotangents.

    Args:
      model, params: the VAE (models contract).
      x: one input.

    Returns:
      Scalar Frobenius norm.
    """
    _check_finite("x", x)
    return _fro_jit(model, params, x)


def encoder_jacobian_fro_probe(
    model: Model,
    params: Params,
    x: jax.Array,
    key: jax.Array,
    n_probes: int,
    probe: str = "rademacher",
) -> tuple[jax.Array, jax.Array]:
    """Unbiased random-probe estimate of ||J_mu(x)||_F^2 and its standard error.

    Hutchinson's trace estimator in LATENT space: for a probe ``v`` with E[v v^T] = I
    (Rademacher or standard Gaussian), E[||J^T v||^2] = tr(J J^T) = ||J||_F^2. Each probe costs
    one VJP, so this pays off over the exact norm only when ``n_probes << latent_dim``.

    Args:
      model, params, x: the VAE and one input.
      key: PRNG key for the probes.
      n_probes: number of probes (static, >= 1).
      probe: 'rademacher' (lower variance) or 'gaussian'.

    Returns:
      ``(estimate, std_err)``: the mean of the ``n_probes`` values ||J^T v||^2 and its
      standard error ``std(ddof=1) / sqrt(n_probes)`` (``inf`` when ``n_probes == 1``).
    """
    n_probes = _check_count("n_probes", n_probes)
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    _check_finite("x", x)
    return _probe_jit(model, params, x, key, n_probes, probe)


def _probe(
    model: Model, params: Params, x: jax.Array, key: jax.Array, n_probes: int, probe: str
) -> tuple[jax.Array, jax.Array]:
    mu, vjp_fn = _mean_vjp(model, params, x)
    shape = (n_probes, mu.shape[0])
    if probe == "rademacher":
        v = jax.random.rademacher(key, shape, dtype=mu.dtype)
    else:
        v = jax.random.normal(key, shape, dtype=mu.dtype)
    (rows,) = jax.vmap(vjp_fn)(v)
    vals = jnp.sum(jnp.square(rows.reshape(n_probes, -1)), axis=1)
    est = jnp.mean(vals)
    if n_probes == 1:
        return est, jnp.asarray(jnp.inf, est.dtype)
    se = jnp.std(vals, ddof=1) / jnp.sqrt(float(n_probes))
    return est, se


_probe_jit = jax.jit(_probe, static_argnames=("model", "n_probes", "probe"))


def clopper_pearson_lower(successes: Any, n: int, level: float = 0.95) -> np.ndarray:
    """One-sided Clopper–Pearson lower confidence limit of a binomial probability.

    ``P(p ≥ limit) ≥ level`` whatever p is (exact, conservative): the ``1 − level`` quantile of
    Beta(k, n − k + 1), and 0 when k = 0.
    """
    from scipy.stats import beta as beta_dist

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    k = np.asarray(successes, np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"successes must lie in [0, n={n}]")
    with np.errstate(invalid="ignore"):
        lo = beta_dist.ppf(1.0 - level, k, n - k + 1.0)
    return np.where(k > 0, lo, 0.0)


def conservative_bound(
    sigma_min: Any,
    jac_fro: Any,
    p_r: Any,
    n_samples: int,
    m: float = 0.5,
    level: float = 0.95,
) -> np.ndarray:
    """Theorem 1's bound with p(‖Δ(x)‖₂ ≤ r) replaced by its one-sided Clopper–Pearson lower
    limit at ``level`` (host numpy, from the stored per-example columns).

    The point-estimate bound of :func:`theorem1_bound` plugs in a Monte-Carlo p from
    ``n_samples`` draws and can overstate the margin bound by chance; this one holds with
    probability ≥ ``level`` over the draws (still up to Theorem 1's O(ε) term). NaN where the
    lower limit is ≤ m (the theorem says nothing there).
    """
    from scipy.special import ndtri

    p = np.asarray(p_r, np.float64)
    p_lo = clopper_pearson_lower(np.rint(p * n_samples), n_samples, level)
    sig = np.broadcast_to(np.asarray(sigma_min, np.float64), p.shape)
    jac = np.broadcast_to(np.asarray(jac_fro, np.float64), p.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = sig * (ndtri(p_lo) - ndtri(m)) / jac
    return np.where(p_lo > m, bound, np.nan)


def theorem1_bound(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    n_samples: int,
    tau: jax.Array | float = 0.0,
    clip_p: bool = True,
    m: jax.Array | float = 0.5,
) -> dict[str, jax.Array]:
    """001 Theorem 1 (Eq. 4) lower bound on the margin R^r_X(x), without the O(eps) term.

        bound = min_i sigma_i(x) * (Phi^{-1}(p(||Delta(x)||_2 <= r)) - Phi^{-1}(m)) / ||J_mu(x)||_F

    At the theorem's level m = 0.5 the second probit is 0 and this is the paper's formula.
    For a general level m (Definition 3.1's generalisation, the level the margin estimate
    uses) the same Neyman-Pearson step gives the difference of probits, defined for p > m;
    comparing a bound at 0.5 with a margin at another m would compare different quantities.

    ``sigma_i(x) = exp(logvar_i / 2) + tau``: with the offset of 001 Fig. 7 the encoder's
    standard deviation IS sigma + tau (that is how the offset enlarges the bound), so tau
    enters both ``min_i sigma_i`` and the Monte-Carlo ``p``.

    The theorem needs r-robustness at the clean input, p > m (Eq. 2 at m = 0.5). When the
    estimated ``p <= m`` the bound is undefined: ``bound`` is NaN and ``bound_defined`` False.
    With ``clip_p`` (default) the probability fed to Phi^{-1} is capped at ``1 - 1/(2n)`` so an
    estimate of exactly 1 (all ``n`` draws inside r) gives a finite bound rather than +inf;
    ``p_r`` always reports the raw estimate.

    Args:
      model, params, x: the VAE and one input.
      r: output radius > 0 (any array shape; the bound broadcasts over it).
      key: PRNG key for the Monte-Carlo p.
      n_samples: number of encoder-noise draws (static, >= 1).
      tau: the encoder-std offset τ of 001 Fig. 7, >= 0.
      clip_p: cap p at 1 - 1/(2n) before the probit (see above).
      m: the robustness level in (0, 1); 0.5 is Theorem 1's.

    Returns:
      Dict of per-example fields: ``sigma_min`` (scalar), ``jac_fro`` (scalar), ``p_r`` and
      ``p_r_se`` (r's shape), ``bound`` (r's shape, NaN where undefined), ``bound_defined``
      (bool, r's shape).
    """
    n_samples = _check_count("n_samples", n_samples)
    _check_positive("r", r)
    _check_nonnegative("tau", tau)
    _check_finite("x", x)
    _check_level("m", m)
    return _bound_jit(model, params, x, r, key, n_samples, tau, clip_p, m)


def _bound(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    n_samples: int,
    tau: jax.Array | float,
    clip_p: bool,
    m: jax.Array | float = 0.5,
) -> dict[str, jax.Array]:
    sigma_min = jnp.min(model.posterior(params, x).std + tau)
    jac_fro = _fro(model, params, x)
    norms = deviation_norms(model, params, x, key, n_samples, tau)
    p, se = _p_and_se(norms, r)
    p_used = jnp.minimum(p, 1.0 - 0.5 / n_samples) if clip_p else p
    defined = p > m
    ndtri = jax.scipy.special.ndtri
    probit = ndtri(jnp.where(defined, p_used, 0.75)) - ndtri(jnp.asarray(m, p.dtype))
    bound = jnp.where(defined, sigma_min * probit / jac_fro, jnp.nan)
    return {
        "sigma_min": sigma_min,
        "jac_fro": jac_fro,
        "p_r": p,
        "p_r_se": se,
        "bound": bound,
        "bound_defined": defined,
    }


_bound_jit = jax.jit(_bound, static_argnames=("model", "n_samples", "clip_p"))


__all__ = [
    "PROBES",
    "clopper_pearson_lower",
    "conservative_bound",
    "encoder_jacobian",
    "encoder_jacobian_fro",
    "encoder_jacobian_fro_probe",
    "theorem1_bound",
]
