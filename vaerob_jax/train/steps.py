"""The compiled programs of the grid trainer: optimiser, initialisation and the grid step.

The step is written for one model and one batch: draw the batch indices from the model's
data key, take the batch from every data entry, evaluate the batch-level loss and its gradient
at this step's loss key, update. It is then lifted over the stack of K models (params with a
leading axis K) and ``jax.jit``-ed once per (model, loss, shared settings, shapes): the loss's
hyperparameters and the learning rates are array arguments, so a new grid of the same size
reuses the compiled program.

The learning rate is applied outside the optax transformation (``scale_by_adam`` / ``trace``
give the update direction; the step multiplies it by ``-lr`` from the model's grid entry), so
a learning-rate grid axis never recompiles; for Adam this is exactly ``optax.adam``'s
``scale_by_adam`` followed by ``scale_by_learning_rate``.

How a step runs the K models is chosen in one place, :func:`resolve_model_axis`: vmapping a
conv over stacked kernels yields a grouped convolution, which XLA's CPU backend runs slower
than K plain ones (K=4 burgess64 at 64x64: 'vmap' 0.70x of K separate programs), so on CPU
the default ('auto') calls one compiled single-model step K times from Python
('sequential'); on accelerators it vmaps. 'map' (``lax.map`` inside one program) is ~5x
slower on that CPU and kept for comparison. All give the same results.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaerob_jax.sweeps.parallel import AXIS
from vaerob_jax.train.config import TrainConfig
from vaerob_jax.train.grid import SAMPLERS, STEP

__all__ = ["StepProgram", "init_stack", "make_transform", "resolve_model_axis", "step_program"]


def make_transform(config: TrainConfig) -> optax.GradientTransformation:
    """The optimiser's update direction, without the learning rate (applied by the step).

    'adam': ``optax.scale_by_adam(b1, b2, eps)``; 'sgd': ``optax.trace(momentum)`` (heavy ball,
    PyTorch's convention ``buf = momentum * buf + g``; identity at momentum 0). A weight decay
    adds ``weight_decay * params`` to the gradient first (coupled L2, as PyTorch's optimisers).
    """
    parts: list[optax.GradientTransformation] = []
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "adam":
        parts.append(optax.scale_by_adam(config.adam_b1, config.adam_b2, config.adam_eps))
    elif config.momentum:
        parts.append(optax.trace(decay=config.momentum))
    if not parts:
        return optax.identity()
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def step_settings(config: TrainConfig) -> TrainConfig:
    """The config with the fields that do not enter the compiled program reset (cache key)."""
    return dataclasses.replace(
        config, steps=1, checkpoint_every=0, log_every=1, max_to_keep=1, learning_rate=1.0
    )


@functools.lru_cache(maxsize=32)
def init_program(model: Any, config: TrainConfig) -> Callable[[jax.Array], tuple[Any, Any]]:
    """Jitted ``key -> (params, opt_state)`` of one model (``config``: :func:`step_settings`)."""
    transform = make_transform(config)

    def init_one(key):
        params = model.init(key)
        return params, transform.init(params)

    return jax.jit(init_one)


def init_stack(model: Any, config: TrainConfig, keys: jax.Array) -> tuple[Any, Any]:
    """Initial (params, opt_state) stacked over models.

    One jitted single-model init called K times (not a hot path): on CPU its program compiles
    several times faster than the vmapped one, and it is shared by every grid size K.
    """
    init = init_program(model, config)
    states = [init(keys[k]) for k in range(keys.shape[0])]
    if isinstance(jax.tree.leaves(states[0])[0], jax.core.Tracer):  # under eval_shape
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    # Stacked on the host: an eager jnp.stack would compile one program per leaf shape.
    return jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *states)


def resolve_model_axis(model_axis: str) -> str:
    """'auto' -> 'sequential' on CPU, 'vmap' on GPU/TPU; other values are returned as given."""
    if model_axis != "auto":
        return model_axis
    return "sequential" if jax.default_backend() == "cpu" else "vmap"


@dataclasses.dataclass(frozen=True)
class StepProgram:
    """One grid update and the shapes of what it logs.

    ``run(params, opt_state, data, data_keys, loss_keys, hp, lrs, step)`` updates every model
    once and returns ``(params, opt_state, metrics)`` with metrics name -> (K,).
    ``metric_shapes(*args)`` gives one model's metric shapes without running anything (it
    shares the trace of ``run``, so it costs no extra trace).
    """

    run: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]
    metric_shapes: Callable[..., dict[str, Any]]


def _one_model_step(loss: Any, config: TrainConfig, batch_mesh: Mesh | None = None):
    transform = make_transform(config)
    sampler = SAMPLERS[config.batch_sampling]
    batch_size = config.batch_size
    split = None if batch_mesh is None else NamedSharding(batch_mesh, PartitionSpec(AXIS))

    def one_model(params, opt_state, data, data_key, loss_key, hp, lr, step):
        n = jax.tree.leaves(data)[0].shape[0]
        idx = sampler(data_key, step, n, batch_size)
        batch = {name: values[idx] for name, values in data.items()}
        if split is not None:  # data parallel: each device takes a slice of the batch
            batch = jax.lax.with_sharding_constraint(batch, split)
        key = jax.random.fold_in(loss_key, step)
        hp_step = {**hp, STEP: step}

        def objective(p):
            return loss(p, batch, key, hp_step)

        (value, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        direction, opt_state = transform.update(grads, opt_state, params)
        updates = jax.tree.map(lambda d: -lr * d, direction)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": value, **aux}

    return one_model


def _sequential(one_model) -> StepProgram:
    """One compiled single-model step per model.

    Model k's slice is taken and written back inside the compiled program (the stack stays on
    the device; one dispatch per model and step) and k is an array argument, so one trace
    serves every model.
    """

    @jax.jit
    def step_k(params, opt_state, data, data_keys, loss_keys, hp, lrs, step, k):
        take = functools.partial(jax.tree.map, lambda a: a[k])
        p, o, metrics = one_model(
            take(params), take(opt_state), data, data_keys[k], loss_keys[k], take(hp), lrs[k], step
        )
        put = functools.partial(jax.tree.map, lambda a, v: a.at[k].set(v))
        return put(params, p), put(opt_state, o), metrics

    def run(params, opt_state, data, data_keys, loss_keys, hp, lrs, step):
        per_model = []
        for k in range(lrs.shape[0]):
            params, opt_state, metrics = step_k(
                params, opt_state, data, data_keys, loss_keys, hp, lrs, step, jnp.int32(k)
            )
            per_model.append(metrics)
        return params, opt_state, jax.tree.map(lambda *m: jnp.stack(m), *per_model)

    def metric_shapes(*args):
        return jax.eval_shape(step_k, *args, jnp.int32(0))[2]

    return StepProgram(run, metric_shapes)


@functools.lru_cache(maxsize=32)
def step_program(loss: Any, config: TrainConfig, batch_mesh: Mesh | None = None) -> StepProgram:
    """The grid step of ``loss`` (``config``: :func:`step_settings`), cached per loss object
    (the loss closes over the model it trains). With ``batch_mesh`` every model's batch is
    split over that mesh's devices (data parallel; the partitioner sums the gradients)."""
    one_model = _one_model_step(loss, config, batch_mesh)
    axis = resolve_model_axis(config.model_axis)
    if axis == "sequential":
        return _sequential(one_model)
    if axis == "vmap":
        program = jax.jit(jax.vmap(one_model, in_axes=(0, 0, None, 0, 0, 0, 0, None)))
    else:

        def mapped(params, opt_state, data, data_keys, loss_keys, hp, lrs, step):
            def body(xs):
                p, o, dk, lk, h, lr = xs
                return one_model(p, o, data, dk, lk, h, lr, step)

            return jax.lax.map(body, (params, opt_state, data_keys, loss_keys, hp, lrs))

        program = jax.jit(mapped)

    def metric_shapes(*args):
        per_model = jax.eval_shape(program, *args)[2]
        return {n: jax.ShapeDtypeStruct(s.shape[1:], s.dtype) for n, s in per_model.items()}

    return StepProgram(program, metric_shapes)
