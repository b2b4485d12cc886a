"""Progress display and the tidy metrics log of a training grid.

``metrics.csv`` has one row per logged step and model (tidy form): the columns are
``step, model, beta, sigma_offset, seed, loss, recon, kl, elapsed_s``. A resumed run first drops
rows logged after the checkpoint it resumes from (they belong to the lost part of the run and
will be logged again), so the file never holds a step twice.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = ["METRIC_COLUMNS", "MetricsLog", "ProgressReporter", "read_metrics"]

METRIC_COLUMNS = (
    "step",
    "model",
    "beta",
    "sigma_offset",
    "seed",
    "loss",
    "recon",
    "kl",
    "elapsed_s",
)


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Reads ``metrics.csv`` into column arrays (ints for step/model/seed, floats otherwise)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, np.ndarray] = {}
    for col in METRIC_COLUMNS:
        values = [r[col] for r in rows]
        if col in ("step", "model", "seed"):
            out[col] = np.asarray([int(v) for v in values], dtype=np.int64)
        else:
            out[col] = np.asarray([float(v) for v in values], dtype=np.float64)
    return out


class MetricsLog:
    """Appends per-step, per-model metrics to a CSV file (or only keeps them in memory).

    Args:
      path: the CSV file, or None to keep nothing on disk.
      betas, sigma_offsets, seeds: the grid, one entry per model index.
      resume_step: the step the run resumes from; existing rows with a larger step are dropped,
        and an existing file is replaced when this is 0 (a fresh run).
    """

    def __init__(
        self,
        path: str | Path | None,
        betas: Sequence[float] | np.ndarray,
        sigma_offsets: Sequence[float] | np.ndarray,
        seeds: Sequence[int] | np.ndarray,
        resume_step: int = 0,
    ):
        self.path = None if path is None else Path(path)
        self.grid = list(zip(betas, sigma_offsets, seeds))
        self.elapsed_offset = 0.0
        if self.path is None:
            return
        kept: list[dict[str, Any]] = []
        if resume_step > 0 and self.path.exists():
            with open(self.path, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            if kept:
                self.elapsed_offset = max(float(r["elapsed_s"]) for r in kept)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def append(self, step: int, metrics: dict[str, np.ndarray], elapsed_s: float) -> None:
        """Writes one row per model for ``step``; ``metrics`` maps loss/recon/kl to (K,) arrays."""
        if self.path is None:
            return
        total = self.elapsed_offset + elapsed_s
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            for k, (beta, tau, seed) in enumerate(self.grid):
                writer.writerow(
                    [
                        step,
                        k,
                        repr(float(beta)),
                        repr(float(tau)),
                        int(seed),
                        repr(float(metrics["loss"][k])),
                        repr(float(metrics["recon"][k])),
                        repr(float(metrics["kl"][k])),
                        f"{total:.3f}",
                    ]
                )


class ProgressReporter:
    """A tqdm bar on a terminal, periodic lines with an ETA otherwise, nothing when disabled.

    Args:
      total: the final step.
      start: the step training starts from (non-zero when resuming).
      enabled: False silences everything.
      stream: where to write (default stderr); lines are used when it is not a TTY.
      min_interval_s: minimum seconds between two progress lines.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        min_interval_s: float = 5.0,
    ):
        self.total, self.start = total, start
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.min_interval_s = min_interval_s
        self.t0 = time.perf_counter()
        self._last_line = -float("inf")
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc="train", file=self.stream)

    def update(self, step: int, loss: np.ndarray | None = None) -> None:
        """Reports that ``step`` steps are done; ``loss`` (K,) is shown when given."""
        if not self.enabled:
            return
        summary = "" if loss is None else f"loss {np.min(loss):.4g}..{np.max(loss):.4g}"
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if summary:
                self._bar.set_postfix_str(summary, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line < self.min_interval_s and step < self.total:
            return
        self._last_line = now
        elapsed = now - self.t0
        done = step - self.start
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        print(
            f"[train] step {step}/{self.total} ({100.0 * step / self.total:.0f}%) "
            f"elapsed {elapsed:.1f}s eta {eta:.1f}s {summary}".rstrip(),
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
