"""Figures of 004's study (fairness vs robustness), drawn from its tidy tables.

* :func:`plot_theory_panel` (Fig. 2): class densities with θ*, θ_f, θ_r and the natural error,
  violation and robust error against θ, per K;
* :func:`plot_theorem3`: θ_f(λ) in closed form against gradient-trained thresholds;
* :func:`plot_vs_lambda` (Fig. 4): natural error, violation, softmax margin and distance bound
  against λ;
* :func:`plot_boundary_vs_eps` (Fig. 5): boundary error against the evaluation ε per λ, the
  ramp dashed;
* :func:`plot_vs_eps_star` (Fig. 6): natural error and violation against ε* per λ;
* :func:`plot_robust_vs_eps` (Fig. 7): robust error against the evaluation ε per (ε*, λ);
* :func:`plot_group_distances`: per-group mean distance against λ (§5's per-group reading).

Error bars are the tables' bootstrap CIs. A figure without enough points raises ValueError
(the study runner then skips it with a log line).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vaerob_jax.report.plotting import new_figure, rows_where, save_figure

__all__ = [
    "plot_boundary_vs_eps",
    "plot_group_distances",
    "plot_robust_vs_eps",
    "plot_theorem3",
    "plot_theory_panel",
    "plot_vs_eps_star",
    "plot_vs_lambda",
]

Rows = Sequence[dict[str, Any]]
DPI = 110


def _vals(rows: Rows, col: str) -> list[float]:
    return sorted({float(r[col]) for r in rows})


def _errbar(ax: Any, rows: Rows, x: str, label: str, **kw: Any) -> int:
    rows = sorted(rows, key=lambda r: float(r[x]))
    if not rows:
        return 0
    xs = np.array([float(r[x]) for r in rows])
    v = np.array([r["value"] for r in rows], float)
    lo = np.array([r["ci_low"] for r in rows], float)
    hi = np.array([r["ci_high"] for r in rows], float)
    ax.errorbar(xs, v, yerr=[v - lo, hi - v], marker="o", ms=3, capsize=2, label=label, **kw)
    return len(rows)


def _parts(rows: Rows, parts: Sequence[str] | None) -> list[str]:
    present = [p for p in (parts or sorted({r["part"] for r in rows})) if rows_where(rows, part=p)]
    if not present:
        raise ValueError("no rows for any part")
    return present


def plot_theory_panel(
    data: tuple[Rows, dict[float, dict[str, np.ndarray]]], path: str | os.PathLike
):
    """Fig. 2 analogue: top, densities of N(−1, 1) and N(1, K²) with the three thresholds;
    bottom, natural error, |e₋ − e₊| and robust error against θ."""
    classifiers, curves = data
    ks = sorted(curves)
    if not ks:
        raise ValueError("no K to draw")
    fig, axes = new_figure(2, len(ks), DPI)
    colors = {"natural": "tab:blue", "fair": "tab:red", "robust": "tab:green"}
    for j, k in enumerate(ks):
        c = curves[k]
        t = c["theta"]
        top, bottom = axes[0, j], axes[1, j]
        top.plot(t, np.exp(-0.5 * (t + 1) ** 2) / np.sqrt(2 * np.pi), color="0.3", label="y = 0")
        top.plot(
            t,
            np.exp(-0.5 * ((t - 1) / k) ** 2) / (k * np.sqrt(2 * np.pi)),
            color="0.6",
            label="y = 1",
        )
        for r in rows_where(classifiers, K=k):
            color = colors[r["classifier"].split()[0]]
            for ax in (top, bottom):
                ax.axvline(r["theta"], color=color, ls="--", lw=1)
            top.plot([], [], color=color, ls="--", label=r["classifier"])
        top.set_title(f"K = {k:g}")
        top.legend(fontsize=6)
        bottom.plot(t, c["natural"], color=colors["natural"], label="natural error")
        bottom.plot(t, c["violation"], color=colors["fair"], label="|e₀ − e₁|")
        bottom.plot(t, c["robust"], color=colors["robust"], label="robust error")
        bottom.set_xlabel("threshold θ")
        bottom.legend(fontsize=6)
    save_figure(fig, path)


def plot_theorem3(curve: Rows, path: str | os.PathLike) -> None:
    """θ_f(λ): Theorem 3's closed form (line) and gradient-trained thresholds (points), per K."""
    ks = sorted({float(r["K"]) for r in curve})
    if not ks or len(curve) < 2:
        raise ValueError("fewer than two (K, λ) points")
    fig, axes = new_figure(1, 1, DPI)
    ax = axes[0, 0]
    for k in ks:
        rows = sorted(rows_where(curve, K=k), key=lambda r: r["lam"])
        lam = [r["lam"] for r in rows]
        line = ax.plot(lam, [r["theta_closed_form"] for r in rows], label=f"K={k:g} closed form")
        ax.plot(
            lam,
            [r["theta_trained"] for r in rows],
            "o",
            color=line[0].get_color(),
            ms=4,
            label=f"K={k:g} trained",
        )
    ax.set_xlabel("λ")
    ax.set_ylabel("threshold θ_f(λ)")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def plot_vs_lambda(
    data: tuple[Rows, Rows], path: str | os.PathLike, *, parts: Sequence[str] | None = None
) -> None:
    """Fig. 4 analogue: per part, natural error, violation (max to overall), mean softmax
    margin and mean distance bound against λ; one line per (ε*, loss)."""
    summary, dist = data
    parts = _parts(summary, parts)
    fig, axes = new_figure(len(parts), 4, DPI)
    drawn = 0
    for i, part in enumerate(parts):
        rows = rows_where(summary, part=part, group="all")
        eps0 = _vals(rows, "eps")[0]
        for eps_star in _vals(rows, "eps_star"):
            for loss in sorted({r["loss"] for r in rows}):
                q = {"part": part, "eps_star": eps_star, "loss": loss, "group": "all"}
                lab = f"ε*={eps_star:g} {loss}"
                ls = "--" if loss != "ce" else "-"
                drawn += _errbar(
                    axes[i, 0],
                    rows_where(summary, **q, eps=eps0, error="natural", statistic="rate"),
                    "lam",
                    lab,
                    ls=ls,
                )
                _errbar(
                    axes[i, 1],
                    rows_where(summary, **q, eps=eps0, error="natural", statistic="to_overall"),
                    "lam",
                    lab,
                    ls=ls,
                )
                _errbar(
                    axes[i, 2], rows_where(dist, **q, metric="softmax_margin"), "lam", lab, ls=ls
                )
                _errbar(axes[i, 3], rows_where(dist, **q, metric="distance"), "lam", lab, ls=ls)
        for j, title in enumerate(
            (
                "natural error",
                "violation (max |err_a − err|)",
                "softmax margin",
                "distance bound (L∞)",
            )
        ):
            axes[i, j].set_title(f"{part}: {title}", fontsize=8)
            axes[i, j].set_xlabel("λ")
        axes[i, 0].legend(fontsize=6)
    if drawn < 2:
        raise ValueError("fewer than two λ points")
    save_figure(fig, path)


def plot_boundary_vs_eps(
    summary: Rows, path: str | os.PathLike, *, parts: Sequence[str] | None = None
) -> None:
    """Fig. 5 analogue: boundary error (worst case of R+FGSM and PGD) against the evaluation ε,
    one line per λ at ε* = 0; the ramp loss dashed."""
    parts = _parts(summary, parts)
    fig, axes = new_figure(1, len(parts), DPI)
    for i, part in enumerate(parts):
        ax = axes[0, i]
        rows = rows_where(
            summary, part=part, eps_star=0.0, group="all", error="boundary", statistic="rate"
        )
        for loss in sorted({r["loss"] for r in rows}):
            for lam in _vals(rows_where(rows, loss=loss), "lam"):
                _errbar(
                    ax,
                    rows_where(rows, loss=loss, lam=lam),
                    "eps",
                    f"λ={lam:g} {loss}",
                    ls="--" if loss != "ce" else "-",
                )
        ax.set_title(f"{part}: boundary error (ε* = 0)", fontsize=8)
        ax.set_xlabel("attack ε (L∞)")
        ax.legend(fontsize=6)
    save_figure(fig, path)


def plot_vs_eps_star(
    summary: Rows, path: str | os.PathLike, *, parts: Sequence[str] | None = None
) -> None:
    """Fig. 6 analogue: natural error and violation against ε* (cross-entropy), one line per λ."""
    parts = _parts(summary, parts)
    fig, axes = new_figure(len(parts), 2, DPI)
    for i, part in enumerate(parts):
        rows = rows_where(summary, part=part, loss="ce", group="all", error="natural")
        if len(_vals(rows, "eps_star")) < 2:
            raise ValueError(f"{part}: fewer than two ε* values")
        eps0 = _vals(rows, "eps")[0]
        for lam in _vals(rows, "lam"):
            for j, stat in enumerate(("rate", "to_overall")):
                _errbar(
                    axes[i, j],
                    rows_where(rows, lam=lam, eps=eps0, statistic=stat),
                    "eps_star",
                    f"λ={lam:g}",
                )
        axes[i, 0].set_title(f"{part}: natural error", fontsize=8)
        axes[i, 1].set_title(f"{part}: violation (max |err_a − err|)", fontsize=8)
        for ax in axes[i]:
            ax.set_xlabel("training ε*")
        axes[i, 0].legend(fontsize=6)
    save_figure(fig, path)


def plot_robust_vs_eps(
    summary: Rows, path: str | os.PathLike, *, parts: Sequence[str] | None = None
) -> None:
    """Fig. 7 analogue: robust error against the evaluation ε, one line per (ε*, λ) (CE)."""
    parts = _parts(summary, parts)
    fig, axes = new_figure(1, len(parts), DPI)
    for i, part in enumerate(parts):
        ax = axes[0, i]
        rows = rows_where(
            summary, part=part, loss="ce", group="all", error="robust", statistic="rate"
        )
        for eps_star in _vals(rows, "eps_star"):
            for lam in _vals(rows, "lam"):
                _errbar(
                    ax,
                    rows_where(rows, eps_star=eps_star, lam=lam),
                    "eps",
                    f"ε*={eps_star:g} λ={lam:g}",
                )
        ax.set_title(f"{part}: robust error", fontsize=8)
        ax.set_xlabel("attack ε (L∞)")
        ax.legend(fontsize=5, ncol=2)
    save_figure(fig, path)


def plot_group_distances(
    dist: Rows, path: str | os.PathLike, *, parts: Sequence[str] | None = None
) -> None:
    """Per-group mean distance bound against λ (ε* = 0, cross-entropy): the theory predicts
    the advantaged group's distance falls and the overall mean falls."""
    parts = _parts(dist, parts)
    fig, axes = new_figure(1, len(parts), DPI)
    for i, part in enumerate(parts):
        ax = axes[0, i]
        rows = rows_where(dist, part=part, eps_star=0.0, loss="ce", metric="distance")
        if len(_vals(rows, "lam")) < 2:
            raise ValueError(f"{part}: fewer than two λ values")
        groups = sorted({r["group"] for r in rows}, key=lambda g: (g != "all", g))
        for g in groups:
            _errbar(ax, rows_where(rows, group=g), "lam", g, color="k" if g == "all" else None)
        ax.set_title(f"{part}: mean distance bound per group (ε* = 0)", fontsize=8)
        ax.set_xlabel("λ")
        ax.legend(fontsize=5, ncol=2)
    save_figure(fig, path)
