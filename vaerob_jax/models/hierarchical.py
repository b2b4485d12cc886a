"""Hierarchical VAEs with L latent layers (002's β-TCDLGM and Seatbelt-VAE, Eqs. 5-8).

Generative model (top-down): p(z^L) = N(0, I); p(z^i | z^{i+1}) = N(μ^p_i(z^{i+1}),
diag σ^p_i(z^{i+1})²) for i < L; the likelihood is p(x | z^1) (``kind='dlgm'``, Eq. 6) or
p(x | z^1, ..., z^L) (``kind='seatbelt'``, Eq. 8: the decoder backbone reads the
concatenation of all layers).

Inference model (bottom-up, Eq. 7): q(z^1 | x) is a backbone encoder with a Gaussian head and
q(z^{i+1} | z^i) a Gaussian MLP (2 × 256 ReLU by default; the paper does not state it).

Functions (models protocol, one example or a batch):

* ``posterior(params, x)``: the tuple (q(z^1|x), q(z^2|·), ..., q(z^L|·)) along the *mean
  path*, layer i+1's Gaussian computed from layer i's mean: a deterministic, differentiable
  distribution per layer, what 002's attacks (Eqs. 14-15) compare between x + d and x_t.
* ``sample_chain(params, x, key)``: one reparameterised chain z^1 ~ q(·|x), z^{i+1} ~
  q(·|z^i), with the conditionals it was drawn from (the training losses use these).
* ``prior(params, zs)``: the top-down conditionals p(z^i | z^{i+1}) for the given chain and
  N(0, I) for the top layer.
* ``decode(params, zs)``: the mean image from a tuple of per-layer codes (a DLGM reads only
  ``zs[0]``); ``reconstruct`` decodes the mean path; ``embed`` is the mean of layer
  ``embed_layer`` (default: the top layer, where 002 measures disentanglement).

With L = 1 a Seatbelt-VAE and a DLGM are a plain Gaussian VAE (002: L = 1 Seatbelt is a
β-TCVAE).

Example:
    >>> hv = make_hierarchical("mlp", (32, 32, 3), layer_dims=(10, 10), kind="seatbelt")
    >>> params = hv.init(jax.random.key(0))
    >>> qs = hv.posterior(params, x)                  # (DiagGaussian, DiagGaussian)
    >>> zs, q_chain = hv.sample_chain(params, x, key)
    >>> ps = hv.prior(params, zs)                     # (p(z¹|z²), N(0, I))
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
from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.protocol import as_batch
from vaerob_jax.models.vae import LIKELIHOODS, log_likelihood_from_logits, soft_clamp

__all__ = ["HIERARCHICAL_KINDS", "HierarchicalVAE", "make_hierarchical"]

Params = Any
HIERARCHICAL_KINDS = ("seatbelt", "dlgm")


class GaussianMLP(nn.Module):
    """ReLU MLP from a parent code to (mean, raw log-variance) of the next layer (batched)."""

    out_dim: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, h):
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.out_dim, name="mean")(h), nn.Dense(self.out_dim, name="logvar")(h)


@dataclasses.dataclass(frozen=True)
class HierarchicalVAE:
    """An L-layer hierarchical VAE exposed as pure functions (see the module docstring).

    Attributes:
      encoder: backbone encoder for q(z^1 | x); decoder: backbone decoder of the likelihood.
      up: Gaussian MLPs of q(z^{i+1} | z^i), i = 1..L-1; down: Gaussian MLPs of
        p(z^i | z^{i+1}), i = 1..L-1.
      image_shape, layer_dims: input shape and (d_1, ..., d_L).
      kind: 'seatbelt' (likelihood on all layers) or 'dlgm' (on z^1).
      likelihood, obs_std, logvar_range: as for :class:`~vaerob_jax.models.VAE`.
      embed_layer: which layer's mean ``embed`` returns (negative counts from the top).
    """

    encoder: nn.Module
    decoder: nn.Module
    up: tuple[nn.Module, ...]
    down: tuple[nn.Module, ...]
    image_shape: tuple[int, int, int]
    layer_dims: tuple[int, ...]
    kind: str = "seatbelt"
    likelihood: str = "bernoulli"
    obs_std: float = 0.1
    logvar_range: tuple[float, float] = (-12.0, 8.0)
    embed_layer: int = -1
    backbone: str = ""
    hidden: tuple[int, ...] | None = None
    layer_hidden: tuple[int, ...] = (256, 256)

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    @property
    def latent_dim(self) -> int:
        """Size of the code ``embed`` returns."""
        return self.layer_dims[self.embed_layer]

    @property
    def decoder_dim(self) -> int:
        """Width of the decoder's input: d_1 (DLGM) or d_1 + ... + d_L (Seatbelt)."""
        return self.layer_dims[0] if self.kind == "dlgm" else sum(self.layer_dims)

    def init(self, key: jax.Array) -> Params:
        """``{'encoder', 'decoder', 'up': {'1': ...}, 'down': {'1': ...}}`` from a key."""
        return _jitted_init(self)(key)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": f"hierarchical-{self.kind}",
            "backbone": self.backbone,
            "image_shape": list(self.image_shape),
            "layer_dims": list(self.layer_dims),
            "likelihood": self.likelihood,
            "obs_std": self.obs_std,
            "logvar_range": list(self.logvar_range),
            "embed_layer": self.embed_layer,
            "hidden": None if self.hidden is None else list(self.hidden),
            "layer_hidden": list(self.layer_hidden),
        }

    # -- pieces ---------------------------------------------------------------------------------
    def _gaussian(self, mean: jax.Array, raw: jax.Array) -> DiagGaussian:
        return DiagGaussian(mean, soft_clamp(raw, *self.logvar_range))

    def _first(self, params: Params, xb: jax.Array) -> DiagGaussian:
        out: Any = self.encoder.apply({"params": params["encoder"]}, xb)
        return self._gaussian(*out)

    def _up(self, params: Params, i: int, parent: jax.Array) -> DiagGaussian:
        out: Any = self.up[i].apply({"params": params["up"][str(i + 1)]}, parent)
        return self._gaussian(*out)

    def _down(self, params: Params, i: int, parent: jax.Array) -> DiagGaussian:
        out: Any = self.down[i].apply({"params": params["down"][str(i + 1)]}, parent)
        return self._gaussian(*out)

    @staticmethod
    def _unbatch(tree: Any, single: bool) -> Any:
        return jax.tree.map(lambda a: a[0], tree) if single else tree

    # -- the protocol ---------------------------------------------------------------------------
    def posterior(self, params: Params, x: jax.Array) -> tuple[DiagGaussian, ...]:
        """Per-layer Gaussians along the mean path (layer i+1 fed layer i's mean)."""
        xb, single = as_batch(x, self.image_shape)
        qs = [self._first(params, xb)]
        for i in range(self.num_layers - 1):
            qs.append(self._up(params, i, qs[-1].mean))
        return self._unbatch(tuple(qs), single)

    def embed(self, params: Params, x: jax.Array) -> jax.Array:
        """Mean of layer ``embed_layer`` along the mean path."""
        return self.posterior(params, x)[self.embed_layer].mean

    def sample_chain(
        self, params: Params, x: jax.Array, key: jax.Array
    ) -> tuple[tuple[jax.Array, ...], tuple[DiagGaussian, ...]]:
        """One reparameterised bottom-up chain: (codes per layer, conditionals drawn from).

        Layer i uses the noise ``fold_in(key, i)``; for a batch the draws are independent
        across examples.
        """
        xb, single = as_batch(x, self.image_shape)
        q = self._first(params, xb)
        qs, zs = [q], [q.sample(jax.random.fold_in(key, 0))]
        for i in range(self.num_layers - 1):
            q = self._up(params, i, zs[-1])
            qs.append(q)
            zs.append(q.sample(jax.random.fold_in(key, i + 1)))
        return self._unbatch(tuple(zs), single), self._unbatch(tuple(qs), single)

    def prior(self, params: Params, zs: Sequence[jax.Array]) -> tuple[DiagGaussian, ...]:
        """(p(z^1|z^2), ..., p(z^{L-1}|z^L), N(0, I)) for the chain ``zs``."""
        if len(zs) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} latent layers, got {len(zs)}")
        top = jnp.asarray(zs[-1])
        out = [self._down(params, i, jnp.asarray(zs[i + 1])) for i in range(self.num_layers - 1)]
        out.append(DiagGaussian(jnp.zeros_like(top), jnp.zeros_like(top)))
        return tuple(out)

    def _decoder_input(self, zs: Any) -> tuple[jax.Array, bool]:
        if not isinstance(zs, tuple | list):
            zs = (zs,)
        zs = tuple(jnp.asarray(z) for z in zs)
        want = 1 if self.kind == "dlgm" else self.num_layers
        if len(zs) < want:
            raise ValueError(f"a {self.kind} decoder needs {want} latent layer(s), got {len(zs)}")
        parts = [
            as_batch(z, (d,), f"z^{i + 1}") for i, (z, d) in enumerate(zip(zs, self.layer_dims))
        ]
        single = parts[0][1]
        if any(p[1] != single for p in parts):
            raise ValueError("latent layers mix one example and a batch")
        z = jnp.concatenate([p[0] for p in parts[:want]], axis=-1)
        return z, single

    def decode_logits(self, params: Params, zs: Any) -> jax.Array:
        """Raw decoder output from a tuple of per-layer codes (DLGM: only z^1 is read)."""
        z, single = self._decoder_input(zs)
        out: Any = self.decoder.apply({"params": params["decoder"]}, z)
        return out[0] if single else out

    def decode(self, params: Params, zs: Any) -> jax.Array:
        """Mean image in [0, 1] from a tuple of per-layer codes."""
        return jax.nn.sigmoid(self.decode_logits(params, zs))

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """The deterministic reconstruction: decode the means of the mean path."""
        return self.decode(params, tuple(q.mean for q in self.posterior(params, x)))

    def log_likelihood(self, params: Params, x: jax.Array, zs: Any) -> jax.Array:
        """log p(x | z^1) or log p(x | z^1..z^L), summed over pixels; one value per example."""
        logits = self.decode_logits(params, zs)
        return log_likelihood_from_logits(self.likelihood, x, logits, self.obs_std)


@functools.lru_cache(maxsize=32)
def _jitted_init(model: HierarchicalVAE):
    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, 2 + 2 * (model.num_layers - 1))
        x = jnp.zeros((1, *model.image_shape))
        params: dict[str, Any] = {
            "encoder": model.encoder.init(keys[0], x)["params"],
            "decoder": model.decoder.init(keys[1], jnp.zeros((1, model.decoder_dim)))["params"],
            "up": {},
            "down": {},
        }
        for i in range(model.num_layers - 1):
            d_lo, d_hi = model.layer_dims[i], model.layer_dims[i + 1]
            params["up"][str(i + 1)] = model.up[i].init(keys[2 + 2 * i], jnp.zeros((1, d_lo)))[
                "params"
            ]
            params["down"][str(i + 1)] = model.down[i].init(keys[3 + 2 * i], jnp.zeros((1, d_hi)))[
                "params"
            ]
        return params

    return jax.jit(init)


def make_hierarchical(
    backbone: str,
    image_shape: Sequence[int],
    layer_dims: Sequence[int],
    kind: str = "seatbelt",
    likelihood: str = "bernoulli",
    obs_std: float = 0.1,
    hidden: Sequence[int] | None = None,
    layer_hidden: Sequence[int] = (256, 256),
    embed_layer: int = -1,
) -> HierarchicalVAE:
    """Builds an L-layer hierarchical VAE (L = len(layer_dims)).

    Args:
      backbone: encoder/decoder backbone ('ref64', 'burgess64', 'conv32', 'mlp').
      image_shape: (H, W, C).
      layer_dims: latent sizes (d_1, ..., d_L), bottom to top.
      kind: 'seatbelt' (002 Eq. 8, likelihood on all layers) or 'dlgm' (Eq. 6, on z^1).
      likelihood, obs_std: as for :func:`~vaerob_jax.models.make_vae`.
      hidden: MLP backbone widths ('mlp' only).
      layer_hidden: widths of the between-layer Gaussian MLPs (002 does not state them).
      embed_layer: the layer ``embed`` returns (default -1, the top).
    """
    dims = tuple(int(d) for d in layer_dims)
    if len(dims) < 1 or any(d < 1 for d in dims):
        raise ValueError(f"layer_dims must be >= 1 positive sizes, got {tuple(layer_dims)}")
    if kind not in HIERARCHICAL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {HIERARCHICAL_KINDS}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    if not -len(dims) <= int(embed_layer) < len(dims):
        raise ValueError(f"embed_layer {embed_layer} is not a layer of {len(dims)}")
    enc, dec = make_backbone(backbone, image_shape, dims[0], hidden)
    lh = tuple(int(w) for w in layer_hidden)
    up = tuple(GaussianMLP(dims[i + 1], lh) for i in range(len(dims) - 1))
    down = tuple(GaussianMLP(dims[i], lh) for i in range(len(dims) - 1))
    shape = tuple(int(s) for s in image_shape)
    hid = None if hidden is None else tuple(int(h) for h in hidden)
    return HierarchicalVAE(
        enc,
        dec,
        up,
        down,
        shape,  # type: ignore[arg-type]
        dims,
        kind,
        likelihood,
        obs_std,
        embed_layer=int(embed_layer),
        backbone=backbone,
        hidden=hid,
        layer_hidden=lh,
    )
