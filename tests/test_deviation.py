"""Known-answer tests for the adversarial deviation Δc (Eq. 5 of 000) and companions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.robustness.deviation import (
    _evaluate_batch,
    adversarial_deviation,
    evaluate_attacks,
    latent_shift,
    perturbed_input,
    reconstruction_loss,
)


@pytest.fixture(scope="module")
def deltas(tiny_images):
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.uniform(-0.1, 0.1, size=tiny_images.shape).astype(np.float32))


def test_zero_perturbation_gives_zero_deviation(tiny_model, tiny_params, tiny_images):
    x = tiny_images[0]
    zero = jnp.zeros_like(x)
    assert float(adversarial_deviation(tiny_model, tiny_params, x, zero)) == 0.0
    assert float(adversarial_deviation(tiny_model, tiny_params, x, zero, "mean_abs")) == 0.0
    assert float(latent_shift(tiny_model, tiny_params, x, zero)) == 0.0


def test_deviation_matches_numpy(tiny_model, tiny_params, tiny_images, deltas):
    x, d = tiny_images[2], deltas[2]
    rec_clean = np.asarray(tiny_model.reconstruct(tiny_params, x), np.float64)
    rec_adv = np.asarray(tiny_model.reconstruct(tiny_params, x + d), np.float64)
    want_l2 = np.sqrt(np.sum((rec_adv - rec_clean) ** 2))
    want_abs = np.mean(np.abs(rec_adv - rec_clean))
    got_l2 = adversarial_deviation(tiny_model, tiny_params, x, d)
    got_abs = adversarial_deviation(tiny_model, tiny_params, x, d, kind="mean_abs")
    assert want_l2 > 0
    np.testing.assert_allclose(float(got_l2), want_l2, rtol=1e-5)
    np.testing.assert_allclose(float(got_abs), want_abs, rtol=1e-5)
    mu0 = np.asarray(tiny_model.embed(tiny_params, x), np.float64)
    mu1 = np.asarray(tiny_model.embed(tiny_params, x + d), np.float64)
    np.testing.assert_allclose(
        float(latent_shift(tiny_model, tiny_params, x, d)), np.linalg.norm(mu1 - mu0), rtol=1e-5
    )


def test_stochastic_deviation_uses_two_latent_samples(tiny_model, tiny_params, tiny_images):
    x = tiny_images[3]
    zero = jnp.zeros_like(x)
    key = jax.random.key(7)
    got = adversarial_deviation(tiny_model, tiny_params, x, zero, "mean_abs", key=key)
    # Independent re-computation: two reparameterised samples decoded, mean |difference|.
    mu, logvar = tiny_model.posterior(tiny_params, x)
    k1, k2 = jax.random.split(key)
    z1 = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k1, mu.shape)
    z2 = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k2, mu.shape)
    want = np.mean(
        np.abs(np.asarray(tiny_model.decode(tiny_params, z2) - tiny_model.decode(tiny_params, z1)))
    )
    assert float(got) > 0.0  # sampling noise alone gives Δc > 0 at δ = 0
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    again = adversarial_deviation(tiny_model, tiny_params, x, zero, "mean_abs", key=key)
    assert float(again) == float(got)


def test_reconstruction_loss_matches_numpy(tiny_model, tiny_params, tiny_images):
    x = tiny_images[4]
    p = np.asarray(tiny_model.reconstruct(tiny_params, x), np.float64)
    xn = np.asarray(x, np.float64)
    want_nll = -np.sum(xn * np.log(p) + (1 - xn) * np.log(1 - p))
    want_mse = np.mean((p - xn) ** 2)
    np.testing.assert_allclose(
        float(reconstruction_loss(tiny_model, tiny_params, x)), want_nll, rtol=1e-4
    )
    np.testing.assert_allclose(
        float(reconstruction_loss(tiny_model, tiny_params, x, kind="mse")), want_mse, rtol=1e-4
    )


def test_minmax_normalisation_is_affine_invariant(tiny_model, tiny_params, tiny_images):
    x = tiny_images[5]
    xn = perturbed_input(x, jnp.zeros_like(x), "minmax")
    assert float(xn.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(xn.max()) == pytest.approx(1.0, abs=1e-6)
    # x + δ = 3x − 0.5 is an affine map of x: after min–max normalisation it equals xn.
    delta = 2.0 * x - 0.5
    np.testing.assert_allclose(perturbed_input(x, delta, "minmax"), xn, atol=1e-5)
    dc = adversarial_deviation(tiny_model, tiny_params, xn, 2.0 * xn - 0.5, normalize="minmax")
    assert float(dc) == pytest.approx(0.0, abs=1e-5)
    const = jnp.full_like(x, 0.3)
    np.testing.assert_allclose(perturbed_input(const, jnp.zeros_like(x), "minmax"), const)


def test_evaluate_attacks_matches_per_example_and_keeps_leading_axes(
    tiny_model, tiny_params, tiny_images, deltas
):
    xs = tiny_images[:5]
    grid = jnp.stack([deltas[:5], 0.5 * deltas[:5], jnp.zeros_like(deltas[:5])])  # (E=3, N=5)
    out = evaluate_attacks(tiny_model, tiny_params, xs, grid)
    assert set(out) == {"delta_c", "recon_loss", "latent_shift"}
    for v in out.values():
        assert v.shape == (3, 5)
    for e, i in ((0, 1), (1, 4), (0, 3)):
        dc = adversarial_deviation(tiny_model, tiny_params, xs[i], grid[e, i])
        ls = latent_shift(tiny_model, tiny_params, xs[i], grid[e, i])
        np.testing.assert_allclose(out["delta_c"][e, i], dc, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out["latent_shift"][e, i], ls, rtol=1e-5, atol=1e-7)
    rl = [float(reconstruction_loss(tiny_model, tiny_params, xs[i])) for i in (0, 2)]
    np.testing.assert_allclose(out["recon_loss"][:, [0, 2]], np.tile(rl, (3, 1)), rtol=1e-5)
    np.testing.assert_array_equal(out["delta_c"][2], 0.0)
    # Halving δ reduces Δc for this smooth, nearly linear tiny model.
    assert np.all(np.asarray(out["delta_c"][1]) < np.asarray(out["delta_c"][0]))


def test_evaluate_attacks_compiles_once_and_stochastic_keys(
    tiny_model, tiny_params, tiny_images, deltas
):
    xs = tiny_images[:4]
    before = _evaluate_batch._cache_size()
    evaluate_attacks(tiny_model, tiny_params, xs, deltas[:4], kind="mean_abs")
    evaluate_attacks(tiny_model, tiny_params, xs, 0.3 * deltas[4:8], kind="mean_abs")
    assert _evaluate_batch._cache_size() == before + 1
    key = jax.random.key(3)
    a = evaluate_attacks(tiny_model, tiny_params, xs, jnp.zeros_like(xs), kind="mean_abs", key=key)
    b = evaluate_attacks(tiny_model, tiny_params, xs, jnp.zeros_like(xs), kind="mean_abs", key=key)
    np.testing.assert_array_equal(a["delta_c"], b["delta_c"])
    assert np.all(np.asarray(a["delta_c"]) > 0)
    # Each example gets its own latent noise: no two examples share a key.
    assert len(np.unique(np.asarray(a["delta_c"]))) == 4


def test_metrics_vmap_over_a_stack_of_models(tiny_model, tiny_images, deltas):
    stack = [tiny_model.init(jax.random.key(s)) for s in (1, 2)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *stack)
    x, d = tiny_images[0], deltas[0]
    got = jax.jit(jax.vmap(lambda p: adversarial_deviation(tiny_model, p, x, d)))(stacked)
    for k in range(2):
        np.testing.assert_allclose(
            got[k], adversarial_deviation(tiny_model, stack[k], x, d), rtol=1e-6
        )


def test_bad_inputs_raise(tiny_model, tiny_params, tiny_images, deltas):
    x = tiny_images[0]
    with pytest.raises(ValueError, match="kind"):
        adversarial_deviation(tiny_model, tiny_params, x, deltas[0], kind="l1")
    with pytest.raises(ValueError, match="ONE example"):
        adversarial_deviation(tiny_model, tiny_params, tiny_images[:2], deltas[:2])
    with pytest.raises(ValueError, match="delta"):
        latent_shift(tiny_model, tiny_params, x, deltas[0][:4])
    with pytest.raises(ValueError, match="normalize"):
        perturbed_input(x, deltas[0], "zscore")
    with pytest.raises(ValueError, match="recon_kind"):
        evaluate_attacks(tiny_model, tiny_params, tiny_images, deltas, recon_kind="l2")
    with pytest.raises(ValueError, match="deltas"):
        evaluate_attacks(tiny_model, tiny_params, tiny_images, deltas[:3])
    with pytest.raises(ValueError, match="xs"):
        evaluate_attacks(tiny_model, tiny_params, tiny_images[0], deltas[0])
