"""Figures of 003's study (robust GMM-regularised autoencoders), drawn from its tables.

* :func:`plot_attack_loss` (Fig. 2): the attack loss (the minimised objective: higher = more
  robust) against λ per model, mean ± std over trials, one panel per attack;
* :func:`plot_msssim_vs_budget`: Table 1's headline MS-SSIM columns against λ (latent attack
  MS-SSIM(x_t, x̃_a), lower = more robust; maximum damage MS-SSIM(x̃, x̃_a), higher = more
  robust) with the tables' bootstrap CIs;
* :func:`plot_attack_strip` (Fig. 3): per model x, f(z(x)), x + δ, f(z(x + δ)) and x_t;
* :func:`plot_image_grid`: decoded prior samples per model;
* :func:`plot_convergence`: each cell's mean attack loss at the default strength against the
  stronger check attack.

A figure without enough data raises ValueError (the study runner then skips it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vaerob_jax.report.plotting import new_figure, rows_where, save_figure

__all__ = [
    "plot_attack_loss",
    "plot_attack_strip",
    "plot_convergence",
    "plot_image_grid",
    "plot_msssim_vs_budget",
]

Rows = Sequence[dict[str, Any]]
DPI = 110
ATTACK_TITLES = {"latent": "latent attack (Eq. 12)", "damage": "maximum damage (Eq. 13)"}


def _models(rows: Rows) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["model"] not in seen:
            seen.append(r["model"])
    if not seen:
        raise ValueError("no models to draw")
    return seen


def _lines(ax: Any, rows: Rows, y: str, lo: str | None, hi: str | None, err: str | None) -> None:
    for m in _models(rows):
        sel = sorted(rows_where(rows, model=m), key=lambda r: float(r["budget"]))
        xs = np.array([float(r["budget"]) for r in sel])
        v = np.array([float(r[y]) for r in sel])
        if err is not None:
            e = np.array([float(r[err]) for r in sel])
            yerr = [e, e]
        else:
            assert lo is not None and hi is not None
            yerr = [
                v - np.array([float(r[lo]) for r in sel]),
                np.array([float(r[hi]) for r in sel]) - v,
            ]
        style = "-" if m.startswith("Ours") else "--"
        ax.errorbar(xs, v, yerr=yerr, marker="o", ms=3, capsize=2, ls=style, label=m)


def plot_attack_loss(rows: Rows, path: str | os.PathLike) -> None:
    """Fig. 2 of 003 from ``attack_summary`` rows: loss_mean ± loss_std_trials vs λ."""
    attacks = [a for a in ATTACK_TITLES if rows_where(rows, attack=a)]
    if not attacks or len({float(r["budget"]) for r in rows}) < 2:
        raise ValueError("need at least two budgets")
    fig, axes = new_figure(1, len(attacks), DPI)
    for j, a in enumerate(attacks):
        ax = axes[0, j]
        _lines(ax, rows_where(rows, attack=a), "loss_mean", None, None, "loss_std_trials")
        ax.set_title(ATTACK_TITLES[a])
        ax.set_xlabel("L2 budget λ")
        ax.set_ylabel("‖z(x+δ) − z(x_t)‖₂" if a == "latent" else "−‖f(z(x+δ)) − f(z(x))‖₂")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("attack loss (higher = more robust), mean ± std over trials")
    save_figure(fig, path)


def plot_msssim_vs_budget(rows: Rows, path: str | os.PathLike) -> None:
    """Table 1's headline MS-SSIM columns against λ, with bootstrap CIs."""
    specs: tuple[tuple[str, str, str], ...] = (
        ("latent", "ms_target", "MS-SSIM(x_t, x̃_a) ↓"),
        ("damage", "ms_recon", "MS-SSIM(x̃, x̃_a) ↑"),
    )
    specs = tuple(s for s in specs if rows_where(rows, attack=s[0]))
    if not specs or len({float(r["budget"]) for r in rows}) < 2:
        raise ValueError("need at least two budgets")
    fig, axes = new_figure(1, len(specs), DPI)
    for j, (a, metric, label) in enumerate(specs):
        ax = axes[0, j]
        _lines(
            ax,
            rows_where(rows, attack=a),
            f"{metric}_mean",
            f"{metric}_ci_low",
            f"{metric}_ci_high",
            None,
        )
        ax.set_title(ATTACK_TITLES[a])
        ax.set_xlabel("L2 budget λ")
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)


def plot_attack_strip(data: tuple[list[str], list[np.ndarray]], path: str | os.PathLike) -> None:
    """Fig. 3: one row per model of (x, f(z(x)), x + δ, f(z(x + δ)), x_t)."""
    labels, strips = data
    if not strips:
        raise ValueError("no strips to draw")
    titles = ("x", "f(z(x))", "x + δ", "f(z(x + δ))", "x_t")
    fig, axes = new_figure(len(strips), 5, DPI, gridspec_kw={"wspace": 0.05})
    fig.set_size_inches(5 * 1.3, len(strips) * 1.35)
    for i, (label, strip) in enumerate(zip(labels, strips, strict=True)):
        for j in range(5):
            ax = axes[i, j]
            img = np.clip(np.asarray(strip[j]), 0.0, 1.0)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[i, 0].set_ylabel(label, fontsize=7)
    save_figure(fig, path)


def plot_image_grid(data: tuple[list[str], list[np.ndarray]], path: str | os.PathLike) -> None:
    """One row per model of up to 8 images (e.g. decoded prior samples)."""
    labels, images = data
    if not images:
        raise ValueError("no images to draw")
    cols = min(8, min(len(x) for x in images))
    fig, axes = new_figure(len(images), cols, DPI)
    fig.set_size_inches(cols * 1.1, len(images) * 1.15)
    for i, (label, imgs) in enumerate(zip(labels, images, strict=True)):
        for j in range(cols):
            ax = axes[i, j]
            img = np.clip(np.asarray(imgs[j]), 0.0, 1.0)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=7)
    save_figure(fig, path)


def plot_convergence(rows: Rows, path: str | os.PathLike) -> None:
    """Per cell (model, attack, λ): mean loss of the default attack against the stronger check
    attack on the same examples; points on the diagonal = converged."""
    if not rows:
        raise ValueError("no convergence rows")
    attacks = [a for a in ATTACK_TITLES if rows_where(rows, attack=a)]
    fig, axes = new_figure(1, len(attacks), DPI)
    for j, a in enumerate(attacks):
        ax = axes[0, j]
        sel = rows_where(rows, attack=a)
        xs = np.array([float(r["loss_default"]) for r in sel])
        ys = np.array([float(r["loss_best"]) for r in sel])
        ax.scatter(xs, ys, s=12)
        lo, hi = float(min(xs.min(), ys.min())), float(max(xs.max(), ys.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
        ax.set_title(ATTACK_TITLES[a])
        ax.set_xlabel("default attack: mean loss")
        ax.set_ylabel("best of default and check attack")
    save_figure(fig, path)
