"""Training: grid training of β-VAE stacks in one compiled program, checkpoints, metrics.

Example:
    >>> from vaerob_jax.train import TrainConfig, train_grid
    >>> res = train_grid(model, images, betas=[1.0, 5.0, 10.0],
    ...                  config=TrainConfig(steps=500), key=jax.random.key(0), workdir="run")
"""

from vaerob_jax.train.checkpoint import CheckpointError, GridCheckpointer, load_params, save_params
from vaerob_jax.train.config import MODEL_AXES, TrainConfig
from vaerob_jax.train.grid import (
    TrainResult,
    batch_indices,
    grid_fingerprint,
    make_grid,
    resolve_model_axis,
    train_grid,
    train_step_traces,
)
from vaerob_jax.train.plots import plot_loss_curves
from vaerob_jax.train.progress import METRIC_COLUMNS, MetricsLog, ProgressReporter, read_metrics

__all__ = [
    "METRIC_COLUMNS",
    "MODEL_AXES",
    "CheckpointError",
    "GridCheckpointer",
    "MetricsLog",
    "ProgressReporter",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "grid_fingerprint",
    "load_params",
    "make_grid",
    "plot_loss_curves",
    "read_metrics",
    "resolve_model_axis",
    "save_params",
    "train_grid",
    "train_step_traces",
]
