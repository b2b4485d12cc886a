"""Figures of the margin study of 001 (Figs. 6, 7 and 9 analogues), headless.

See :mod:`vaerob_jax.report.plotting` for the conventions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaerob_jax.report.plotting import (
    box_panel,
    fmt_num,
    markers_for,
    new_figure,
    pearson,
    rows_of,
    same_value,
    save_figure,
    select_rows,
    spearman,
    subgroup_colors,
    subgroups_in,
    uniq_sorted,
)
from vaerob_jax.sweeps.tables import Row, Table


def _finite_pairs(rows: list[Row], xcol: str, ycol: str) -> tuple[list[Row], int]:
    def ok(v: Any) -> bool:
        return v is not None and math.isfinite(float(v))

    keep = [r for r in rows if ok(r[xcol]) and ok(r[ycol])]
    return keep, len(rows) - len(keep)


def plot_bound_vs_margin(
    rows: Table,
    path: str | os.PathLike,
    *,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Theorem-1 bound (001) against the estimated margin R^r_X(x), with y = x, the least-
    squares line and Pearson/Spearman correlations in the title (001 Fig. 6).

    Points with an undefined (NaN) bound or margin are dropped and counted in the title.

    Raises:
      ValueError: fewer than 2 points with both values defined.
    """
    rows_ = rows_of(rows, ("subgroup", "bound", "margin_estimate"), "plot_bound_vs_margin")
    keep, dropped = _finite_pairs(rows_, "bound", "margin_estimate")
    if len(keep) < 2:
        raise ValueError(f"plot_bound_vs_margin: {len(keep)} rows with a defined bound; need 2")
    order = subgroups_in(keep, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    x = np.array([r["bound"] for r in keep], float)
    y = np.array([r["margin_estimate"] for r in keep], float)
    r_p, r_s = pearson(x, y), spearman(x, y)
    fig, axes = new_figure(1, 1, dpi)
    ax = axes[0, 0]
    for s in order:
        m = np.array([r["subgroup"] == s for r in keep])
        ax.scatter(x[m], y[m], color=colors[s], marker=markers[s], s=16, label=s, gid=f"points:{s}")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="red", lw=1, label="y = x", gid="identity")
    if np.ptp(x) > 0:
        slope, icpt = np.polyfit(x, y, 1)
        ax.plot(
            [lo, hi],
            [slope * lo + icpt, slope * hi + icpt],
            color="orange",
            lw=1,
            label="least squares",
            gid="fit",
        )
    ax.set_xlabel("Theorem-1 bound")
    ax.set_ylabel("estimated margin $R^r_X(x)$")
    extra = f", {dropped} undefined dropped" if dropped else ""
    ax.set_title(
        f"Pearson r = {r_p:.3f}, Spearman ρ = {r_s:.3f} (n = {len(keep)}{extra})", fontsize=9
    )
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return fig


def single_value(rows: list[Row], column: str, value: Any, what: str) -> list[Row]:
    if rows and column in rows[0]:
        rows, _ = select_rows(rows, column, value, what)
    return rows


def plot_vs_beta(
    rows: Table,
    path: str | os.PathLike,
    columns: Sequence[str] = ("sigma_min", "jac_fro", "margin_estimate"),
    *,
    subgroups: Sequence[str] | None = None,
    tau: float | None = None,
    dpi: int = 100,
) -> Figure:
    """Mean ± standard deviation of per-example quantities against β, one panel per column,
    one line per subgroup plus all examples in black (001 Fig. 9: σ grows, ‖J‖_F shrinks and
    the margin grows with β). NaNs are ignored.
    """
    rows_ = rows_of(rows, ("beta", "subgroup", *columns), "plot_vs_beta")
    rows_ = single_value(rows_, "tau", tau, "plot_vs_beta")
    order = subgroups_in(rows_, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    bx = np.array(betas, float)
    fig, axes = new_figure(1, len(columns), dpi)

    def stats(sel: list[Row], col: str) -> tuple[float, float]:
        v = np.array([r[col] for r in sel], float)
        v = v[np.isfinite(v)]
        return (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)

    for ax, col in zip(axes[0], columns):
        groups = [(s, colors[s], markers[s]) for s in order] + [("all", "k", "o")]
        for name, color, marker in groups:
            mine = [r for r in rows_ if name == "all" or r["subgroup"] == name]
            ms = [stats([r for r in mine if same_value(r["beta"], b)], col) for b in betas]
            mean, sd = np.array(ms).T
            cont = ax.errorbar(
                bx,
                mean,
                yerr=sd,
                color=color,
                marker=marker,
                capsize=3,
                label=name,
                lw=2 if name == "all" else 1,
            )
            cont.lines[0].set_gid(f"{name}:{col}")
        ax.set_xlabel("β")
        ax.set_title(col)
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)
    return fig


def plot_margin_distributions(
    rows: Table,
    path: str | os.PathLike,
    *,
    column: str = "margin_estimate",
    kind: str = "box",
    subgroups: Sequence[str] | None = None,
    tau: float | None = None,
    dpi: int = 100,
) -> Figure:
    """Distribution of the estimated margin (or ``column``, e.g. ``bound``) per subgroup, one
    panel per β (001 Fig. 9a, split by subgroup). NaNs are dropped."""
    rows_ = rows_of(rows, ("beta", "subgroup", column), "plot_margin_distributions")
    rows_ = single_value(rows_, "tau", tau, "plot_margin_distributions")
    order = subgroups_in(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        data = {}
        for s in order:
            v = np.array(
                [r[column] for r in rows_ if same_value(r["beta"], b) and r["subgroup"] == s], float
            )
            data[s] = v[np.isfinite(v)]
        box_panel(ax, data, order, colors, kind)
        ax.set_title(f"β = {fmt_num(b)}")
    axes[0, 0].set_ylabel(column)
    save_figure(fig, path)
    return fig


def plot_margin_vs_deviation(
    rows: Table,
    path: str | os.PathLike,
    *,
    eps: float | None = None,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Estimated margin against adversarial deviation Δc per example, panels per β, Spearman ρ
    in each title: are low-margin examples the most damaged? Rows carry both columns (join
    margin and deviation tables with ``vaerob_jax.sweeps.join_rows``)."""
    rows_ = rows_of(
        rows, ("beta", "subgroup", "margin_estimate", "delta_c"), "plot_margin_vs_deviation"
    )
    rows_ = single_value(rows_, "eps", eps, "plot_margin_vs_deviation")
    keep, _ = _finite_pairs(rows_, "margin_estimate", "delta_c")
    if len(keep) < 2:
        raise ValueError("plot_margin_vs_deviation: fewer than 2 rows with both values finite")
    order = subgroups_in(keep, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    betas = uniq_sorted([r["beta"] for r in keep])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        at_b = [r for r in keep if same_value(r["beta"], b)]
        for s in order:
            sel = [r for r in at_b if r["subgroup"] == s]
            if sel:
                ax.scatter(
                    [r["margin_estimate"] for r in sel],
                    [r["delta_c"] for r in sel],
                    color=colors[s],
                    marker=markers[s],
                    s=16,
                    label=s,
                    gid=f"points:{s}",
                )
        x = np.array([r["margin_estimate"] for r in at_b], float)
        y = np.array([r["delta_c"] for r in at_b], float)
        rho = spearman(x, y) if len(at_b) > 1 else math.nan
        ax.set_title(f"β = {fmt_num(b)}: Spearman ρ = {rho:.3f} (n = {len(at_b)})", fontsize=9)
        ax.set_xlabel("estimated margin")
    axes[0, 0].set_ylabel("adversarial deviation Δc")
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)
    return fig


def plot_margin_vs_tau(
    rows: Table,
    path: str | os.PathLike,
    columns: Sequence[str] = ("margin_estimate", "bound"),
    *,
    dpi: int = 100,
) -> Figure:
    """Mean ± sd over examples of the estimated margin and the bound against τ, one line per β
    (001 Fig. 7: the margin grows with the encoder-std offset τ). NaNs are ignored."""
    rows_ = rows_of(rows, ("beta", "tau", *columns), "plot_margin_vs_tau")
    betas = uniq_sorted([r["beta"] for r in rows_])
    taus = uniq_sorted([r["tau"] for r in rows_])
    fig, axes = new_figure(1, len(columns), dpi)
    for ax, col in zip(axes[0], columns):
        for b in betas:
            stats = []
            for t in taus:
                sel = [r for r in rows_ if same_value(r["beta"], b) and same_value(r["tau"], t)]
                v = np.array([r[col] for r in sel], float)
                v = v[np.isfinite(v)]
                stats.append((v.mean(), v.std()) if v.size else (math.nan, math.nan))
            mean, sd = np.array(stats).T
            cont = ax.errorbar(taus, mean, yerr=sd, marker="o", capsize=3, label=f"β = {b:g}")
            cont.lines[0].set_gid(f"beta={fmt_num(b)}:{col}")
        ax.set_xlabel("τ (encoder std offset)")
        ax.set_ylabel(col)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return fig
