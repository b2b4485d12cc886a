"""Test helpers for the 002 tests: random parameters without compiling a model's init.

A model's jitted init costs seconds of XLA compilation per architecture on this CPU; the
identities the 002 tests check hold for any parameter values, so they fill the init's shapes
(``jax.eval_shape``: tracing only) with seeded host random numbers, kernels scaled 1/√fan_in.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def random_params(model: Any, seed: int = 0, scale: float = 1.0) -> Any:
    """Params with the structure of ``model.init``; kernels ~ N(0, scale²/fan_in), biases small."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            values = rng.normal(size=leaf.shape) * scale / np.sqrt(fan_in)
        else:
            values = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
