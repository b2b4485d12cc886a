"""The fingerprint of a training run: everything that fixes its trajectory, as JSON.

Stored with every checkpoint; :class:`~vaerob_jax.train.GridCheckpointer` refuses to resume a
checkpoint whose fingerprint differs and names the differing fields (e.g. ``grid.beta``).
The number of steps is recorded (``steps``, the run's length): it does not change the
trajectory, but a checkpoint folder holds one run, so a run of another length is refused
unless it explicitly extends the stored one (``train_grid(..., extend=True)``); a shorter
run never loads (or, through ``max_to_keep``, deletes) a longer run's checkpoints. The
checkpoint/log cadence, max_to_keep and the model axis are left out (every model axis gives
the same results); the learning rate is in the grid (one per model), not in the train
settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from vaerob_jax.train.config import TrainConfig
from vaerob_jax.train.grid import TrainGrid, float_or_int, key_data
from vaerob_jax.train.steps import init_program, step_settings

__all__ = ["data_digest", "grid_fingerprint"]

FORMAT = 3  # 2: without 'steps'
_NOT_TRAJECTORY = ("steps", "checkpoint_every", "log_every", "max_to_keep", "model_axis")


def data_digest(data: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per data entry: its shape and its float64 sum (a cheap check that the data is the same)."""
    return {
        name: {"shape": list(arr.shape), "sum": float(np.sum(arr, dtype=np.float64))}
        for name, arr in data.items()
    }


def _param_shapes(model: Any, config: TrainConfig) -> dict[str, list[int]]:
    abstract = jax.eval_shape(init_program(model, step_settings(config)), jax.random.key(0))[0]
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
    return {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in flat}


def grid_fingerprint(
    model: Any,
    loss: Any,
    data: Mapping[str, np.ndarray],
    grid: TrainGrid,
    config: TrainConfig,
    key: jax.Array,
) -> dict[str, Any]:
    """JSON description of everything that fixes the training trajectory of a grid.

    Args:
      model: the model (its ``spec()`` and parameter shapes are recorded).
      loss: the BatchLoss (its ``spec()``).
      data: the prepared data entries (shape and sum of each).
      grid: the resolved grid: every hyperparameter the loss reads (defaults filled in, so a
        grid that states a default value equals one that omits it), the seeds and the
        per-model learning rates.
      config: the train settings (minus cadence, steps and model axis).
      key: the run key.
    """
    train = {
        k: v for k, v in config.to_dict().items() if k not in (*_NOT_TRAJECTORY, "learning_rate")
    }
    columns = {**grid.hp, "seed": grid.seeds, "learning_rate": grid.learning_rates}
    return {
        "format": FORMAT,
        "steps": int(config.steps),
        "model": {**model.spec(), "param_shapes": _param_shapes(model, config)},
        "loss": loss.spec(),
        "grid": {
            "num_models": grid.num_models,
            **{name: [float_or_int(v) for v in values] for name, values in columns.items()},
        },
        "key": key_data(key),
        "train": train,
        "data": data_digest(data),
    }
