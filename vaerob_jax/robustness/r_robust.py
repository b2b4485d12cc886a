"""r-robustness of a VAE's reconstructions under encoder noise (001 §3.1-§3.2, Eq. 1-3).

Paper 001 (Camuto et al., AISTATS 2021) calls a stochastic model r-robust at ``x`` when its
output lands within an L2 ball of radius ``r`` around the deterministic "maximum-likelihood"
reconstruction ``g(mu(x))`` more often than not (Definition 3.1, generalised to a level ``m``):

    Delta(x)        = g(mu(x) + eta * sigma(x))       - g(mu(x))          (Eq. 1)
    Delta(x, delta) = g(mu(x + delta) + eta * sigma(x)) - g(mu(x))        (§3.2.2)
    r-robust  <=>   p(||Delta||_2 <= r) > m,   m = 0.5 in the paper       (Eq. 2, Eq. 3)

with ``eta ~ N(0, I)`` and ``g`` the decoder mean. ``sigma`` includes the constant offset
``tau`` of 001 Fig. 7, exactly as ``DiagGaussian.sample`` applies it.

Every function here is written for ONE example, is pure in ``(params, x, key)`` and can be
``jax.vmap``-ed over examples and ``jax.jit``-ed; ``r``, ``m`` and ``tau`` are array
arguments, so a grid of them never recompiles. Sample counts are static (they set shapes).
The same ``key`` gives the same ``eta`` draws whatever ``delta`` is (common random numbers),
so p(r) curves over perturbation radii are smooth and searches over radii are repeatable.

Input checks run only on concrete (non-traced) arguments; inside ``jit``/``vmap`` they are
skipped, so validate at the outermost call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.distributions import DiagGaussian

Params = Any
Model = Any  # an autoencoder with posterior / decode / log_likelihood (models protocol)

APPLY_TO = ("mean", "sigma", "both")


# -- input validation (shared with jacobian.py and margin.py) ---------------------------------
def _concrete(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array when it is concrete, ``None`` when it is a JAX tracer."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_positive(name: str, value: Any) -> None:
    arr = _concrete(value)
    if arr is not None and (not np.all(np.isfinite(arr)) or np.any(arr <= 0)):
        raise ValueError(f"{name} must be finite and > 0, got {arr!r}")


def _check_nonnegative(name: str, value: Any) -> None:
    arr = _concrete(value)
    if arr is not None and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
        raise ValueError(f"{name} must be finite and >= 0, got {arr!r}")


def _check_level(name: str, value: Any) -> None:
    arr = _concrete(value)
    if arr is not None and (not np.all(np.isfinite(arr)) or np.any((arr <= 0) | (arr >= 1))):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {arr!r}")


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (it sets array shapes), got {value!r}")
    return int(value)


def _check_finite(name: str, value: Any) -> None:
    arr = _concrete(value)
    if arr is not None and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")


def _check_apply_to(apply_to: str) -> None:
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")


# -- core computations ------------------------------------------------------------------------
def _sq_norm(a: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(a))


def deviation_norms(
    model: Model,
    params: Params,
    x: jax.Array,
    key: jax.Array,
    n_samples: int,
    tau: jax.Array | float = 0.0,
    delta: jax.Array | None = None,
    apply_to: str = "mean",
) -> jax.Array:
    """Monte-Carlo draws of ||Delta(x)||_2 (Eq. 1 of 001) or ||Delta(x, delta)||_2 (§3.2.2).

    The reference point is always the unperturbed maximum-likelihood reconstruction
    ``g(mu(x))``. With ``delta`` given, ``apply_to`` says which encoder output sees the
    perturbed input: ``'mean'`` (001 §3.2.2 and Eq. 3, the default), ``'sigma'`` or ``'both'``
    (the maximum-damage attack of Eq. 5 perturbs both; 001 Fig. 4 compares the three).

    Args:
      model: a VAE following the models contract.
      params: its parameters.
      x: one input (any shape the model's ``encode`` accepts for a single example).
      key: PRNG key; sample ``i`` uses ``jax.random.split(key, n_samples)[i]`` whatever
        ``delta`` is (common random numbers across perturbations).
      n_samples: number of encoder-noise draws eta (static).
      tau: τ added to the encoder standard deviation (001 Fig. 7).
      delta: optional input perturbation, same shape as ``x``.
      apply_to: 'mean', 'sigma' or 'both' (only used with ``delta``).

    Returns:
      ``(n_samples,)`` array of output deviation norms.
    """
    q = model.posterior(params, x)
    center = model.decode(params, q.mean)
    mu_s, logvar_s = q.mean, q.logvar
    if delta is not None:
        q_p = model.posterior(params, x + delta)
        if apply_to in ("mean", "both"):
            mu_s = q_p.mean
        if apply_to in ("sigma", "both"):
            logvar_s = q_p.logvar
    q_s = DiagGaussian(mu_s, logvar_s)
    keys = jax.random.split(key, n_samples)
    zs = jax.vmap(lambda k: q_s.sample(k, tau))(keys)
    outs = jax.vmap(lambda z: model.decode(params, z))(zs)
    return jax.vmap(lambda o: jnp.sqrt(_sq_norm(o - center)))(outs)


# One compiled program per (model, n_samples, apply_to); under an outer jit/vmap it is inlined.
_norms_jit = jax.jit(deviation_norms, static_argnames=("model", "n_samples", "apply_to"))


def _p_and_se(norms: jax.Array, r: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """Fraction of norms <= r (broadcast over the shape of r) and its binomial standard error."""
    r = jnp.asarray(r, norms.dtype)
    hits = norms.reshape((-1,) + (1,) * r.ndim) <= r
    p = jnp.mean(hits.astype(norms.dtype), axis=0)
    n = norms.shape[0]
    return p, jnp.sqrt(p * (1.0 - p) / n)


def p_r_robust(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    n_samples: int,
    tau: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo estimate of p(||Delta(x)||_2 <= r) under encoder noise (Eq. 1-2 of 001).

    Args:
      model, params: the VAE.
      x: one input.
      r: output radius, > 0; any array shape (one compiled program serves an r grid:
        the same draws are compared against every r).
      key: PRNG key for the eta draws.
      n_samples: number of draws (static, >= 1).
      tau: τ added to the encoder standard deviation (001 Fig. 7).

    Returns:
      ``(p_hat, std_err)``, both of ``r``'s shape; ``std_err = sqrt(p(1-p)/n)``.

    Example:
      >>> p, se = p_r_robust(model, params, x, jnp.array([1., 2., 4.]), key, 256)
    """
    n_samples = _check_count("n_samples", n_samples)
    _check_positive("r", r)
    _check_nonnegative("tau", tau)
    _check_finite("x", x)
    norms = _norms_jit(model, params, x, key, n_samples, tau)
    return _p_and_se(norms, r)


def r_robust(
    model: Model,
    params: Params,
    x: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    n_samples: int,
    m: jax.Array | float = 0.5,
    tau: jax.Array | float = 0.0,
) -> jax.Array:
    """Boolean r-robustness to encoder noise, p_hat(||Delta(x)||_2 <= r) > m (Eq. 2 of 001).

    ``m = 0.5`` is Definition 3.1; other levels are its generalisation (1 - m = allowed risk).
    """
    _check_level("m", m)
    p, _ = p_r_robust(model, params, x, r, key, n_samples, tau)
    return p > m


def min_r_for_level(
    model: Model,
    params: Params,
    x: jax.Array,
    key: jax.Array,
    n_samples: int,
    m: jax.Array | float = 0.5,
    tau: jax.Array | float = 0.0,
) -> jax.Array:
    """Smallest r with p_hat(||Delta(x)||_2 <= r) >= m: the empirical m-quantile of the norms.

    001 §3.1 notes that the smallest r for which r-robustness holds is itself a robustness
    metric (smaller is more robust). With ``n`` draws, p_hat(r) = #{norms <= r} / n reaches
    ``m`` first at the ``ceil(m n)``-th smallest norm, which is returned. (Definition 3.1 asks
    for a strict ``p > m``; its infimum over r is the same population quantile.)

    Args:
      model, params, x, key, n_samples, tau: as in :func:`p_r_robust`.
      m: level in (0, 1), any array shape (0.5 = Definition 3.1).

    Returns:
      Radii of ``m``'s shape.
    """
    n_samples = _check_count("n_samples", n_samples)
    _check_level("m", m)
    _check_nonnegative("tau", tau)
    _check_finite("x", x)
    norms = jnp.sort(_norms_jit(model, params, x, key, n_samples, tau))
    m = jnp.asarray(m, norms.dtype)
    # small tolerance so e.g. m*n = 20.000002 in float32 still selects the 20th norm
    k = jnp.ceil(m * n_samples - 1e-4).astype(jnp.int32) - 1
    return norms[jnp.clip(k, 0, n_samples - 1)]


def p_r_under_perturbation(
    model: Model,
    params: Params,
    x: jax.Array,
    delta: jax.Array,
    r: jax.Array | float,
    key: jax.Array,
    n_samples: int,
    apply_to: str = "mean",
    tau: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo p(||Delta(x, delta)||_2 <= r) for a perturbed input (§3.2.2, Eq. 3 of 001).

    Delta(x, delta) = g(mu(x + delta) + eta * sigma(.)) - g(mu(x)); ``sigma(.)`` is sigma(x)
    for ``apply_to='mean'`` (the paper's analysis, Eq. 3 and Theorem 1), sigma(x + delta) for
    ``'both'`` (what the maximum-damage attack of Eq. 5 perturbs). ``'sigma'`` perturbs only
    the variance input (001 Fig. 4's third case).

    Args:
      model, params, x: the VAE and one input.
      delta: perturbation of ``x``'s shape.
      r: output radius > 0 (any array shape).
      key: PRNG key; the same key gives the same eta draws for every ``delta``.
      n_samples: number of draws (static, >= 1).
      apply_to: 'mean' (default), 'sigma' or 'both'.
      tau: τ of 001 Fig. 7.

    Returns:
      ``(p_hat, std_err)`` of ``r``'s shape.
    """
    n_samples = _check_count("n_samples", n_samples)
    _check_apply_to(apply_to)
    _check_positive("r", r)
    _check_nonnegative("tau", tau)
    _check_finite("x", x)
    _check_finite("delta", delta)
    norms = _norms_jit(model, params, x, key, n_samples, tau, delta, apply_to)
    return _p_and_se(norms, r)


def relative_loglik_degradation(
    model: Model, params: Params, x: jax.Array, z_star: jax.Array, z: jax.Array
) -> jax.Array:
    """|log p(x|z*) - log p(x|z)| / |log p(x|z)| (001 §4.1, Fig. 6 d-f).

    ``z`` is the embedding of the clean ``x`` and ``z*`` that of the attacked input (001 uses
    the mean encodings). 0 means the attack did not change how well the original point is
    explained; larger is more damage.
    """
    _check_finite("x", x)
    ll_star = model.log_likelihood(params, x, z_star)
    ll = model.log_likelihood(params, x, z)
    return jnp.abs(ll_star - ll) / jnp.abs(ll)


def chi2_cdf(q: jax.Array, dof: int | jax.Array) -> jax.Array:
    """CDF of the chi-square distribution with ``dof`` degrees of freedom (scipy-free).

    P(chi2_k <= q) = P(k/2, q/2), the regularised lower incomplete gamma function. For an
    isotropic encoder (sigma_i = s) and a decoder with orthonormal columns, ||Delta(x)||^2 / s^2
    is chi-square with latent-dim degrees of freedom, so p(||Delta(x)||_2 <= r) =
    ``chi2_cdf(r**2 / s**2, d)``: the closed form the tests check Eq. 1-2 against.
    """
    q = jnp.asarray(q)
    return jax.scipy.special.gammainc(jnp.asarray(dof, q.dtype) / 2.0, jnp.maximum(q, 0.0) / 2.0)


__all__ = [
    "APPLY_TO",
    "chi2_cdf",
    "deviation_norms",
    "min_r_for_level",
    "p_r_robust",
    "p_r_under_perturbation",
    "r_robust",
    "relative_loglik_degradation",
]
