"""Loss-curve figure of a training grid (matplotlib's Agg canvas; no global backend change)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaerob_jax.train.progress import read_metrics

__all__ = ["plot_loss_curves"]

_PANELS = (
    ("loss", "training loss: −β-ELBO per example"),
    ("recon", "reconstruction: −log p(x|z) per example"),
    ("kl", "KL(q(z|x) ‖ N(0, I)) per example"),
)


def _label(beta: float, tau: float, seed: int, vary_tau: bool, vary_seed: bool) -> str:
    parts = [f"β={beta:g}"]
    if vary_tau:
        parts.append(f"τ={tau:g}")
    if vary_seed:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def plot_loss_curves(
    metrics: str | Path | Mapping[str, np.ndarray], path: str | Path, title: str | None = None
) -> Path:
    """Draws loss, reconstruction and KL against step, one line per model of the grid.

    Args:
      metrics: a ``metrics.csv`` path or the dict :func:`read_metrics` returns (tidy columns
        step, model, beta, sigma_offset, seed, loss, recon, kl).
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
    models = np.unique(m["model"])
    if models.size == 0:
        raise ValueError("no metrics to plot (the metrics table is empty)")
    vary_tau = np.unique(m["sigma_offset"]).size > 1
    vary_seed = np.unique(m["seed"]).size > 1
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(_PANELS))
    for ax, (column, name) in zip(axes, _PANELS):
        for k in models:
            rows = m["model"] == k
            order = np.argsort(m["step"][rows])
            first = np.flatnonzero(rows)[0]
            label = _label(
                float(m["beta"][first]),
                float(m["sigma_offset"][first]),
                int(m["seed"][first]),
                vary_tau,
                vary_seed,
            )
            ax.plot(m["step"][rows][order], m[column][rows][order], label=label, lw=1.4)
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"β-VAE training curves ({models.size} models, batch means)")
    return fig
