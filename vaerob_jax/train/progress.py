"""The tidy metrics log of a training grid (the progress display is ``sweeps.progress``).

``metrics.csv`` has one row per logged step and model (tidy form): the columns are
``step, model, <grid names>, loss, <aux metric names>, elapsed_s``, e.g. for the β-ELBO grid
``step, model, beta, seed, loss, recon, kl, elapsed_s``. A resumed run first drops rows logged
after the checkpoint it resumes from (they belong to the lost part of the run and will be
logged again), so the file never holds a step twice.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INT_COLUMNS", "MetricsLog", "metric_columns", "read_metrics"]

# Columns read back as ints; every other column is a float ('' reads as NaN).
INT_COLUMNS = ("step", "model", "seed")


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Reads ``metrics.csv`` into column arrays, in file order (ints for step/model/seed)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = list(reader.fieldnames or ())
    out: dict[str, np.ndarray] = {}
    for col in columns:
        values = [r[col] for r in rows]
        if col in INT_COLUMNS:
            out[col] = np.asarray([int(v) for v in values], dtype=np.int64)
        else:
            out[col] = np.asarray([float(v) if v else np.nan for v in values], dtype=np.float64)
    return out


def metric_columns(m: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(grid columns, metric columns) of a metrics table: between 'model' and 'loss', and from
    'loss' up to 'elapsed_s'."""
    names = list(m)
    if "loss" not in names or "model" not in names:
        raise ValueError(f"not a metrics table (no 'model'/'loss' columns): {names}")
    lo, mid = names.index("model") + 1, names.index("loss")
    hi = names.index("elapsed_s") if "elapsed_s" in names else len(names)
    return names[lo:mid], names[mid:hi]


class MetricsLog:
    """Appends per-step, per-model metrics to a CSV file (or only keeps them in memory).

    Args:
      path: the CSV file, or None to keep nothing on disk.
      grid: name -> (K,) values of the grid, one entry per model index (the grid columns).
      metrics: names of the logged metrics, 'loss' first.
      resume_step: the step the run resumes from; existing rows with a larger step are dropped,
        and an existing file is replaced when this is 0 (a fresh run). Kept rows of a file
        written with other grid columns (e.g. a grid that now also names its τ = 0) get the
        current grid's values by model index.
    """

    def __init__(
        self,
        path: str | Path | None,
        grid: Mapping[str, Sequence[Any] | np.ndarray],
        metrics: Sequence[str],
        resume_step: int = 0,
    ):
        self.path = None if path is None else Path(path)
        self.grid_names = list(grid)
        self.metric_names = list(metrics)
        self.columns = ("step", "model", *self.grid_names, *self.metric_names, "elapsed_s")
        num = len(next(iter(grid.values()))) if grid else 1
        self.rows = [
            {n: _text(grid[n][k], n in INT_COLUMNS) for n in self.grid_names} for k in range(num)
        ]
        self.elapsed_offset = 0.0
        if self.path is None:
            return
        kept: list[dict[str, Any]] = []
        if resume_step > 0 and self.path.exists():
            with open(self.path, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            if kept:
                self.elapsed_offset = max(float(r["elapsed_s"]) for r in kept)
            kept = [self._conform(r) for r in kept]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)

    def _conform(self, row: dict[str, Any]) -> dict[str, Any]:
        k = int(row["model"])
        grid = self.rows[k] if 0 <= k < len(self.rows) else {}
        return {c: row[c] if row.get(c) else grid.get(c, "") for c in self.columns}

    def append(self, step: int, metrics: Mapping[str, np.ndarray], elapsed_s: float) -> None:
        """Writes one row per model for ``step``; ``metrics`` maps each name to a (K,) array."""
        if self.path is None:
            return
        total = self.elapsed_offset + elapsed_s
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            for k, grid in enumerate(self.rows):
                writer.writerow(
                    [
                        step,
                        k,
                        *(grid[n] for n in self.grid_names),
                        *(repr(float(metrics[n][k])) for n in self.metric_names),
                        f"{total:.3f}",
                    ]
                )


def _text(value: Any, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))
