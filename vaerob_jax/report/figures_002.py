"""Figures of 002's study (``vaerob disentangle``: disentangling and adversarial robustness),
drawn from its tables.

* :func:`plot_delta_vs_beta` (Fig. 5, extended to every family): mean log₁₀ Δ against β per
  (family, L) group, latent and output attack, with the tables' 95 % bootstrap CIs (higher =
  more robust);
* :func:`plot_layer_beta_grid` (Figs. 6/7): L × β heat maps of one summary column for one
  family, one panel per attack mode, the β-TCVAE as the L = 1 row;
* :func:`plot_elbo_vs_beta` (Fig. 3): the β = 1 ELBO (nats) against β per (family, L) group
  with CIs;
* :func:`plot_noise_histograms` (Fig. 8): histograms of log p(x|z*), z* ~ q(z|x + s·ε), per
  model, one panel per noise scale s;
* :func:`plot_attack_examples` (Fig. 1): per model the input, reconstruction, adversarial
  input, normalised distortion, adversarial reconstruction and target;
* :func:`plot_delta_vs_lambda`: means over pairs of log₁₀ Δ and ‖d‖₂ against log₂ λ per model
  (§2's monotonicity: Δ non-decreasing, ‖d‖₂ non-increasing in λ);
* :func:`plot_solver_agreement`: the attack's final Δ against a reference solver's (the check
  attack, scipy's L-BFGS-B), with the share of attacks at most 10⁻³ (relative) above it.

Numbers may arrive as floats or as strings (CSV round trips); every value is read with
``float()``. Data-carrying artists have a ``gid`` (e.g. ``"delta:latent:Seatbelt L=2"``) so
tests can read them back. A figure without enough data raises ValueError saying what is
missing (the study runner then skips it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

from vaerob_jax.report.plotting import fmt_num, new_figure, rows_of, rows_where, save_figure

__all__ = [
    "plot_attack_examples",
    "plot_delta_vs_beta",
    "plot_delta_vs_lambda",
    "plot_elbo_vs_beta",
    "plot_layer_beta_grid",
    "plot_noise_histograms",
    "plot_solver_agreement",
]

Rows = Sequence[dict[str, Any]]
DPI = 110
MODES = ("latent", "output")
MODE_TITLES = {"latent": "latent attack (Eq. 13)", "output": "output attack (Eq. 12)"}
MODE_COLORS = {"latent": "C0", "output": "C1"}
FAMILY_ORDER = ("tcvae", "seatbelt", "tcdlgm")
FAMILY_NAMES = {"tcvae": "β-TCVAE", "seatbelt": "Seatbelt", "tcdlgm": "β-TCDLGM"}
COLUMN_LABELS = {
    "mean_log10_delta": "mean log₁₀ Δ",
    "mean_log10_ratio": "mean log₁₀ Δ/Δ(d=0)",
    "mean_target_nll": "mean −log p(x_t|z̃)",
    "mean_d_norm": "mean ‖d‖₂",
}
STRIP_TITLES = (
    "input x",
    "reconstruction",
    "adversarial x + d",
    "distortion d (normalised)",
    "adversarial recon.",
    "target x_t",
)
#: Slack of :func:`plot_solver_agreement`'s share: ours <= reference * (1 + AGREE_RTOL).
AGREE_RTOL = 1e-3


# ---------------------------------------------------------------------------------------------
# Helpers.


def _layers(r: dict[str, Any]) -> int:
    return int(round(float(r["layers"])))


def _group_key(r: dict[str, Any]) -> tuple[str, int]:
    return str(r["family"]), _layers(r)


def group_label(family: str, layers: int) -> str:
    """The legend label of a (family, L) group: "β-TCVAE", "Seatbelt L=2", "β-TCDLGM L=3"."""
    name = FAMILY_NAMES.get(family, family)
    return name if family == "tcvae" and layers == 1 else f"{name} L={layers}"


def _groups(rows: Rows) -> list[tuple[str, int]]:
    """(family, L) groups present, families in :data:`FAMILY_ORDER` then sorted, L ascending."""
    keys = {_group_key(r) for r in rows}
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))


def _modes(rows: Rows) -> list[str]:
    present = {str(r["mode"]) for r in rows}
    return [m for m in MODES if m in present] + sorted(present - set(MODES))


def _finite(xs: Sequence[Any]) -> np.ndarray:
    a = np.asarray([float(x) for x in xs], float)
    return a[np.isfinite(a)]


def _errorbar_by_beta(ax: Any, rows: Rows, y: str, lo: str, hi: str, label: str, gid: str) -> None:
    sel = sorted(rows, key=lambda r: float(r["beta"]))
    xs = np.array([float(r["beta"]) for r in sel])
    v = np.array([float(r[y]) for r in sel])
    # Bounds that miss the mean by a CSV rounding would give negative error lengths.
    below = np.maximum(v - np.array([float(r[lo]) for r in sel]), 0.0)
    above = np.maximum(np.array([float(r[hi]) for r in sel]) - v, 0.0)
    cont = ax.errorbar(
        xs, v, yerr=[below, above], marker="o", ms=3, capsize=2, label=label, gid=gid
    )
    for artist in (cont.lines[0], *cont.lines[2]):
        artist.set_gid(gid)


def _need_betas(rows: Rows, what: str) -> None:
    betas = {float(r["beta"]) for r in rows}
    if len(betas) < 2:
        raise ValueError(
            f"{what}: need at least two β values, got {[fmt_num(b) for b in sorted(betas)]}"
        )


# ---------------------------------------------------------------------------------------------
# Figures.


def plot_delta_vs_beta(summary: Rows, path: str | os.PathLike) -> None:
    """Fig. 5 of 002 (every family): mean log₁₀ Δ ± 95 % CI against β, one line per (family, L)
    group (the VAE is the β-TCVAE at β = 1), one panel per attack mode."""
    cols = ("family", "layers", "beta", "mode", "mean_log10_delta", "ci_lo", "ci_hi")
    rows = rows_of(summary, cols, "plot_delta_vs_beta")
    modes = [m for m in MODES if rows_where(rows, mode=m)]
    if not modes:
        raise ValueError(f"plot_delta_vs_beta: no rows with mode in {list(MODES)}")
    _need_betas(rows, "plot_delta_vs_beta")
    fig, axes = new_figure(1, len(modes), DPI)
    for j, m in enumerate(modes):
        ax = axes[0, j]
        sel = rows_where(rows, mode=m)
        for fam, L in _groups(sel):
            grp = [r for r in sel if _group_key(r) == (fam, L)]
            label = group_label(fam, L)
            _errorbar_by_beta(
                ax, grp, "mean_log10_delta", "ci_lo", "ci_hi", label, f"delta:{m}:{label}"
            )
        ax.set_title(MODE_TITLES.get(m, m))
        ax.set_xlabel("β")
        ax.set_ylabel("mean log₁₀ Δ (higher = more robust)")
        ax.legend(fontsize=7)
    fig.suptitle("attack objective Δ vs β, mean and 95 % bootstrap CI over pairs × λ")
    save_figure(fig, path)


def plot_layer_beta_grid(
    summary: Rows,
    path: str | os.PathLike,
    *,
    family: str = "seatbelt",
    column: str = "mean_log10_delta",
) -> None:
    """Figs. 6/7 of 002: ``column`` on an L (rows) × β (columns) grid for ``family``, one panel
    per attack mode, each cell annotated (2 decimals).

    The L = 1 row is the β-TCVAE's (family ``tcvae``, as in 002) where ``family`` has no L = 1
    row of its own at that β; several rows in one cell are averaged; cells without rows are
    blank (NaN, grey).
    """
    rows = rows_of(summary, ("family", "layers", "beta", "mode", column), "plot_layer_beta_grid")
    own = rows_where(rows, family=family)
    if not own:
        present = sorted({str(r["family"]) for r in rows})
        raise ValueError(f"plot_layer_beta_grid: no rows of family {family!r}; present: {present}")
    base = [r for r in rows_where(rows, family="tcvae") if _layers(r) == 1]
    if family == "tcvae":
        base = []
    sel = own + base
    modes = _modes(sel)
    Ls = sorted({_layers(r) for r in sel})
    betas = sorted({float(r["beta"]) for r in sel})
    li = {L: i for i, L in enumerate(Ls)}
    bi = {b: j for j, b in enumerate(betas)}
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    fig, axes = new_figure(1, len(modes), DPI)
    for k, m in enumerate(modes):
        ax = axes[0, k]
        grid = np.full((len(Ls), len(betas)), np.nan)
        for source in (own, base):
            cells: dict[tuple[int, int], list[float]] = {}
            for r in rows_where(source, mode=m):
                cells.setdefault((li[_layers(r)], bi[float(r["beta"])]), []).append(
                    float(r[column])
                )
            for (i, j), vals in cells.items():
                if math.isnan(grid[i, j]):
                    grid[i, j] = float(np.mean(vals))
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", gid=f"grid:{m}")
        for i in range(len(Ls)):
            for j in range(len(betas)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w",
                        gid=f"cell:{m}:{Ls[i]}:{fmt_num(betas[j])}",
                    )
        ax.set_xticks(range(len(betas)))
        ax.set_xticklabels([fmt_num(b) for b in betas])
        ax.set_yticks(range(len(Ls)))
        ax.set_yticklabels(
            [f"{L} (β-TCVAE)" if L == 1 and base and family != "tcvae" else str(L) for L in Ls]
        )
        ax.set_xlabel("β")
        ax.set_ylabel("layers L")
        ax.set_title(f"{FAMILY_NAMES.get(family, family)}: {MODE_TITLES.get(m, m)}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(COLUMN_LABELS.get(column, column))
    save_figure(fig, path)


def plot_elbo_vs_beta(metrics: Rows, path: str | os.PathLike) -> None:
    """Fig. 3 of 002: the β = 1 ELBO (test mean, nats) ± 95 % CI against the training β, one
    line per (family, L) group."""
    cols = ("family", "layers", "beta", "elbo", "elbo_ci_lo", "elbo_ci_hi")
    rows = rows_of(metrics, cols, "plot_elbo_vs_beta")
    _need_betas(rows, "plot_elbo_vs_beta")
    fig, axes = new_figure(1, 1, DPI)
    ax = axes[0, 0]
    for fam, L in _groups(rows):
        grp = [r for r in rows if _group_key(r) == (fam, L)]
        label = group_label(fam, L)
        _errorbar_by_beta(ax, grp, "elbo", "elbo_ci_lo", "elbo_ci_hi", label, f"elbo:{label}")
    ax.set_xlabel("training β")
    ax.set_ylabel("β = 1 ELBO (nats, higher = better)")
    ax.set_title("evidence lower bound at β = 1, 95 % CI", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_noise_histograms(
    data: tuple[list[str], list[float], list[np.ndarray]], path: str | os.PathLike
) -> None:
    """Fig. 8 of 002: density histograms of log p(x|z*), z* ~ q(z|x + s·ε), one step line per
    model on bins shared within each panel, one panel per noise scale s.

    ``data = (labels, scales, values)``, ``values[i]`` of shape ``(len(scales), N)``;
    non-finite values are left out.
    """
    labels, scales, values = data
    if not labels or not scales:
        raise ValueError("plot_noise_histograms: no models or no noise scales")
    if len(values) != len(labels):
        raise ValueError(
            f"plot_noise_histograms: {len(labels)} labels but {len(values)} value arrays"
        )
    arrs = [np.asarray(v, float) for v in values]
    for label, a in zip(labels, arrs):
        if a.ndim != 2 or a.shape[0] != len(scales):
            raise ValueError(
                f"plot_noise_histograms: values of {label!r} have shape {a.shape}, "
                f"want ({len(scales)}, N)"
            )
    fig, axes = new_figure(1, len(scales), DPI)
    for j, s in enumerate(scales):
        ax = axes[0, j]
        per = [a[j][np.isfinite(a[j])] for a in arrs]
        pooled = np.concatenate(per)
        if pooled.size == 0:
            raise ValueError(f"plot_noise_histograms: no finite values at scale {fmt_num(s)}")
        edges = np.histogram_bin_edges(pooled, bins=30)
        for i, (label, v) in enumerate(zip(labels, per)):
            if v.size == 0:
                continue
            dens, _ = np.histogram(v, bins=edges, density=True)
            ax.stairs(dens, edges, label=label, color=f"C{i % 10}", lw=1.2, gid=f"hist:{j}:{label}")
        ax.set_title(f"noise s = {fmt_num(float(s))}", fontsize=9)
        ax.set_xlabel("log p(x|z*), z* ~ q(z|x + s·ε)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _normalised(d: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(d)), float(np.max(d))
    if not hi > lo:
        return np.full_like(d, 0.5)
    return (d - lo) / (hi - lo)


def plot_attack_examples(
    data: tuple[list[str], list[np.ndarray], list[float]], path: str | os.PathLike
) -> None:
    """Fig. 1 of 002: one row per model of (input, reconstruction, adversarial input,
    distortion d, adversarial reconstruction, target) at the row's λ.

    ``data = (labels, strips, lambdas)``, each strip ``(6, H, W, C)`` (C = 1 grey, C = 3 RGB;
    ``(6, H, W)`` is read as grey). Images are clipped to [0, 1]; the distortion (in [−1, 1]) is
    shown as (d − min d)/(max d − min d) per strip, or 0.5 where d is constant.
    """
    labels, strips, lambdas = data
    if not strips:
        raise ValueError("plot_attack_examples: no strips to draw")
    if not len(labels) == len(strips) == len(lambdas):
        raise ValueError(
            f"plot_attack_examples: {len(labels)} labels, {len(strips)} strips, "
            f"{len(lambdas)} lambdas"
        )
    fig, axes = new_figure(len(strips), 6, DPI, gridspec_kw={"wspace": 0.05})
    fig.set_size_inches(6 * 1.3, len(strips) * 1.4)
    for i, (label, strip, lam) in enumerate(zip(labels, strips, lambdas)):
        s = np.asarray(strip, float)
        if s.ndim == 3:
            s = s[..., None]
        if s.ndim != 4 or s.shape[0] != 6 or s.shape[-1] not in (1, 3):
            raise ValueError(
                f"plot_attack_examples: strip of {label!r} has shape {s.shape}, "
                "want (6, H, W, C) with C in (1, 3)"
            )
        lam = float(lam)
        if not lam > 0:
            raise ValueError(f"plot_attack_examples: λ of {label!r} is {lam}, want > 0")
        for j in range(6):
            ax = axes[i, j]
            img = _normalised(s[j]) if j == 3 else np.clip(s[j], 0.0, 1.0)
            ax.imshow(
                img[..., 0] if img.shape[-1] == 1 else img,
                cmap="gray",
                vmin=0,
                vmax=1,
                gid=f"strip:{i}:{j}",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(STRIP_TITLES[j], fontsize=7)
        k = round(math.log2(lam), 1)
        axes[i, 0].set_ylabel(f"{label}\nλ=2^{k:.1f}", fontsize=7)
    save_figure(fig, path)


def _log2_lambda(r: dict[str, Any]) -> float:
    if "log2_lambda" in r and r["log2_lambda"] not in (None, ""):
        return float(r["log2_lambda"])
    return math.log2(float(r["lambda"]))


def lambda_means(rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log₂ λ, mean over pairs of log₁₀ Δ, mean over pairs of ‖d‖₂) of one model's rows of one
    mode, λ ascending; non-positive or non-finite Δ and non-finite ‖d‖₂ are left out."""
    by: dict[float, tuple[list[float], list[float]]] = {}
    for r in rows:
        ld, dn = by.setdefault(round(_log2_lambda(r), 9), ([], []))
        delta, d_norm = float(r["delta_value"]), float(r["d_norm"])
        if delta > 0 and math.isfinite(delta):
            ld.append(math.log10(delta))
        if math.isfinite(d_norm):
            dn.append(d_norm)
    xs = np.array(sorted(by))
    mean = lambda v: float(np.mean(v)) if v else math.nan  # noqa: E731
    return (
        xs,
        np.array([mean(by[x][0]) for x in xs]),
        np.array([mean(by[x][1]) for x in xs]),
    )


def plot_delta_vs_lambda(attacks: Rows, path: str | os.PathLike) -> None:
    """Means over pairs of log₁₀ Δ (top row) and ‖d‖₂ (bottom row) against log₂ λ, one line per
    model, one column per attack mode: for exact minimisers Δ is non-decreasing and ‖d‖₂
    non-increasing in λ."""
    cols = ("model_id", "model", "mode", "delta_value", "d_norm")
    rows = rows_of(attacks, cols, "plot_delta_vs_lambda")
    if not all("log2_lambda" in r or "lambda" in r for r in rows):
        raise ValueError("plot_delta_vs_lambda: rows need a log2_lambda or lambda column")
    lams = {round(_log2_lambda(r), 9) for r in rows}
    if len(lams) < 2:
        raise ValueError(f"plot_delta_vs_lambda: need at least two λ values, got {len(lams)}")
    modes = _modes(rows)
    models: dict[str, str] = {}
    for r in rows:
        models.setdefault(str(r["model_id"]), str(r["model"]))
    fig, axes = new_figure(2, len(modes), DPI)
    for j, m in enumerate(modes):
        sel = rows_where(rows, mode=m)
        for i, (mid, label) in enumerate(models.items()):
            mine = [r for r in sel if str(r["model_id"]) == mid]
            if not mine:
                continue
            xs, ld, dn = lambda_means(mine)
            kw = {"marker": "o", "ms": 2.5, "color": f"C{i % 10}", "label": label}
            axes[0, j].plot(xs, ld, gid=f"delta_lambda:{m}:{mid}", **kw)
            axes[1, j].plot(xs, dn, gid=f"dnorm_lambda:{m}:{mid}", **kw)
        axes[0, j].set_title(MODE_TITLES.get(m, m))
        axes[0, j].set_ylabel("mean log₁₀ Δ over pairs")
        axes[1, j].set_ylabel("mean ‖d‖₂ over pairs")
        for ax in axes[:, j]:
            ax.set_xlabel("log₂ λ")
        axes[0, j].legend(fontsize=6)
    fig.suptitle("Δ non-decreasing and ‖d‖₂ non-increasing in λ (exact minimisers)")
    save_figure(fig, path)


def agreement_share(ours: np.ndarray, reference: np.ndarray) -> float:
    """Share of attacks with ours <= reference * (1 + :data:`AGREE_RTOL`)."""
    ours, reference = np.asarray(ours, float), np.asarray(reference, float)
    return float(np.mean(ours <= reference * (1.0 + AGREE_RTOL)))


def plot_solver_agreement(rows: Rows, path: str | os.PathLike) -> None:
    """log₁₀ of our final Δ (y) against a reference solver's (x) on the same attacks, one panel
    per comparison (``check``: the stronger check attack, ``scipy``: scipy's L-BFGS-B), points
    coloured by mode, the identity line, and in the title the share of attacks with
    ours <= reference · (1 + 10⁻³). Points with a non-positive or non-finite Δ are left out."""
    rows = rows_of(rows, ("comparison", "mode", "ours", "reference"), "plot_solver_agreement")
    present = {str(r["comparison"]) for r in rows}
    comps = [c for c in ("check", "scipy") if c in present] + sorted(present - {"check", "scipy"})
    fig, axes = new_figure(1, len(comps), DPI)
    for j, c in enumerate(comps):
        ax = axes[0, j]
        sel = [
            r
            for r in rows_where(rows, comparison=c)
            if all(math.isfinite(float(r[k])) and float(r[k]) > 0 for k in ("ours", "reference"))
        ]
        if not sel:
            raise ValueError(f"plot_solver_agreement: no positive finite Δ pairs for {c!r}")
        ours = np.array([float(r["ours"]) for r in sel])
        ref = np.array([float(r["reference"]) for r in sel])
        for m in _modes(sel):
            idx = [k for k, r in enumerate(sel) if str(r["mode"]) == m]
            ax.scatter(
                np.log10(ref[idx]),
                np.log10(ours[idx]),
                s=10,
                color=MODE_COLORS.get(m, "C2"),
                label=m,
                gid=f"agree:{c}:{m}",
            )
        lo = float(min(np.log10(ref).min(), np.log10(ours).min()))
        hi = float(max(np.log10(ref).max(), np.log10(ours).max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, gid=f"identity:{c}")
        share = agreement_share(ours, ref)
        ax.set_title(
            f"{c}: {100 * share:.1f} % of {len(sel)} with ours ≤ ref.·(1 + 10⁻³)", fontsize=8
        )
        ax.set_xlabel(f"log₁₀ Δ, reference ({c})")
        ax.set_ylabel("log₁₀ Δ, ours")
        ax.legend(fontsize=7)
    save_figure(fig, path)
