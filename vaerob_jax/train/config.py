"""Training configuration: a small frozen dataclass validated on construction.

The hyperparameters that vary across a grid (β, the σ-offset τ, the model seed) are *not* here:
they are arguments of :func:`vaerob_jax.train.train_grid` and reach the compiled step as arrays.
What is here is shared by every model of a grid and fixes the compiled program.
"""

from __future__ import annotations

import dataclasses
import math

from vaerob_jax.objectives import KL_REDUCTIONS

__all__ = ["MODEL_AXES", "TrainConfig"]

MODEL_AXES = ("auto", "vmap", "map", "sequential")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings shared by all models of a training grid.

    Defaults follow the public code of 000 (REFERENCE_NOTES): Adam, lr 1e-4, batch 64, with the
    paper's Eq. 2 KL reduction ('sum') as default and the reference code's averaged KL
    ('reference_mean') as an option.

    Attributes:
      steps: total number of optimiser updates per model (a resumed run continues up to here).
      batch_size: examples per update; batches are drawn without replacement within an epoch.
      learning_rate: Adam step size (optax.adam).
      kl_reduction: 'sum' (Eq. 2 of 000) or 'reference_mean' (000's public code).
      checkpoint_every: save a checkpoint every this many steps (and always at the last step)
        when a workdir is given; 0 saves only at the last step.
      log_every: append metrics (loss, recon, KL per model) every this many steps.
      max_to_keep: how many checkpoints orbax keeps (older ones are deleted).
      adam_b1, adam_b2, adam_eps: Adam's moment decay rates and epsilon.
      model_axis: how a step runs the K models: 'vmap' (one program, vectorised; convs with
        stacked kernels become grouped convs), 'map' (one program, ``lax.map``), 'sequential'
        (one single-model program called K times from Python) or 'auto' (default:
        'sequential' on CPU, 'vmap' on accelerators). All give the same results; on the 2-core
        CPU 'sequential' was 1.4x faster than 'vmap' for 64x64 convs and 'map' 5x slower
        (benchmarks/bench_train.py measures them).
    """

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-4
    kl_reduction: str = "sum"
    checkpoint_every: int = 500
    log_every: int = 50
    max_to_keep: int = 2
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    model_axis: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "max_to_keep"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(
                f"TrainConfig.checkpoint_every must be an int >= 0, got {self.checkpoint_every!r}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"TrainConfig.learning_rate must be finite and > 0, got {self.learning_rate}"
            )
        if self.kl_reduction not in KL_REDUCTIONS:
            raise ValueError(
                f"TrainConfig.kl_reduction must be one of {KL_REDUCTIONS}, "
                f"got {self.kl_reduction!r}"
            )
        if self.model_axis not in MODEL_AXES:
            raise ValueError(
                f"TrainConfig.model_axis must be one of {MODEL_AXES}, got {self.model_axis!r}"
            )
        if not (0.0 <= self.adam_b1 < 1.0 and 0.0 <= self.adam_b2 < 1.0 and self.adam_eps > 0):
            raise ValueError(
                "TrainConfig Adam settings need 0 <= b1, b2 < 1 and eps > 0; got "
                f"b1={self.adam_b1}, b2={self.adam_b2}, eps={self.adam_eps}"
            )

    def to_dict(self) -> dict:
        """Plain-JSON form (for config.json and checkpoint fingerprints)."""
        return dataclasses.asdict(self)
