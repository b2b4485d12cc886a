"""Deterministic autoencoder (003's GMM-regularised DAE) as pure functions (models protocol).

The encoder is an existing backbone with a point head (one Dense layer to the code z, no
activation); the decoder is the backbone's decoder with a sigmoid output, so
``reconstruct(params, x) = f(g(x))`` in [0, 1]. There is no posterior (``posterior`` returns
None) and no BatchNorm, so per-example gradients (FGSM inside training, attacks) are
independent across a batch.

003 trains on 32×32 grey images with the MLP 1024-200-200-200-200 (``make_dae("mlp",
(32, 32, 1), 10, hidden=(200,) * 4)``) and on colour images with conv nets.

Example:
    >>> dae = make_dae("mlp", (32, 32, 1), latent_dim=10, hidden=(200, 200, 200, 200))
    >>> params = dae.init(jax.random.key(0))
    >>> z = dae.embed(params, x)                      # the code z = g(x)
    >>> x_hat = dae.reconstruct(params, x)            # f(g(x))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaerob_jax.models.backbones import make_backbone
from vaerob_jax.models.protocol import as_batch

__all__ = ["DeterministicAE", "make_dae"]

Params = Any


@dataclasses.dataclass(frozen=True)
class DeterministicAE:
    """A deterministic autoencoder exposed as pure functions of (params, inputs).

    Attributes:
      encoder, decoder: Flax Linen modules (batched); private to the models package.
      image_shape: (H, W, C) of one input, pixels in [0, 1].
      latent_dim: size of the code z.
      backbone, hidden: the architecture's name and MLP widths (for ``spec``).
    """

    encoder: nn.Module
    decoder: nn.Module
    image_shape: tuple[int, int, int]
    latent_dim: int
    backbone: str = ""
    hidden: tuple[int, ...] | None = None

    def init(self, key: jax.Array) -> Params:
        """Initial params ``{'encoder': ..., 'decoder': ...}`` from an explicit key."""
        return _jitted_init(self)(key)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "dae",
            "backbone": self.backbone,
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "hidden": None if self.hidden is None else list(self.hidden),
        }

    def embed(self, params: Params, x: jax.Array) -> jax.Array:
        """The code z = g(x)."""
        xb, single = as_batch(x, self.image_shape)
        z: Any = self.encoder.apply({"params": params["encoder"]}, xb)
        return z[0] if single else z

    def posterior(self, params: Params, x: jax.Array) -> None:
        """A deterministic encoder has no posterior distribution."""
        del params, x
        return None

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array:
        """Pre-sigmoid decoder output."""
        zb, single = as_batch(z, (self.latent_dim,), "z")
        out: Any = self.decoder.apply({"params": params["decoder"]}, zb)
        return out[0] if single else out

    def decode(self, params: Params, z: jax.Array) -> jax.Array:
        """The decoded image f(z) in [0, 1]."""
        return jax.nn.sigmoid(self.decode_logits(params, z))

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """f(g(x))."""
        return self.decode(params, self.embed(params, x))


@functools.lru_cache(maxsize=32)
def _jitted_init(model: DeterministicAE):
    def init(key: jax.Array) -> Params:
        k_enc, k_dec = jax.random.split(key)
        return {
            "encoder": model.encoder.init(k_enc, jnp.zeros((1, *model.image_shape)))["params"],
            "decoder": model.decoder.init(k_dec, jnp.zeros((1, model.latent_dim)))["params"],
        }

    return jax.jit(init)


def make_dae(
    backbone: str,
    image_shape: Sequence[int],
    latent_dim: int,
    hidden: Sequence[int] | None = None,
) -> DeterministicAE:
    """Builds a deterministic autoencoder on a named backbone ('ref64', 'burgess64', 'conv32',
    'mlp'), the encoder ending in a linear code of size ``latent_dim``."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    enc, dec = make_backbone(backbone, image_shape, latent_dim, hidden, head="point")
    shape = tuple(int(s) for s in image_shape)
    hid = None if hidden is None else tuple(int(h) for h in hidden)
    return DeterministicAE(enc, dec, shape, int(latent_dim), backbone, hid)  # type: ignore[arg-type]
