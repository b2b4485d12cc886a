"""Training: one grid trainer for every model family, checkpoints, metrics.

Example:
    >>> from vaerob_jax import objectives
    >>> from vaerob_jax.train import TrainConfig, make_grid, train_grid
    >>> res = train_grid(model, objectives.beta_elbo(model), images,
    ...                  make_grid({"beta": [1.0, 5.0, 10.0]}), TrainConfig(steps=500),
    ...                  jax.random.key(0), workdir="run")
"""

from vaerob_jax.train.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    GridCheckpointer,
    checkpoint_steps,
    load_params,
    save_params,
)
from vaerob_jax.train.config import BATCH_SAMPLINGS, MODEL_AXES, OPTIMIZERS, TrainConfig
from vaerob_jax.train.fingerprint import grid_fingerprint
from vaerob_jax.train.grid import batch_indices, make_grid
from vaerob_jax.train.plots import plot_loss_curves
from vaerob_jax.train.progress import MetricsLog, read_metrics
from vaerob_jax.train.steps import resolve_model_axis
from vaerob_jax.train.trainer import TrainResult, train_grid

__all__ = [
    "BATCH_SAMPLINGS",
    "MODEL_AXES",
    "OPTIMIZERS",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "GridCheckpointer",
    "MetricsLog",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "checkpoint_steps",
    "grid_fingerprint",
    "load_params",
    "make_grid",
    "plot_loss_curves",
    "read_metrics",
    "resolve_model_axis",
    "save_params",
    "train_grid",
]
