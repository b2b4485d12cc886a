"""Batched attack drivers: vmap over samples × ε grid (× models), jit once per shape.

The step loop is driven in one of two ways, chosen in ONE place (:func:`loop_driver`):

* ``'python_chunks'`` (default on CPU): a Python loop over a jitted chunk of a few unrolled
  steps. On the 2-core CPU of ENVIRONMENT_NOTES a PGD step inside ``lax.fori_loop`` ran ~3×
  slower than the same jitted step driven from Python, and full unrolling of 100 steps over
  an ε grid took ~75 s to compile; short unrolled chunks avoid both.
  A stack of models is attacked one model at a time by the same compiled programs: vmapping
  over models turns every convolution into a grouped convolution, measured 2.5-3.5x slower
  per image on this CPU.
* ``'scan'`` (default on GPU/TPU): init, a ``lax.fori_loop`` over all steps (lowered as a
  scan/while loop) and finalize inside one jitted program, vmapped over samples × ε × models
  — no host round trips.

Override with the ``driver=`` argument or the ``VAEROB_ATTACK_DRIVER`` environment variable.
Both drivers run the same per-step function with the same keys (per-step keys come from the
step counter in the state), so they return the same perturbations.

Keys: example n gets ``fold_in(key, n)``, shared across the ε grid and the models (common
random numbers: the damage-vs-ε and model-vs-model comparisons are paired), so
``attack_batch(...)[e, n] == attack.run(params, xs[n], eps_grid[e], fold_in(key, n))``.
ε values are traced arrays: a new ε grid of the same shape never recompiles.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.pgd import Attack, AttackState, validate_inputs

DRIVERS = ("python_chunks", "scan")
DRIVER_ENV_VAR = "VAEROB_ATTACK_DRIVER"
DEFAULT_CHUNK = 4


def loop_driver(driver: str | None = None) -> str:
    """The step-loop driver to use: argument, else $VAEROB_ATTACK_DRIVER, else per backend.

    Args:
      driver: 'python_chunks', 'scan', or None for the default ('python_chunks' on CPU,
        'scan' on GPU/TPU).

    Returns:
      The driver name.
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


LAYOUTS = ("grid", "models", "paired")


def _lift(fn: Any, layout: str, last_is_key: bool) -> Any:
    """vmaps ``fn(params, x, eps, last)`` for a batch layout.

    'grid': samples, then ε (E, N); 'models': samples, ε, then a model stack (K, E, N);
    'paired': samples with one ε each (N,). ``last`` is a per-example key (shared over ε and
    models) or a per-cell state.
    """
    if layout == "paired":
        return jax.vmap(fn, in_axes=(None, 0, 0, 0))
    shared = None if last_is_key else 0
    f = jax.vmap(fn, in_axes=(None, 0, None, 0))
    f = jax.vmap(f, in_axes=(None, None, 0, shared))
    if layout == "models":
        f = jax.vmap(f, in_axes=(0, None, None, shared))
    return f


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_program(attack: Attack, layout: str, params, xs, eps, key) -> AttackState:
    keys = example_keys(key, xs.shape[0])
    return _lift(attack.init, layout, True)(params, xs, eps, keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(6,))
def _chunk_program(attack: Attack, layout: str, n: int, params, xs, eps, state) -> AttackState:
    step = _lift(attack.step, layout, False)
    for _ in range(n):  # unrolled on purpose: n is a few steps (see module docstring)
        state = step(params, xs, eps, state)
    return state


@functools.partial(jax.jit, static_argnums=(0, 1))
def _finalize_program(attack: Attack, layout: str, params, xs, eps, state) -> jax.Array:
    return _lift(attack.finalize, layout, False)(params, xs, eps, state)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan_program(attack: Attack, layout: str, params, xs, eps, key) -> jax.Array:
    keys = example_keys(key, xs.shape[0])
    state = _lift(attack.init, layout, True)(params, xs, eps, keys)
    step = _lift(attack.step, layout, False)
    state = jax.lax.fori_loop(0, attack.steps, lambda _, s: step(params, xs, eps, s), state)
    return _lift(attack.finalize, layout, False)(params, xs, eps, state)


def _drive(
    attack: Attack,
    layout: str,
    params: Any,
    xs: Any,
    eps_grid: Any,
    key: jax.Array,
    driver: str | None,
    chunk: int | None,
) -> jax.Array:
    validate_inputs(attack, xs, eps_grid, batched=True)
    if layout == "paired" and np.shape(eps_grid) != np.shape(xs)[:1]:
        raise ValueError(
            f"eps must hold one budget per image, shape {np.shape(xs)[:1]}, "
            f"got {np.shape(eps_grid)}"
        )
    name = loop_driver(driver)
    chunk = DEFAULT_CHUNK if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    xs = jnp.asarray(xs)
    eps = jnp.asarray(eps_grid, xs.dtype)
    if name == "scan":
        return _scan_program(attack, layout, params, xs, eps, key)
    if layout == "models":
        # CPU path: vmapping over a model stack turns every conv into a grouped conv, measured
        # 2.5-3.5x slower per image on this CPU than K calls of the per-model program (which
        # is compiled once: all models share its shapes).
        n_models = jax.tree.leaves(params)[0].shape[0]
        return jnp.stack(
            [
                _drive(
                    attack,
                    "grid",
                    jax.tree.map(lambda a, k=k: a[k], params),
                    xs,
                    eps,
                    key,
                    name,
                    chunk,
                )
                for k in range(n_models)
            ]
        )
    state = _init_program(attack, layout, params, xs, eps, key)
    full, rest = divmod(attack.steps, chunk)
    for _ in range(full):
        state = _chunk_program(attack, layout, chunk, params, xs, eps, state)
    if rest:
        state = _chunk_program(attack, layout, rest, params, xs, eps, state)
    return _finalize_program(attack, layout, params, xs, eps, state)


def attack_batch(
    attack: Attack,
    params: Any,
    xs: Any,
    eps_grid: Any,
    key: jax.Array,
    *,
    driver: str | None = None,
    chunk: int | None = None,
) -> jax.Array:
    """Attacks every image at every budget: deltas of shape (E, N, H, W, C).

    Args:
      attack: from :func:`pgd`.
      params: one model's params.
      xs: images (N, H, W, C) inside the attack's pixel box.
      eps_grid: budgets (E,), finite and >= 0; an array, so new values never recompile.
      key: PRNG key; example n uses fold_in(key, n) at every ε.
      driver: loop driver override (see :func:`loop_driver`).
      chunk: steps per jitted chunk for the 'python_chunks' driver (default 4).

    Returns:
      deltas[e, n] = attack.run(params, xs[n], eps_grid[e], fold_in(key, n)).
    """
    return _drive(attack, "grid", params, xs, eps_grid, key, driver, chunk)


def attack_models(
    attack: Attack,
    stacked_params: Any,
    xs: Any,
    eps_grid: Any,
    key: jax.Array,
    *,
    driver: str | None = None,
    chunk: int | None = None,
) -> jax.Array:
    """Attacks every image at every budget on a stack of K models: (K, E, N, H, W, C).

    Args:
      attack: from :func:`pgd`.
      stacked_params: params of K models stacked on a leading axis.
      xs, eps_grid, key, driver, chunk: as in :func:`attack_batch` (keys shared over models).

    Returns:
      deltas[k] == attack_batch(attack, params_k, xs, eps_grid, key).
    """
    sizes = {
        int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(stacked_params)
    }
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"stacked_params leaves must share one leading model axis, got sizes {sizes}"
        )
    return _drive(attack, "models", stacked_params, xs, eps_grid, key, driver, chunk)


def attack_each(
    attack: Attack,
    params: Any,
    xs: Any,
    eps: Any,
    key: jax.Array,
    *,
    driver: str | None = None,
    chunk: int | None = None,
) -> jax.Array:
    """Attacks image n at its own budget eps[n] (e.g. a per-example margin bisection).

    Args:
      attack: from :func:`pgd`.
      params: one model's params.
      xs: images (N, H, W, C).
      eps: budgets (N,), one per image (an array: new values never recompile).
      key, driver, chunk: as in :func:`attack_batch`.

    Returns:
      deltas (N, H, W, C), deltas[n] = attack.run(params, xs[n], eps[n], fold_in(key, n)).
    """
    return _drive(attack, "paired", params, xs, eps, key, driver, chunk)
