"""Known-answer tests for the threat-model pieces (projections, random starts, step rules)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.attacks import adam_rule, norm_of, project_l2_box, sign_rule
from vaerob_jax.attacks.constraints import projection, random_start
from vaerob_jax.attacks.objectives import safe_norm


def _dykstra_l2_box(v, a, b, eps, iters=5000):
    """Reference: Dykstra's alternating projections onto the L2 ball and the box (numpy)."""
    x = v.astype(np.float64)
    p = np.zeros_like(x)
    q = np.zeros_like(x)
    for _ in range(iters):
        y = np.clip(x + p, a, b)
        p = x + p - y
        z = y + q
        n = np.linalg.norm(z)
        x_new = z if n <= eps else z * (eps / n)
        q = y + q - x_new
        x = x_new
    return x


def test_l2_box_projection_matches_dykstra():
    rng = np.random.default_rng(0)
    for case in range(12):
        d = 6
        x = rng.uniform(0, 1, d)
        v = rng.normal(0, 0.6, d)
        eps = [0.05, 0.3, 0.8][case % 3]
        a, b = 0.0 - x, 1.0 - x
        got = np.asarray(project_l2_box(jnp.asarray(v), jnp.asarray(a), jnp.asarray(b), eps))
        want = _dykstra_l2_box(v, a, b, eps)
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_l2_box_projection_is_identity_inside_and_optimal():
    x = jnp.full((2, 2, 1), 0.5)
    v = jnp.array([0.1, -0.1, 0.05, 0.0]).reshape(2, 2, 1)
    proj = projection("l2", (0.0, 1.0))
    np.testing.assert_array_equal(proj(x, v, jnp.float32(1.0)), v)  # inside: unchanged
    # ball only active (box far away): projection is the radial rescale
    big = jnp.array([0.3, -0.4, 0.0, 0.0]).reshape(2, 2, 1)
    np.testing.assert_allclose(proj(x, big, jnp.float32(0.1)), big * 0.2, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_satisfies_both_constraints(norm):
    keys = jax.random.split(jax.random.key(0), 200)

    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        x = jax.random.uniform(k1, (4, 4, 1))
        x = jnp.where(x > 0.8, 1.0, jnp.where(x < 0.2, 0.0, x))  # pixels on the box faces too
        eps = jax.random.uniform(k2, (), minval=0.0, maxval=2.0)
        v = 3.0 * jax.random.normal(k3, x.shape)
        d = projection(norm, (0.0, 1.0))(x, v, eps)
        return norm_of(d, norm) / jnp.maximum(eps, 1e-12), jnp.min(x + d), jnp.max(x + d)

    ratio, lo, hi = jax.jit(jax.vmap(one))(keys)
    assert float(jnp.max(ratio)) <= 1.0 + 1e-5
    assert float(jnp.min(lo)) >= -1e-6 and float(jnp.max(hi)) <= 1.0 + 1e-6


def test_linf_projection_is_the_clip_formula():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 3, 2)).astype(np.float32)
    v = rng.normal(0, 0.5, x.shape).astype(np.float32)
    got = projection("linf", (0.0, 1.0))(jnp.asarray(x), jnp.asarray(v), jnp.float32(0.2))
    want = np.minimum(np.maximum(v, np.maximum(-0.2, -x)), np.minimum(0.2, 1 - x))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_rescale_constraint_has_norm_exactly_eps(norm):
    v = jax.random.normal(jax.random.key(3), (4, 4, 3))
    x = jnp.zeros((4, 4, 3))
    d = projection(norm, (0.0, 1.0), "rescale")(x, v, jnp.float32(0.3))
    np.testing.assert_allclose(float(norm_of(d, norm)), 0.3, rtol=1e-6)
    assert float(jnp.min(d)) < 0.0  # no pixel clipping: negative pixels x + d allowed


def test_random_start_linf_uniform_in_box_and_ball():
    x = jnp.full((10, 10, 1), 0.5)
    d = jax.vmap(lambda k: random_start("linf")(k, x, jnp.float32(0.2)))(
        jax.random.split(jax.random.key(0), 50)
    )
    assert float(jnp.max(jnp.abs(d))) <= 0.2
    # U[-0.2, 0.2]: mean 0, variance 0.04/3
    assert abs(float(jnp.mean(d))) < 0.005
    np.testing.assert_allclose(float(jnp.var(d)), 0.04 / 3, rtol=0.05)


def test_random_start_l2_uniform_in_ball():
    # D = 2: P(‖δ‖ <= eps/2) = (1/2)^2 for uniform-in-ball; box far away (x = 0.5, eps = 0.1)
    x = jnp.full((1, 2, 1), 0.5)
    d = jax.vmap(lambda k: random_start("l2")(k, x, jnp.float32(0.1)))(
        jax.random.split(jax.random.key(1), 4000)
    )
    r = jax.vmap(lambda v: norm_of(v, "l2"))(d)
    assert float(jnp.max(r)) <= 0.1 + 1e-7
    np.testing.assert_allclose(float(jnp.mean(r <= 0.05)), 0.25, atol=0.03)


def test_random_start_respects_pixel_box():
    x = jnp.concatenate([jnp.zeros((2, 4, 1)), jnp.ones((2, 4, 1))])
    for norm in ("linf", "l2"):
        d = random_start(norm)(jax.random.key(2), x, jnp.float32(0.5))
        assert float(jnp.min(x + d)) >= 0.0 and float(jnp.max(x + d)) <= 1.0
        assert float(norm_of(d, norm)) > 0.0


def test_sign_rule_directions():
    # Descent convention: the update for the loss gradient g is −α·sign(g) (L∞), −α·g/‖g‖ (L2).
    g = jnp.array([[3.0, -0.5], [0.0, 4.0]])
    u, _ = sign_rule("linf").update(g, None, step_size=0.5)
    np.testing.assert_array_equal(u, -0.5 * jnp.sign(g))
    u2, _ = sign_rule("l2").update(g, None, step_size=2.0)
    np.testing.assert_allclose(np.asarray(u2), -2.0 * np.asarray(g) / np.linalg.norm(g), rtol=1e-6)
    u0, _ = sign_rule("l2").update(jnp.zeros_like(g), None, step_size=1.0)
    assert np.all(np.isfinite(np.asarray(u0))) and float(jnp.max(jnp.abs(u0))) == 0.0


def test_adam_rule_is_optax_adam_scaled_by_the_step():
    import optax

    g = jnp.array([0.3, -2.0, 5.0])
    rule, ref = adam_rule(), optax.scale_by_adam()
    s, sr = rule.init(g), ref.init(g)
    for t in range(3):
        u, s = rule.update(g * (t + 1), s, step_size=0.1)
        d, sr = ref.update(g * (t + 1), sr)
        np.testing.assert_allclose(np.asarray(u), -0.1 * np.asarray(d), rtol=1e-6)


def test_safe_norm_value_and_gradient_at_zero():
    assert float(safe_norm(jnp.array([3.0, 4.0]))) == pytest.approx(5.0, rel=1e-6)
    g = jax.grad(safe_norm)(jnp.zeros(5))
    np.testing.assert_array_equal(np.asarray(g), np.zeros(5))
