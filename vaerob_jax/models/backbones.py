"""Encoder and decoder networks (Flax Linen), batched NHWC in, batched out.

The pure-function interface lives in :mod:`vaerob_jax.models.vae`; nothing outside the models
package touches these modules directly.

Backbones:
  * ``ref64``: the architecture of the public code of 000 (REFERENCE_NOTES): ReLU convs
    3->64 k4 s2, three 64->64 k3 s1 p1, 64->128 k4 s2, 128->256 k4 s2, 256->256 k4 s2, all
    unpadded so a 64x64 input flattens to 2*2*256 = 1024 features. The decoder mirrors the
    channel sequence with transposed convs (its exact spatial sequence is not recoverable
    from the reference; we double 4->8->16->32->64).
  * ``burgess64``: the smaller Higgins/Burgess 4-conv net (32 channels k4 s2, dense 256-256).
  * ``conv32``: three k4 s2 convs (32, 64, 128) for 32x32 inputs.
  * ``mlp``: fully connected, for 28/32-pixel inputs (003 uses 1024-200-200-200-200).

Stride-2 convolutions run in their polyphase forms on CPU (:func:`strided_conv_impl`; the
parameters, names and initialisers are flax's, so checkpoints are interchangeable):
  * the encoders' stride-2 convolutions (:class:`Conv`) as one stride-1 convolution of the
    space-to-depth input, whose gradient with respect to the input is again a plain
    convolution (:func:`space_to_depth_conv`);
  * the decoders' 4×4 stride-2 'SAME' transposed convolutions (:class:`ConvTranspose`) as one
    2×2 stride-1 convolution that computes the four output phases side by side, then
    interleaves them (sub-pixel form, :func:`subpixel_conv_transpose`): the transpose of the
    space-to-depth form, so its gradient with respect to the input is a space-to-depth
    convolution.
Elsewhere they run as ``lax.conv_general_dilated`` / ``lax.conv_transpose``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.linear import canonicalize_padding
from jax import lax

BACKBONES = ("ref64", "burgess64", "conv32", "mlp")

STRIDED_CONV_IMPLS = ("phases", "lax")
STRIDED_CONV_ENV_VAR = "VAEROB_STRIDED_CONV"


def strided_conv_impl(impl: str | None = None) -> str:
    """How stride-2 convolutions and 4×4 stride-2 transposed convolutions run: argument, else
    $VAEROB_STRIDED_CONV, else per backend ('phases' on CPU, 'lax' on GPU/TPU).

    'lax' is XLA's own lowering. Its CPU backend computes a transposed convolution (the
    decoders' forward, and every strided convolution's gradient with respect to its input) as a
    convolution over an input dilated with zeros. 'phases' splits the stride-2 operations into
    their 2×2 phases, so that every convolution XLA sees, forward and backward, has stride 1:
    on the 2-core CPU of ENVIRONMENT_NOTES the Burgess 64×64 decoder's forward and backward at
    batch 64 took 196–205 ms as 'lax' and 36–46 ms as 'phases' (2026-12-07, two rounds), the
    encoder's gradient with respect to its input (the attack) 27 vs 13.5 ms; the same sums,
    equal to float32 rounding.
    Accelerators keep their own kernels. The choice is read when a model is traced: set the
    variable before the first call (a compiled program keeps its choice).
    """
    if impl is None:
        impl = os.environ.get(STRIDED_CONV_ENV_VAR) or None
    if impl is None:
        return "phases" if jax.default_backend() == "cpu" else "lax"
    if impl not in STRIDED_CONV_IMPLS:
        raise ValueError(
            f"unknown strided-convolution impl {impl!r}; choose one of {STRIDED_CONV_IMPLS}"
        )
    return impl


def space_to_depth_conv(
    x: jax.Array,
    kernel: jax.Array,
    padding: Sequence[tuple[int, int]],
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (2, 2), padding)`` (NHWC, HWIO, even kernel
    sides) as a stride-1 convolution: the padded input's 2×2 phases become channels
    (space-to-depth) and the kernel's taps are regrouped to match, y[i] = Σ_{a,p} w[2a + p]
    x[2(i + a) + p]. An odd padded side loses its last row, which no output reads."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    (top, bottom), (left, right) = padding
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    hp, wp = xp.shape[1] // 2, xp.shape[2] // 2
    xp = xp[:, : 2 * hp, : 2 * wp]
    xs = xp.reshape(n, hp, 2, wp, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, 4 * c)
    ks = kernel.reshape(kh // 2, 2, kw // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
    return lax.conv_general_dilated(
        xs,
        ks.reshape(kh // 2, kw // 2, 4 * c, o),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )


def _pairs(value: object) -> tuple[int, ...]:
    return tuple(np.broadcast_to(np.asarray(value if value is not None else 1), (2,)).tolist())


class Conv(nn.Conv):
    """``flax.linen.Conv`` whose stride-2 case with even kernel sides runs as
    :func:`space_to_depth_conv` where :func:`strided_conv_impl` chooses 'phases'. The class
    name, parameter names, shapes and initialisers are flax's, so params and checkpoints are
    interchangeable; every other configuration is flax's own."""

    @nn.compact
    def __call__(self, inputs):
        kernel_size = _pairs(self.kernel_size)
        padding = canonicalize_padding(self.padding, 2)
        plain = (
            _pairs(self.strides) == (2, 2)
            and all(k % 2 == 0 for k in kernel_size)
            and _pairs(self.input_dilation) == (1, 1)
            and _pairs(self.kernel_dilation) == (1, 1)
            and self.feature_group_count == 1
            and self.mask is None
            and inputs.ndim == 4
            and padding not in ("CIRCULAR", "CAUSAL", "REFLECT")
        )
        if plain and isinstance(padding, str):  # 'SAME' / 'VALID' as lax pads them
            padding = lax.padtype_to_pads(inputs.shape[1:3], kernel_size, (2, 2), padding)
        plain = plain and min(min(p) for p in padding) >= 0
        if not plain or strided_conv_impl() != "phases":
            return super().__call__(inputs)
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (*kernel_size, inputs.shape[-1], self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = space_to_depth_conv(inputs, kernel, padding, self.precision)
        return y if bias is None else y + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``flax.linen.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')`` for NHWC input.

    Where :func:`strided_conv_impl` chooses 'phases' and both sides are even (then 'SAME'
    pads nothing) it is the maximum over the four 2×2 phases, whose gradient is a mask rather
    than XLA's select-and-scatter: the CPU attribute classifier's forward and backward at
    32×32, batch 64, took 64 ms with flax's pooling and 28 ms so (64×64: 264 and 157 ms), with
    equal values and gradients. (Where a window holds several equal maxima the gradient is
    split between them instead of going to one; after a ReLU such ties are zeros, whose
    gradient the ReLU drops either way.)
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2 or strided_conv_impl() != "phases":
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """A (4, 4, I, O) stride-2 transposed-convolution kernel as the (2, 2, I, 4·O) kernel of one
    stride-1 convolution whose output channels are the four phases (p, q, O):
    k[a, b, :, p, q] = kernel[2a + 1 − p, 2b + 1 − q], the kernel's taps reversed within each
    pair (no zero taps: every multiply-add of the sub-pixel form is one of the transposed
    convolution's own)."""
    kh, kw, i, o = kernel.shape
    k = kernel.reshape(kh // 2, 2, kw // 2, 2, i, o)[:, ::-1, :, ::-1]
    return k.transpose(0, 2, 4, 1, 3, 5).reshape(kh // 2, kw // 2, i, 4 * o)


def subpixel_conv_transpose(
    x: jax.Array, kernel: jax.Array, precision: lax.PrecisionLike = None
) -> jax.Array:
    """``lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` (NHWC, HWIO, 4×4 kernel) computed
    without zero dilation: a 2×2 convolution of the 1-padded input gives, at each of its
    (H + 1) × (W + 1) positions, the four output phases g[m, n, p, q] = y[2m + p − 1, 2n + q − 1]
    as channels; interleaving them and cropping one pixel from every side gives y.

    It is the transpose of :func:`space_to_depth_conv` (y[2i + 2 − t] += w[t] x[i] is a
    stride-2 correlation read backwards), so reverse-mode autodiff turns its input gradient
    into a space-to-depth convolution and its kernel gradient into that of a 2×2 stride-1
    convolution: no zero taps anywhere, forward or backward. On the 2-core CPU of
    ENVIRONMENT_NOTES the Burgess 64×64 decoder's forward and backward at batch 64 took
    36–46 ms so, 63–64 ms as one 3×3 convolution of the same padded input (each phase reads
    a 2×2 window of it, so five of the nine taps are zeros) and 196–205 ms as XLA's dilated
    convolution (2026-12-07, two rounds). The padding is an explicit ``jnp.pad``: asking the
    convolution to pad made its forward and backward 3.5–15× slower.
    """
    n, h, w, _ = x.shape
    o = kernel.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    g = lax.conv_general_dilated(
        xp,
        subpixel_kernel(kernel),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    g = g.reshape(n, h + 1, w + 1, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
    return g.reshape(n, 2 * h + 2, 2 * w + 2, o)[:, 1:-1, 1:-1]


class ConvTranspose(nn.ConvTranspose):
    """``flax.linen.ConvTranspose`` whose 4×4 stride-2 'SAME' case runs in the sub-pixel form
    where :func:`strided_conv_impl` chooses 'phases'. The class name, parameter names, shapes and
    initialisers are flax's, so params and checkpoints are interchangeable."""

    @nn.compact
    def __call__(self, inputs):
        plain = (
            tuple(np.broadcast_to(self.kernel_size, (2,))) == (4, 4)
            and tuple(np.broadcast_to(self.strides or 1, (2,))) == (2, 2)
            and self.padding == "SAME"
            and (self.kernel_dilation in (None, 1, (1, 1)))
            and self.mask is None
            and not self.transpose_kernel
            and inputs.ndim == 4
        )
        if not plain or strided_conv_impl() != "phases":
            return super().__call__(inputs)
        kernel = self.param(
            "kernel", self.kernel_init, (4, 4, inputs.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = subpixel_conv_transpose(inputs, kernel, self.precision)
        return y if bias is None else y + bias


HEADS = ("gaussian", "point")


class GaussianHead(nn.Module):
    """Dense layers producing (mu, raw log-variance) from features."""

    latent_dim: int

    @nn.compact
    def __call__(self, h):
        mu = nn.Dense(self.latent_dim, name="mu")(h)
        logvar = nn.Dense(self.latent_dim, name="logvar")(h)
        return mu, logvar


def latent_head(h, latent_dim: int, head: str):
    """The encoder's output layer: (mu, raw logvar) for a VAE, one code z for a deterministic AE.

    Called inside a compact module, so the Gaussian head keeps its parameter names
    (``GaussianHead_0/{mu, logvar}``) and existing VAE checkpoints load unchanged; the point
    head is one Dense layer named ``z`` (no activation, 003's encoders end linearly).
    """
    if head == "gaussian":
        return GaussianHead(latent_dim)(h)
    if head == "point":
        return nn.Dense(latent_dim, name="z")(h)
    raise ValueError(f"unknown encoder head {head!r}; choose one of {HEADS}")


class Ref64Encoder(nn.Module):
    latent_dim: int
    head: str = "gaussian"

    @nn.compact
    def __call__(self, x):
        h = nn.relu(Conv(64, (4, 4), strides=2, padding="VALID")(x))
        for _ in range(3):
            h = nn.relu(Conv(64, (3, 3), strides=1, padding=1)(h))
        for ch in (128, 256, 256):
            h = nn.relu(Conv(ch, (4, 4), strides=2, padding="VALID")(h))
        h = h.reshape((h.shape[0], -1))
        return latent_head(h, self.latent_dim, self.head)


class Ref64Decoder(nn.Module):
    out_shape: Sequence[int]

    @nn.compact
    def __call__(self, z):
        h_, w_, c_ = self.out_shape
        h = nn.relu(nn.Dense(4 * 4 * 256)(z)).reshape((z.shape[0], 4, 4, 256))
        h = nn.relu(ConvTranspose(256, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(ConvTranspose(128, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(ConvTranspose(64, (4, 4), strides=(2, 2), padding="SAME")(h))
        for _ in range(3):
            h = nn.relu(nn.Conv(64, (3, 3), padding=1)(h))
        h = ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)
        return h[:, :h_, :w_, :]


class Burgess64Encoder(nn.Module):
    latent_dim: int
    channels: int = 32
    hidden: int = 256
    head: str = "gaussian"

    @nn.compact
    def __call__(self, x):
        h = x
        for _ in range(4):
            h = nn.relu(Conv(self.channels, (4, 4), strides=2, padding=1)(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(self.hidden)(h))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return latent_head(h, self.latent_dim, self.head)


class Burgess64Decoder(nn.Module):
    out_shape: Sequence[int]
    channels: int = 32
    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        h_, w_, c_ = self.out_shape
        s = h_ // 16
        h = nn.relu(nn.Dense(self.hidden)(z))
        h = nn.relu(nn.Dense(self.hidden)(h))
        h = nn.relu(nn.Dense(s * s * self.channels)(h)).reshape((z.shape[0], s, s, self.channels))
        for _ in range(3):
            h = nn.relu(ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME")(h))
        return ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)


class Conv32Encoder(nn.Module):
    latent_dim: int
    hidden: int = 256
    head: str = "gaussian"

    @nn.compact
    def __call__(self, x):
        h = x
        for ch in (32, 64, 128):
            h = nn.relu(Conv(ch, (4, 4), strides=2, padding=1)(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return latent_head(h, self.latent_dim, self.head)


class Conv32Decoder(nn.Module):
    out_shape: Sequence[int]
    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        h_, w_, c_ = self.out_shape
        s = h_ // 8
        h = nn.relu(nn.Dense(self.hidden)(z))
        h = nn.relu(nn.Dense(s * s * 128)(h)).reshape((z.shape[0], s, s, 128))
        for ch in (64, 32):
            h = nn.relu(ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME")(h))
        return ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)


class MLPEncoder(nn.Module):
    latent_dim: int
    hidden: Sequence[int] = (512, 256)
    head: str = "gaussian"

    @nn.compact
    def __call__(self, x):
        h = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return latent_head(h, self.latent_dim, self.head)


class MLPDecoder(nn.Module):
    out_shape: Sequence[int]
    hidden: Sequence[int] = (256, 512)

    @nn.compact
    def __call__(self, z):
        h = z
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        h = nn.Dense(int(np.prod(self.out_shape)))(h)
        return h.reshape((z.shape[0], *self.out_shape))


def make_backbone(
    name: str,
    image_shape: Sequence[int],
    latent_dim: int,
    hidden: Sequence[int] | None = None,
    *,
    head: str = "gaussian",
) -> tuple[nn.Module, nn.Module]:
    """Returns (encoder, decoder) Linen modules for a named backbone, checking the input size.

    Args:
      name: one of :data:`BACKBONES`.
      image_shape: (H, W, C) of one input.
      latent_dim: size of the encoder's code.
      hidden: MLP widths ('mlp' only; the decoder mirrors them).
      head: 'gaussian' (mu, raw logvar; VAEs) or 'point' (one code; deterministic AEs).

    Decoders infer their input width at init, so one decoder module also takes a
    concatenation of several latent layers (002's Seatbelt-VAE).
    """
    if head not in HEADS:
        raise ValueError(f"unknown encoder head {head!r}; choose one of {HEADS}")
    h, w, c = image_shape
    if name == "ref64":
        if (h, w) != (64, 64):
            raise ValueError(f"backbone 'ref64' needs 64x64 images, got {h}x{w}")
        return Ref64Encoder(latent_dim, head=head), Ref64Decoder(tuple(image_shape))
    if name == "burgess64":
        if h != w or h % 16:
            raise ValueError(
                f"backbone 'burgess64' needs square images with side divisible by 16, got {h}x{w}"
            )
        return Burgess64Encoder(latent_dim, head=head), Burgess64Decoder(tuple(image_shape))
    if name == "conv32":
        if h != w or h % 8:
            raise ValueError(
                f"backbone 'conv32' needs square images with side divisible by 8, got {h}x{w}"
            )
        return Conv32Encoder(latent_dim, head=head), Conv32Decoder(tuple(image_shape))
    if name == "mlp":
        enc_hidden = tuple(hidden) if hidden is not None else (512, 256)
        return MLPEncoder(latent_dim, enc_hidden, head), MLPDecoder(
            tuple(image_shape), enc_hidden[::-1]
        )
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
