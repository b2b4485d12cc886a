"""Attack objectives: per-example scalars to MAXIMISE, ``(params, inputs, delta, key) -> scalar``.

``inputs`` is a dict with the clean image ``'x'`` and whatever else an objective reads
(targets, labels); these maximum-damage objectives read only ``'x'``.

* :func:`latent_damage` is the maximum-damage objective of Eq. 4 of 000_2a5470c3dc126c07,
  ‖μ(x+δ) − μ(x)‖₂ on the encoder means (``use_mean=False``: the public code's sampled
  latents of both images, a documented reference option).
* :func:`output_damage` is the output maximum-damage objective of Eq. 5 of 001_fcd3e743c9633350
  (Eq. 13 of 003): ‖g(μ(x+δ)) − g(μ(x))‖₂ with g the decoder mean image (``use_mean=False``:
  001's literal form g(μ(x+δ) + η σ(x+δ)) with η ~ N(0, I)).

Both accept ``normalize="minmax"``: 000's "normalise the perturbed image" (§4 of 000), i.e.
x̃ = (x+δ − min)/(max − min) over the whole perturbed image before it is encoded.

Norms are "safe": sqrt(Σv² + tiny), so the value is finite everywhere and the gradient at
δ = 0 is exactly zero instead of NaN (ENVIRONMENT_NOTES); attacks start from a random point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vaerob_jax.attacks.engine import Objective

NORMALIZATIONS = (None, "none", "minmax")  # None and "none" both mean x + δ as is

_TINY = 1e-12


def safe_norm(v: jax.Array) -> jax.Array:
    """L2 norm of all entries, sqrt(Σv² + 1e-12): finite value and gradient everywhere.

    The plain norm's gradient v/‖v‖ is NaN at v = 0 (0/0); this one is exactly 0 there and
    differs from ‖v‖ by at most 1e-6.
    """
    return jnp.sqrt(jnp.sum(jnp.square(v)) + _TINY)


def _check_normalize(normalize: str | None) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {NORMALIZATIONS}")


def perturbed_input(x: jax.Array, delta: jax.Array, normalize: str | None = None) -> jax.Array:
    """The image the model sees: x + δ, optionally min–max normalised (000 §4).

    Args:
      x: clean image (H, W, C).
      delta: perturbation of the same shape.
      normalize: None or 'none' (default, the threat model of Eq. 4) or 'minmax': the
        reference code's whole-image normalisation x̃ = (x+δ − min)/(max − min); a constant
        image (zero range) is left unchanged.

    Returns:
      The perturbed (and possibly normalised) image.
    """
    _check_normalize(normalize)
    xp = x + delta
    if normalize == "minmax":
        lo, hi = jnp.min(xp), jnp.max(xp)
        # A constant image has no range: leave it as it is rather than divide by ~zero.
        span = hi - lo
        xp = jnp.where(span > _TINY, (xp - lo) / jnp.where(span > _TINY, span, 1.0), xp)
    return xp


def latent_damage(model: Any, use_mean: bool = True, normalize: str | None = None) -> Objective:
    """Latent maximum-damage objective ‖μ(x+δ) − μ(x)‖₂ (Eq. 4 of 000_2a5470c3dc126c07).

    Eq. 4 writes the distance between the posteriors q(z|x+δ) and q(z|x); we use their means
    (default). The public code of 000 compares *sampled* latents of both images instead.

    Args:
      model: an autoencoder (models protocol; hashable, closed over). ``use_mean=False``
        needs a posterior.
      use_mean: True (default) for encoder means; False for z' ~ q(z|x̃), z ~ q(z|x) drawn
        with the per-step key (the reference code's noisy objective).
      normalize: None or 'minmax' (see :func:`perturbed_input`).

    Returns:
      objective(params, inputs, delta, key) -> scalar, to maximise, for one example.

    Example:
      >>> obj = latent_damage(model)
      >>> obj(params, {'x': x}, 0.1 * jnp.ones_like(x), jax.random.key(0))
    """
    _check_normalize(normalize)

    def output(
        params: Any, inputs: Mapping[str, jax.Array], delta: jax.Array, key: jax.Array
    ) -> jax.Array:
        del key
        return model.embed(params, perturbed_input(inputs["x"], delta, normalize))

    def objective(
        params: Any, inputs: Mapping[str, jax.Array], delta: jax.Array, key: jax.Array
    ) -> jax.Array:
        x = inputs["x"]
        if use_mean:
            z_a = output(params, inputs, delta, key)
            z_c = jax.lax.stop_gradient(model.embed(params, x))
        else:
            k_a, k_c = jax.random.split(key)
            z_a = model.posterior(params, perturbed_input(x, delta, normalize)).sample(k_a)
            z_c = jax.lax.stop_gradient(model.posterior(params, x)).sample(k_c)
        return safe_norm(z_a - z_c)

    objective.output = output  # type: ignore[attr-defined]
    objective.image_shape = tuple(model.image_shape)  # type: ignore[attr-defined]
    objective.requires = ("x",)  # type: ignore[attr-defined]
    return objective


def output_damage(model: Any, use_mean: bool = True, normalize: str | None = None) -> Objective:
    """Output maximum-damage objective ‖g(μ(x+δ)) − g(μ(x))‖₂ (Eq. 5 of 001, Eq. 13 of 003).

    g is ``model.decode`` (the mean image), so g(μ(x)) is the maximum-likelihood reconstruction
    that 000's Eq. 5 (Δc) evaluates against.

    Args:
      model: the VAE.
      use_mean: True (default) decodes μ(x+δ); False decodes μ(x+δ) + η σ(x+δ), η ~ N(0, I)
        drawn with the per-step key (001 Eq. 5 as printed, which also attacks σ).
      normalize: None or 'minmax' (see :func:`perturbed_input`).

    Returns:
      objective(params, inputs, delta, key) -> scalar, to maximise, for one example.
    """
    _check_normalize(normalize)

    def output(
        params: Any, inputs: Mapping[str, jax.Array], delta: jax.Array, key: jax.Array
    ) -> jax.Array:
        del key
        x_adv = perturbed_input(inputs["x"], delta, normalize)
        return model.decode(params, model.embed(params, x_adv))

    def objective(
        params: Any, inputs: Mapping[str, jax.Array], delta: jax.Array, key: jax.Array
    ) -> jax.Array:
        x = inputs["x"]
        if use_mean:
            moved = output(params, inputs, delta, key)
        else:
            z_a = model.posterior(params, perturbed_input(x, delta, normalize)).sample(key)
            moved = model.decode(params, z_a)
        clean = jax.lax.stop_gradient(model.reconstruct(params, x))
        return safe_norm(moved - clean)

    objective.output = output  # type: ignore[attr-defined]
    objective.image_shape = tuple(model.image_shape)  # type: ignore[attr-defined]
    objective.requires = ("x",)  # type: ignore[attr-defined]
    return objective
