"""Training configuration: a small frozen dataclass validated on construction.

The hyperparameters that vary across a grid (β, τ, λ, the learning rate, the model seed ...)
are *not* here: they are the ``grid`` of :func:`vaerob_jax.train.train_grid` and reach the
compiled step as arrays. What is here is shared by every model of a grid and fixes the
compiled program (the learning rate here is only the default for grids without a
'learning_rate' entry). The loss's own settings (e.g. the β-ELBO's KL reduction) belong to the
loss: ``objectives.beta_elbo(model, kl_reduction)``.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["BATCH_SAMPLINGS", "MODEL_AXES", "OPTIMIZERS", "TrainConfig"]

MODEL_AXES = ("auto", "vmap", "map", "sequential")
OPTIMIZERS = ("adam", "sgd")
BATCH_SAMPLINGS = ("epoch", "replacement")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings shared by all models of a training grid.

    Defaults follow the public code of 000 (REFERENCE_NOTES): Adam, lr 1e-4, batch 64, batches
    drawn without replacement within an epoch.

    Attributes:
      steps: total number of optimiser updates per model (a resumed run continues up to here).
      batch_size: examples per update.
      learning_rate: step size of every model whose grid has no 'learning_rate' entry.
      optimizer: 'adam' (optax.scale_by_adam, the papers' optimiser) or 'sgd' (plain SGD with
        optional heavy-ball ``momentum``, PyTorch's ``torch.optim.SGD`` semantics: 004's CIFAR
        presets use momentum 0.9 and weight decay 5e-4).
      momentum: SGD momentum (optax.trace decay); must stay 0 with Adam (``adam_b1`` is Adam's).
      weight_decay: L2 weight decay added to the gradient before the optimiser (coupled, as
        ``torch.optim.SGD``/``Adam``'s ``weight_decay``); 0 disables it.
      batch_sampling: 'epoch' (default: epoch permutations, no replacement within an epoch,
        the last partial batch dropped) or 'replacement' (each batch uniform with replacement,
        as 000's classifier training did).
      checkpoint_every: save a checkpoint every this many steps (and always at the last step)
        when a workdir is given; 0 saves only at the last step.
      log_every: append metrics (loss and the loss's aux metrics per model) every this many
        steps.
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
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_sampling: str = "epoch"
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
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("batch_sampling", BATCH_SAMPLINGS),
            ("model_axis", MODEL_AXES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"TrainConfig.momentum must lie in [0, 1), got {self.momentum}")
        if self.optimizer == "adam" and self.momentum != 0.0:
            raise ValueError(
                "TrainConfig.momentum applies to optimizer='sgd'; Adam's momentum is adam_b1 "
                f"(got momentum={self.momentum})"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ValueError(
                f"TrainConfig.weight_decay must be finite and >= 0, got {self.weight_decay}"
            )
        if not (0.0 <= self.adam_b1 < 1.0 and 0.0 <= self.adam_b2 < 1.0 and self.adam_eps > 0):
            raise ValueError(
                "TrainConfig Adam settings need 0 <= b1, b2 < 1 and eps > 0; got "
                f"b1={self.adam_b1}, b2={self.adam_b2}, eps={self.adam_eps}"
            )

    def to_dict(self) -> dict:
        """Plain-JSON form (for config.json and checkpoint fingerprints)."""
        return dataclasses.asdict(self)
