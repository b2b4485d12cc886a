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
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import numpy as np

BACKBONES = ("ref64", "burgess64", "conv32", "mlp")


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
        h = nn.relu(nn.Conv(64, (4, 4), strides=2, padding="VALID")(x))
        for _ in range(3):
            h = nn.relu(nn.Conv(64, (3, 3), strides=1, padding=1)(h))
        for ch in (128, 256, 256):
            h = nn.relu(nn.Conv(ch, (4, 4), strides=2, padding="VALID")(h))
        h = h.reshape((h.shape[0], -1))
        return latent_head(h, self.latent_dim, self.head)


class Ref64Decoder(nn.Module):
    out_shape: Sequence[int]

    @nn.compact
    def __call__(self, z):
        h_, w_, c_ = self.out_shape
        h = nn.relu(nn.Dense(4 * 4 * 256)(z)).reshape((z.shape[0], 4, 4, 256))
        h = nn.relu(nn.ConvTranspose(256, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(nn.ConvTranspose(128, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(nn.ConvTranspose(64, (4, 4), strides=(2, 2), padding="SAME")(h))
        for _ in range(3):
            h = nn.relu(nn.Conv(64, (3, 3), padding=1)(h))
        h = nn.ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)
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
            h = nn.relu(nn.Conv(self.channels, (4, 4), strides=2, padding=1)(h))
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
            h = nn.relu(nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME")(h))
        return nn.ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)


class Conv32Encoder(nn.Module):
    latent_dim: int
    hidden: int = 256
    head: str = "gaussian"

    @nn.compact
    def __call__(self, x):
        h = x
        for ch in (32, 64, 128):
            h = nn.relu(nn.Conv(ch, (4, 4), strides=2, padding=1)(h))
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
            h = nn.relu(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME")(h))
        return nn.ConvTranspose(c_, (4, 4), strides=(2, 2), padding="SAME")(h)


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
