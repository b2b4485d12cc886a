"""Batch-level training losses: what the one grid trainer accepts (docs/CONTRACTS.md).

A :class:`BatchLoss` wraps ``fn(params, batch, key, hp) -> (scalar, aux)``:

* ``batch``: a dict of arrays with a leading batch axis B (``'x'`` images, ``'label'`` class
  ids, ``'group'`` protected-group ids, ...), the trainer's minibatch of the data pytree;
* ``key``: this step's PRNG key for this model (the loss splits it as it needs);
* ``hp``: this model's hyperparameters as scalar arrays, by name (``'beta'``, ``'tau'``,
  ``'lam'``, ``'eps'``, ...) plus ``'step'`` (int32, the update's index) — arrays, so a new
  value never recompiles;
* ``aux``: a dict of scalar metrics (logged next to the loss).

Losses are batch-level because 002's total-correlation estimators, 003's sorted-code KS losses
and 004's group-loss penalty need the whole minibatch; a per-example loss is lifted with
:func:`per_example_mean`. ``required`` names the hyperparameters the grid must give;
``defaults`` fills the optional ones; ``batch_keys`` the batch entries the loss reads. The
``name`` and ``options`` enter checkpoint fingerprints (:meth:`BatchLoss.spec`). An optional
``validate`` hook checks grid values and data on the host (β >= 0, labels in range, ...), so a
bad value raises a ValueError before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BatchLoss", "per_example_mean"]

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array, Mapping[str, jax.Array]], Any]
# (grid values by name, each (K,); data entries by name, each with leading N) -> None or raise.
Validator = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None]


@dataclasses.dataclass(frozen=True, eq=False)
class BatchLoss:
    """A batch-level loss with its declared hyperparameters (hashable by identity).

    Attributes:
      fn: ``(params, batch, key, hp) -> (scalar loss, dict of scalar aux metrics)``.
      name: what the loss is (e.g. 'beta_elbo'); recorded in fingerprints.
      required: hyperparameter names the grid must provide.
      defaults: ``(name, value)`` pairs for optional hyperparameters.
      batch_keys: entries of the batch the loss reads.
      options: static settings, ``(name, value)`` pairs, recorded in fingerprints.
      validate: optional host-side check of grid values and data (raises ValueError).
    """

    fn: LossFn
    name: str
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, float], ...] = ()
    batch_keys: tuple[str, ...] = ("x",)
    options: tuple[tuple[str, Any], ...] = ()
    validate: Validator | None = None

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """Every hyperparameter the loss reads (required first)."""
        return self.required + tuple(k for k, _ in self.defaults)

    def __call__(
        self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array, hp: Mapping[str, Any]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        full = {k: jnp.asarray(v) for k, v in self.defaults}
        full.update(hp)
        return self.fn(params, batch, key, full)

    def spec(self) -> dict[str, Any]:
        """JSON description (name, hyperparameters, defaults, options)."""
        return {
            "name": self.name,
            "required": list(self.required),
            "defaults": {k: float(v) for k, v in self.defaults},
            "batch_keys": list(self.batch_keys),
            "options": {k: v for k, v in self.options},
        }

    def check(self, hp_names: Any, batch_names: Any) -> None:
        """Raises ValueError naming missing hyperparameters or batch entries (before compiling)."""
        missing = [h for h in self.required if h not in set(hp_names)]
        if missing:
            raise ValueError(
                f"loss {self.name!r} needs hyperparameters {missing}; the grid gives "
                f"{sorted(set(hp_names))}"
            )
        absent = [b for b in self.batch_keys if b not in set(batch_names)]
        if absent:
            raise ValueError(
                f"loss {self.name!r} reads batch entries {absent}; the data gives "
                f"{sorted(set(batch_names))}"
            )

    def check_values(self, grid: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> None:
        """Runs the ``validate`` hook on the grid's values and the data (host, before compiling).

        Args:
          grid: hyperparameter values by name, one entry per model ((K,) arrays).
          data: the training data by name, each with a leading axis N.
        """
        if self.validate is not None:
            self.validate(grid, data)


def per_example_mean(
    per_example: Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]],
) -> LossFn:
    """Lifts ``per_example(params, example, key, hp) -> (loss, aux)`` to a batch mean.

    Example ``i`` of the batch gets ``jax.random.split(key, B)[i]``; the loss and every aux
    entry are averaged over the batch.
    """

    def fn(params, batch, key, hp):
        size = jax.tree.leaves(batch)[0].shape[0]
        keys = jax.random.split(key, size)
        losses, aux = jax.vmap(lambda ex, k: per_example(params, ex, k, hp))(batch, keys)
        return jnp.mean(losses), {k: jnp.mean(v) for k, v in aux.items()}

    return fn
