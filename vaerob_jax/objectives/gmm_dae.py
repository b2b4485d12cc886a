"""The training objectives of 003's deterministic autoencoders as BatchLosses (Eqs. 4-11 of 003).

Three models of 003's ablation (Table 2), all on the same autoencoder (anything with
``embed(params, x)`` and ``decode(params, z)``: :func:`vaerob_jax.models.make_dae`):

* ``gmm_dae`` ([27], no adversary): λ_REC L_REC + λ_KS L_KS (Eq. 4) + λ_CV L_CV (Eq. 5);
* ``augmented``: FGSM codes z^adv regularised independently, Eqs. 7-8;
* ``coupled`` (003's method, "Ours"): Eqs. 9-11, the two-point KS coupling and the coupled
  covariance with α.

L_REC is the mean over pixels and batch of (f(z_n + s·η_n) − x_n)², η_n ~ N(0, I) (003 §3.2:
"ε_n ~ N(0, I_D)", so s = 1 is the paper; the public code uses s = 0.1,
:data:`REFERENCE_LATENT_NOISE`). λ_REC = 500 on that mean (the public code's MNIST value; the
paper gives none, and weights "from prior statistics" cannot apply to L_REC). λ_KS and λ_CV are
1 / the expectation of their term on prior batches, in closed form for the batch size seen at
trace time (:mod:`vaerob_jax.objectives.gmm_weights`); λ_CV follows α as
1/(E₀ + cα²), so an α grid gets the right weight without recompiling. The adversarial
reconstruction f(z^adv) is computed by the public code but unused; we leave it out.

FGSM inside the step (Eq. 6 with fast FGSM of Wong et al., :func:`fgsm_latent`): δ₀ ~
U[−ε, ε], one signed step of 1.25ε on ‖g(x + δ₀) − sg(g(x))‖², clipped to the ε-ball and the
pixel box, x^adv = sg(x + δ), with the current params.

Hyperparameters (scalar arrays in ``hp``, so they can be grid axes): ``lambda_rec`` (500),
``latent_noise`` s (1.0); adversarial variants add ``eps`` (0.3, MNIST in 003); ``coupled`` adds
``alpha`` (0.5: our choice, the paper never states the α it used; its config's ``alpha = 0.375``
is the FGSM step). Options from the public code: ``ks_pool='union'`` (KS on the pooled 2N
codes), ``ks_weighting='separate'`` (KS and two-point KS with their own weights instead of
Eq. 9's 2/3-1/3 mix), ``latent_noise=0.1``, and ``component_cov='reference_std'`` on the prior.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.gmm_prior import GMMPrior, flat_normal
from vaerob_jax.objectives import gmm_losses as L
from vaerob_jax.objectives import gmm_weights as W
from vaerob_jax.objectives.base import BatchLoss
from vaerob_jax.objectives.inner import linf_ascent

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EPS",
    "DEFAULT_LAMBDA_REC",
    "FGSM_STEP_RATIO",
    "KS_WEIGHTINGS",
    "REFERENCE_LATENT_NOISE",
    "VARIANTS",
    "augmented_dae_loss",
    "check_gmm_hyperparameters",
    "coupled_dae_loss",
    "fgsm_latent",
    "gmm_dae_loss",
    "gmm_dae_objective",
    "gmm_regulariser",
    "noisy_reconstruction_loss",
]

VARIANTS = ("gmm_dae", "augmented", "coupled")
KS_WEIGHTINGS = ("paper", "separate")
DEFAULT_LAMBDA_REC = 500.0
DEFAULT_EPS = 0.3
DEFAULT_ALPHA = 0.5
REFERENCE_LATENT_NOISE = 0.1
FGSM_STEP_RATIO = 1.25


def fgsm_latent(
    model: Any,
    params: Any,
    x: jax.Array,
    eps: jax.Array | float,
    key: jax.Array,
    *,
    z: jax.Array | None = None,
    step_ratio: float = FGSM_STEP_RATIO,
) -> jax.Array:
    """Eq. 6 of 003 by one fast-FGSM step, per example, for a batch x (B, H, W, C).

    Example n starts from δ₀ = ε·U[−1, 1] drawn with ``jax.random.split(key, B)[n]`` (the
    uniform draw of :func:`vaerob_jax.objectives.linf_ascent`), takes one step of
    ``step_ratio``·ε along sign ∇_δ ‖g(x_n + δ₀) − sg(z_n)‖² (the gradient at the unclipped
    start, as Eq. 6 is written), and is clipped to ‖δ‖∞ ≤ ε and x + δ ∈ [0, 1].

    Args:
      model: has ``embed(params, x)``.
      params: the current params (the attack uses them; no gradient flows back).
      x: clean images (B, H, W, C).
      eps: the L∞ radius ε (array, so an ε grid never recompiles).
      key: this step's key for the random starts.
      z: the clean codes g(x) if already computed (saves a forward pass); else computed.
      step_ratio: the step as a multiple of ε (1.25 in Wong et al. and the public code).

    Returns:
      x^adv (B, H, W, C) with ``stop_gradient``.
    """
    x = jnp.asarray(x)
    z_ref = jax.lax.stop_gradient(model.embed(params, x) if z is None else z)
    eps = jnp.asarray(eps, x.dtype)
    keys = jax.random.split(key, x.shape[0])

    def one(xi, zi, ki):
        def value(xa):
            return jnp.sum(jnp.square(model.embed(params, xa) - zi))

        return linf_ascent(
            value, xi, eps, ki, steps=1, step_size=step_ratio * eps, clip_start=False
        )

    return jax.vmap(one)(x, z_ref, keys)


def noisy_reconstruction_loss(
    model: Any,
    params: Any,
    x: jax.Array,
    z: jax.Array,
    key: jax.Array,
    noise_scale: jax.Array | float,
) -> jax.Array:
    """L_REC of Eq. 11: mean over pixels and batch of (f(z_n + s·η_n) − x_n)², η ~ N(0, I)."""
    eta = flat_normal(key, z.shape, z.dtype)
    x_noisy = model.decode(params, z + jnp.asarray(noise_scale, z.dtype) * eta)
    return jnp.mean(jnp.square(x_noisy - x))


@functools.lru_cache(maxsize=64)
def _closed_form(prior: GMMPrior, n: int) -> W.LossExpectations:
    return W.closed_form_expectations(prior, n)


def gmm_regulariser(
    prior: GMMPrior,
    z: jax.Array,
    z_adv: jax.Array | None,
    alpha: jax.Array | float,
    expectations: W.LossExpectations,
    *,
    variant: str = "coupled",
    ks_pool: str = "mean",
    ks_weighting: str = "paper",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted GMM terms of Eq. 11 (all but λ_REC L_REC) for one variant.

    Args:
      prior: the GMM prior.
      z, z_adv: clean and adversarial codes (N, D); ``z_adv`` is unused (None) for 'gmm_dae'.
      alpha: the coupling α of Eq. 10 ('coupled' only; 'augmented' is α = 0).
      expectations: prior expectations for this batch size (weights = 1 / expectation).
      variant: 'gmm_dae' | 'augmented' | 'coupled'.
      ks_pool: 'mean' (Eq. 7) or 'union' (public code).
      ks_weighting: 'paper' (Eq. 9's mix with one weight) or 'separate' (public code).

    Returns:
      (weighted sum, aux): 'ks' is the unweighted KS term that 'lambda_ks' multiplies (Eq. 4,
      Eq. 7, or Eq. 9's mix with ``ks_weighting='paper'``), 'cv' the covariance term that
      'lambda_cv' multiplies, 'ks2' the two-point term ('coupled').

    Raises:
      ValueError: an unknown variant or option, or missing ``z_adv`` for an adversarial variant.
    """
    _check_options(variant, ks_pool, ks_weighting)
    lam_ks: Any
    lam_cv: Any
    if variant == "gmm_dae":
        ks, cv = L.ks_loss(prior, z), L.covariance_loss(prior, z)
        lam_ks, lam_cv = 1.0 / expectations.ks, 1.0 / expectations.cv
        aux = {"ks": ks, "cv": cv}
        value = lam_ks * ks + lam_cv * cv
    elif z_adv is None:
        raise ValueError(f"variant {variant!r} needs the adversarial codes z_adv")
    else:
        a = jnp.zeros((), z.dtype) if variant == "augmented" else jnp.asarray(alpha, z.dtype)
        cv = L.coupled_covariance_loss(prior, z, z_adv, a)
        lam_cv = 1.0 / W.coupled_covariance_expectation(expectations, a)
        aug = L.augmented_ks_loss(prior, z, z_adv, ks_pool)
        aux = {"cv": cv}
        if variant == "augmented":
            lam_ks = 1.0 / W.ks_expectation(expectations, ks_pool)
            aux["ks"] = aug
            value = lam_ks * aug + lam_cv * cv
        else:
            ks2 = L.two_point_ks_loss(prior, z, z_adv)
            aux["ks2"] = ks2
            if ks_weighting == "paper":
                lam_ks = 1.0 / W.ks_expectation(expectations, ks_pool, two_point=True)
                ks = (2.0 / 3.0) * aug + (1.0 / 3.0) * ks2
                value = lam_ks * ks + lam_cv * cv
            else:
                lam_ks = 1.0 / W.ks_expectation(expectations, ks_pool)
                ks = aug
                value = lam_ks * aug + ks2 / expectations.ks2 + lam_cv * cv
            aux["ks"] = ks
    aux["lambda_ks"] = jnp.asarray(lam_ks, z.dtype)
    aux["lambda_cv"] = jnp.asarray(lam_cv, z.dtype)
    return value, aux


def _check_options(variant: str, ks_pool: str, ks_weighting: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    if ks_pool not in L.KS_POOLS:
        raise ValueError(f"unknown ks_pool {ks_pool!r}; choose one of {L.KS_POOLS}")
    if ks_weighting not in KS_WEIGHTINGS:
        raise ValueError(f"unknown ks_weighting {ks_weighting!r}; choose one of {KS_WEIGHTINGS}")
    if ks_weighting == "separate" and variant != "coupled":
        raise ValueError("ks_weighting='separate' weights the two-point term: variant 'coupled'")
    if variant == "gmm_dae" and ks_pool != "mean":
        raise ValueError("ks_pool='union' pools clean and adversarial codes: not for 'gmm_dae'")


def gmm_dae_objective(
    model: Any,
    prior: GMMPrior,
    variant: str = "coupled",
    *,
    ks_pool: str = "mean",
    ks_weighting: str = "paper",
    latent_noise: float = 1.0,
    lambda_rec: float = DEFAULT_LAMBDA_REC,
    eps: float = DEFAULT_EPS,
    alpha: float = DEFAULT_ALPHA,
    fgsm_step_ratio: float = FGSM_STEP_RATIO,
    expectations: W.LossExpectations | None = None,
) -> BatchLoss:
    """A BatchLoss for one of 003's deterministic-autoencoder models (module docstring).

    Args:
      model: the autoencoder (``embed``, ``decode``; ``latent_dim`` must equal the prior's).
      prior: the GMM prior.
      variant: 'gmm_dae' (Eqs. 4-5), 'augmented' (Eqs. 7-8) or 'coupled' (Eqs. 9-11).
      ks_pool, ks_weighting: paper forms by default, public-code options otherwise.
      latent_noise, lambda_rec, eps, alpha: defaults of the hyperparameters of the same names
        (``hp`` entries override them; ``eps`` only for adversarial variants, ``alpha`` only
        for 'coupled').
      fgsm_step_ratio: the FGSM step as a multiple of ε (static).
      expectations: prior expectations to weight with (e.g. a Monte-Carlo estimate for a
        prior whose closed forms do not apply); default: closed forms for the batch size.

    Returns:
      A :class:`BatchLoss` reading ``batch['x']``; aux (see :func:`gmm_regulariser`): 'recon',
      'ks', 'cv' (+ 'ks2'), 'lambda_ks', 'lambda_cv' and, for adversarial variants,
      'latent_shift' (mean ‖z^adv − z‖₂).

    Raises:
      ValueError: an unknown variant or option, a latent-size mismatch, or a bad default.
    """
    _check_options(variant, ks_pool, ks_weighting)
    dim = getattr(model, "latent_dim", prior.latent_dim)
    if dim != prior.latent_dim:
        raise ValueError(f"model latent_dim {dim} != prior latent_dim {prior.latent_dim}")
    if not fgsm_step_ratio > 0:
        raise ValueError(f"fgsm_step_ratio must be > 0, got {fgsm_step_ratio}")
    defaults: dict[str, float] = {"lambda_rec": lambda_rec, "latent_noise": latent_noise}
    if variant != "gmm_dae":
        defaults["eps"] = eps
    if variant == "coupled":
        defaults["alpha"] = alpha
    check_gmm_hyperparameters(defaults)
    adversarial = variant != "gmm_dae"

    def fn(params, batch, key, hp):
        x = batch["x"]
        n = x.shape[0]
        if expectations is None:
            e = _closed_form(prior, n)
        elif expectations.batch_size != n:
            raise ValueError(
                f"expectations are for batch size {expectations.batch_size}, the batch has {n}"
            )
        else:
            e = expectations
        k_noise, k_adv = jax.random.split(key)
        z = model.embed(params, x)
        recon = noisy_reconstruction_loss(model, params, x, z, k_noise, hp["latent_noise"])
        z_adv = None
        if adversarial:
            x_adv = fgsm_latent(model, params, x, hp["eps"], k_adv, z=z, step_ratio=fgsm_step_ratio)
            z_adv = model.embed(params, x_adv)
        reg, aux = gmm_regulariser(
            prior,
            z,
            z_adv,
            hp.get("alpha", 0.0),
            e,
            variant=variant,
            ks_pool=ks_pool,
            ks_weighting=ks_weighting,
        )
        total = jnp.asarray(hp["lambda_rec"], recon.dtype) * recon + reg
        aux["recon"] = recon
        if z_adv is not None:
            aux["latent_shift"] = jnp.mean(jnp.linalg.norm(z_adv - z, axis=-1))
        return total, aux

    options: tuple[tuple[str, Any], ...] = (
        ("variant", variant),
        ("ks_pool", ks_pool),
        ("ks_weighting", ks_weighting),
        ("two_point", "prior_cdf"),
        ("fgsm_step_ratio", float(fgsm_step_ratio)),
        ("weights", "closed_form" if expectations is None else list(expectations)),
        ("prior", prior.spec()),
        ("model", model.spec() if hasattr(model, "spec") else type(model).__name__),
    )
    return BatchLoss(
        fn,
        f"{variant}_loss",
        defaults=tuple((k, float(v)) for k, v in defaults.items()),
        options=options,
    )


def gmm_dae_loss(model: Any, prior: GMMPrior, **kw: Any) -> BatchLoss:
    """GMM-DAE of [27] (003 Table 2): λ_REC L_REC + λ_KS L_KS (Eq. 4) + λ_CV L_CV (Eq. 5)."""
    return gmm_dae_objective(model, prior, "gmm_dae", **kw)


def augmented_dae_loss(model: Any, prior: GMMPrior, **kw: Any) -> BatchLoss:
    """'Augmented' of 003 Table 2: FGSM codes regularised independently (Eqs. 7-8)."""
    return gmm_dae_objective(model, prior, "augmented", **kw)


def coupled_dae_loss(model: Any, prior: GMMPrior, **kw: Any) -> BatchLoss:
    """003's method ('Ours'): Eq. 11 with the two-point KS (Eq. 9) and coupled covariance
    (Eq. 10) at α = ``hp['alpha']`` (default 0.5, our choice; the paper does not state it)."""
    return gmm_dae_objective(model, prior, "coupled", **kw)


_RANGES = {
    "alpha": (-1.0, 1.0),
    "eps": (0.0, math.inf),
    "latent_noise": (0.0, math.inf),
    "lambda_rec": (0.0, math.inf),
}


def check_gmm_hyperparameters(hp: Mapping[str, Any]) -> None:
    """Raises ValueError naming any out-of-range value of these losses' hyperparameters.

    |α| ≤ 1 (Eq. 10: α is a correlation), ε ≥ 0, s ≥ 0, λ_REC ≥ 0, all finite. Values may be
    scalars or grid vectors; names this module does not use are ignored. Call it on a grid
    before training: inside the compiled loss the values are traced and cannot be checked.
    """
    for name, (lo, hi) in _RANGES.items():
        if name not in hp:
            continue
        vals = np.asarray(hp[name], dtype=np.float64).ravel()
        bad = vals[~(np.isfinite(vals) & (vals >= lo) & (vals <= hi))]
        if bad.size:
            raise ValueError(
                f"hyperparameter {name!r} must lie in [{lo}, {hi}], got {bad.tolist()}"
            )
