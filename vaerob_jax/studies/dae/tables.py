"""The DAE study's tables and figures, computed from the stored cells.

* ``attack_examples.csv``: one row per (model, attack, λ, pair) — loss, MS-SSIM and L2 pairs;
* ``attack_summary.csv``: per (model, attack, λ) the mean ± std over trials of the loss and
  every metric, and bootstrap CIs over pairs of the headline metrics;
* ``table1.csv`` / ``table2.csv`` (003's Tables 1 and 2 laid out per model), ``table3.csv``
  (latent classifier, clean → attacked at λ = ``latent_clf_budget``);
* ``quality.csv``: FD-clf of decoded prior samples (two independent draws), of test
  reconstructions and the train-vs-test floor; clean reconstruction MS-SSIM and MSE;
* ``convergence.csv`` (default vs stronger check attack per cell) and ``lbfgs_check.csv``
  (batched PGD vs scipy L-BFGS-B on the same images);
* ``training.csv``: each model's last logged training metrics;
* figures (:mod:`vaerob_jax.report.figures_003`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vaerob_jax.report import figures_003 as F
from vaerob_jax.robustness.frechet import frechet_distance
from vaerob_jax.studies.common import bootstrap_mean_ci, model_cell_arrays, stats_seed
from vaerob_jax.studies.dae.config import DAEStudyConfig
from vaerob_jax.studies.dae.study import ATTACKS, HEADLINE, DAEInputs, _jitted
from vaerob_jax.studies.runner import StudyRun
from vaerob_jax.sweeps import ResultStore

__all__ = [
    "CONVERGENCE_TOL",
    "DAEResults",
    "HEADLINE",
    "LBFGS_TOL",
    "METRICS",
    "bootstrap_mean_ci",
    "paired_values",
    "write_tables_and_figures",
]

#: Per-example metrics summarised per cell.
METRICS = (
    "ms_target",
    "ms_recon",
    "ms_input",
    "ms_target_reference",
    "ms_recon_reference",
    "l2_target",
    "l2_recon",
    "latent_to_target",
    "latent_clean_distance",
    "latent_shift",
    "d_norm",
)
#: A cell's attack counts as converged when its headline metric (HEADLINE) at the strongest
#: known attack (per example, the better of the default and the check attack) differs from
#: the default attack's by less than this share of its mean.
CONVERGENCE_TOL = 0.02
#: PGD is "at least as strong" as L-BFGS-B on an image when its loss exceeds the L-BFGS-B
#: loss by at most this share of the loss scale: the clean latent distance ‖z(x) − z(x_t)‖
#: for the latent attack (whose loss can reach ~0 when the target code is reachable, where a
#: share of the loss itself means nothing), |L-BFGS-B loss| for maximum damage.
LBFGS_TOL = 0.02


@dataclasses.dataclass
class DAEResults:
    """What the readings read: the tables (tidy rows) and per-model cell arrays."""

    examples: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    table1: list[dict[str, Any]]
    table2: list[dict[str, Any]]
    table3: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    convergence: list[dict[str, Any]]
    lbfgs: list[dict[str, Any]]
    training: list[dict[str, Any]]
    arrays: dict[str, dict[str, np.ndarray]]
    labels: dict[str, str]  # model_id -> label
    fd_floor: float
    paths: dict[str, Any] = dataclasses.field(default_factory=dict)


def paired_values(
    examples: list[dict[str, Any]], model_id: str, attack: str, budget: float, column: str
) -> np.ndarray:
    """A column of one cell's example rows ordered by pair (the same pairs for every model)."""
    sel = [
        r
        for r in examples
        if r["model_id"] == model_id and r["attack"] == attack and float(r["budget"]) == budget
    ]
    sel.sort(key=lambda r: int(r["pair"]))
    return np.array([float(r[column]) for r in sel], np.float64)


def _summary(c: DAEStudyConfig, inputs: DAEInputs, examples: list[dict]) -> list[dict]:
    out = []
    for e in inputs.entries:
        for attack in ATTACKS:
            for lam in map(float, c.budgets):
                sel = [
                    r
                    for r in examples
                    if r["model_id"] == e.model_id
                    and r["attack"] == attack
                    and float(r["budget"]) == lam
                ]
                if not sel:
                    continue
                trials = np.array([int(r["trial"]) for r in sel])
                row: dict[str, Any] = {**e.info(), "attack": attack, "budget": lam, "n": len(sel)}
                for col in ("loss", *METRICS):
                    v = np.array([float(r[col]) for r in sel])
                    tm = np.array([v[trials == t].mean() for t in np.unique(trials)])
                    row[f"{col}_mean"] = float(v.mean())
                    row[f"{col}_std_trials"] = float(tm.std(ddof=1)) if tm.size > 1 else math.nan
                for col in (HEADLINE["latent"], HEADLINE["damage"], "loss"):
                    v = np.array([float(r[col]) for r in sel])
                    lo, hi = bootstrap_mean_ci(
                        v,
                        c.n_boot,
                        stats_seed(c.seed, f"summary/{col}", f"{e.model_id}/{attack}/{lam}"),
                    )
                    row[f"{col}_ci_low"], row[f"{col}_ci_high"] = lo, hi
                row["moved_share"] = float(np.mean([bool(r["moved"]) for r in sel]))
                row["nonfinite_steps"] = int(sum(int(r["nonfinite_steps"]) for r in sel))
                row["max_d_norm_over_budget"] = (
                    float(max(float(r["d_norm"]) for r in sel) / lam) if lam > 0 else math.nan
                )
                row["max_box_violation"] = float(max(float(r["box_violation"]) for r in sel))
                out.append(row)
    return out


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if not math.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def _table1(c: DAEStudyConfig, inputs: DAEInputs, summary: list[dict], quality: list[dict]):
    """Tidy Table 1 rows (model, column, λ, mean, std over trials) and a wide layout."""
    columns = (
        ("latent", "ms_target", "LS MS-SSIM(x_t, x̃_a) ↓"),
        ("latent", "ms_input", "LS MS-SSIM(x, x_a)"),
        ("damage", "ms_recon", "MD MS-SSIM(x̃, x̃_a) ↑"),
        ("damage", "ms_input", "MD MS-SSIM(x, x_a)"),
    )
    tidy, wide = [], []
    fd = {q["model_id"]: q for q in quality}
    for e in inputs.entries:
        w: dict[str, Any] = {"model": e.label}
        for attack, metric, name in columns:
            for lam in map(float, c.budgets):
                r = next(
                    (
                        s
                        for s in summary
                        if s["model_id"] == e.model_id
                        and s["attack"] == attack
                        and s["budget"] == lam
                    ),
                    None,
                )
                if r is None:
                    continue
                tidy.append(
                    {
                        **e.info(),
                        "column": name,
                        "attack": attack,
                        "metric": metric,
                        "budget": lam,
                        "mean": r[f"{metric}_mean"],
                        "std_trials": r[f"{metric}_std_trials"],
                    }
                )
                w[f"{name} λ={lam:g}"] = _pm(r[f"{metric}_mean"], r[f"{metric}_std_trials"])
        q = fd.get(e.model_id)
        if q is not None and math.isfinite(q["fd_clf"]):
            w["FD-clf ↓"] = f"{q['fd_clf']:.2f}"
        wide.append(w)
    return tidy, wide


def _quality(
    c: DAEStudyConfig, inputs: DAEInputs, arrays: dict[str, dict[str, np.ndarray]]
) -> list[dict]:
    out = []
    for e in inputs.entries:
        a = arrays[e.model_id]
        fd = a.get("fd_prior")
        out.append(
            {
                **e.info(),
                "fd_clf": float(np.mean(fd)) if fd is not None else math.nan,
                "fd_clf_draw_0": float(fd[0]) if fd is not None else math.nan,
                "fd_clf_draw_1": float(fd[1]) if fd is not None else math.nan,
                "fd_clf_draw_spread": float(abs(fd[0] - fd[1])) if fd is not None else math.nan,
                "fd_clf_recon": float(a["fd_recon"][0]) if "fd_recon" in a else math.nan,
                "recon_msssim": float(np.mean(a["recon_msssim"])),
                "recon_mse": float(np.mean(a["recon_mse"])),
                "fd_samples": int(c.fd_samples),
            }
        )
    return out


def _table3(c: DAEStudyConfig, inputs: DAEInputs, arrays: dict[str, dict[str, np.ndarray]]):
    out = []
    for e in inputs.entries:
        a = arrays[e.model_id]
        if "clf_correct_attacked" not in a:
            continue
        clean, att = a["clf_correct_clean"].astype(float), a["clf_correct_attacked"].astype(float)
        drop = clean - att
        lo, hi = bootstrap_mean_ci(drop, c.n_boot, stats_seed(c.seed, "table3", e.model_id))
        out.append(
            {
                **e.info(),
                "budget": float(c.latent_clf_budget),
                "acc_test_clean": float(np.mean(a["clf_correct_test"])),
                "acc_clean": float(clean.mean()),
                "acc_attacked": float(att.mean()),
                "drop": float(drop.mean()),
                "drop_ci_low": lo,
                "drop_ci_high": hi,
                "n": int(clean.size),
            }
        )
    return out


def _convergence(c: DAEStudyConfig, inputs: DAEInputs, examples, arrays) -> list[dict]:
    out = []
    n_check = int(c.check_images)
    for e in inputs.entries:
        for attack in ATTACKS:
            metric = HEADLINE[attack]
            chk = arrays[e.model_id][f"check_loss_{attack}"]  # (E, Mc)
            chk_metric = arrays[e.model_id][f"check_{metric}_{attack}"]
            for j, lam in enumerate(map(float, c.budgets)):
                default = paired_values(examples, e.model_id, attack, lam, "loss")[:n_check]
                m_default = paired_values(examples, e.model_id, attack, lam, metric)[:n_check]
                best = np.minimum(default, chk[j])
                d_mean, b_mean = float(default.mean()), float(best.mean())
                md, mb = float(m_default.mean()), float(chk_metric[j].mean())
                gap = abs(md - mb) / max(abs(mb), 1e-12)
                out.append(
                    {
                        **e.info(),
                        "attack": attack,
                        "budget": lam,
                        "n": int(default.size),
                        "loss_default": d_mean,
                        "loss_check": float(chk[j].mean()),
                        "loss_best": b_mean,
                        "loss_relative_gap": float((d_mean - b_mean) / max(abs(b_mean), 1e-12)),
                        "share_improved_by_check": float(np.mean(chk[j] < default - 1e-6)),
                        "metric": metric,
                        "metric_default": md,
                        "metric_best": mb,
                        "relative_gap": float(gap),
                        "converged": bool(gap < CONVERGENCE_TOL),
                        "check_steps": int(c.check_factor * c.attack_steps),
                        "check_restart_factor": int(c.check_restart_factor),
                    }
                )
    return out


def _lbfgs(c: DAEStudyConfig, inputs: DAEInputs, examples, arrays) -> list[dict]:
    out: list[dict] = []
    if int(c.lbfgs_images) == 0:
        return out
    for e in inputs.entries:
        for attack in ATTACKS:
            lb = arrays[e.model_id][f"lbfgs_loss_{attack}"]
            pgd = arrays[e.model_id][f"lbfgs_pgd_loss_{attack}"]
            if attack == "latent":
                scale = paired_values(
                    examples, e.model_id, attack, float(c.lbfgs_budget), "latent_clean_distance"
                )[: lb.size]
            else:
                scale = np.abs(lb)
            excess = (pgd - lb) / np.maximum(scale, 1e-12)
            ok = excess <= LBFGS_TOL
            out.append(
                {
                    **e.info(),
                    "attack": attack,
                    "budget": float(c.lbfgs_budget),
                    "n": int(lb.size),
                    "pgd_loss": float(pgd.mean()),
                    "lbfgs_loss": float(lb.mean()),
                    "pgd_at_least_as_strong": float(ok.mean()),
                    "max_normalised_excess": float(np.max(excess)),
                }
            )
    return out


def _training(inputs: DAEInputs, trained: dict[str, Any]) -> list[dict]:
    out = []
    for g, (_, _, idx) in inputs.groups.items():
        res = trained["results"][g]
        hist = res.history
        if not hist.get("step", np.zeros(0)).size:
            continue
        for j, i in enumerate(idx):
            row: dict[str, Any] = {**inputs.entries[i].info(), "step": int(hist["step"][-1])}
            for name, v in hist.items():
                if name != "step" and np.ndim(v) == 2:
                    row[name] = float(v[-1, j])
            out.append(row)
    names = list(dict.fromkeys(k for r in out for k in r))  # aux metrics differ by loss
    return [{k: r.get(k, math.nan) for k in names} for r in out]


def write_tables_and_figures(
    config: DAEStudyConfig,
    inputs: DAEInputs,
    trained: dict[str, Any],
    rows: list[dict[str, Any]],
    store: ResultStore,
    run: StudyRun,
) -> DAEResults:
    """Every table and figure of the study (module docstring); returns them for the report."""
    c = config
    arrays = model_cell_arrays(store, [e.model_id for e in inputs.entries])
    run.table("attack_examples", rows)
    summary = _summary(c, inputs, rows)
    run.table("attack_summary", summary)
    quality = _quality(c, inputs, arrays)
    fd_floor = math.nan
    if inputs.feature_clf is not None:
        features = _jitted(inputs.feature_clf, "features")
        p = trained["feature_clf"]
        fd_floor = frechet_distance(
            np.asarray(features(p, inputs.train_x)), np.asarray(features(p, inputs.test_x))
        )
    floor = {k: math.nan for k in quality[0]} | {
        "model_id": "floor",
        "model": "train vs test images",
        "kind": "floor",
        "fd_clf": fd_floor,
    }
    run.table("quality", [*quality, floor])
    tidy1, wide1 = _table1(c, inputs, summary, quality)
    run.table("table1", tidy1)
    ablation = {"gmm_dae", "augmented"} | {
        e.model_id for e in inputs.entries if e.kind == "coupled"
    }
    table2 = [r for r in tidy1 if r["model_id"] in ablation and r["metric"] != "ms_input"]
    run.table("table2", table2)
    table3 = _table3(c, inputs, arrays)
    if table3:
        run.table("table3", table3)
    convergence = _convergence(c, inputs, rows, arrays)
    run.table("convergence", convergence)
    lbfgs = _lbfgs(c, inputs, rows, arrays)
    if lbfgs:
        run.table("lbfgs_check", lbfgs)
    training = _training(inputs, trained)
    if training:
        run.table("training", training)
    labels = {e.model_id: e.label for e in inputs.entries}
    res = DAEResults(
        examples=rows,
        summary=summary,
        table1=wide1,
        table2=table2,
        table3=table3,
        quality=quality,
        convergence=convergence,
        lbfgs=lbfgs,
        training=training,
        arrays=arrays,
        labels=labels,
        fd_floor=float(fd_floor),
    )
    p = res.paths
    p["attack_loss"] = run.figure(
        "attack_loss", F.plot_attack_loss, summary, "attack_loss_vs_budget.png"
    )
    p["msssim"] = run.figure("msssim", F.plot_msssim_vs_budget, summary, "msssim_vs_budget.png")
    lam = f"{c.strip_budget:g}"
    for attack in ATTACKS:
        strips = [arrays[e.model_id][f"strip_{attack}"] for e in inputs.entries]
        p[f"strip_{attack}"] = run.figure(
            f"strip_{attack}",
            F.plot_attack_strip,
            ([e.label for e in inputs.entries], strips),
            f"{attack}_attack_examples_lambda{lam}.png",
        )
    p["samples"] = run.figure(
        "samples",
        F.plot_image_grid,
        (
            [e.label for e in inputs.entries],
            [arrays[e.model_id]["samples"] for e in inputs.entries],
        ),
        "prior_samples.png",
    )
    p["convergence"] = run.figure(
        "convergence", F.plot_convergence, convergence, "attack_convergence.png"
    )
    return res
