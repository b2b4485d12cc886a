"""The model protocol every package outside ``models/`` relies on (docs/CONTRACTS.md).

Autoencoders (Gaussian VAEs, hierarchical VAEs, deterministic AEs) expose pure functions of a
params pytree:

* ``init(key) -> params``;
* ``embed(params, x) -> z``: the point code attacks, neighbourhoods and latent classifiers
  use (μ(x) for a VAE, z(x) for a deterministic AE, the chosen layer's mean for a
  hierarchical VAE);
* ``posterior(params, x)``: the encoder's distribution, a :class:`DiagGaussian` (VAE), a
  tuple with one per latent layer along the mean path (hierarchical VAE), or ``None``
  (deterministic AE);
* ``decode(params, z) -> mean image in [0, 1]`` and ``reconstruct(params, x)``, the
  deterministic reconstruction g(embed-path(x)) of 000's Eq. 5;
* ``spec() -> dict``: a JSON description (fingerprints of checkpoints and result cells).

Classifiers expose ``init``, ``logits(params, x)`` and ``spec``. All functions take one example
or a batch with one leading axis; library code writes for one example and vmaps.

Nothing outside ``models/`` unpacks encoder tuples: it calls these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

__all__ = [
    "AUTOENCODER_METHODS",
    "CLASSIFIER_METHODS",
    "Autoencoder",
    "ClassifierModel",
    "as_batch",
    "check_autoencoder",
    "check_classifier",
]

Params = Any
AUTOENCODER_METHODS = ("init", "embed", "posterior", "decode", "reconstruct", "spec")
CLASSIFIER_METHODS = ("init", "logits", "spec")


@runtime_checkable
class Autoencoder(Protocol):
    """What attacks, metrics and studies may call on an autoencoder."""

    image_shape: tuple[int, ...]

    def init(self, key: jax.Array) -> Params: ...

    def embed(self, params: Params, x: jax.Array) -> jax.Array: ...

    def posterior(self, params: Params, x: jax.Array) -> Any: ...

    def decode(self, params: Params, z: Any) -> jax.Array: ...

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array: ...

    def spec(self) -> dict[str, Any]: ...


@runtime_checkable
class ClassifierModel(Protocol):
    """What attacks, metrics and studies may call on a classifier."""

    image_shape: tuple[int, ...]
    num_classes: int

    def init(self, key: jax.Array) -> Params: ...

    def logits(self, params: Params, x: jax.Array) -> jax.Array: ...

    def spec(self) -> dict[str, Any]: ...


def _check(obj: Any, methods: Sequence[str], what: str) -> None:
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if not hasattr(obj, "image_shape"):
        missing.append("image_shape")
    if missing:
        raise TypeError(
            f"{type(obj).__name__} is not {what}: it lacks {', '.join(missing)} "
            "(see docs/CONTRACTS.md)"
        )


def check_autoencoder(model: Any) -> None:
    """Raises TypeError naming what ``model`` lacks to satisfy :class:`Autoencoder`."""
    _check(model, AUTOENCODER_METHODS, "an autoencoder")


def check_classifier(model: Any) -> None:
    """Raises TypeError naming what ``model`` lacks to satisfy :class:`ClassifierModel`."""
    _check(model, CLASSIFIER_METHODS, "a classifier")
    if not hasattr(model, "num_classes"):
        raise TypeError(f"{type(model).__name__} is not a classifier: it lacks num_classes")


def as_batch(x: Any, shape: Sequence[int], what: str = "an image") -> tuple[jax.Array, bool]:
    """``(batch, single)``: one example of ``shape`` gets a leading axis, a batch is kept.

    The single shape check of the models package (images and latent codes alike); raises
    ValueError naming the expected and the given shape.
    """
    x = jnp.asarray(x)
    shape = tuple(shape)
    if x.shape == shape:
        return x[None], True
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x, False
    dims = ", ".join(map(str, shape))
    raise ValueError(
        f"expected {what} of shape {shape} or a batch (N, {dims}), got {tuple(x.shape)}"
    )
