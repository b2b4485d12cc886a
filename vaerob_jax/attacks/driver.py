"""Batched attack driver: vmap over samples × budget grid (× models), jit once per shape.

:func:`run_attack` lays an :class:`~vaerob_jax.attacks.engine.Attack` (written for one
example) over the declared axes:

* samples: every entry of ``inputs`` (``'x'``, ``'target'``, ``'label'``, ...) has a leading
  axis N;
* budgets: a grid (E,) shared by every sample (results (E, N)), or ``paired=True``: one
  budget per sample (N,) (results (N,), e.g. a per-example margin bisection);
* models: ``models=True`` takes params stacked on a leading axis K (results get a leading K).

The step loop is driven in one of two ways, chosen in ONE place (:func:`loop_driver`):

* ``'python_chunks'`` (default on CPU): a Python loop over a jitted chunk of a few unrolled
  steps. On the 2-core CPU of ENVIRONMENT_NOTES a PGD step inside ``lax.fori_loop`` ran ~3×
  slower than the same jitted step driven from Python, and full unrolling of 100 steps over
  an ε grid took ~75 s to compile; short unrolled chunks avoid both. A stack of models is
  attacked one model at a time by the same compiled programs: vmapping over models turns
  every convolution into a grouped convolution, measured 2.5-3.5x slower per image there.
* ``'scan'`` (default on GPU/TPU): init, a ``lax.fori_loop`` over all steps and finalize
  inside one jitted program, vmapped over every axis — no host round trips.

Override with ``driver=`` or the ``VAEROB_ATTACK_DRIVER`` environment variable. Both drivers
run the same per-step function with the same keys, so they return the same results.

Devices: with a mesh (``mesh=`` or an active :func:`vaerob_jax.sweeps.parallel.use_devices`
block) of several devices, the sample axis is padded to a multiple of the device count and
split over the mesh; params and a budget grid are replicated. Each device runs the same
programs on its examples (no collective), and the padding is dropped from the result.

Keys: example n gets ``fold_in(key, n)``, shared across the budget grid and the models
(common random numbers: damage-vs-budget and model-vs-model comparisons are paired), so
``run_attack(...)[e, n] == attack.run(params, inputs[n], budgets[e], fold_in(key, n))``.
Budgets are traced arrays: a new grid of the same shape never recompiles.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.engine import Attack, AttackResult, AttackState, as_inputs, validate_inputs
from vaerob_jax.sweeps import parallel

__all__ = ["DRIVERS", "DRIVER_ENV_VAR", "example_keys", "loop_driver", "run_attack"]

DRIVERS = ("python_chunks", "scan")
DRIVER_ENV_VAR = "VAEROB_ATTACK_DRIVER"
DEFAULT_CHUNK = 4


def loop_driver(driver: str | None = None) -> str:
    """The step-loop driver to use: argument, else $VAEROB_ATTACK_DRIVER, else per backend.

    Args:
      driver: 'python_chunks', 'scan', or None for the default ('python_chunks' on CPU,
        'scan' on GPU/TPU).
    """
    if driver is None:
        driver = os.environ.get(DRIVER_ENV_VAR) or None
    if driver is None:
        return "python_chunks" if jax.default_backend() == "cpu" else "scan"
    if driver not in DRIVERS:
        raise ValueError(f"unknown attack loop driver {driver!r}; choose one of {DRIVERS}")
    return driver


def example_keys(key: jax.Array, n: int) -> jax.Array:
    """Per-example keys fold_in(key, i), i = 0..n-1."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _lift(fn: Any, layout: str, last_is_key: bool) -> Any:
    """vmaps ``fn(params, inputs, budget, last)`` for a layout.

    'grid': samples, then budgets (E, N); 'models': samples, budgets, then a model stack
    (K, E, N); 'paired': samples with one budget each (N,); 'paired_models': (K, N).
    ``last`` is a per-example key (shared over budgets and models) or a per-cell state.
    """
    shared = None if last_is_key else 0
    if layout.startswith("paired"):
        f = jax.vmap(fn, in_axes=(None, 0, 0, 0))
    else:
        f = jax.vmap(fn, in_axes=(None, 0, None, 0))
        f = jax.vmap(f, in_axes=(None, None, 0, shared))
    if layout.endswith("models"):
        f = jax.vmap(f, in_axes=(0, None, None, shared))
    return f


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_program(attack: Attack, layout: str, params, inputs, budgets, key) -> AttackState:
    keys = example_keys(key, inputs["x"].shape[0])
    return _lift(attack.init, layout, True)(params, inputs, budgets, keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(6,))
def _chunk_program(attack: Attack, layout: str, n: int, params, inputs, budgets, state):
    step = _lift(attack.step, layout, False)
    for _ in range(n):  # unrolled on purpose: n is a few steps (see module docstring)
        state = step(params, inputs, budgets, state)
    return state


@functools.partial(jax.jit, static_argnums=(0, 1))
def _finalize_program(attack: Attack, layout: str, params, inputs, budgets, state):
    return _lift(attack.finalize, layout, False)(params, inputs, budgets, state)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan_program(attack: Attack, layout: str, params, inputs, budgets, key) -> AttackResult:
    keys = example_keys(key, inputs["x"].shape[0])
    state = _lift(attack.init, layout, True)(params, inputs, budgets, keys)
    step = _lift(attack.step, layout, False)
    state = jax.lax.fori_loop(0, attack.steps, lambda _, s: step(params, inputs, budgets, s), state)
    return _lift(attack.finalize, layout, False)(params, inputs, budgets, state)


def _model_count(stacked: Any) -> int:
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(stacked)}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"stacked params must share one leading model axis, got sizes {sizes}")
    return sizes.pop()


def _chunks(attack, layout, params, inputs, budgets, key, chunk) -> AttackResult:
    state = _init_program(attack, layout, params, inputs, budgets, key)
    full, rest = divmod(attack.steps, chunk)
    for _ in range(full):
        state = _chunk_program(attack, layout, chunk, params, inputs, budgets, state)
    if rest:
        state = _chunk_program(attack, layout, rest, params, inputs, budgets, state)
    return _finalize_program(attack, layout, params, inputs, budgets, state)


def run_attack(
    attack: Attack,
    params: Any,
    inputs: Any,
    budgets: Any,
    key: jax.Array,
    *,
    models: bool = False,
    paired: bool = False,
    driver: str | None = None,
    chunk: int | None = None,
    mesh: Any = None,
    gather: bool = True,
) -> AttackResult:
    """Attacks every example at every budget (or its own budget), on one model or a stack.

    Args:
      attack: from :func:`~vaerob_jax.attacks.make_attack` or :func:`~vaerob_jax.attacks.pgd`.
      params: one model's params, or (``models=True``) K models stacked on a leading axis.
      inputs: a dict of arrays with a leading sample axis N (``'x'`` required, plus what the
        objective reads, e.g. ``'target'``, ``'label'``); a bare array means ``{'x': xs}``.
        Images must lie in the threat's pixel box.
      budgets: (E,) radii (ball) or weights (penalty), finite and >= 0; with ``paired=True``
        (N,), one per example. Arrays: new values never recompile.
      key: PRNG key; example n uses fold_in(key, n) at every budget and on every model.
      models: params are a stack of K models.
      paired: budgets are per example instead of a grid.
      driver: loop driver override (see :func:`loop_driver`).
      chunk: steps per jitted chunk for the 'python_chunks' driver (default 4).
      mesh: a device mesh (or device count) to split the examples over; None uses the active
        :func:`~vaerob_jax.sweeps.parallel.use_devices` mesh, if any. Results equal the
        single-device run to float32 rounding (each device compiles for its slice).
      gather: on several devices, return the result on one device (the default, so it mixes
        with the study's other single-device arrays) instead of split over the mesh.

    Returns:
      An :class:`~vaerob_jax.attacks.AttackResult` whose fields have leading axes (E, N),
      (N,) when paired, with a leading K for model stacks; entry [e, n] equals
      ``attack.run(params, inputs[n], budgets[e], fold_in(key, n))``.
    """
    inputs = as_inputs(inputs)
    validate_inputs(attack, inputs, budgets, batched=True)
    n = np.shape(inputs["x"])[0]
    if paired and np.shape(budgets) != (n,):
        raise ValueError(
            f"paired budgets need one per example, shape ({n},), got {np.shape(budgets)}"
        )
    name = loop_driver(driver)
    chunk = DEFAULT_CHUNK if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    budgets = jnp.asarray(budgets, inputs["x"].dtype)
    layout = ("paired" if paired else "grid") + ("_models" if models else "")
    layout = {"grid_models": "models"}.get(layout, layout)
    if models:
        _model_count(params)  # a malformed stack is refused before anything runs
    grid_mesh = parallel.resolve_mesh(mesh)
    if grid_mesh is not None:  # examples (and paired budgets) split, the rest copied
        result = parallel.call_split(
            functools.partial(_dispatch, attack, layout, name, chunk=chunk, models=models),
            params,
            inputs,
            budgets,
            key,
            split=(1, 2) if paired else (1,),
            out_axis={"grid": 1, "models": 2, "paired": 0, "paired_models": 1}[layout],
            mesh=grid_mesh,
        )
        return jax.device_put(result, jax.local_devices()[0]) if gather else result
    return _dispatch(attack, layout, name, params, inputs, budgets, key, chunk=chunk, models=models)


def _dispatch(attack, layout, name, params, inputs, budgets, key, *, chunk, models) -> AttackResult:
    if name == "scan":
        return _scan_program(attack, layout, params, inputs, budgets, key)
    if not models:
        return _chunks(attack, layout, params, inputs, budgets, key, chunk)
    n_models = _model_count(params)
    # CPU path for a stack: one compiled single-model program called per model (vmapping over
    # models turns convolutions into grouped ones, 2.5-3.5x slower per image on that CPU).
    single = "paired" if layout.startswith("paired") else "grid"
    per_model = [
        _chunks(
            attack, single, jax.tree.map(lambda a, k=k: a[k], params), inputs, budgets, key, chunk
        )
        for k in range(n_models)
    ]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_model)
