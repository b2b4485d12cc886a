"""Figures of the subgroup robustness study of 000 (Figs. 2-3 and 6-9 analogues), headless.

See :mod:`vaerob_jax.report.plotting` for the conventions (tidy rows in, a saved Figure out,
``gid`` on data artists, fixed subgroup colours).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from vaerob_jax.report.plotting import (
    ATTRIBUTE_GROUPS,
    PANEL_H,
    PANEL_W,
    SUMMARY_COLUMNS,
    box_panel,
    fmt_num,
    markers_for,
    new_figure,
    rows_of,
    same_value,
    save_figure,
    select_rows,
    subgroup_colors,
    subgroups_in,
    uniq_sorted,
)
from vaerob_jax.sweeps.tables import Row, Table, as_rows


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
    rows_ = rows_of(rows, ("beta", "subgroup", "delta_c", "recon_loss"), "plot_deviation_vs_recon")
    rows_, eps_v = select_rows(rows_, "eps", eps, "plot_deviation_vs_recon")
    order = subgroups_in(rows_, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        at_b = [r for r in rows_ if same_value(r["beta"], b)]
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
        ax.set_xlabel("unperturbed reconstruction loss  −log p(x | z = μ(x)), summed over pixels")
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
    rows_ = rows_of(rows, ("beta", "eps", "subgroup", value), "plot_deviation_distributions")
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    order = subgroups_in(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    epss = uniq_sorted([r["eps"] for r in rows_])
    extra = 1 if counts else 0
    fig, axes = new_figure(len(betas), len(epss) + extra, dpi)
    for i, b in enumerate(betas):
        for j, e in enumerate(epss):
            ax = axes[i, j]
            sel = [r for r in rows_ if same_value(r["beta"], b) and same_value(r["eps"], e)]
            data = {s: np.array([r[value] for r in sel if r["subgroup"] == s]) for s in order}
            box_panel(ax, data, order, colors, kind)
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
    rows_ = rows_of(summary_rows, SUMMARY_COLUMNS, "plot_median_vs_eps")
    order = subgroups_in(rows_, subgroups)
    colors, markers = subgroup_colors(order), markers_for(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        for s in order:
            sel = sorted(
                (r for r in rows_ if same_value(r["beta"], b) and r["subgroup"] == s),
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
    merged = relabel_subgroups(rows_of(rows, ("subgroup",), "plot_single_attribute"), mapping)
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
    rows_ = rows_of(rows, ("subgroup", "input", "accuracy"), "plot_classifier_accuracy")
    bad = sorted({r["input"] for r in rows_} - set(_INPUTS))
    if bad:
        raise ValueError(f"input values {bad} unknown; use {_INPUTS}")
    if any(r["input"] != "clean" and "beta" not in r for r in rows_):
        raise ValueError("rows with input 'recon'/'adv_recon' need a beta column")
    order = subgroups_in(rows_, subgroups)
    classifiers = uniq_sorted([r.get("classifier", "") for r in rows_])
    betas = uniq_sorted([r["beta"] for r in rows_ if r["input"] != "clean"])
    series: list[tuple[str, Any]] = [("clean", None)]
    series += [("recon", b) for b in betas] + [("adv_recon", b) for b in betas]
    shades = np.linspace(0.45, 0.9, max(len(betas), 1))
    import matplotlib as mpl

    cmaps = {"recon": mpl.colormaps["Blues"], "adv_recon": mpl.colormaps["Reds"]}
    fig, axes = new_figure(1, len(classifiers), dpi, sharey=True)
    fig.set_size_inches(max(PANEL_W, 1.2 * len(order)) * len(classifiers) * 1.4, PANEL_H * 1.2)
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
                    and (inp == "clean" or same_value(r["beta"], b))
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
    rows_ = rows_of(rows, cols, "plot_neighbour_pull")
    order = subgroups_in(rows_, subgroups)
    colors = subgroup_colors(order)
    betas = uniq_sorted([r["beta"] for r in rows_])
    fig, axes = new_figure(1, len(betas), dpi, sharey=True)
    for ax, b in zip(axes[0], betas):
        segs = []
        for gi, s in enumerate(order):
            sel = [r for r in rows_ if same_value(r["beta"], b) and r["subgroup"] == s]
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
