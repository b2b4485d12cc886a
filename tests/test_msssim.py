"""MS-SSIM as 003's evaluation used it (spec 003 §2, known answers §4.6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import correlate2d

from vaerob_jax.robustness.msssim import ms_ssim, msssim_window_sizes, ssim

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _np_window(size):
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * 1.5**2))
    return np.outer(g, g) / np.outer(g, g).sum()


def _np_pool(v):
    h, w = v.shape[0] // 2 * 2, v.shape[1] // 2 * 2
    return (v[0:h:2, 0:w:2] + v[1:h:2, 0:w:2] + v[0:h:2, 1:w:2] + v[1:h:2, 1:w:2]) / 4


def _np_level(x, y):
    """(mean SSIM, mean cs) of one level, channel by channel with 2-D correlate2d 'valid'."""
    c1, c2 = 0.01**2, 0.03**2
    window = _np_window(min(6, x.shape[0], x.shape[1]))
    s_maps, c_maps = [], []
    for c in range(x.shape[2]):
        a, b = x[..., c], y[..., c]
        mu_a = correlate2d(a, window, mode="valid")
        mu_b = correlate2d(b, window, mode="valid")
        var_a = correlate2d(a * a, window, mode="valid") - mu_a**2
        var_b = correlate2d(b * b, window, mode="valid") - mu_b**2
        cov = correlate2d(a * b, window, mode="valid") - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        s_maps.append((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs)
        c_maps.append(cs)
    return np.mean(s_maps), np.mean(c_maps)


def reference_msssim(x, y, combine="standard"):
    """Independent float64 numpy/scipy MS-SSIM (E[x²] − μ² as written, 2-D windows)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ssims, css = [], []
    for _ in range(5):
        s, c = _np_level(x, y)
        ssims.append(max(s, 0.0))
        css.append(max(c, 0.0))
        x, y = _np_pool(x), _np_pool(y)
    ssims, css = np.array(ssims), np.array(css)
    if combine == "standard":
        return np.prod(css[:4] ** WEIGHTS[:4]) * ssims[4] ** WEIGHTS[4]
    return np.prod(css[:4] ** WEIGHTS[:4] * ssims[4] ** WEIGHTS[4])


_ms_ssim = jax.jit(ms_ssim, static_argnames=("combine",))


def _pair(shape, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(x + noise * rng.standard_normal(shape), 0.0, 1.0)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 32, 1), (64, 64, 3), (33, 47, 2)])
@pytest.mark.parametrize("combine", ["standard", "reference"])
def test_agrees_with_independent_numpy_implementation(shape, combine):
    for seed, noise in [(0, 0.1), (1, 0.4)]:
        x, y = _pair(shape, seed, noise)
        got = float(_ms_ssim(jnp.asarray(x), jnp.asarray(y), combine=combine))
        assert got == pytest.approx(reference_msssim(x, y, combine), abs=1e-5)


def test_the_specs_quoted_values():
    # spec 003 §4.6: r = default_rng(0); x = r.random((32, 32)); y = clip(x + 0.1 N, 0, 1).
    r = np.random.default_rng(0)
    x = r.random((32, 32))
    y = np.clip(x + 0.1 * r.standard_normal((32, 32)), 0, 1)
    x, y = jnp.asarray(x[..., None], jnp.float32), jnp.asarray(y[..., None], jnp.float32)
    assert float(_ms_ssim(x, y)) == pytest.approx(0.948409, abs=2e-6)
    assert float(_ms_ssim(x, y, combine="reference")) == pytest.approx(0.945764, abs=2e-6)


def test_constant_images_closed_form():
    # a = 0.25 vs 0.75: cs = 1 at every level, ssim = l = (2·0.25·0.75 + C1)/(0.25² + 0.75² + C1).
    lum = (2 * 0.25 * 0.75 + 1e-4) / (0.25**2 + 0.75**2 + 1e-4)
    assert lum == pytest.approx(0.600064, abs=1e-6)
    a = jnp.full((32, 32, 1), 0.25)
    assert float(_ms_ssim(a, a + 0.5)) == pytest.approx(lum**0.1333, abs=1e-6)
    assert float(_ms_ssim(a, a + 0.5)) == pytest.approx(0.934187, abs=1e-6)
    assert float(_ms_ssim(a, a + 0.5, combine="reference")) == pytest.approx(0.761614, abs=1e-6)


def test_identity_inversion_and_symmetry():
    x, y = _pair((32, 32, 3), 3)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    assert float(_ms_ssim(xj, xj)) == pytest.approx(1.0, abs=1e-6)
    assert float(_ms_ssim(xj, 1.0 - xj)) == 0.0  # ReLU on the anti-correlated first level
    assert float(_ms_ssim(xj, yj)) == pytest.approx(float(_ms_ssim(yj, xj)), abs=1e-7)
    assert 0.0 < float(_ms_ssim(xj, yj)) < 1.0


def test_window_sizes_and_too_small_images():
    assert msssim_window_sizes(32, 32) == (6, 6, 6, 4, 2)
    assert msssim_window_sizes(64, 64) == (6, 6, 6, 6, 4)
    assert msssim_window_sizes(16, 20) == (6, 6, 4, 2, 1)
    for shape in [(8, 8, 1), (15, 32, 1)]:
        with pytest.raises(ValueError, match="at least 16x16"):
            _ms_ssim(jnp.zeros(shape), jnp.zeros(shape))
    x = jnp.asarray(_pair((16, 16, 1), 4)[0])
    assert float(_ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_jit_and_vmap_over_pairs():
    xs = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1))
    ys = jnp.clip(xs + 0.2 * jax.random.normal(jax.random.key(1), xs.shape), 0, 1)
    batched = jax.jit(jax.vmap(ms_ssim))(xs, ys)
    single = [float(_ms_ssim(a, b)) for a, b in zip(xs, ys)]
    np.testing.assert_allclose(batched, single, rtol=1e-6)


def test_single_level_ssim_matches_dm_pix():
    dm_pix = pytest.importorskip("dm_pix")
    x, y = _pair((32, 32, 3), 5, 0.2)
    got = float(ssim(jnp.asarray(x), jnp.asarray(y), window_size=7))
    want = float(dm_pix.ssim(jnp.asarray(x), jnp.asarray(y), filter_size=7))
    assert got == pytest.approx(want, abs=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        _ms_ssim(jnp.zeros((32, 32, 1)), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="same shape"):
        _ms_ssim(jnp.zeros((2, 32, 32, 1)), jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="combine"):
        _ms_ssim(jnp.zeros((32, 32, 1)), jnp.zeros((32, 32, 1)), combine="pessoa")
