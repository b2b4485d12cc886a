"""Figures of the evidence behind the studies' numbers: does the attack converge?

``plot_attack_convergence`` draws, per β, each subgroup's median Δc against the attack's step
count: the default attack, the same with twice the steps, and the strong attack (more steps
and restarts), with the range over independent random starts of the default attack as an
error bar. Flat lines mean the reported medians are the attack's limit, not its budget.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from vaerob_jax.report.plotting import (
    fmt_num,
    markers_for,
    new_figure,
    rows_of,
    same_value,
    save_figure,
    subgroup_colors,
    subgroups_in,
    uniq_sorted,
)
from vaerob_jax.sweeps.tables import Table

__all__ = ["CONVERGENCE_COLUMNS", "plot_attack_convergence"]

CONVERGENCE_COLUMNS = (
    "beta",
    "subgroup",
    "steps",
    "restarts",
    "median_default",
    "median_doubled",
    "strong_steps",
    "strong_restarts",
    "median_strong",
    "seed_median_min",
    "seed_median_max",
)


def plot_attack_convergence(
    rows: Table,
    path: str | os.PathLike,
    *,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Median Δc against the attack's gradient steps per example (steps × restarts, log
    scale: default, 2× steps, the strong attack), one line per subgroup, panels per β."""
    rows_ = rows_of(rows, CONVERGENCE_COLUMNS, "plot_attack_convergence")
    order = subgroups_in(rows_, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        for s in order:
            sel = [r for r in rows_ if same_value(r["beta"], b) and r["subgroup"] == s]
            if not sel:
                continue
            r = sel[0]
            steps = _strengths(r)
            med = np.array([r["median_default"], r["median_doubled"], r["median_strong"]], float)
            (line,) = ax.plot(steps, med, color=colors[s], marker=markers[s], label=s)
            line.set_gid(f"convergence:{s}")
            lo, hi = float(r["seed_median_min"]), float(r["seed_median_max"])
            bar = ax.errorbar(
                [steps[0]],
                [med[0]],
                yerr=[[med[0] - lo], [hi - med[0]]],
                color=colors[s],
                capsize=3,
                fmt="none",
            )
            for part in bar.lines[2]:  # the bar's LineCollection
                part.set_gid(f"seeds:{s}")
        ax.set_xscale("log", base=2)
        ticks = sorted({float(v) for r in rows_ for v in _strengths(r)})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_title(f"β = {fmt_num(b)}")
        r = rows_[0]
        ax.set_xlabel(
            f"steps × restarts ({int(r['steps'])}×{int(r['restarts'])}, "
            f"{2 * int(r['steps'])}×{int(r['restarts'])}, "
            f"{int(r['strong_steps'])}×{int(r['strong_restarts'])})"
        )
    axes[0, 0].set_ylabel("median Δc (bar: random starts)")
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, path)
    return fig


def _strengths(r: dict) -> np.ndarray:
    """Gradient steps per example of the default, doubled and strong attacks."""
    steps, restarts = float(r["steps"]), float(r["restarts"])
    return np.array(
        [steps * restarts, 2 * steps * restarts, float(r["strong_steps"] * r["strong_restarts"])]
    )
