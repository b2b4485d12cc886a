"""Shared plotting helpers of the report package: colours, orders, panels, saving, correlations.

The figures of each paper's study live in ``figures_000.py`` (subgroups), ``figures_001.py``
(margins), ...; every figure function takes a tidy table (list of dict rows or dict of numpy
columns) and an output path, draws with matplotlib's object API on a fresh
:class:`~matplotlib.figure.Figure` (Agg canvas; no pyplot state, no display needed), writes the
file atomically and returns the Figure so callers and tests can inspect it. Artists that carry
data have a ``gid`` such as ``"box:old-women"`` so their content can be checked.

Column conventions:
  deviation rows: ``beta, eps, subgroup, example_id, delta_c, recon_loss, latent_shift``
  summary rows:   ``beta, eps, subgroup, n, median, iqr, mean, ci_low, ci_high``
  margin rows:    ``beta, tau, subgroup, example_id, sigma_min, jac_fro, p_r, bound,
  margin_estimate, margin_bracket`` (``bound`` NaN = undefined)

Subgroup colours are fixed by name (:data:`SUBGROUP_COLORS`), so a subgroup has the same
colour in every figure; unknown names get the remaining colours in sorted-name order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaerob_jax.sweeps.grid import same_value
from vaerob_jax.sweeps.tables import Row, Table, as_rows, atomic_write_with, require_columns

SUMMARY_COLUMNS = ("beta", "eps", "subgroup", "median", "ci_low", "ci_high")

#: Canonical subgroup order (000's intersectional Young x Male groups, then single attributes).
SUBGROUP_ORDER = (
    "young-women",
    "young-men",
    "old-women",
    "old-men",
    "young",
    "old",
    "women",
    "men",
)
#: Fixed colour per known subgroup name (tab10 colours).
SUBGROUP_COLORS = {
    "young-women": "#1f77b4",
    "young-men": "#ff7f0e",
    "old-women": "#d62728",
    "old-men": "#2ca02c",
    "young": "#17becf",
    "old": "#9467bd",
    "women": "#e377c2",
    "men": "#8c564b",
}
_SPARE_COLORS = ("#7f7f7f", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5")
_MARKERS = {"young-women": "o", "young-men": "s", "old-women": "^", "old-men": "D"}
_SPARE_MARKERS = ("v", "P", "X", "<", ">", "h", "p", "*")

#: Single-attribute grouping of 000's intersectional subgroups (Fig. 3).
ATTRIBUTE_GROUPS = {
    "age": {"young-women": "young", "young-men": "young", "old-women": "old", "old-men": "old"},
    "gender": {
        "young-women": "women",
        "young-men": "men",
        "old-women": "women",
        "old-men": "men",
    },
}

PANEL_W, PANEL_H = 4.0, 3.2


# ---------------------------------------------------------------------------------------------
# Helpers.


def subgroup_order(names: Sequence[str]) -> list[str]:
    """Known names in canonical order, then unknown names sorted."""
    names = list(dict.fromkeys(str(n) for n in names))
    known = [n for n in SUBGROUP_ORDER if n in names]
    return known + sorted(n for n in names if n not in SUBGROUP_COLORS)


def subgroup_colors(names: Sequence[str]) -> dict[str, str]:
    """Colour per subgroup: fixed for known names, spare colours for others (sorted order)."""
    order = subgroup_order(names)
    unknown = [n for n in order if n not in SUBGROUP_COLORS]
    out = {n: SUBGROUP_COLORS[n] for n in order if n in SUBGROUP_COLORS}
    for i, n in enumerate(unknown):
        out[n] = _SPARE_COLORS[i % len(_SPARE_COLORS)]
    return out


def markers_for(names: Sequence[str]) -> dict[str, str]:
    order = subgroup_order(names)
    unknown = [n for n in order if n not in _MARKERS]
    out = {n: _MARKERS[n] for n in order if n in _MARKERS}
    for i, n in enumerate(unknown):
        out[n] = _SPARE_MARKERS[i % len(_SPARE_MARKERS)]
    return out


def fmt_num(v: Any) -> str:
    """Short label text for a grid value: 5.0 -> '5', 0.1 -> '0.1'."""
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


def rows_of(table: Table, columns: Sequence[str], what: str) -> list[Row]:
    rows = as_rows(table)
    require_columns(rows, columns, what=what)
    return rows


def uniq_sorted(values: Sequence[Any]) -> list[Any]:
    out: dict[str, Any] = {}
    for v in values:
        out.setdefault(fmt_num(v), v)
    vals = list(out.values())
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)


def rows_where(rows: Sequence[Row], **query: Any) -> list[Row]:
    """The rows whose columns equal every ``query`` value (numbers to float32 precision,
    :func:`~vaerob_jax.sweeps.grid.same_value`); a row lacking a queried column is left out."""
    return [r for r in rows if all(k in r and same_value(r[k], v) for k, v in query.items())]


def select_rows(rows: list[Row], column: str, value: Any, what: str) -> tuple[list[Row], Any]:
    """Rows at one value of ``column``: ``value`` if given, else the single value present."""
    if column not in rows[0]:
        return rows, None
    present = uniq_sorted([r[column] for r in rows])
    if value is None:
        if len(present) > 1:
            raise ValueError(
                f"{what}: rows hold {column} values {[fmt_num(v) for v in present]}; "
                f"pass {column}= to choose one"
            )
        return rows, present[0]
    sel = [r for r in rows if same_value(r[column], value)]
    if not sel:
        raise ValueError(
            f"{what}: no rows with {column}={fmt_num(value)}; present: "
            f"{[fmt_num(v) for v in present]}"
        )
    return sel, value


def subgroups_in(rows: list[Row], subgroups: Sequence[str] | None) -> list[str]:
    present = subgroup_order([r["subgroup"] for r in rows])
    if subgroups is None:
        return present
    unknown = [s for s in subgroups if s not in present]
    if unknown:
        raise ValueError(f"subgroups {unknown} not in rows; present: {present}")
    return list(subgroups)


def new_figure(nrows: int, ncols: int, dpi: int, **kw: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL_W * ncols, PANEL_H * nrows), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (``.png``, ``.pdf``, ``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("png", "pdf", "svg", "jpg", "jpeg"):
        raise ValueError(f"figure path needs a .png/.pdf/.svg/.jpg suffix, got {str(path)!r}")
    # Whole pixels, so the raster is exactly round(inches * dpi) (Agg truncates fractions).
    w_px, h_px = np.round(fig.get_size_inches() * fig.dpi)
    fig.set_size_inches(float(w_px) / fig.dpi, float(h_px) / fig.dpi)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format=fmt))
    return path


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation coefficient of two 1-D arrays."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc) / denom if denom > 0 else float("nan")


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    return pearson(rank_average(x), rank_average(y))


def box_panel(
    ax: Any,
    data: Mapping[str, np.ndarray],
    order: Sequence[str],
    colors: Mapping[str, str],
    kind: str,
) -> None:
    """Box or violin per subgroup at fixed positions, medians marked with diamonds."""
    pos = [i + 1 for i, s in enumerate(order) if len(data.get(s, ())) > 0]
    names = [s for s in order if len(data.get(s, ())) > 0]
    vals = [np.asarray(data[s], float) for s in names]
    if kind == "box":
        bp = ax.boxplot(
            vals, positions=pos, patch_artist=True, widths=0.6, medianprops={"color": "k"}
        )
        for s, box in zip(names, bp["boxes"]):
            box.set_facecolor(colors[s])
            box.set_alpha(0.6)
            box.set_gid(f"box:{s}")
    elif kind == "violin":
        vp = ax.violinplot(vals, positions=pos, showmedians=False, showextrema=False)
        for s, body in zip(names, vp["bodies"]):
            body.set_facecolor(colors[s])
            body.set_alpha(0.6)
            body.set_gid(f"box:{s}")
    else:
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    meds = [float(np.median(v)) for v in vals]
    ax.scatter(pos, meds, marker="D", color="k", s=18, zorder=4, label="median", gid="medians")
    for p, m in zip(pos, meds):
        ax.annotate(f"{m:.3g}", (p, m), xytext=(8, 0), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(1, len(order) + 1))
    ax.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
