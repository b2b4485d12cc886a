"""Figures of the subgroup robustness study (000) and the margins study (001), headless.

Every function takes a tidy table (list of dict rows or dict of numpy columns) and an output
path, draws with matplotlib's object API on a fresh :class:`~matplotlib.figure.Figure` (Agg
canvas; no pyplot state, no display needed), writes the file atomically and returns the
Figure so callers and tests can inspect it. Artists that carry data have a ``gid`` such as
``"box:old-women"`` so their content can be checked.

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
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from vaerob_jax.sweeps.tables import Row, Table, as_rows, atomic_write_with, require_columns

DEVIATION_COLUMNS = ("beta", "eps", "subgroup", "example_id", "delta_c", "recon_loss")
SUMMARY_COLUMNS = ("beta", "eps", "subgroup", "median", "ci_low", "ci_high")
MARGIN_COLUMNS = ("beta", "subgroup", "example_id", "bound", "margin_estimate")

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

_PANEL_W, _PANEL_H = 4.0, 3.2


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


def _markers(names: Sequence[str]) -> dict[str, str]:
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


def _rows(table: Table, columns: Sequence[str], what: str) -> list[Row]:
    rows = as_rows(table)
    require_columns(rows, columns, what=what)
    return rows


def _uniq_sorted(values: Sequence[Any]) -> list[Any]:
    out: dict[str, Any] = {}
    for v in values:
        out.setdefault(fmt_num(v), v)
    vals = list(out.values())
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    except (TypeError, ValueError):
        return a == b


def _select(rows: list[Row], column: str, value: Any, what: str) -> tuple[list[Row], Any]:
    """Rows at one value of ``column``: ``value`` if given, else the single value present."""
    if column not in rows[0]:
        return rows, None
    present = _uniq_sorted([r[column] for r in rows])
    if value is None:
        if len(present) > 1:
            raise ValueError(
                f"{what}: rows hold {column} values {[fmt_num(v) for v in present]}; "
                f"pass {column}= to choose one"
            )
        return rows, present[0]
    sel = [r for r in rows if _same(r[column], value)]
    if not sel:
        raise ValueError(
            f"{what}: no rows with {column}={fmt_num(value)}; present: "
            f"{[fmt_num(v) for v in present]}"
        )
    return sel, value


def _subgroups(rows: list[Row], subgroups: Sequence[str] | None) -> list[str]:
    present = subgroup_order([r["subgroup"] for r in rows])
    if subgroups is None:
        return present
    unknown = [s for s in subgroups if s not in present]
    if unknown:
        raise ValueError(f"subgroups {unknown} not in rows; present: {present}")
    return list(subgroups)


def _figure(nrows: int, ncols: int, dpi: int, **kw: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(_PANEL_W * ncols, _PANEL_H * nrows), dpi=dpi, layout="constrained")
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


def _box_panel(
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


# ---------------------------------------------------------------------------------------------
# 000: subgroup robustness.


def plot_deviation_vs_recon(
    rows: Table,
    path: str | os.PathLike,
    *,
    eps: float | None = None,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Adversarial deviation Δc (Eq. 5 of 000) vs unperturbed reconstruction loss (Eq. 2).

    One panel per β, one marker/colour per subgroup (000 Fig. 2). Rows at several ε need
    ``eps=`` to pick one.
    """
    rows_ = _rows(rows, ("beta", "subgroup", "delta_c", "recon_loss"), "plot_deviation_vs_recon")
    rows_, eps_v = _select(rows_, "eps", eps, "plot_deviation_vs_recon")
    order = _subgroups(rows_, subgroups)
    colors, markers = subgroup_colors(order), _markers(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    fig, axes = _figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        at_b = [r for r in rows_ if _same(r["beta"], b)]
        for s in order:
            sel = [r for r in at_b if r["subgroup"] == s]
            if not sel:
                continue
            ax.scatter(
                [r["recon_loss"] for r in sel],
                [r["delta_c"] for r in sel],
                color=colors[s],
                marker=markers[s],
                s=16,
                alpha=0.8,
                label=s,
                gid=f"points:{s}",
            )
        ax.set_title(f"β = {fmt_num(b)}")
        ax.set_xlabel("unperturbed reconstruction loss")
    axes[0, 0].set_ylabel("adversarial deviation Δc")
    axes[0, 0].legend(fontsize=8)
    if eps_v is not None:
        fig.suptitle(f"Adversarial deviation vs reconstruction loss (ε = {fmt_num(eps_v)})")
    save_figure(fig, path)
    return fig


def plot_deviation_distributions(
    rows: Table,
    path: str | os.PathLike,
    *,
    kind: str = "box",
    value: str = "delta_c",
    subgroups: Sequence[str] | None = None,
    counts: Mapping[str, int] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Figure:
    """Distributions of Δc per subgroup, one panel per (β, ε), medians marked (000 Figs. 3-5).

    Args:
      rows: deviation rows (``beta, eps, subgroup`` and ``value``).
      path: output file.
      kind: 'box' or 'violin'.
      value: column to show (default ``delta_c``; ``latent_shift`` also works).
      subgroups: order/subset of subgroups (default: canonical order of those present).
      counts: optional subgroup cardinalities, drawn as an extra bar panel (000 Fig. 4d).
      title: figure title.
      dpi: resolution.
    """
    rows_ = _rows(rows, ("beta", "eps", "subgroup", value), "plot_deviation_distributions")
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    order = _subgroups(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    epss = _uniq_sorted([r["eps"] for r in rows_])
    extra = 1 if counts else 0
    fig, axes = _figure(len(betas), len(epss) + extra, dpi)
    for i, b in enumerate(betas):
        for j, e in enumerate(epss):
            ax = axes[i, j]
            sel = [r for r in rows_ if _same(r["beta"], b) and _same(r["eps"], e)]
            data = {s: np.array([r[value] for r in sel if r["subgroup"] == s]) for s in order}
            _box_panel(ax, data, order, colors, kind)
            ax.set_title(f"β = {fmt_num(b)}, ε = {fmt_num(e)}", fontsize=10)
            if j == 0:
                ax.set_ylabel("adversarial deviation Δc" if value == "delta_c" else value)
    if counts:
        missing = [s for s in order if s not in counts]
        if missing:
            raise ValueError(f"counts lack subgroups {missing}")
        ax = axes[0, -1]
        bars = ax.bar(
            range(len(order)), [counts[s] for s in order], color=[colors[s] for s in order]
        )
        for s, bar in zip(order, bars):
            bar.set_gid(f"count:{s}")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
        ax.set_title("cardinality", fontsize=10)
        for i in range(1, len(betas)):
            axes[i, -1].set_axis_off()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


def plot_median_vs_eps(
    summary_rows: Table,
    path: str | os.PathLike,
    *,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Median Δc with its bootstrap CI against ε, one line per subgroup, panels per β."""
    rows_ = _rows(summary_rows, SUMMARY_COLUMNS, "plot_median_vs_eps")
    order = _subgroups(rows_, subgroups)
    colors, markers = subgroup_colors(order), _markers(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    fig, axes = _figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        for s in order:
            sel = sorted(
                (r for r in rows_ if _same(r["beta"], b) and r["subgroup"] == s),
                key=lambda r: float(r["eps"]),
            )
            if not sel:
                continue
            e = np.array([r["eps"] for r in sel], float)
            m = np.array([r["median"] for r in sel], float)
            lo = np.array([r["ci_low"] for r in sel], float)
            hi = np.array([r["ci_high"] for r in sel], float)
            (line,) = ax.plot(e, m, color=colors[s], marker=markers[s], label=s)
            line.set_gid(f"median:{s}")
            band = ax.fill_between(e, lo, hi, color=colors[s], alpha=0.2)
            band.set_gid(f"ci:{s}")
        ax.set_title(f"β = {fmt_num(b)}")
        ax.set_xlabel("ε")
    axes[0, 0].set_ylabel("median Δc (bootstrap CI)")
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, path)
    return fig


def relabel_subgroups(rows: Table, mapping: Mapping[str, str]) -> list[Row]:
    """Rows with ``subgroup`` replaced through ``mapping`` (rows of unmapped subgroups dropped).

    Raises:
      ValueError: no row's subgroup is in the mapping.
    """
    rows_ = as_rows(rows)
    out = [dict(r, subgroup=mapping[r["subgroup"]]) for r in rows_ if r["subgroup"] in mapping]
    if not out:
        present = sorted({r["subgroup"] for r in rows_})
        raise ValueError(f"no subgroup of {present} is in the mapping {dict(mapping)}")
    return out


def plot_single_attribute(
    rows: Table,
    path: str | os.PathLike,
    attribute: str,
    *,
    mapping: Mapping[str, str] | None = None,
    counts: Mapping[str, int] | None = None,
    kind: str = "box",
    dpi: int = 100,
) -> Figure:
    """Δc distributions per single attribute (age: young/old, gender: women/men; 000 Fig. 3).

    Intersectional subgroups are merged through ``mapping`` (default
    ``ATTRIBUTE_GROUPS[attribute]``); ``counts`` may be per intersectional subgroup (they are
    summed) or per merged group.
    """
    if mapping is None:
        if attribute not in ATTRIBUTE_GROUPS:
            raise ValueError(
                f"attribute must be one of {sorted(ATTRIBUTE_GROUPS)} or come with mapping=, "
                f"got {attribute!r}"
            )
        mapping = ATTRIBUTE_GROUPS[attribute]
    merged = relabel_subgroups(_rows(rows, ("subgroup",), "plot_single_attribute"), mapping)
    merged_counts: dict[str, int] | None = None
    if counts:
        if all(k in mapping for k in counts):
            summed: dict[str, int] = {}
            for k, v in counts.items():
                summed[mapping[k]] = summed.get(mapping[k], 0) + int(v)
            merged_counts = summed
        else:
            merged_counts = dict(counts)
    return plot_deviation_distributions(
        merged,
        path,
        kind=kind,
        counts=merged_counts,
        title=f"Adversarial deviation by {attribute}",
        dpi=dpi,
    )


_INPUTS = ("clean", "recon", "adv_recon")
_INPUT_LABELS = {"clean": "direct input", "recon": "reconstruction", "adv_recon": "adv. recon."}


def plot_classifier_accuracy(
    rows: Table,
    path: str | os.PathLike,
    *,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Attribute-classifier accuracy on clean / reconstructed / adversarially reconstructed
    images, grouped bars per subgroup (000 Tables 1-2).

    Rows: ``subgroup, input, beta, accuracy`` with ``input`` in ``clean`` (β ignored),
    ``recon``, ``adv_recon``; an optional ``classifier`` column (e.g. gender/age) gives one
    panel per classifier.
    """
    rows_ = _rows(rows, ("subgroup", "input", "accuracy"), "plot_classifier_accuracy")
    bad = sorted({r["input"] for r in rows_} - set(_INPUTS))
    if bad:
        raise ValueError(f"input values {bad} unknown; use {_INPUTS}")
    if any(r["input"] != "clean" and "beta" not in r for r in rows_):
        raise ValueError("rows with input 'recon'/'adv_recon' need a beta column")
    order = _subgroups(rows_, subgroups)
    classifiers = _uniq_sorted([r.get("classifier", "") for r in rows_])
    betas = _uniq_sorted([r["beta"] for r in rows_ if r["input"] != "clean"])
    series: list[tuple[str, Any]] = [("clean", None)]
    series += [("recon", b) for b in betas] + [("adv_recon", b) for b in betas]
    shades = np.linspace(0.45, 0.9, max(len(betas), 1))
    import matplotlib as mpl

    cmaps = {"recon": mpl.colormaps["Blues"], "adv_recon": mpl.colormaps["Reds"]}
    fig, axes = _figure(1, len(classifiers), dpi, sharey=True)
    fig.set_size_inches(max(_PANEL_W, 1.2 * len(order)) * len(classifiers) * 1.4, _PANEL_H * 1.2)
    width = 0.8 / len(series)
    for ax, clf in zip(axes[0], classifiers):
        sel = [r for r in rows_ if r.get("classifier", "") == clf]
        seen: set[tuple[str, str, str]] = set()
        for r in sel:
            k = (r["subgroup"], r["input"], "" if r["input"] == "clean" else fmt_num(r["beta"]))
            if k in seen:
                raise ValueError(f"duplicate accuracy row for {k} (classifier {clf!r})")
            seen.add(k)
        for si, (inp, b) in enumerate(series):
            xs, hs, names = [], [], []
            for gi, s in enumerate(order):
                match = [
                    r
                    for r in sel
                    if r["subgroup"] == s
                    and r["input"] == inp
                    and (inp == "clean" or _same(r["beta"], b))
                ]
                if match:
                    xs.append(gi - 0.4 + width * (si + 0.5))
                    hs.append(float(match[0]["accuracy"]))
                    names.append(s)
            if not xs:
                continue
            color = "0.5" if inp == "clean" else cmaps[inp](shades[betas.index(b)])
            label = _INPUT_LABELS[inp] + ("" if b is None else f" β={fmt_num(b)}")
            bars = ax.bar(xs, hs, width=width, color=color, label=label)
            for s, bar in zip(names, bars):
                bar.set_gid(f"bar:{inp}:{'' if b is None else fmt_num(b)}:{s}")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order)
        for tick, s in zip(ax.get_xticklabels(), order):
            tick.set_color(subgroup_colors(order)[s])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{clf} classifier" if clf else "attribute classifier")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
    return fig


def plot_neighbour_pull(
    rows: Table,
    path: str | os.PathLike,
    *,
    subgroups: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Share of latent k-NN neighbours from other subgroups, before vs after the attack
    (000 Figs. 7-9: adversarial embeddings pulled into majority neighbourhoods).

    Rows: ``beta, subgroup, example_id, other_share_clean, other_share_adv`` (shares in
    [0, 1]). Bars show the per-subgroup mean; thin lines join each example's pair.
    """
    cols = ("beta", "subgroup", "other_share_clean", "other_share_adv")
    rows_ = _rows(rows, cols, "plot_neighbour_pull")
    order = _subgroups(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    fig, axes = _figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        segs = []
        for gi, s in enumerate(order):
            sel = [r for r in rows_ if _same(r["beta"], b) and r["subgroup"] == s]
            if not sel:
                continue
            before = np.array([r["other_share_clean"] for r in sel], float)
            after = np.array([r["other_share_adv"] for r in sel], float)
            (bb,) = ax.bar(gi - 0.2, before.mean(), 0.4, color=colors[s], alpha=0.35, hatch="//")
            (ba,) = ax.bar(gi + 0.2, after.mean(), 0.4, color=colors[s])
            bb.set_gid(f"pull:before:{s}")
            ba.set_gid(f"pull:after:{s}")
            segs += [[(gi - 0.2, x0), (gi + 0.2, x1)] for x0, x1 in zip(before, after)]
        ax.add_collection(LineCollection(segs, colors="0.3", linewidths=0.5, alpha=0.4))
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"β = {fmt_num(b)} (hatched: clean, solid: attacked)", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("share of k-NN from other subgroups")
    save_figure(fig, path)
    return fig


def plot_embedding(
    xy: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    shade: np.ndarray | None = None,
    *,
    xy_adv: np.ndarray | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Figure:
    """2-D embedding (e.g. t-SNE of latent means) coloured by subgroup; attacked points drawn
    as stars shaded grey-to-black by Δc, optionally with arrows to their adversarial
    embedding (000 Figs. 7-9).

    Args:
      xy: (N, 2) coordinates.
      groups: (N,) int subgroup ids indexing ``names``; -1 = in no subgroup (grey).
      names: subgroup names.
      path: output file.
      shade: optional (N,) Δc of attacked points, NaN for points that were not attacked.
      xy_adv: optional (N, 2) coordinates of the adversarial embeddings, drawn with an arrow
        where shade is finite and the row is not NaN.
      title: axes title.
      dpi: resolution.
    """
    xy = np.asarray(xy, float)
    groups = np.asarray(groups)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
        raise ValueError(f"xy must have shape (N>0, 2), got {xy.shape}")
    if groups.shape != (xy.shape[0],) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be ints of shape ({xy.shape[0]},), got {groups.shape}")
    if groups.min() < -1 or groups.max() >= len(names):
        raise ValueError(
            f"group ids must lie in [-1, {len(names)}), got {groups.min()}..{groups.max()}"
        )
    attacked = np.zeros(len(xy), bool)
    if shade is not None:
        shade = np.asarray(shade, float)
        if shade.shape != (len(xy),):
            raise ValueError(f"shade must have shape ({len(xy)},), got {shade.shape}")
        attacked = np.isfinite(shade)
    if xy_adv is not None:
        xy_adv = np.asarray(xy_adv, float)
        if xy_adv.shape != xy.shape:
            raise ValueError(f"xy_adv must have shape {xy.shape}, got {xy_adv.shape}")
        if shade is None:
            raise ValueError("xy_adv needs shade (which points were attacked)")
    colors = subgroup_colors(list(names))
    fig = Figure(figsize=(6.0, 5.0), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    rest = ~attacked & (groups == -1)
    if rest.any():
        ax.scatter(xy[rest, 0], xy[rest, 1], s=4, color="0.8", label="other", gid="embed:other")
    for gi, n in enumerate(names):
        m = ~attacked & (groups == gi)
        if m.any():
            ax.scatter(
                xy[m, 0], xy[m, 1], s=4, color=colors[n], alpha=0.5, label=n, gid=f"embed:{n}"
            )
    if attacked.any():
        assert shade is not None
        edge = [colors[names[g]] if g >= 0 else "0.5" for g in groups[attacked]]
        sc = ax.scatter(
            xy[attacked, 0],
            xy[attacked, 1],
            c=shade[attacked],
            cmap="Greys",
            vmin=float(shade[attacked].min()),
            vmax=float(shade[attacked].max()),
            marker="*",
            s=90,
            edgecolors=edge,
            linewidths=0.8,
            zorder=3,
            gid="attacked",
        )
        fig.colorbar(sc, ax=ax, label="adversarial deviation Δc")
        if xy_adv is not None:
            moved = attacked & np.all(np.isfinite(xy_adv), axis=1)  # NaN rows: no arrow
            ax.scatter(
                xy_adv[moved, 0],
                xy_adv[moved, 1],
                marker="o",
                s=20,
                color="0.45",
                zorder=3,
                gid="adv",
            )
            segs = np.stack([xy[moved], xy_adv[moved]], axis=1)
            lc = LineCollection(list(segs), colors="0.3", linewidths=0.7, zorder=2)
            lc.set_gid("pull")
            ax.add_collection(lc)
    ax.legend(fontsize=7, markerscale=3, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    save_figure(fig, path)
    return fig


def plot_example_grid(
    clean: np.ndarray,
    adv: np.ndarray,
    recon_clean: np.ndarray,
    recon_adv: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    dpi: int = 100,
) -> Figure:
    """Image grid: one column per example; rows x, x+δ, g(μ(x)), g(μ(x+δ)) (000 Figs. 5-6).

    Images are (N, H, W, C) or (N, H, W) in [0, 1]; values are clipped for display.
    """
    imgs = [np.asarray(a, float) for a in (clean, adv, recon_clean, recon_adv)]
    shape = imgs[0].shape
    if any(a.shape != shape for a in imgs):
        raise ValueError(f"image arrays must share one shape, got {[a.shape for a in imgs]}")
    if len(shape) not in (3, 4) or shape[0] == 0 or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise ValueError(f"images must be (N>0, H, W) or (N, H, W, 1|3), got {shape}")
    n = shape[0]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} examples")
    row_names = ("x", "x + δ", "g(μ(x))", "g(μ(x + δ))")
    fig = Figure(figsize=(1.4 * n + 0.6, 1.5 * 4), dpi=dpi, layout="constrained")
    axes = fig.subplots(4, n, squeeze=False)
    for i, (rname, arr) in enumerate(zip(row_names, imgs)):
        for j in range(n):
            ax = axes[i, j]
            im = np.clip(arr[j], 0.0, 1.0)
            if im.ndim == 3 and im.shape[-1] == 1:
                im = im[..., 0]
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(labels[j]), fontsize=8)
            if j == 0:
                ax.set_ylabel(rname, fontsize=8)
    save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# 001: margins.


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
    rows_ = _rows(rows, ("subgroup", "bound", "margin_estimate"), "plot_bound_vs_margin")
    keep, dropped = _finite_pairs(rows_, "bound", "margin_estimate")
    if len(keep) < 2:
        raise ValueError(f"plot_bound_vs_margin: {len(keep)} rows with a defined bound; need 2")
    order = _subgroups(keep, subgroups)
    colors, markers = subgroup_colors(order), _markers(order)
    x = np.array([r["bound"] for r in keep], float)
    y = np.array([r["margin_estimate"] for r in keep], float)
    r_p, r_s = pearson(x, y), spearman(x, y)
    fig, axes = _figure(1, 1, dpi)
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


def _single_value(rows: list[Row], column: str, value: Any, what: str) -> list[Row]:
    if rows and column in rows[0]:
        rows, _ = _select(rows, column, value, what)
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
    rows_ = _rows(rows, ("beta", "subgroup", *columns), "plot_vs_beta")
    rows_ = _single_value(rows_, "tau", tau, "plot_vs_beta")
    order = _subgroups(rows_, subgroups)
    colors, markers = subgroup_colors(order), _markers(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    bx = np.array(betas, float)
    fig, axes = _figure(1, len(columns), dpi)

    def stats(sel: list[Row], col: str) -> tuple[float, float]:
        v = np.array([r[col] for r in sel], float)
        v = v[np.isfinite(v)]
        return (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)

    for ax, col in zip(axes[0], columns):
        groups = [(s, colors[s], markers[s]) for s in order] + [("all", "k", "o")]
        for name, color, marker in groups:
            mine = [r for r in rows_ if name == "all" or r["subgroup"] == name]
            ms = [stats([r for r in mine if _same(r["beta"], b)], col) for b in betas]
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
    rows_ = _rows(rows, ("beta", "subgroup", column), "plot_margin_distributions")
    rows_ = _single_value(rows_, "tau", tau, "plot_margin_distributions")
    order = _subgroups(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = _uniq_sorted([r["beta"] for r in rows_])
    fig, axes = _figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        data = {}
        for s in order:
            v = np.array(
                [r[column] for r in rows_ if _same(r["beta"], b) and r["subgroup"] == s], float
            )
            data[s] = v[np.isfinite(v)]
        _box_panel(ax, data, order, colors, kind)
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
    rows_ = _rows(
        rows, ("beta", "subgroup", "margin_estimate", "delta_c"), "plot_margin_vs_deviation"
    )
    rows_ = _single_value(rows_, "eps", eps, "plot_margin_vs_deviation")
    keep, _ = _finite_pairs(rows_, "margin_estimate", "delta_c")
    if len(keep) < 2:
        raise ValueError("plot_margin_vs_deviation: fewer than 2 rows with both values finite")
    order = _subgroups(keep, subgroups)
    colors, markers = subgroup_colors(order), _markers(order)
    betas = _uniq_sorted([r["beta"] for r in keep])
    fig, axes = _figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        at_b = [r for r in keep if _same(r["beta"], b)]
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
