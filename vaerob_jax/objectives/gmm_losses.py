"""Batch-level GMM regularisers of 003 on codes z (N, D): KS, two-point KS and covariance losses.

Every loss here is a function of a whole batch of codes (sorting and covariances couple the
batch), pure and differentiable in the codes (``jnp.sort`` differentiates through the sorted
values). Notation of 003 §3: z_n = g(x_n), z_n^adv = g(x_n^adv), n = 1..N; the empirical CDF at
the i-th order statistic is the constant i/N (Eq. 2, whose "1/n Σ_{n=1}^N" is a typo for 1/N).

* Eq. 4, :func:`ks_loss`: (1/(D·N)) Σ_d Σ_i (F_GMM,d(z_(i),d) − i/N)².
* Eq. 5, :func:`covariance_loss`: (1/D²) Σ_{l,d} (Σ̂_ld − Σ_GMM,ld)², Σ̂ the empirical
  covariance divided by N (the paper gives no divisor; N is the public code's).
* Eq. 7, :func:`augmented_ks_loss`: ½ L_KS(z) + ½ L_KS(z^adv); ``ks_pool='union'`` (public code)
  is L_KS on the pooled 2N codes with ECDF i/(2N) instead (:func:`ks_union_loss`).
* Eq. 8 = Eq. 10 at α = 0, and Eq. 10, :func:`coupled_covariance_loss`: the mean squared entry
  of Ĉ − T_α over the 2D×2D covariance of [z, z^adv], T_α = [[Σ, αΣ], [αΣ, Σ]].
* Eq. 9, :func:`adversarial_ks_loss`: (2/3) L_KS^aug + (1/3) L_KS2, with the two-point term
  :func:`two_point_ks_loss` in its trainable reading (see there).

The loss weights of Eq. 11 (1 / expectation on prior batches) are in
:mod:`vaerob_jax.objectives.gmm_weights`; the BatchLoss factories in
:mod:`vaerob_jax.objectives.gmm_dae`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaerob_jax.models.gmm_prior import GMMPrior

__all__ = [
    "KS_POOLS",
    "adversarial_ks_loss",
    "augmented_ks_loss",
    "coupled_covariance_loss",
    "coupled_covariance_target",
    "covariance_loss",
    "empirical_covariance",
    "ks_loss",
    "ks_union_loss",
    "two_point_ks_loss",
]

KS_POOLS = ("mean", "union")


def _codes(z: jax.Array, prior: GMMPrior, name: str = "z") -> jax.Array:
    z = jnp.asarray(z)
    if z.ndim != 2 or z.shape[1] != prior.latent_dim:
        raise ValueError(
            f"{name} must be a batch of codes (N, {prior.latent_dim}), got shape {z.shape}"
        )
    if z.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 codes (the losses are batch statistics)")
    return z


def _pair(z: jax.Array, z_adv: jax.Array, prior: GMMPrior) -> tuple[jax.Array, jax.Array]:
    z, z_adv = _codes(z, prior), _codes(z_adv, prior, "z_adv")
    if z.shape != z_adv.shape:
        raise ValueError(f"z and z_adv must have the same shape, got {z.shape} and {z_adv.shape}")
    return z, z_adv


def _sorted_cdf(prior: GMMPrior, z: jax.Array) -> jax.Array:
    """F_GMM,d at the order statistics of each latent dimension, (N, D)."""
    return prior.marginal_cdf(jnp.sort(z, axis=0))


def ks_loss(prior: GMMPrior, z: jax.Array) -> jax.Array:
    """Eq. 4 of 003: mean over dims and order statistics of (F_GMM,d(z_(i),d) − i/N)².

    On N codes drawn from the prior itself its expectation is (N+1)/(6N²) for any continuous
    prior (U_(i) ~ Beta(i, N+1−i)); see :mod:`vaerob_jax.objectives.gmm_weights`.
    """
    z = _codes(z, prior)
    n = z.shape[0]
    ecdf = jnp.arange(1, n + 1, dtype=z.dtype) / n
    return jnp.mean(jnp.square(_sorted_cdf(prior, z) - ecdf[:, None]))


def ks_union_loss(prior: GMMPrior, z: jax.Array, z_adv: jax.Array) -> jax.Array:
    """The public code's form of Eq. 7 (option ``ks_pool='union'``): Eq. 4 on the 2N codes."""
    z, z_adv = _pair(z, z_adv, prior)
    return ks_loss(prior, jnp.concatenate([z, z_adv], axis=0))


def augmented_ks_loss(
    prior: GMMPrior, z: jax.Array, z_adv: jax.Array, ks_pool: str = "mean"
) -> jax.Array:
    """Eq. 7 of 003: ½ L_KS(z) + ½ L_KS(z^adv) (``ks_pool='mean'``), or the pooled code form."""
    z, z_adv = _pair(z, z_adv, prior)
    if ks_pool == "mean":
        return 0.5 * ks_loss(prior, z) + 0.5 * ks_loss(prior, z_adv)
    if ks_pool == "union":
        return ks_union_loss(prior, z, z_adv)
    raise ValueError(f"unknown ks_pool {ks_pool!r}; choose one of {KS_POOLS}")


def two_point_ks_loss(prior: GMMPrior, z: jax.Array, z_adv: jax.Array) -> jax.Array:
    """The two-point KS term of Eq. 9 of 003, trainable reading (the public code's).

    L_KS2 = (1/(D·N)) Σ_d Σ_i (F_GMM,d(z_(i),d) − F_GMM,d(z^adv_(i),d))²: quantile matching of the
    two batches after the prior's probability-integral transform.

    Why not the literal reading: Eq. 9 writes MSE(F̄_d([z_n]_d), F̄_d^adv([z_n^adv]_d)), each
    empirical CDF evaluated at its own sorted points. Both are then the constants i/N, so the
    term is identically zero; evaluating both step functions on the pooled points instead gives
    a piecewise-constant function of the codes whose gradient is zero almost everywhere. The
    only reading that can train the encoder replaces the step functions by the prior's smooth
    CDF at the order statistics, as here. It does not pair z_n with z_n^adv (sorting decouples
    them); pairing enters only through α in :func:`coupled_covariance_loss`.
    ``two_point_ks_loss(prior, z, z) == 0`` exactly. On independent prior batches its
    expectation is 1/(3(N+1)).
    """
    z, z_adv = _pair(z, z_adv, prior)
    return jnp.mean(jnp.square(_sorted_cdf(prior, z) - _sorted_cdf(prior, z_adv)))


def adversarial_ks_loss(
    prior: GMMPrior, z: jax.Array, z_adv: jax.Array, ks_pool: str = "mean"
) -> jax.Array:
    """Eq. 9 of 003: (2/3) L_KS^aug(z, z^adv) + (1/3) L_KS2(z, z^adv)."""
    aug = augmented_ks_loss(prior, z, z_adv, ks_pool)
    return (2.0 / 3.0) * aug + (1.0 / 3.0) * two_point_ks_loss(prior, z, z_adv)


def empirical_covariance(z: jax.Array) -> jax.Array:
    """(D, D) covariance of the rows of ``z`` (N, D), divided by N (the public code's divisor).

    Full float32 precision on every backend: a TF32 matmul (GPU default for float32) keeps 10
    mantissa bits, i.e. errors ~5e-3 on entries of size 10 here, for no saving at (N, D) sizes.
    """
    zc = z - jnp.mean(z, axis=0)
    return jnp.matmul(zc.T, zc, precision=jax.lax.Precision.HIGHEST) / z.shape[0]


def covariance_loss(prior: GMMPrior, z: jax.Array) -> jax.Array:
    """Eq. 5 of 003: (1/D²) Σ_{l,d} (Σ̂_ld − Σ_GMM,ld)²."""
    z = _codes(z, prior)
    target = jnp.asarray(prior.covariance(), z.dtype)
    return jnp.mean(jnp.square(empirical_covariance(z) - target))


def coupled_covariance_target(prior: GMMPrior, alpha: jax.Array | float, dtype=None) -> jax.Array:
    """T_α = [[Σ_GMM, αΣ_GMM], [αΣ_GMM, Σ_GMM]] of Eq. 10 (α may be a traced array)."""
    sigma = jnp.asarray(prior.covariance(), dtype)
    a = jnp.asarray(alpha, sigma.dtype)
    return jnp.block([[sigma, a * sigma], [a * sigma, sigma]])


def coupled_covariance_loss(
    prior: GMMPrior, z: jax.Array, z_adv: jax.Array, alpha: jax.Array | float
) -> jax.Array:
    """Eq. 10 of 003 (Eq. 8 at α = 0): (1/(4D²)) Σ over the 2D×2D entries of (Ĉ − T_α)².

    Ĉ is the empirical covariance (divided by N) of the concatenation [z, z^adv] ∈ R^{N×2D}: its
    diagonal blocks are Σ̂ and Σ̂^adv, its off-diagonal blocks the cross-covariance. |α| ≤ 1;
    α = 1 is the border case z = z^adv. ``alpha`` is an array so an α grid never recompiles.
    """
    z, z_adv = _pair(z, z_adv, prior)
    c = empirical_covariance(jnp.concatenate([z, z_adv], axis=1))
    return jnp.mean(jnp.square(c - coupled_covariance_target(prior, alpha, z.dtype)))
