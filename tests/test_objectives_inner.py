"""linf_ascent: stays in its ball and box, equals the closed form on a linear objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.objectives import linf_ascent


def test_fgsm_closed_form_on_linear_encoder():
    # 003 Eq. 6 on g(x) = A x: G = 2 AᵀA δ₀,
    # δ = clip(clip(δ₀ + 1.25ε sign(G), −ε, ε) + x, 0, 1) − x.
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    x = jnp.asarray(rng.uniform(size=16), jnp.float32)
    eps, key = 0.3, jax.random.key(4)

    def value(xa):
        return jnp.sum(jnp.square(a @ xa - jax.lax.stop_gradient(a @ x)))

    got = linf_ascent(value, x, eps, key, steps=1, step_size=1.25 * eps, clip_start=False)
    d0 = np.asarray(eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0))
    an, xn = np.asarray(a), np.asarray(x)
    step = np.clip(d0 + 1.25 * eps * np.sign(an.T @ an @ d0), -eps, eps)
    want = np.clip(step + xn, 0.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_stays_in_ball_and_box_and_has_no_gradient():
    x = jax.random.uniform(jax.random.key(0), (5, 4))
    eps = jnp.float32(0.2)

    def value(xa):
        return jnp.sum(jnp.sin(7.0 * xa))

    xa = linf_ascent(value, x, eps, jax.random.key(1), steps=5)
    assert float(jnp.max(jnp.abs(xa - x))) <= 0.2 * (1 + 1e-6)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    # No gradient flows through the attack into x.
    g = jax.grad(lambda xx: jnp.sum(linf_ascent(value, xx, eps, jax.random.key(1), steps=2)))(x)
    np.testing.assert_array_equal(g, 0.0)
    # Ascent: the value rises over the random start on average.
    start = linf_ascent(value, x, eps, jax.random.key(1), steps=1, step_size=0.0)
    assert float(value(xa)) > float(value(start))


def test_zero_budget_returns_x():
    x = jax.random.uniform(jax.random.key(2), (6,))
    xa = linf_ascent(lambda v: jnp.sum(v**2), x, 0.0, jax.random.key(3), steps=3)
    np.testing.assert_array_equal(xa, x)
