"""Gaussian VAE as a set of pure functions over a params pytree (DESIGN.md contract).

Every function accepts either one example (``x`` of shape ``image_shape``, ``z`` of shape
``(latent_dim,)``) or a batch with one leading axis; library code writes for one example and
lifts with ``jax.vmap`` (the conv batching rule folds the vmapped axis into the conv batch).

Example:
    >>> model = make_vae("burgess64", image_shape=(64, 64, 3), latent_dim=16)
    >>> params = model.init(jax.random.key(0))
    >>> q = model.posterior(params, x)               # DiagGaussian(mean, logvar); x in [0, 1]
    >>> mu = model.embed(params, x)                  # the point code μ(x)
    >>> x_hat = model.reconstruct(params, x)         # g(mu(x)), the paper's ML reconstruction
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaerob_jax.models.backbones import make_backbone
from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.protocol import as_batch

Params = Any
LIKELIHOODS = ("bernoulli", "gaussian")


def soft_clamp(x: jax.Array, low: float, high: float) -> jax.Array:
    """Smoothly maps R onto (low, high) with unit slope at the midpoint (keeps gradients alive).

    Used on the raw log-variance so exp(logvar) can neither overflow nor underflow, without
    the dead gradients of a hard clip.
    """
    mid, half = 0.5 * (low + high), 0.5 * (high - low)
    return mid + half * jnp.tanh((x - mid) / half)


@dataclasses.dataclass(frozen=True)
class VAE:
    """A Gaussian-encoder VAE exposed as pure functions of (params, inputs) (models protocol).

    Attributes:
      encoder, decoder: Flax Linen modules (batched); private to the models package.
      image_shape: (H, W, C) of one input, pixels in [0, 1].
      latent_dim: size of z.
      likelihood: 'bernoulli' (decoder emits logits) or 'gaussian' (decoder mean is
        sigmoid(output), fixed observation std ``obs_std``).
      logvar_range: the open interval the encoder log-variance is soft-clamped into.
      compute_dtype: 'float32', or 'bfloat16' for mixed precision (:func:`with_compute_dtype`):
        the encoder and decoder run on bfloat16 copies of their params and inputs (matmuls and
        convolutions in bfloat16, accumulated in float32 by the accelerators' kernels) and
        return float32; params, what callers compute from the outputs (attack state,
        objectives, metrics) and everything else stay float32.
    """

    encoder: nn.Module
    decoder: nn.Module
    image_shape: tuple[int, int, int]
    latent_dim: int
    likelihood: str = "bernoulli"
    obs_std: float = 0.1
    logvar_range: tuple[float, float] = (-12.0, 8.0)
    backbone: str = ""
    hidden: tuple[int, ...] | None = None
    compute_dtype: str = "float32"

    # -- construction -------------------------------------------------------------------------
    def init(self, key: jax.Array, example_x: jax.Array | None = None) -> Params:
        """Initial params ``{'encoder': ..., 'decoder': ...}`` from an explicit key."""
        if example_x is not None:
            as_batch(example_x, self.image_shape)  # shape check only: params need the shape
        return _jitted_init(self)(key)

    def spec(self) -> dict[str, Any]:
        """JSON description of the architecture (checkpoint and cell fingerprints)."""
        return {
            "kind": "vae",
            "backbone": self.backbone,
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "obs_std": self.obs_std,
            "logvar_range": list(self.logvar_range),
            "hidden": None if self.hidden is None else list(self.hidden),
            # float32 models keep the spec (and the checkpoints' fingerprints) they had
            **({} if self.compute_dtype == "float32" else {"compute_dtype": self.compute_dtype}),
        }

    def _compute(self, variables: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:
        """The variables and inputs a module runs on: bfloat16 copies for mixed precision."""
        if self.compute_dtype == "float32":
            return variables, inputs
        dtype = jnp.dtype(self.compute_dtype)

        def cast(a: Any) -> Any:
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        return jax.tree.map(cast, variables), cast(inputs)

    # -- the protocol -------------------------------------------------------------------------
    def posterior(self, params: Params, x: jax.Array) -> DiagGaussian:
        """q(z|x) = N(mu, diag(exp(logvar))), the log-variance soft-clamped."""
        xb, single = as_batch(x, self.image_shape)
        out: Any = self.encoder.apply(*self._compute({"params": params["encoder"]}, xb))
        mu, raw = (o.astype(jnp.float32) for o in out)
        logvar = soft_clamp(raw, *self.logvar_range)
        return DiagGaussian(mu[0], logvar[0]) if single else DiagGaussian(mu, logvar)

    def embed(self, params: Params, x: jax.Array) -> jax.Array:
        """The point code μ(x) (000 Eq. 4 attacks it; neighbourhoods are found around it)."""
        return self.posterior(params, x).mean

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array:
        """Raw decoder output: Bernoulli logits, or the pre-sigmoid Gaussian mean."""
        zb, single = as_batch(z, (self.latent_dim,), "z")
        out: Any = self.decoder.apply(*self._compute({"params": params["decoder"]}, zb))
        out = out.astype(jnp.float32)
        return out[0] if single else out

    def decode(self, params: Params, z: jax.Array) -> jax.Array:
        """Mean image E[x|z] in [0, 1]."""
        return jax.nn.sigmoid(self.decode_logits(params, z))

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """The maximum-likelihood reconstruction g(mu(x)) used by 000 Eq. 5."""
        return self.decode(params, self.embed(params, x))

    def log_likelihood(self, params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x|z) summed over pixels; one value per example."""
        logits = self.decode_logits(params, z)
        return log_likelihood_from_logits(self.likelihood, x, logits, self.obs_std)


COMPUTE_DTYPES = ("float32", "bfloat16")


def with_compute_dtype(model: VAE, dtype: str) -> VAE:
    """``model`` computing in ``dtype`` ('float32' or 'bfloat16', mixed precision); the same
    params work for both (they stay float32 and are cast inside each call).

    Raises:
      ValueError: an unknown dtype. TypeError: a model without mixed precision (only the
        Gaussian VAE has it).
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
    if not isinstance(model, VAE):
        raise TypeError(
            f"mixed precision is built for the Gaussian VAE, not {type(model).__name__}"
        )
    return dataclasses.replace(model, compute_dtype=dtype)


@functools.lru_cache(maxsize=64)
def _jitted_init(model: VAE):
    """One compiled initialiser per model (eager Flax init dispatches op by op, slowly on CPU)."""

    def init(key: jax.Array) -> Params:
        k_enc, k_dec = jax.random.split(key)
        x = jnp.zeros((1, *model.image_shape))
        z = jnp.zeros((1, model.latent_dim))
        return {
            "encoder": model.encoder.init(k_enc, x)["params"],
            "decoder": model.decoder.init(k_dec, z)["params"],
        }

    return jax.jit(init)


def log_likelihood_from_logits(
    likelihood: str, x: jax.Array, logits: jax.Array, obs_std: float = 0.1
) -> jax.Array:
    """Per-example log p(x|z) from decoder output, summed over the trailing (H, W, C) axes."""
    axes = tuple(range(-3, 0)) if logits.ndim >= 3 else (-1,)
    if likelihood == "bernoulli":
        ll = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
    elif likelihood == "gaussian":
        mean = jax.nn.sigmoid(logits)
        ll = (
            -0.5 * jnp.square((x - mean) / obs_std)
            - math.log(obs_std)
            - 0.5 * math.log(2 * math.pi)
        )
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    return jnp.sum(ll, axis=axes)


def make_vae(
    backbone: str,
    image_shape: Sequence[int],
    latent_dim: int,
    likelihood: str = "bernoulli",
    obs_std: float = 0.1,
    hidden: Sequence[int] | None = None,
) -> VAE:
    """Builds a Gaussian VAE with a named backbone ('ref64', 'burgess64', 'conv32', 'mlp')."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    enc, dec = make_backbone(backbone, image_shape, latent_dim, hidden)
    shape = tuple(int(s) for s in image_shape)
    hid = None if hidden is None else tuple(int(h) for h in hidden)
    return VAE(enc, dec, shape, latent_dim, likelihood, obs_std, backbone=backbone, hidden=hid)  # type: ignore[arg-type]
