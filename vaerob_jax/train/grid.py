"""Named training grids, the data pytree, and the key derivation of the grid trainer.

A grid is a dict name -> values, one value per model (K models). ``'seed'`` (ints >= 0,
default 0 for every model) keys the model's randomness, ``'learning_rate'`` (optional, else
``TrainConfig.learning_rate``) scales its optimiser updates, and every other name is a
hyperparameter of the loss, given to it in ``hp`` as a float32 scalar (plus ``'step'``).

Randomness is a pure function of the run key, the model seed and the step:
  * model key      m_k = fold_in(key, seed_k)
  * initial params from fold_in(m_k, 0)
  * batches from the data key fold_in(m_k, 1): 'epoch' sampling uses, in epoch e,
    permutation(fold_in(data_key, e), N) sliced by the step's position in the epoch (without
    replacement, the last partial batch dropped); 'replacement' sampling draws step t's batch
    uniformly with replacement from fold_in(data_key, t)
  * the loss key at step t is fold_in(fold_in(m_k, 2), t) (the loss splits it itself)
so a run resumed from a checkpoint reproduces the uninterrupted one exactly, and model k of a
grid equals the same grid point trained alone. Models that share a seed share initial params
and batches (common random numbers), so β comparisons are not confounded by the seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.data.validate import check_images
from vaerob_jax.sweeps.grid import same_value

__all__ = [
    "TrainGrid",
    "batch_indices",
    "make_grid",
    "model_streams",
    "prepare_data",
    "replacement_indices",
    "resolve_grid",
]

SEED, LEARNING_RATE, STEP = "seed", "learning_rate", "step"
_INIT, _DATA, _LOSS = 0, 1, 2
_MAX_SEED = 2**31 - 1  # seeds enter fold_in as int32


def _axis_values(name: str, values: Any) -> np.ndarray:
    """One grid axis (or a per-model column) as a validated 1-D array."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"grid values of {name!r} must be numbers: {err}") from err
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"grid entry {name!r} must be a non-empty 1-D sequence, got {arr.shape}")
    if name == SEED:
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"seed values must be ints, got {arr.tolist()!r}")
        if np.any(arr < 0) or np.any(arr > _MAX_SEED):
            raise ValueError(f"seed values must lie in [0, 2**31), got {arr.tolist()}")
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_):
        raise ValueError(f"grid values of {name!r} must be numbers, got {arr.tolist()!r}")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"grid values of {name!r} must be finite, got {out.tolist()}")
    if name == LEARNING_RATE and np.any(out <= 0):
        raise ValueError(f"learning_rate values must be > 0, got {out.tolist()}")
    return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"grid names must be non-empty strings, got {name!r}")
    if name == STEP:
        raise ValueError("'step' is reserved: the trainer passes the update index as hp['step']")
    return name


def make_grid(axes: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Expands named axes to their product, one entry per model (first axis outermost).

    Args:
      axes: name -> values, e.g. ``{"beta": [1, 5, 10], "seed": [0, 1]}``. Values must be
        finite numbers without repeats on an axis; 'seed' values ints in [0, 2**31);
        'learning_rate' values > 0.

    Returns:
      name -> (K,) array with K the product of the axis lengths (seeds int64, others float64);
      ``{}`` gives ``{}`` (the trainer reads it as one model).

    Example:
      >>> make_grid({"beta": [1.0, 5.0], "seed": [0, 1]})["beta"]
      array([1., 1., 5., 5.])
    """
    if not isinstance(axes, Mapping):
        raise ValueError(f"make_grid takes a dict name -> values, got {type(axes).__name__}")
    names = [_check_name(n) for n in axes]
    values = [_axis_values(n, axes[n]) for n in names]
    for name, arr in zip(names, values):
        if len(np.unique(arr)) != len(arr):
            raise ValueError(
                f"grid axis {name!r} repeats values ({arr.tolist()}): models would coincide"
            )
    if not names:
        return {}
    mesh = np.meshgrid(*values, indexing="ij")
    return {n: m.ravel().astype(v.dtype) for n, m, v in zip(names, mesh, values)}


@dataclasses.dataclass(frozen=True)
class TrainGrid:
    """A validated grid, resolved for the trainer.

    Attributes:
      values: the grid as given, plus 'seed' (zeros when absent): name -> (K,) array.
      hp: every hyperparameter the loss reads, given or filled from the loss's defaults:
        name -> (K,) float64.
      seeds: (K,) int64 model seeds.
      learning_rates: (K,) float64 step sizes.
    """

    values: dict[str, np.ndarray]
    hp: dict[str, np.ndarray]
    seeds: np.ndarray
    learning_rates: np.ndarray

    @property
    def num_models(self) -> int:
        return int(self.seeds.shape[0])

    def describe(self, k: int) -> str:
        """'beta=5, seed=0' for model k (error messages)."""
        return ", ".join(f"{n}={self.values[n][k].item():g}" for n in self.values)


def resolve_grid(grid: Mapping[str, Any], loss: Any, default_lr: float) -> TrainGrid:
    """Validates a per-model grid against a loss and fills seeds, learning rates and defaults.

    Args:
      grid: name -> (K,) values (e.g. from :func:`make_grid`); ``{}`` means one model.
      loss: the :class:`~vaerob_jax.objectives.BatchLoss` (its declared hyperparameters).
      default_lr: learning rate of every model when the grid has no 'learning_rate'.

    Raises:
      ValueError: unequal lengths, non-finite or non-numeric values, bad seeds, names the loss
        does not read, missing required hyperparameters, or two identical models.
    """
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a dict name -> (K,) values, got {type(grid).__name__}")
    values = {_check_name(n): _axis_values(n, v) for n, v in grid.items()}
    lengths = {n: int(v.shape[0]) for n, v in values.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"grid entries must have one value per model (equal lengths), got lengths {lengths}; "
            "use make_grid to expand a product"
        )
    k = next(iter(lengths.values()), 1)
    known = set(loss.hyperparameters) | {SEED, LEARNING_RATE}
    unknown = [n for n in values if n not in known]
    if unknown:
        raise ValueError(
            f"grid names {unknown} are not hyperparameters of loss {loss.name!r} (it reads "
            f"{list(loss.hyperparameters)}, plus 'seed' and 'learning_rate')"
        )
    missing = [n for n in loss.required if n not in values]
    if missing:
        raise ValueError(
            f"loss {loss.name!r} needs hyperparameters {missing}; the grid gives {sorted(values)}"
        )
    if SEED not in values:
        values[SEED] = np.zeros(k, np.int64)
    rows = list(zip(*(values[n].tolist() for n in values)))
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if row in seen:
            j = seen[row]
            raise ValueError(
                f"models {j} and {i} of the grid are identical ({dict(zip(values, row))}): "
                "they would train the same model twice"
            )
        seen[row] = i
    hp = {}
    defaults = dict(loss.defaults)
    for name in loss.hyperparameters:
        hp[name] = values[name] if name in values else np.full(k, float(defaults[name]))
    lrs = values.get(LEARNING_RATE, np.full(k, float(default_lr)))
    return TrainGrid(
        values,
        {n: np.asarray(v, np.float64) for n, v in hp.items()},
        values[SEED],
        np.asarray(lrs, np.float64),
    )


def prepare_data(data: Any, image_shape: Sequence[int] | None) -> dict[str, np.ndarray]:
    """The training data as a dict of host arrays sharing a leading axis N.

    A bare array means ``{'x': data}``. Floating entries become float32 (and must be finite),
    integer and bool entries int32. ``data['x']`` is checked as images of ``image_shape``
    (pixels in [0, 1]) when the model has a 3-axis one, and against its shape otherwise
    (e.g. (2,) points of a Gaussian mixture, unbounded).
    """
    if not isinstance(data, Mapping):
        data = {"x": data}
    if not data:
        raise ValueError("data is empty: give a dict of arrays with a leading example axis")
    out: dict[str, np.ndarray] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ValueError(f"data entries must be named by strings, got {name!r}")
        arr = np.asarray(value)
        if arr.ndim == 0:
            raise ValueError(f"data[{name!r}] needs a leading example axis, got a scalar")
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32, copy=False)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"data[{name!r}] contains NaN or infinite values")
        elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            arr = arr.astype(np.int32, copy=False)
        else:
            raise ValueError(f"data[{name!r}] must be numeric, got dtype {arr.dtype}")
        out[name] = arr
    sizes = {n: int(a.shape[0]) for n, a in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"data entries must share their leading axis N, got sizes {sizes}")
    if next(iter(sizes.values())) == 0:
        raise ValueError("data holds no examples (N = 0)")
    if "x" in out and image_shape is not None and len(image_shape) == 3:
        out["x"] = check_images(
            out["x"], expected_shape=image_shape, name="data['x']", batched=True
        )
    elif "x" in out and image_shape is not None and out["x"].shape[1:] != tuple(image_shape):
        raise ValueError(
            f"data['x'] must have shape (N, {', '.join(map(str, image_shape))}) for this "
            f"model (non-image inputs), got {out['x'].shape}"
        )
    return out


def check_key(key: Any) -> jax.Array:
    """The run key, checked to be one PRNG key (typed or raw uint32[2])."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if (typed and key.shape != ()) or (not typed and key.shape != (2,)):
        raise ValueError(
            f"key must be one PRNG key (jax.random.key(seed)), got shape {key.shape} "
            f"and dtype {key.dtype}"
        )
    return key


def key_data(key: jax.Array) -> list[int]:
    """The key's raw words (JSON, fingerprints)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)).ravel().tolist()
    return np.asarray(key).ravel().tolist()


def model_streams(key: jax.Array, seeds: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init, data, loss) keys of every model, each stacked on K (see the module docstring)."""
    return _streams(key, jnp.asarray(seeds))


@jax.jit
def _streams(key: jax.Array, seeds: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    model_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, seeds)

    def derive(i: int) -> jax.Array:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(model_keys, i)

    return derive(_INIT), derive(_DATA), derive(_LOSS)


def batch_indices(data_key: jax.Array, step: jax.Array | int, num_examples: int, batch_size: int):
    """Indices of the examples in the batch of ``step`` (0-based), a pure function of the key.

    Epoch e = step // (N // B) visits the examples in the order
    ``permutation(fold_in(data_key, e), N)``, B at a time (without replacement; the last
    N mod B examples of each permutation are skipped). Because it depends only on
    (data_key, step), a resumed run sees exactly the batches of the uninterrupted one.
    """
    steps_per_epoch = num_examples // batch_size
    epoch, pos = step // steps_per_epoch, step % steps_per_epoch
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    return jax.lax.dynamic_slice_in_dim(perm, pos * batch_size, batch_size)


def replacement_indices(
    data_key: jax.Array, step: jax.Array | int, num_examples: int, batch_size: int
):
    """Step ``step``'s batch drawn uniformly with replacement, from ``fold_in(data_key, step)``."""
    return jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, num_examples)


SAMPLERS = {"epoch": batch_indices, "replacement": replacement_indices}


def float_or_int(value: Any) -> float | int:
    """A grid value as a plain Python number (JSON and CSV)."""
    v = value.item() if hasattr(value, "item") else value
    return int(v) if isinstance(v, int | np.integer) else float(v)


def is_close_row(row: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether a grid row matches every queried value (numbers to float32 precision)."""
    return all(name in row and same_value(row[name], v) for name, v in query.items())
