"""Grid trainer on the β-ELBO: grid == separate runs, known first loss, batches, no recompiles,
named-grid validation.

Most tests share one model (conftest's tiny MLP on 8x8x1), 16 images, batch 4 and one loss
object, so the jitted grid step compiles once per grid size K.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax import objectives
from vaerob_jax.objectives import BatchLoss, beta_vae_loss
from vaerob_jax.train import (
    TrainConfig,
    batch_indices,
    make_grid,
    resolve_model_axis,
    train_grid,
)
from vaerob_jax.train.grid import replacement_indices
from vaerob_jax.train.steps import init_program, step_settings

CFG = TrainConfig(steps=5, batch_size=4, learning_rate=1e-3, log_every=1, checkpoint_every=0)


@pytest.fixture(scope="module")
def elbo(tiny_model):
    return objectives.beta_elbo(tiny_model)


def _leaves_close(a, b, **tol):
    return all(np.allclose(x, y, **tol) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _take(params, k):
    return jax.tree.map(lambda a: a[k], params)


@pytest.mark.slow
def test_grid_equals_each_model_trained_alone(tiny_model, tiny_images, elbo):
    key = jax.random.key(7)
    grid = make_grid({"beta": [0.5, 2.0, 8.0], "tau": [0.1], "seed": [3]})
    res = train_grid(tiny_model, elbo, tiny_images, grid, CFG, key, progress=False)
    assert res.num_models == 3 and jax.tree.leaves(res.params)[0].shape[0] == 3
    assert res.rows()[1] == {"model": 1, "beta": 2.0, "tau": 0.1, "seed": 3}
    for k, beta in enumerate(grid["beta"]):
        alone = train_grid(
            tiny_model,
            elbo,
            tiny_images,
            {"beta": [beta], "tau": [0.1], "seed": [3]},
            CFG,
            key,
            progress=False,
        )
        assert _leaves_close(_take(res.params, k), _take(alone.params, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.history["loss"][:, k], alone.history["loss"][:, 0], 1e-5)
    # β matters: the three models did not receive the same updates.
    assert not _leaves_close(_take(res.params, 0), _take(res.params, 2), rtol=0, atol=1e-7)


@pytest.mark.parametrize("sampling", ["epoch", "replacement"])
def test_first_logged_loss_matches_direct_computation(tiny_model, tiny_images, elbo, sampling):
    """Known answer: step 0's loss is the batch mean of beta_vae_loss at the initial params,
    on the batch and noise keys the documented key derivation gives."""
    key, beta, seed = jax.random.key(11), 2.0, 5
    cfg = dataclasses.replace(CFG, steps=1, batch_sampling=sampling)
    res = train_grid(
        tiny_model, elbo, tiny_images, {"beta": [beta], "seed": [seed]}, cfg, key, progress=False
    )
    model_key = jax.random.fold_in(key, seed)
    # The cached jitted init the trainer itself used (an eager Flax init is slow on CPU).
    params0 = init_program(tiny_model, step_settings(cfg))(jax.random.fold_in(model_key, 0))[0]
    sampler = batch_indices if sampling == "epoch" else replacement_indices
    idx = sampler(jax.random.fold_in(model_key, 1), 0, tiny_images.shape[0], 4)
    noise = jax.random.split(jax.random.fold_in(jax.random.fold_in(model_key, 2), 0), 4)
    losses, aux = jax.jit(jax.vmap(lambda x, k: beta_vae_loss(tiny_model, params0, x, k, beta)))(
        tiny_images[np.asarray(idx)], noise
    )
    np.testing.assert_allclose(res.history["loss"][0, 0], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(res.history["kl"][0, 0], np.mean(aux["kl"]), rtol=1e-5)
    assert set(res.history) == {"step", "loss", "recon", "kl"}


def test_batches_cover_each_epoch_exactly_once():
    key, n, b = jax.random.key(3), 18, 4  # 4 batches per epoch, 2 examples skipped
    epoch0 = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(4)])
    epoch1 = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(4, 8)])
    for ep in (epoch0, epoch1):
        assert len(np.unique(ep)) == 16 and ep.min() >= 0 and ep.max() < n
    assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch
    np.testing.assert_array_equal(batch_indices(key, 5, n, b), epoch1[4:8])  # pure in (key, step)


def test_replacement_sampling_is_uniform():
    """Every index is equally likely: chi-square on 4000 draws of N = 5 examples."""
    key = jax.random.key(0)
    draws = np.concatenate([np.asarray(replacement_indices(key, t, 5, 8)) for t in range(500)])
    counts = np.bincount(draws, minlength=5)
    chi2 = float(np.sum((counts - 800.0) ** 2 / 800.0))
    assert draws.min() >= 0 and draws.max() < 5 and chi2 < 18.5  # p ≈ 0.001 at 4 dof


def test_loss_decreases_on_two_prototype_images(tiny_model, elbo):
    """16 near-binary images of two patterns: the β-VAE must learn them quickly."""
    top = np.zeros((8, 8, 1), np.float32)
    top[:4] = 1.0
    images = np.stack([top, 1.0 - top] * 8)
    images = np.clip(images + np.random.default_rng(0).uniform(-0.05, 0.05, images.shape), 0, 1)
    cfg = dataclasses.replace(CFG, steps=150)
    res = train_grid(
        tiny_model,
        elbo,
        images.astype(np.float32),
        {"beta": [1.0]},
        cfg,
        jax.random.key(0),
        progress=False,
    )
    loss = res.history["loss"][:, 0]
    assert loss.shape == (150,)
    # Initial decoder outputs ≈ 0.5: Bernoulli loss ≈ 64 log 2 ≈ 44.4 nats per image.
    assert abs(loss[:5].mean() - 64 * np.log(2)) < 3.0
    assert loss[-10:].mean() < 0.6 * loss[:10].mean()


def test_new_grid_of_the_same_size_does_not_recompile(tiny_model, tiny_images, elbo):
    """New β, τ, seeds and learning rates are array arguments: one trace for all four grids."""
    chex.clear_trace_counter()
    counted = dataclasses.replace(elbo, fn=chex.assert_max_traces(elbo.fn, n=1))
    key, cfg = jax.random.key(1), dataclasses.replace(CFG, steps=2)
    first = train_grid(
        tiny_model, counted, tiny_images, {"beta": [1.0, 2.0, 3.0]}, cfg, key, progress=False
    )
    second = train_grid(
        tiny_model, counted, tiny_images, {"beta": [4.0, 9.0, 30.0]}, cfg, key, progress=False
    )
    third = train_grid(
        tiny_model,
        counted,
        tiny_images,
        make_grid({"beta": [1.0], "seed": [4], "tau": [0.0, 0.2, 0.5]}),
        cfg,
        key,
        progress=False,
    )
    fourth = train_grid(
        tiny_model,
        counted,
        tiny_images,
        make_grid({"beta": [1.0], "learning_rate": [1e-4, 1e-3, 1e-2]}),
        cfg,
        key,
        progress=False,
    )
    assert not np.allclose(first.history["loss"], second.history["loss"])
    np.testing.assert_array_equal(third.grid["tau"], [0.0, 0.2, 0.5])
    np.testing.assert_array_equal(fourth.grid["learning_rate"], [1e-4, 1e-3, 1e-2])
    # A larger learning rate moves the params further from their shared initialisation.
    params0 = init_program(tiny_model, step_settings(cfg))(
        jax.random.fold_in(jax.random.fold_in(key, 0), 0)
    )[0]
    leaves0 = jax.tree.leaves(params0)
    moved = [
        sum(
            float(np.sum((a[k] - a0) ** 2))
            for a, a0 in zip(jax.tree.leaves(fourth.params), leaves0)
        )
        for k in range(3)
    ]
    assert moved[0] < moved[1] < moved[2]


def test_learning_rate_axis_equals_config_learning_rate(tiny_model, tiny_images, elbo):
    key, cfg = jax.random.key(2), dataclasses.replace(CFG, steps=3)
    res = train_grid(
        tiny_model,
        elbo,
        tiny_images,
        make_grid({"beta": [1.0], "learning_rate": [1e-3, 1e-2]}),
        cfg,
        key,
        progress=False,
    )
    for k, lr in enumerate((1e-3, 1e-2)):
        alone = train_grid(
            tiny_model,
            elbo,
            tiny_images,
            {"beta": [1.0]},
            dataclasses.replace(cfg, learning_rate=lr),
            key,
            progress=False,
        )
        assert _leaves_close(_take(res.params, k), _take(alone.params, 0), rtol=1e-5, atol=1e-7)


def test_make_grid_order_and_size():
    g = make_grid({"beta": [1.0, 5.0], "tau": [0.0, 0.5], "seed": [0, 1, 2]})
    assert list(g) == ["beta", "tau", "seed"] and all(v.shape == (12,) for v in g.values())
    np.testing.assert_array_equal(g["beta"], [1.0] * 6 + [5.0] * 6)  # first axis outermost
    np.testing.assert_array_equal(g["seed"][:3], [0, 1, 2])  # last axis innermost
    assert g["seed"].dtype == np.int64 and g["beta"].dtype == np.float64
    assert len(set(zip(g["beta"], g["tau"], g["seed"]))) == 12
    assert make_grid({}) == {}


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({"beta": [1.0, np.nan]}, "finite"),
        ({"beta": []}, "non-empty"),
        ({"beta": [1.0, 1.0]}, "repeats values"),
        ({"seed": [0.5]}, "seed values must be ints"),
        ({"seed": [-1]}, r"seed values must lie in \[0, 2\*\*31\)"),
        ({"learning_rate": [0.0]}, "learning_rate values must be > 0"),
        ({"beta": ["a"]}, "must be numbers"),
        ({"step": [1.0]}, "'step' is reserved"),
    ],
)
def test_make_grid_rejects_bad_axes(axes, match):
    with pytest.raises(ValueError, match=match):
        make_grid(axes)


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"beta": [1.0, 2.0], "tau": [0.0, 0.1, 0.2]}, "equal lengths"),
        ({"beta": [1.0, 1.0], "seed": [0, 0]}, "models 0 and 1 of the grid are identical"),
        ({}, r"needs hyperparameters \['beta'\]"),
        ({"tau": [0.1]}, r"needs hyperparameters \['beta'\]"),
        ({"beta": [1.0], "lam": [0.5]}, r"grid names \['lam'\] are not hyperparameters"),
        ({"beta": [-1.0]}, "beta must be >= 0"),
        ({"beta": [1.0], "tau": [-0.1]}, "tau must be >= 0"),
    ],
)
def test_bad_grids_raise_before_training(tiny_model, tiny_images, elbo, grid, match):
    with pytest.raises(ValueError, match=match):
        train_grid(tiny_model, elbo, tiny_images, grid, CFG, jax.random.key(0), progress=False)


def test_bad_data_key_and_objects_raise_clear_errors(tiny_model, tiny_images, elbo):
    key, grid = jax.random.key(0), {"beta": [1.0]}
    cases = [
        (tiny_images, TrainConfig(batch_size=32), "batch_size 32 is larger than the number"),
        (jnp.zeros((16, 9, 9, 1)), CFG, r"per-image shape"),
        (tiny_images * 3.0, CFG, r"\[0, 1\]|outside"),
        ({"x": tiny_images, "group": np.zeros(15, np.int32)}, CFG, "share their leading axis"),
        ({"image": tiny_images}, CFG, r"reads batch entries \['x'\]"),
        ({"x": tiny_images, "w": np.full(16, np.nan)}, CFG, r"data\['w'\] contains NaN"),
    ]
    for data, cfg, match in cases:
        with pytest.raises(ValueError, match=match):
            train_grid(tiny_model, elbo, data, grid, cfg, key, progress=False)
    with pytest.raises(ValueError, match="one PRNG key"):
        train_grid(tiny_model, elbo, tiny_images, grid, CFG, jax.random.split(key, 2))
    with pytest.raises(TypeError, match="BatchLoss"):
        train_grid(tiny_model, elbo.fn, tiny_images, grid, CFG, key)
    with pytest.raises(TypeError, match=r"lacks \['init', 'spec'\]"):
        train_grid(object(), elbo, tiny_images, grid, CFG, key)


def test_nonfinite_loss_names_the_models(tiny_model, tiny_images, elbo):
    def fn(params, batch, key, hp):
        value, aux = elbo.fn(params, batch, key, hp)
        return jnp.where(hp["beta"] > 5.0, jnp.nan, value), aux

    nan_loss = BatchLoss(fn, "nan_above_5", ("beta",), elbo.defaults)
    with pytest.raises(FloatingPointError, match=r"models \[1\] \(model 1: beta=10, seed=0\)"):
        train_grid(
            tiny_model,
            nan_loss,
            tiny_images,
            {"beta": [1.0, 10.0]},
            CFG,
            jax.random.key(0),
            progress=False,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("optimizer", "rmsprop"),
        ("batch_sampling", "stratified"),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("model_axis", "pmap"),
    ],
)
def test_train_config_validates(field, value):
    changes = {field: value, **({"optimizer": "sgd"} if field == "momentum" else {})}
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**changes)
    with pytest.raises(ValueError, match="Adam's momentum is adam_b1"):
        TrainConfig(momentum=0.9)


@pytest.mark.slow
def test_kl_reduction_reference_mean_divides_beta(tiny_model, tiny_images):
    """'reference_mean' with β equals 'sum' with β / (batch · latent): same trajectory."""
    cfg = dataclasses.replace(CFG, steps=1)
    ref = objectives.beta_elbo(tiny_model, "reference_mean")
    a = train_grid(tiny_model, ref, tiny_images, {"beta": [64.0]}, cfg, jax.random.key(2))
    b = train_grid(
        tiny_model,
        objectives.beta_elbo(tiny_model),
        tiny_images,
        {"beta": [64.0 / 16.0]},
        cfg,
        jax.random.key(2),
    )
    np.testing.assert_allclose(a.history["loss"][0], b.history["loss"][0], rtol=1e-5)
    assert objectives.beta_elbo(tiny_model) is objectives.beta_elbo(tiny_model, "sum")


@pytest.mark.slow
@pytest.mark.parametrize("axis", ["sequential", "map"])
def test_model_axes_equal_vmap(tiny_model, tiny_images, elbo, axis):
    """One single-model program per model, or lax.map inside one program, gives the vmapped
    grid's results."""
    key, grid = jax.random.key(5), {"beta": [1.0, 2.0, 3.0]}
    cfg = dataclasses.replace(CFG, steps=3, model_axis="vmap")
    a = train_grid(tiny_model, elbo, tiny_images, grid, cfg, key, progress=False)
    other = dataclasses.replace(cfg, model_axis=axis)
    b = train_grid(tiny_model, elbo, tiny_images, grid, other, key, progress=False)
    assert _leaves_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_auto_model_axis_is_sequential_on_cpu():
    assert resolve_model_axis("auto") == (
        "sequential" if jax.default_backend() == "cpu" else "vmap"
    )
    assert resolve_model_axis("map") == "map"
