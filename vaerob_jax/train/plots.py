"""Loss-curve figure of a training grid (matplotlib's Agg canvas; no global backend change).

One panel per logged metric of ``metrics.csv`` (the loss, then the loss's aux metrics), one
line per model, labelled by the grid values that vary across the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaerob_jax.train.progress import INT_COLUMNS, metric_columns, read_metrics

__all__ = ["plot_loss_curves"]

# Panel titles of the metrics the package's losses log; others are titled by their name.
_TITLES = {
    "loss": "training loss (batch mean)",
    "recon": "reconstruction: −log p(x|z) per example",
    "kl": "KL(q(z|x) ‖ N(0, I)) per example",
    "error": "training error (0/1, batch mean)",
}
_SYMBOLS = {"beta": "β", "tau": "τ", "lam": "λ", "eps": "ε", "alpha": "α", "learning_rate": "lr"}


def _label(m: Mapping[str, np.ndarray], row: int, varying: list[str]) -> str:
    parts = []
    for name in varying:
        value = m[name][row]
        if name in INT_COLUMNS:
            parts.append(f"{name} {int(value)}")
        else:
            parts.append(f"{_SYMBOLS.get(name, name)}={float(value):g}")
    return ", ".join(parts) or f"model {int(m['model'][row])}"


def plot_loss_curves(
    metrics: str | Path | Mapping[str, np.ndarray], path: str | Path, title: str | None = None
) -> Path:
    """Draws every logged metric against step, one line per model of the grid.

    Args:
      metrics: a ``metrics.csv`` path or the dict :func:`read_metrics` returns (tidy columns
        step, model, <grid names>, loss, <aux names>, elapsed_s, in that order).
      path: output image file (PNG by extension).
      title: figure title; defaults to a description of the grid.

    Returns:
      The written path.
    """
    m = read_metrics(metrics) if isinstance(metrics, str | Path) else metrics
    fig = _loss_figure(m, title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _loss_figure(m: Mapping[str, np.ndarray], title: str | None) -> Figure:
    grid_names, panels = metric_columns(m)
    models = np.unique(m["model"])
    if models.size == 0:
        raise ValueError("no metrics to plot (the metrics table is empty)")
    varying = [n for n in grid_names if np.unique(m[n]).size > 1]
    fig = Figure(figsize=(4.4 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, column in zip(axes, panels):
        for k in models:
            rows = m["model"] == k
            order = np.argsort(m["step"][rows])
            label = _label(m, int(np.flatnonzero(rows)[0]), varying)
            ax.plot(m["step"][rows][order], m[column][rows][order], label=label, lw=1.4)
        ax.set_xlabel("training step")
        ax.set_title(_TITLES.get(column, column), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"training curves ({models.size} models, batch means)")
    return fig
