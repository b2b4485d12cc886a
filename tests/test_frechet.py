"""Fréchet distance between Gaussian fits (the study's FD-clf): closed forms and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from vaerob_jax.robustness.frechet import (
    frechet_distance,
    gaussian_fit,
    gaussian_frechet_distance,
)


def _random_cov(rng, f, rank=None):
    a = rng.standard_normal((f, rank or f))
    return a @ a.T / f + (0.0 if rank else 0.1) * np.eye(f)


def test_identical_sets_give_zero():
    feats = np.random.default_rng(0).standard_normal((300, 16)) * 3.0 + 5.0
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-9)


def test_two_by_two_closed_form_with_non_commuting_covariances():
    # For 2×2 PSD A, B: tr (AB)^{1/2} = sqrt(tr(AB) + 2 sqrt(det A det B)).
    a = np.array([[2.0, 0.8], [0.8, 1.0]])
    b = np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(a @ b, b @ a)
    m1, m2 = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    tr_sqrt = np.sqrt(np.trace(a @ b) + 2 * np.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    want = np.sum((m1 - m2) ** 2) + np.trace(a) + np.trace(b) - 2 * tr_sqrt
    assert gaussian_frechet_distance(m1, a, m2, b) == pytest.approx(want, rel=1e-12)


def test_commuting_covariances_and_one_dimension():
    # Diagonal covariances: Σ_i (√a_i − √b_i)²; 1-D: (m1 − m2)² + (s1 − s2)².
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = gaussian_frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b))
    assert got == pytest.approx(want, rel=1e-12)
    got1 = gaussian_frechet_distance(np.array([1.0]), [[4.0]], np.array([-1.0]), [[0.25]])
    assert got1 == pytest.approx(4.0 + 1.5**2, rel=1e-12)


def test_agrees_with_sqrtm_in_higher_dimensions_and_is_symmetric():
    rng = np.random.default_rng(1)
    for rank in (None, 3):  # full rank and rank-deficient covariances
        c1, c2 = _random_cov(rng, 8, rank), _random_cov(rng, 8)
        m1, m2 = rng.standard_normal(8), rng.standard_normal(8)
        tr = np.real(np.trace(linalg.sqrtm(c1 @ c2)))
        want = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2) - 2 * tr
        d12 = gaussian_frechet_distance(m1, c1, m2, c2)
        assert d12 == pytest.approx(want, rel=1e-6, abs=1e-8)
        # √ of rounding-level eigenvalues of a rank-deficient product: ~1e-8 absolute.
        assert d12 == pytest.approx(gaussian_frechet_distance(m2, c2, m1, c1), abs=1e-7)


def test_feature_sets_recover_the_gaussian_distance():
    rng = np.random.default_rng(2)
    c1, c2 = _random_cov(rng, 4), _random_cov(rng, 4)
    m1, m2 = np.zeros(4), np.full(4, 0.5)
    f1 = rng.multivariate_normal(m1, c1, size=200_000)
    f2 = rng.multivariate_normal(m2, c2, size=200_000)
    want = gaussian_frechet_distance(m1, c1, m2, c2)
    assert frechet_distance(f1, f2) == pytest.approx(want, rel=0.02)
    assert frechet_distance(f1, f2) == pytest.approx(frechet_distance(f2, f1), rel=1e-10)
    mean, cov = gaussian_fit(f1[:5])
    np.testing.assert_allclose(cov, np.cov(f1[:5], rowvar=False))
    np.testing.assert_allclose(mean, f1[:5].mean(0))


@pytest.mark.parametrize(
    "f1, f2, match",
    [
        (np.zeros((10, 3)), np.zeros((10, 4)), "one F"),
        (np.zeros((1, 3)), np.zeros((10, 3)), "at least 2"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "non-finite"),
        (np.zeros(10), np.zeros(10), "one F"),
    ],
)
def test_bad_features_raise(f1, f2, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(f1, f2)
