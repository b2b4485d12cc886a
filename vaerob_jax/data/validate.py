"""Input checks shared by every package: fail early, with a message that names the problem.

These run on the host before any compiled computation, so a bad batch raises a ``ValueError``
that says what is wrong (rank, shape, NaN/inf, pixels outside [0, 1], a negative budget ε)
instead of producing silent NaNs minutes later.

Example:
    >>> check_images(np.zeros((2, 8, 8, 1), np.float32), expected_shape=(8, 8, 1))
    >>> check_eps([0.0, 0.05])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_eps", "check_images"]


def _shape_str(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_images(
    x: Any,
    expected_shape: Sequence[int | None] | None = None,
    name: str = "images",
    *,
    batched: bool | None = None,
) -> np.ndarray:
    """Checks that ``x`` is an image or a batch of images with finite pixels in [0, 1].

    Args:
      x: array-like, one image (H, W, C) or a batch (N, H, W, C) (NHWC, as everywhere in
        vaerob_jax).
      expected_shape: the (H, W, C) of one image; entries may be ``None`` for "any". When
        given, the trailing three axes of ``x`` must match.
      name: how the array is called in error messages.
      batched: ``True`` requires rank 4, ``False`` rank 3, ``None`` accepts either.

    Returns:
      ``x`` as a numpy array (no copy when it already is one), so callers can write
      ``x = check_images(x)``.

    Raises:
      ValueError: wrong rank or shape, non-floating or empty data, NaN/inf entries, or values
        outside [0, 1] (the message gives how many and the range found).
    """
    arr = np.asarray(x)
    allowed = {None: (3, 4), True: (4,), False: (3,)}[batched]
    if arr.ndim not in allowed:
        want = " or ".join(f"rank {r}" for r in allowed)
        raise ValueError(
            f"{name} must have {want} (NHWC: (N, H, W, C) or one image (H, W, C)); "
            f"got shape {arr.shape} (rank {arr.ndim})"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if expected_shape is not None:
        expected = tuple(expected_shape)
        if len(expected) != 3:
            raise ValueError(f"expected_shape must be (H, W, C), got {expected}")
        got = arr.shape[-3:]
        if any(e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"{name} must have per-image shape (H, W, C) = {_shape_str(expected)}; "
                f"got {got} (full shape {arr.shape})"
            )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum() - n_nan)
            raise ValueError(
                f"{name} contains {n_nan} NaN and {n_inf} infinite values out of {arr.size}"
            )
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 1:
        n_bad = int(np.count_nonzero((arr < 0) | (arr > 1)))
        hint = " (uint8 pixels? divide by 255)" if hi > 1 and hi <= 255 and lo >= 0 else ""
        raise ValueError(
            f"{name} must lie in [0, 1]; {n_bad} of {arr.size} values are outside, "
            f"range found [{float(lo):.4g}, {float(hi):.4g}]{hint}"
        )
    return arr


def check_eps(eps: Any, name: str = "eps") -> np.ndarray:
    """Checks a perturbation budget ε (scalar or grid): finite and non-negative.

    Args:
      eps: a scalar or array of budgets (the ``c`` of Eq. 4 of 000, the radius of 001).
      name: how the value is called in error messages.

    Returns:
      ``eps`` as a float numpy array.

    Raises:
      ValueError: empty, NaN/inf, or negative entries (the offending values are listed).
    """
    arr = np.asarray(eps, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad_nan = ~np.isfinite(arr)
    if bad_nan.any():
        raise ValueError(f"{name} must be finite; got {arr[bad_nan].tolist()[:5]}")
    neg = arr < 0
    if neg.any():
        raise ValueError(
            f"{name} must be >= 0; {int(neg.sum())} negative value(s), e.g. {arr[neg].tolist()[:5]}"
        )
    return arr
