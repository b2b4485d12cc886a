"""Vectorised image preprocessing: uint8 -> float32 in [0, 1], centre crops, batched resizes.

Resizing is one jitted ``jax.image.resize`` per (batch shape, output size), applied to whole
chunks of images (linear interpolation with antialiasing when shrinking, which averages
pixels, so outputs stay in [0, 1] up to rounding; they are clipped).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["centre_crop", "resize_images", "to_unit_float"]


def to_unit_float(images: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """uint8 (or any numeric) pixels -> float32 in [0, 1] by dividing by ``max_value``."""
    return (np.asarray(images, np.float32) / np.float32(max_value)).astype(np.float32)


def centre_crop(images: np.ndarray, height: int, width: int, top: int | None = None) -> np.ndarray:
    """Crops every image of an (N, H, W, C) batch to (height, width) about its centre.

    Args:
      images: (N, H, W, C) array.
      height, width: crop size (at most H, W).
      top: first row of the crop; default centred. Columns are always centred.

    Raises:
      ValueError: a crop larger than the images.
    """
    _, h, w, _ = images.shape
    if height > h or width > w or height < 1 or width < 1:
        raise ValueError(f"cannot crop {height}x{width} out of {h}x{w} images")
    r0 = (h - height) // 2 if top is None else top
    if not 0 <= r0 <= h - height:
        raise ValueError(f"crop rows [{r0}, {r0 + height}) fall outside 0..{h}")
    c0 = (w - width) // 2
    return images[:, r0 : r0 + height, c0 : c0 + width, :]


@functools.partial(jax.jit, static_argnames=("size",))
def _resize(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    n, _, _, c = images.shape
    out = jax.image.resize(images, (n, size[0], size[1], c), method="linear", antialias=True)
    return jnp.clip(out, 0.0, 1.0)


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes a float (N, H, W, C) batch in [0, 1] to ``size`` (one vectorised op).

    Args:
      images: float (N, H, W, C) in [0, 1].
      size: output side (square) or (height, width).

    Returns:
      float32 (N, size_h, size_w, C) numpy array in [0, 1]; the input itself (as float32)
      when it already has that size.
    """
    hw = (
        (int(size), int(size))
        if isinstance(size, int | np.integer)
        else (int(size[0]), int(size[1]))
    )
    if min(hw) < 1:
        raise ValueError(f"image size must be positive, got {size}")
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == hw or len(images) == 0:
        return (
            images if images.shape[1:3] == hw else np.zeros((0, *hw, images.shape[3]), np.float32)
        )
    return np.asarray(_resize(jnp.asarray(images), hw))
