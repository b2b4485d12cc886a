"""Adversarial deviation Δc and companion per-example metrics (Eq. 5 of 000_2a5470c3dc126c07).

Eq. 5 of 000 measures robustness of one example as the L2 distance between the reconstruction
of the attacked input and that of the clean input,
``Δc = ‖g(μ(x + δ)) − g(μ(x))‖₂``, with g(μ(·)) the maximum-likelihood (deterministic)
reconstruction. That is our default. The public notebooks of 000 instead report the *mean
absolute* pixel difference between two *stochastic* reconstructions (a latent sample of each
image decoded); both are options here (``kind="mean_abs"``, ``key=...``), named for what they
are.

The paper also "normalizes the perturbed image" before it reaches the VAE; its public code
min–max normalises ``x + δ`` over the whole image. ``normalize="minmax"`` reproduces that;
the default feeds ``x + δ`` unchanged (our attacks already keep it in the pixel box). The
perturbed input is formed by :func:`vaerob_jax.attacks.perturbed_input`, the function the
attack objectives use, so Δc sees exactly what the attack optimised.

Every metric is written for ONE example (``x``: ``(H, W, C)``) and is ``vmap``-able over
examples, perturbation budgets and a stack of models; :func:`evaluate_attacks` is the batched,
jit-compiled convenience used by studies.

Example:
    >>> dc = adversarial_deviation(model, params, x, delta)             # Eq. 5 of 000
    >>> out = evaluate_attacks(model, params, xs, deltas)               # dict of (N,) arrays
    >>> out["delta_c"], out["recon_loss"], out["latent_shift"]
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vaerob_jax.attacks.objectives import NORMALIZATIONS, perturbed_input
from vaerob_jax.models.vae import VAE

Params = Any

DEVIATION_KINDS = ("l2", "mean_abs")
RECON_KINDS = ("nll", "mse")

__all__ = [
    "DEVIATION_KINDS",
    "NORMALIZATIONS",
    "RECON_KINDS",
    "adversarial_deviation",
    "evaluate_attacks",
    "latent_shift",
    "perturbed_input",
    "reconstruction_loss",
]


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")


def _check_example(model: VAE, x: jax.Array, delta: jax.Array | None = None) -> None:
    shape = tuple(model.image_shape)
    if tuple(jnp.shape(x)) != shape:
        raise ValueError(
            f"x must be ONE example of shape {shape} (vmap for batches), got {jnp.shape(x)}"
        )
    if delta is not None and tuple(jnp.shape(delta)) != shape:
        raise ValueError(f"delta must have the shape of x {shape}, got {jnp.shape(delta)}")


def _reconstruction(
    model: VAE, params: Params, x: jax.Array, key: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """(reconstruction, μ): g(μ(x)) when ``key`` is None, else g(z) with z ~ q(z|x)."""
    if key is None:
        z = mu = model.embed(params, x)
    else:
        q = model.posterior(params, x)
        mu, z = q.mean, q.sample(key)
    return model.decode(params, z), mu


def _deviation(diff: jax.Array, kind: str) -> jax.Array:
    if kind == "l2":
        return jnp.sqrt(jnp.sum(jnp.square(diff)))
    return jnp.mean(jnp.abs(diff))


def adversarial_deviation(
    model: VAE,
    params: Params,
    x: jax.Array,
    delta: jax.Array,
    kind: str = "l2",
    *,
    key: jax.Array | None = None,
    normalize: str = "none",
) -> jax.Array:
    """Adversarial deviation Δc of one attacked example (Eq. 5 of 000).

    Args:
      model: the VAE.
      params: its params (one model; vmap over a stacked pytree for several).
      x: one clean image ``(H, W, C)`` in [0, 1].
      delta: its perturbation, same shape.
      kind: ``"l2"`` (default, Eq. 5: ``‖g(μ(x̃)) − g(μ(x))‖₂`` over all pixels) or
        ``"mean_abs"`` (000's notebooks: mean absolute pixel difference).
      key: ``None`` (default) compares deterministic reconstructions g(μ(·)); a PRNG key
        decodes one latent sample of each image instead, as 000's public code did (two
        independent samples, so Δc > 0 even for δ = 0).
      normalize: how the perturbed input is formed, see :func:`perturbed_input`.

    Returns:
      Scalar Δc (lower = more robust).
    """
    _check_choice("kind", kind, DEVIATION_KINDS)
    _check_example(model, x, delta)
    k_clean, k_adv = (None, None) if key is None else tuple(jax.random.split(key))
    clean, _ = _reconstruction(model, params, x, k_clean)
    adv, _ = _reconstruction(model, params, perturbed_input(x, delta, normalize), k_adv)
    return _deviation(adv - clean, kind)


def reconstruction_loss(model: VAE, params: Params, x: jax.Array, kind: str = "nll") -> jax.Array:
    """Unperturbed reconstruction loss of one example (x-axis of Fig. 2 of 000).

    Args:
      model: the VAE.
      params: its params.
      x: one clean image ``(H, W, C)``.
      kind: ``"nll"`` (default): ``−log p(x | z = μ(x))`` with the model's likelihood of
        Eq. 2 of 000, summed over pixels; ``"mse"``: mean squared pixel error between ``x`` and
        g(μ(x)) (the per-pixel scale of the values 0.02–0.06 quoted in §5 of 000).

    Returns:
      Scalar loss (lower = better reconstruction).
    """
    _check_choice("kind", kind, RECON_KINDS)
    _check_example(model, x)
    mu = model.embed(params, x)
    if kind == "nll":
        return -model.log_likelihood(params, x, mu)
    return jnp.mean(jnp.square(model.decode(params, mu) - x))


def latent_shift(
    model: VAE, params: Params, x: jax.Array, delta: jax.Array, *, normalize: str = "none"
) -> jax.Array:
    """Shift of the posterior mean under attack, ``‖μ(x + δ) − μ(x)‖₂`` (Eq. 4 of 000 on μ).

    Args:
      model: the VAE.
      params: its params.
      x: one clean image.
      delta: its perturbation.
      normalize: how the perturbed input is formed, see :func:`perturbed_input`.

    Returns:
      Scalar L2 distance in latent space.
    """
    _check_example(model, x, delta)
    mu_clean = model.embed(params, x)
    mu_adv = model.embed(params, perturbed_input(x, delta, normalize))
    return jnp.sqrt(jnp.sum(jnp.square(mu_adv - mu_clean)))


def _evaluate_one(
    model: VAE,
    params: Params,
    x: jax.Array,
    delta: jax.Array,
    key: jax.Array | None,
    kind: str,
    recon_kind: str,
    normalize: str,
) -> dict[str, jax.Array]:
    """All three metrics of one example, sharing the encoder/decoder passes."""
    if key is None:
        mu_clean = z_clean = model.embed(params, x)
        mu_adv = z_adv = model.embed(params, perturbed_input(x, delta, normalize))
    else:
        q_clean = model.posterior(params, x)
        q_adv = model.posterior(params, perturbed_input(x, delta, normalize))
        mu_clean, mu_adv = q_clean.mean, q_adv.mean
        k_clean, k_adv = jax.random.split(key)
        z_clean, z_adv = q_clean.sample(k_clean), q_adv.sample(k_adv)
    rec_clean_mean = model.decode(params, mu_clean)
    rec_clean = rec_clean_mean if key is None else model.decode(params, z_clean)
    rec_adv = model.decode(params, z_adv)
    if recon_kind == "nll":
        recon = -model.log_likelihood(params, x, mu_clean)
    else:
        recon = jnp.mean(jnp.square(rec_clean_mean - x))
    return {
        "delta_c": _deviation(rec_adv - rec_clean, kind),
        "recon_loss": recon,
        "latent_shift": jnp.sqrt(jnp.sum(jnp.square(mu_adv - mu_clean))),
    }


@functools.partial(jax.jit, static_argnames=("model", "kind", "recon_kind", "normalize"))
def _evaluate_batch(model, params, xs, deltas, key, kind, recon_kind, normalize):
    n = xs.shape[0]
    lead = deltas.shape[:-4]
    flat = deltas.reshape((-1, *deltas.shape[-4:]))  # (L, N, H, W, C)

    def per_example(x, d, i, l_idx):
        k = None
        if key is not None:
            k = jax.random.fold_in(jax.random.fold_in(key, l_idx), i)
        return _evaluate_one(model, params, x, d, k, kind, recon_kind, normalize)

    over_examples = jax.vmap(per_example, in_axes=(0, 0, 0, None))
    over_lead = jax.vmap(over_examples, in_axes=(None, 0, None, 0))
    out = over_lead(xs, flat, jnp.arange(n), jnp.arange(flat.shape[0]))
    return {name: v.reshape((*lead, n)) for name, v in out.items()}


def evaluate_attacks(
    model: VAE,
    params: Params,
    xs: jax.Array,
    deltas: jax.Array,
    *,
    kind: str = "l2",
    recon_kind: str = "nll",
    normalize: str = "none",
    key: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Per-example Δc, unperturbed reconstruction loss and latent shift for a batch of attacks.

    One jit-compiled, vmapped program per (model, shapes, options); reductions over examples
    (medians per subgroup, bootstrap CIs) belong to :mod:`vaerob_jax.robustness.stats`.

    Args:
      model: the VAE.
      params: its params.
      xs: clean images ``(N, H, W, C)``.
      deltas: perturbations ``(..., N, H, W, C)``; extra leading axes (e.g. the ε grid of
        ``attack_batch``) are kept in the outputs.
      kind: Δc form, see :func:`adversarial_deviation`.
      recon_kind: reconstruction loss form, see :func:`reconstruction_loss`.
      normalize: perturbed-input normalisation, see :func:`perturbed_input`.
      key: ``None`` for deterministic reconstructions (Eq. 5 default); a key for stochastic
        ones, one independent key per example via ``fold_in``.

    Returns:
      ``{"delta_c", "recon_loss", "latent_shift"}``, each of shape ``deltas.shape[:-3]``
      (``recon_loss`` does not depend on δ and is broadcast along the leading axes).
    """
    _check_choice("kind", kind, DEVIATION_KINDS)
    _check_choice("recon_kind", recon_kind, RECON_KINDS)
    _check_choice("normalize", normalize, NORMALIZATIONS)
    xs = jnp.asarray(xs)
    deltas = jnp.asarray(deltas)
    shape = tuple(model.image_shape)
    if xs.ndim != 4 or tuple(xs.shape[1:]) != shape:
        raise ValueError(f"xs must have shape (N, {', '.join(map(str, shape))}), got {xs.shape}")
    if xs.shape[0] == 0:
        raise ValueError("xs is empty: nothing to evaluate")
    if deltas.ndim < 4 or tuple(deltas.shape[-4:]) != tuple(xs.shape):
        raise ValueError(
            f"deltas must have shape (..., {', '.join(map(str, xs.shape))}) matching xs, "
            f"got {deltas.shape}"
        )
    return _evaluate_batch(model, params, xs, deltas, key, kind, recon_kind, normalize)
