"""Fréchet distance between Gaussian fits of two feature sets (003's generation-quality metric).

003 reports FID: the Fréchet distance between Gaussians fitted to Inception pool3 features of
generated and real images. Inception weights cannot be fetched here, so the study computes the
same distance in the penultimate feature space of a classifier trained in this project and
calls it **FD-clf**: its values are comparable across our models (rankings), never with the
paper's FID values, and it is never called FID.

For N(m₁, C₁) and N(m₂, C₂):

    d² = ‖m₁ − m₂‖² + tr(C₁ + C₂ − 2 (C₁C₂)^{1/2}).

tr((C₁C₂)^{1/2}) is computed as Σ √λ_i(C₁^{1/2} C₂ C₁^{1/2}): C₁C₂ is similar to that symmetric
positive semi-definite matrix, so they share eigenvalues, and ``eigh`` of a symmetric matrix is
stable and real (C₁^{1/2} from ``eigh`` of C₁ with eigenvalues clipped at 0). The usual
``scipy.linalg.sqrtm(C₁ @ C₂)`` works on a non-symmetric product, can return complex values with
spurious imaginary parts for rank-deficient covariances (hence pytorch-fid's ε-offset retry) and
needs scipy. Everything runs once per evaluation in float64 numpy on the host: JAX's default
float32 would lose digits in the difference of large traces.

Example:
    >>> fd = frechet_distance(features_generated, features_test)     # (N1, F), (N2, F)
"""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "gaussian_fit", "gaussian_frechet_distance"]


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), float64.

    Raises:
      ValueError: not 2-D, fewer than 2 rows, or non-finite entries.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain non-finite values")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (c + c.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def gaussian_frechet_distance(
    mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2).

    Raises:
      ValueError: mismatched shapes, non-finite input, or a non-finite result.
    """
    m1, m2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    c1, c2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    f = m1.shape[0] if m1.ndim == 1 else -1
    if m1.shape != m2.shape or c1.shape != (f, f) or c2.shape != (f, f):
        raise ValueError(
            f"need means (F,) and covariances (F, F) of one F; got {m1.shape}, {c1.shape}, "
            f"{m2.shape}, {c2.shape}"
        )
    if not all(np.all(np.isfinite(a)) for a in (m1, m2, c1, c2)):
        raise ValueError("means and covariances must be finite")
    s1 = _psd_sqrt(c1)
    middle = s1 @ c2 @ s1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    d2 = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    if not np.isfinite(d2):
        raise ValueError(f"Fréchet distance is not finite ({d2})")
    # Rounding can leave −1e-12 for identical fits; the distance itself is >= 0.
    return max(d2, 0.0)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N1, F) and (N2, F).

    Returns the squared distance d² (the number FID reports), >= 0. The study's FD-clf
    (module docstring) passes features of a classifier trained in the project.

    Raises:
      ValueError: mismatched feature widths or bad features (see :func:`gaussian_fit`).
    """
    f1, f2 = np.asarray(features1), np.asarray(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, F) of one F, got {f1.shape} and {f2.shape}")
    return gaussian_frechet_distance(*gaussian_fit(f1), *gaussian_fit(f2))
