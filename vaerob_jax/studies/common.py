"""Helpers every study shares: config fingerprints, per-purpose keys and seeds, grid values.

Keys: ``train_grid`` keys model k with ``fold_in(key(seed), model_seed)``; a study's own
randomness (sampling, attacks, classifiers, statistics) comes from a separate stream so that no
model seed can ever reproduce an attack or sampling key.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import jax
import numpy as np

from vaerob_jax.sweeps import GridSpec, fingerprint_of

__all__ = [
    "bootstrap_mean_ci",
    "model_cell_arrays",
    "stack_params",
    "canonical_grid",
    "config_fingerprint",
    "override",
    "stats_seed",
    "study_key",
    "train_config_for",
]


def config_fingerprint(config: Any) -> str:
    """16 hex digits identifying a config (the sweeps store's fingerprint of its fields)."""
    return fingerprint_of(dataclasses.asdict(config))


_STUDY_STREAM = 0x7FFFFFFF


def study_key(seed: int, purpose: str) -> jax.Array:
    """The PRNG key of one purpose ('sample', 'attack', 'classifier/Male', ...) of a study."""
    root = jax.random.fold_in(jax.random.key(seed), _STUDY_STREAM)
    return jax.random.fold_in(root, zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def stats_seed(seed: int, purpose: str, cell: str) -> list[int]:
    """Seed material for numpy statistics of one grid cell (independent of the cell's
    position in the grid, so adding an ε value leaves existing confidence intervals alone)."""
    return [seed, zlib.crc32(purpose.encode()), zlib.crc32(cell.encode())]


def canonical_grid(config: Any, axes: tuple[str, ...]) -> Any:
    """The config with its grid axes replaced by the values the result store keys cells by.

    The store canonicalises floats (12 significant digits); using those same values for
    training, attacks and lookups keeps e.g. β = 1/3 or ε = 8/255 consistent throughout.
    """
    spec = GridSpec({axis: list(getattr(config, axis)) for axis in axes})
    return dataclasses.replace(
        config, **{axis: tuple(float(v) for v in spec.values(axis)) for axis in axes}
    )


def train_config_for(config: Any) -> Any:
    """The TrainConfig of a study config (fields train_steps, batch_size, learning_rate);
    checkpoints four times per run. The study's kl_reduction goes to its loss
    (``objectives.beta_elbo(model, config.kl_reduction)``)."""
    from vaerob_jax.train import TrainConfig

    return TrainConfig(
        steps=config.train_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        checkpoint_every=max(1, config.train_steps // 4),
        log_every=max(1, config.train_steps // 50),
    )


def override(config: Any, **changes: Any) -> Any:
    """A copy of a frozen config with the non-None changes applied (CLI flags left unset stay)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int, seed: list[int], level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling its entries)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def stack_params(trees: list[Any]) -> Any:
    """Parameter trees of models of one architecture stacked on a new leading model axis."""
    return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *trees)


def model_cell_arrays(store: Any, model_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """The stored arrays of each model's cell (grid axis ``model_id``) of a result store.

    Raises:
      ValueError: a cell stored without arrays (written by an older version of the study).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for m in model_ids:
        stored = store.load(f"model_id={m}").arrays
        if stored is None:
            raise ValueError(f"cell {m} holds no arrays: rerun with --fresh")
        out[m] = stored
    return out
