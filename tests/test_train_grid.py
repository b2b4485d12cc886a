"""Grid training: vmapped grid == separate runs, known first loss, batches, no recompiles.

All tests share one model (conftest's tiny MLP on 8x8x1), 16 images, batch 4 and lr 1e-3, so the
jitted grid step compiles once per grid size K (K=1 and K=3 here).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import make_vae
from vaerob_jax.objectives import beta_vae_loss
from vaerob_jax.train import (
    TrainConfig,
    batch_indices,
    make_grid,
    resolve_model_axis,
    train_grid,
    train_step_traces,
)
from vaerob_jax.train.grid import _init_one_fn, _step_settings

CFG = TrainConfig(steps=5, batch_size=4, learning_rate=1e-3, log_every=1, checkpoint_every=0)


def _leaves_close(a, b, **tol):
    return all(np.allclose(x, y, **tol) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _take(params, k):
    return jax.tree.map(lambda a: a[k], params)


@pytest.mark.slow
def test_grid_equals_each_model_trained_alone(tiny_model, tiny_images):
    key = jax.random.key(7)
    betas, tau, seed = [0.5, 2.0, 8.0], 0.1, 3
    grid = train_grid(
        tiny_model, tiny_images, betas, CFG, key, seeds=[seed], sigma_offsets=[tau], progress=False
    )
    assert grid.num_models == 3
    assert jax.tree.leaves(grid.params)[0].shape[0] == 3
    for k, beta in enumerate(betas):
        alone = train_grid(
            tiny_model,
            tiny_images,
            [beta],
            CFG,
            key,
            seeds=[seed],
            sigma_offsets=[tau],
            progress=False,
        )
        assert _leaves_close(_take(grid.params, k), _take(alone.params, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid.history["loss"][:, k], alone.history["loss"][:, 0], 1e-5)
    # β matters: the three models did not receive the same updates.
    assert not _leaves_close(_take(grid.params, 0), _take(grid.params, 2), rtol=0, atol=1e-7)


def test_first_logged_loss_matches_direct_computation(tiny_model, tiny_images):
    """Known answer: step 0's loss is the batch mean of beta_vae_loss at the initial params,
    on the batch and noise keys the documented key derivation gives."""
    key, beta, tau, seed = jax.random.key(11), 2.0, 0.0, 5
    cfg = TrainConfig(steps=1, batch_size=4, learning_rate=1e-3, log_every=1, checkpoint_every=0)
    res = train_grid(tiny_model, tiny_images, [beta], cfg, key, seeds=[seed], progress=False)
    model_key = jax.random.fold_in(key, seed)
    # The cached jitted init the trainer itself used (an eager Flax init is slow on CPU).
    params0 = _init_one_fn(tiny_model, _step_settings(cfg))(jax.random.fold_in(model_key, 0))[0]
    idx = batch_indices(jax.random.fold_in(model_key, 1), 0, tiny_images.shape[0], 4)
    noise = jax.random.split(jax.random.fold_in(jax.random.fold_in(model_key, 2), 0), 4)
    losses, aux = jax.jit(
        jax.vmap(lambda x, k: beta_vae_loss(tiny_model, params0, x, k, beta, tau=tau))
    )(tiny_images[np.asarray(idx)], noise)
    np.testing.assert_allclose(res.history["loss"][0, 0], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(res.history["kl"][0, 0], np.mean(aux["kl"]), rtol=1e-5)


def test_batches_cover_each_epoch_exactly_once():
    key, n, b = jax.random.key(3), 18, 4  # 4 batches per epoch, 2 examples skipped
    epoch0 = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(4)])
    epoch1 = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(4, 8)])
    for ep in (epoch0, epoch1):
        assert len(np.unique(ep)) == 16 and ep.min() >= 0 and ep.max() < n
    assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch
    np.testing.assert_array_equal(batch_indices(key, 5, n, b), epoch1[4:8])  # pure in (key, step)


def test_loss_decreases_on_two_prototype_images(tiny_model):
    """16 near-binary images of two patterns: the β-VAE must learn them quickly."""
    top = np.zeros((8, 8, 1), np.float32)
    top[:4] = 1.0
    images = np.stack([top, 1.0 - top] * 8)
    images = np.clip(images + np.random.default_rng(0).uniform(-0.05, 0.05, images.shape), 0, 1)
    cfg = TrainConfig(steps=150, batch_size=4, learning_rate=1e-3, log_every=1, checkpoint_every=0)
    res = train_grid(
        tiny_model, images.astype(np.float32), [1.0], cfg, jax.random.key(0), progress=False
    )
    loss = res.history["loss"][:, 0]
    assert loss.shape == (150,)
    # Initial decoder outputs ≈ 0.5: Bernoulli loss ≈ 64 log 2 ≈ 44.4 nats per image.
    assert abs(loss[:5].mean() - 64 * np.log(2)) < 3.0
    assert loss[-10:].mean() < 0.6 * loss[:10].mean()


def test_new_betas_taus_and_seeds_do_not_recompile(tiny_model, tiny_images):
    key = jax.random.key(1)
    cfg = TrainConfig(steps=2, batch_size=4, learning_rate=1e-3, log_every=1, checkpoint_every=0)
    first = train_grid(tiny_model, tiny_images, [1.0, 2.0, 3.0], cfg, key, progress=False)
    traces = train_step_traces()
    second = train_grid(tiny_model, tiny_images, [4.0, 9.0, 30.0], cfg, key, progress=False)
    third = train_grid(
        tiny_model,
        tiny_images,
        [1.0],
        cfg,
        key,
        seeds=[4],
        sigma_offsets=[0.0, 0.2, 0.5],
        progress=False,
    )
    assert train_step_traces() == traces
    assert not np.allclose(first.history["loss"], second.history["loss"])
    np.testing.assert_array_equal(third.sigma_offsets, [0.0, 0.2, 0.5])


def test_make_grid_order_and_size():
    b, t, s = make_grid([1.0, 5.0], [0.0, 0.5], [0, 1, 2])
    assert b.shape == t.shape == s.shape == (12,)
    np.testing.assert_array_equal(b, [1.0] * 6 + [5.0] * 6)  # β outermost
    np.testing.assert_array_equal(s[:3], [0, 1, 2])  # seed innermost
    assert len(set(zip(b, t, s))) == 12


@pytest.mark.parametrize(
    ("betas", "match"),
    [
        ([1.0, -1.0], "betas must be finite and >= 0"),
        ([np.nan], "betas must be finite"),
        ([], "non-empty"),
        ([1.0, 1.0], "duplicates"),
    ],
)
def test_bad_betas_raise(tiny_model, tiny_images, betas, match):
    with pytest.raises(ValueError, match=match):
        train_grid(tiny_model, tiny_images, betas, CFG, jax.random.key(0), progress=False)


def test_bad_inputs_raise_clear_errors(tiny_model, tiny_images):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size 32 is larger than the number of images 16"):
        train_grid(tiny_model, tiny_images, [1.0], TrainConfig(batch_size=32), key)
    with pytest.raises(ValueError, match=r"per-image shape"):
        train_grid(tiny_model, jnp.zeros((16, 9, 9, 1)), [1.0], CFG, key)
    with pytest.raises(ValueError, match=r"\[0, 1\]|outside"):
        train_grid(tiny_model, tiny_images * 3.0, [1.0], CFG, key)
    with pytest.raises(ValueError, match="sigma_offsets"):
        train_grid(tiny_model, tiny_images, [1.0], CFG, key, sigma_offsets=[-0.1])
    with pytest.raises(ValueError, match="seeds"):
        train_grid(tiny_model, tiny_images, [1.0], CFG, key, seeds=[0.5])
    with pytest.raises(ValueError, match="one PRNG key"):
        train_grid(tiny_model, tiny_images, [1.0], CFG, jax.random.split(key, 2))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("kl_reduction", "mean"),
        ("model_axis", "pmap"),
    ],
)
def test_train_config_validates(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


@pytest.mark.slow
def test_kl_reduction_reference_mean_divides_beta():
    """'reference_mean' with β equals 'sum' with β / (batch · latent): same trajectory."""
    model = make_vae("mlp", (8, 8, 1), latent_dim=4, hidden=(32, 16))
    images = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    ref = TrainConfig(steps=1, batch_size=4, learning_rate=1e-3, kl_reduction="reference_mean")
    a = train_grid(model, images, [64.0], ref, jax.random.key(2), progress=False)
    cfg = TrainConfig(steps=1, batch_size=4, learning_rate=1e-3)
    b = train_grid(model, images, [64.0 / 16.0], cfg, jax.random.key(2), progress=False)
    np.testing.assert_allclose(a.history["loss"][0], b.history["loss"][0], rtol=1e-5)


@pytest.mark.slow
def test_model_axis_sequential_equals_vmap_and_does_not_retrace(tiny_model, tiny_images):
    """One single-model program called per model gives the vmapped grid's results, and it is
    traced once for all models (the model index is an array argument)."""
    key, betas = jax.random.key(5), [1.0, 2.0, 3.0]
    cfg = TrainConfig(steps=3, batch_size=4, learning_rate=1e-3, log_every=1, model_axis="vmap")
    sequential = dataclasses.replace(cfg, model_axis="sequential")
    a = train_grid(tiny_model, tiny_images, betas, cfg, key, progress=False)
    before = train_step_traces()
    b = train_grid(tiny_model, tiny_images, betas, sequential, key, progress=False)
    assert train_step_traces() - before <= 1
    assert _leaves_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_auto_model_axis_is_sequential_on_cpu():
    assert resolve_model_axis("auto") == (
        "sequential" if jax.default_backend() == "cpu" else "vmap"
    )
    assert resolve_model_axis("map") == "map"


@pytest.mark.slow
def test_model_axis_map_equals_vmap(tiny_model, tiny_images):
    """lax.map over the models inside the program gives the vmapped grid's results."""
    key, betas = jax.random.key(4), [1.0, 2.0, 3.0]
    cfg = TrainConfig(steps=3, batch_size=4, learning_rate=1e-3, log_every=1)
    mapped = dataclasses.replace(cfg, model_axis="map")
    a = train_grid(tiny_model, tiny_images, betas, cfg, key, progress=False)
    b = train_grid(tiny_model, tiny_images, betas, mapped, key, progress=False)
    assert _leaves_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)
