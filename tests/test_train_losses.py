"""The grid trainer with a batch-level loss and an inner FGSM step, against hand-written loops.

The toy problem: a linear regressor on 3 features; the loss needs the whole batch (mean
squared residual plus λ times the batch variance of the residuals, which no per-example vmap
can express) and attacks its inputs first with one FGSM step of radius ε
(``objectives.linf_ascent``, 003 Eq. 6). The reference loops below re-derive the documented
keys, batches and optimiser by hand (optax.adam / optax.sgd), one model at a time.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaerob_jax.objectives import BatchLoss, linf_ascent
from vaerob_jax.train import TrainConfig, make_grid, train_grid

N, B, STEPS = 12, 4, 4


@dataclasses.dataclass(frozen=True)
class Linear:
    """y ≈ x·w + b: the smallest model with init(key) and spec()."""

    dim: int = 3

    def init(self, key):
        return {"w": 0.5 * jax.random.normal(key, (self.dim,)), "b": jnp.zeros(())}

    def spec(self):
        return {"kind": "linear", "dim": self.dim}


def _toy_fn(params, batch, key, hp):
    x, y = batch["x"], batch["y"]

    def residuals(xs):
        return xs @ params["w"] + params["b"] - y

    eps = hp["eps"]
    x_adv = linf_ascent(lambda xa: jnp.sum(residuals(xa) ** 2), x, eps, key, step_size=1.25 * eps)
    r = residuals(x_adv)
    var = jnp.var(r)  # a batch statistic
    return jnp.mean(r**2) + hp["lam"] * var, {"var": var, "t": hp["step"].astype(jnp.float32)}


TOY = BatchLoss(_toy_fn, "toy_adv_var", required=("lam", "eps"), batch_keys=("x", "y"))
MODEL = Linear()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (N, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=N)).astype(np.float32)
    return {"x": x, "y": y}


def _hand_loop(data, hp, seed, key, optimizer, steps=STEPS):
    """One model, written out: keys fold_in(key, seed) -> 0 init / 1 data / 2 loss."""
    m = jax.random.fold_in(key, seed)
    params = MODEL.init(jax.random.fold_in(m, 0))
    state = optimizer.init(params)
    data_key, loss_key = jax.random.fold_in(m, 1), jax.random.fold_in(m, 2)
    per_epoch = N // B
    grad = jax.jit(jax.grad(lambda p, b, k, h: _toy_fn(p, b, k, h)[0]))
    for t in range(steps):
        perm = jax.random.permutation(jax.random.fold_in(data_key, t // per_epoch), N)
        idx = np.asarray(perm)[(t % per_epoch) * B : (t % per_epoch + 1) * B]
        batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
        hp_t = {k: jnp.float32(v) for k, v in hp.items()} | {"step": jnp.int32(t)}
        g = grad(params, batch, jax.random.fold_in(loss_key, t), hp_t)
        updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


def test_batch_loss_with_inner_fgsm_equals_hand_written_loop(data):
    key = jax.random.key(3)
    cfg = TrainConfig(steps=STEPS, batch_size=B, learning_rate=0.05, log_every=1)
    grid = make_grid({"lam": [0.0, 1.0], "eps": [0.0, 0.1], "seed": [1]})
    res = train_grid(MODEL, TOY, data, grid, cfg, key, progress=False)
    assert res.num_models == 4 and set(res.history) == {"step", "loss", "var", "t"}
    np.testing.assert_array_equal(res.history["t"], np.tile(np.arange(STEPS), (4, 1)).T)
    finals = []
    for k in range(4):
        hp = {"lam": grid["lam"][k], "eps": grid["eps"][k]}
        hand = _hand_loop(data, hp, 1, key, optax.adam(0.05))
        _close(jax.tree.map(lambda a, k=k: a[k], res.params), hand)
        finals.append(np.asarray(res.params["w"][k]))
    # Both the penalty and the inner attack change the trajectory.
    assert not np.allclose(finals[0], finals[2]) and not np.allclose(finals[0], finals[1])


def test_sgd_momentum_weight_decay_and_learning_rate_axis_match_optax(data):
    key = jax.random.key(4)
    cfg = TrainConfig(
        steps=STEPS,
        batch_size=B,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=0.01,
        log_every=STEPS,
    )
    grid = make_grid({"lam": [0.5], "eps": [0.05], "learning_rate": [0.01, 0.05]})
    res = train_grid(MODEL, TOY, data, grid, cfg, key, progress=False)
    for k, lr in enumerate((0.01, 0.05)):
        reference = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(lr, momentum=0.9))
        hand = _hand_loop(data, {"lam": 0.5, "eps": 0.05}, 0, key, reference)
        _close(jax.tree.map(lambda a, k=k: a[k], res.params), hand)
    plain = dataclasses.replace(cfg, momentum=0.0, weight_decay=0.0)
    res_plain = train_grid(MODEL, TOY, data, grid, plain, key, progress=False)
    hand = _hand_loop(data, {"lam": 0.5, "eps": 0.05}, 0, key, optax.sgd(0.05))
    _close(jax.tree.map(lambda a: a[1], res_plain.params), hand)


def test_aux_metrics_must_be_scalars(data):
    def fn(params, batch, key, hp):
        r = batch["x"] @ params["w"] - batch["y"]
        return jnp.mean(r**2), {"residuals": r}

    bad = BatchLoss(fn, "vector_aux", batch_keys=("x", "y"))
    cfg = TrainConfig(steps=1, batch_size=B)
    with pytest.raises(ValueError, match="aux metric 'residuals' of shape"):
        train_grid(MODEL, bad, data, {}, cfg, jax.random.key(0), progress=False)
