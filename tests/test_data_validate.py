"""Input validation: check_images / check_eps raise clear ValueErrors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from vaerob_jax.data import check_eps, check_images


def test_check_images_accepts_valid_batch_and_single_image():
    x = np.linspace(0.0, 1.0, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    out = check_images(x, expected_shape=(4, 4, 3))
    assert out is x  # no copy for numpy input
    assert check_images(x[0], expected_shape=(4, None, 3)).shape == (4, 4, 3)


@pytest.mark.parametrize(
    ("x", "kwargs", "pattern"),
    [
        (np.zeros((4, 4), np.float32), {}, r"rank 3 or rank 4.*\(4, 4\)"),
        (np.zeros((1, 1, 4, 4, 3), np.float32), {}, "rank 5"),
        (np.zeros((4, 4, 3), np.float32), {"batched": True}, "must have rank 4"),
        (
            np.zeros((2, 4, 4, 3), np.float32),
            {"expected_shape": (4, 4, 1)},
            r"\(4, 4, 1\).*got \(4, 4, 3\)",
        ),
        (np.zeros((0, 4, 4, 3), np.float32), {}, "empty"),
    ],
)
def test_check_images_shape_errors(x, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_images(x, **kwargs)


def test_check_images_reports_nan_and_inf_counts():
    x = np.full((1, 3, 3, 1), 0.5, np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 0] = np.nan
    x[0, 2, 2, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN and 1 infinite values out of 9"):
        check_images(x, name="batch")


def test_check_images_reports_out_of_range_count_and_range():
    x = np.full((1, 2, 2, 1), 0.5, np.float32)
    x[0, 0, 0, 0] = -0.25
    x[0, 1, 1, 0] = 3.0
    with pytest.raises(ValueError, match=r"2 of 4 values are outside, range found \[-0.25, 3\]"):
        check_images(x)
    u8 = np.full((1, 2, 2, 1), 200, np.uint8)
    with pytest.raises(ValueError, match="divide by 255"):
        check_images(u8)


def test_check_eps():
    np.testing.assert_array_equal(check_eps([0.0, 0.1]), [0.0, 0.1])
    assert check_eps(0.3).shape == ()
    with pytest.raises(ValueError, match=r">= 0; 1 negative value\(s\), e.g. \[-0.1\]"):
        check_eps([0.2, -0.1])
    with pytest.raises(ValueError, match="finite"):
        check_eps(float("nan"))
    with pytest.raises(ValueError, match="empty"):
        check_eps([])
