"""Tables and figures of the fairness study: the theory panel and the trained grids' results.

Every summary is computed from the per-example flags stored with each cell, so a table can be
recomputed from the cells alone. Summaries average over seeds; their CIs are percentile
bootstraps over seeds and test examples together (:func:`~vaerob_jax.robustness.boundary.
bootstrap_errors`; the distance means resample the same way).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from vaerob_jax import fairness as fx
from vaerob_jax.report import figures_004 as figs
from vaerob_jax.report.plotting import rows_where
from vaerob_jax.robustness.boundary import bootstrap_errors
from vaerob_jax.studies.common import stats_seed, study_key
from vaerob_jax.studies.fairness.config import FairnessStudyConfig
from vaerob_jax.studies.runner import StudyRun
from vaerob_jax.sweeps import ResultStore

__all__ = ["FairnessResults", "config_key", "theory_tables", "write_tables_and_figures"]


@dataclasses.dataclass
class FairnessResults:
    """The tables the report's readings are computed from (lists of row dicts)."""

    theory: list[dict[str, Any]]
    theory_lambda: list[dict[str, Any]]
    theory_losses: list[dict[str, Any]]
    theorems: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    distances: list[dict[str, Any]]
    distance_summary: list[dict[str, Any]]
    attack_check: list[dict[str, Any]]
    paths: dict[str, Any]


def config_key(m: dict[str, Any]) -> tuple[float, float, str]:
    """(λ, ε*, loss) of a model description or table row (what seeds are averaged over)."""
    return float(m["lam"]), float(m["eps_star"]), str(m["loss"])


# ---------------------------------------------------------------------------------- theory
def theory_tables(config: FairnessStudyConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """The 1-D two-Gaussian model (μ = ∓1, balanced): the three classifiers of Fig. 2 per K,
    the Theorem 3 curve θ_f(λ) with gradient-trained thresholds beside it, the theorem checks.
    """
    eps = float(config.theory_eps)
    classifiers = []
    for k in config.theory_k:
        thetas = {
            "natural (θ*)": fx.theta_star(k),
            "fair (θ_f)": fx.theta_fair(k),
            f"robust (θ_r, ε={eps:g})": fx.theta_robust(eps, k),
        }
        for name, theta in thetas.items():
            classifiers.append({"K": float(k), "classifier": name, **_at_threshold(theta, k, eps)})
    curve = []
    lams = np.asarray(config.theory_lambdas, np.float32)
    for k in config.theory_k:
        data = fx.sample_gmm_1d(study_key(config.seed, f"theory/K={k:g}"), 2 * config.theory_n, k)
        trained = fx.train_thresholds(data["x"], data["label"], lams, reduce=config.penalty_reduce)
        for lam, t_fit in zip(lams.tolist(), np.asarray(trained["theta"]).tolist(), strict=True):
            t_cf = fx.theta_fair_lambda(lam, k, reduce=config.penalty_reduce)
            curve.append(
                {
                    "K": float(k),
                    "lam": float(lam),
                    "theta_closed_form": float(t_cf),
                    "theta_trained": float(t_fit),
                    "theta_gap": float(t_fit - t_cf),
                    **_at_threshold(t_cf, k, eps),
                }
            )
    checks = [c._asdict() for c in fx.check_all(n_eps=config.theorem_n_eps, n_k=config.theorem_n_k)]
    return classifiers, curve, checks


def loss_thresholds(config: FairnessStudyConfig) -> list[dict[str, Any]]:
    """Fig. 8: the fair threshold of each loss on one sample of the 1-D mixture, per λ.

    0/1: the exact minimiser of the empirical Eq. 3 over a 0.0005-spaced θ grid on [μ_, μ̄];
    ramp, logistic, exponential: :func:`~vaerob_jax.fairness.train_thresholds`. Errors are
    the mixture's closed forms at each threshold.
    """
    k, eps = float(config.losses_k), float(config.losses_eps)
    data = fx.sample_gmm_1d(study_key(config.seed, f"losses/K={k:g}"), 2 * config.theory_n, k)
    lams = np.asarray(config.losses_lambdas, np.float32)
    grid = jnp.linspace(-1.0, 1.0, 4001)
    rows = []
    thetas = {
        "zero_one": [
            float(
                grid[
                    jnp.argmin(
                        fx.empirical_fair_objective(
                            grid, lam, data["x"], data["label"], reduce=config.penalty_reduce
                        )
                    )
                ]
            )
            for lam in lams.tolist()
        ]
    }
    for loss in ("ramp", "logistic", "exp"):
        fit = fx.train_thresholds(
            data["x"], data["label"], lams, loss=loss, reduce=config.penalty_reduce
        )
        thetas[loss] = np.asarray(fit["theta"]).tolist()
    for i, lam in enumerate(lams.tolist()):
        for loss, ts in thetas.items():
            t = ts[i]
            rows.append(
                {
                    "K": k,
                    "lam": float(lam),
                    "loss": loss,
                    "theta": float(t),
                    "gap_to_zero_one": float(t - thetas["zero_one"][i]),
                    "natural": float(fx.natural_error(t, k)),
                    "violation": float(fx.fairness_gap(t, k)),
                    "robust": float(fx.robust_error(t, eps, k)),
                    "eps": eps,
                }
            )
    return rows


def _at_threshold(theta: Any, k: float, eps: float) -> dict[str, float]:
    e0, e1 = fx.group_errors(theta, k)
    b0, b1 = fx.group_boundary_errors(theta, eps, k)
    d0, d1 = fx.group_distances(theta, k)
    return {
        "theta": float(theta),
        "natural": float(fx.natural_error(theta, k)),
        "natural_g0": float(e0),
        "natural_g1": float(e1),
        "violation": float(fx.fairness_gap(theta, k)),
        "boundary": float(fx.boundary_error(theta, eps, k)),
        "boundary_g0": float(b0),
        "boundary_g1": float(b1),
        "robust": float(fx.robust_error(theta, eps, k)),
        "distance": float(fx.expected_distance(theta, k)),
        "distance_g0": float(d0),
        "distance_g1": float(d1),
    }


# ---------------------------------------------------------------------------------- grids
def _cell_arrays(store: ResultStore, part: Any) -> list[dict[str, np.ndarray]]:
    out = []
    for k in range(len(part.models)):
        arrays = store.load(f"model={part.cell_id(k)}").arrays
        if arrays is None:
            raise KeyError(f"cell {part.cell_id(k)} has no stored per-example arrays")
        out.append(arrays)
    return out


def _mean_ci(
    values: np.ndarray, groups: np.ndarray, seed: list[int], n_boot: int, ci: float = 0.95
):
    """Mean over seeds of per-group means of (S, N) values, with a bootstrap over seeds and
    examples (stratified by group). Returns {group id or -1 (all): (value, lo, hi)}."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    s, n = values.shape
    ids = np.unique(groups)
    members = {-1: np.arange(n), **{int(a): np.flatnonzero(groups == a) for a in ids}}
    out = {}
    for g, idx in members.items():
        v = values[:, idx]
        point = float(v.mean())
        draws = []
        for start in range(0, n_boot, 100):  # bounded memory: (100, S, |group|) at a time
            b = min(100, n_boot - start)
            seeds = rng.integers(0, s, size=(b, s))
            ex = rng.integers(0, idx.size, size=(b, 1, idx.size))
            draws.append(np.take_along_axis(v[seeds], ex, axis=2).mean(axis=(1, 2)))
        lo, hi = np.quantile(np.concatenate(draws), [(1 - ci) / 2, 1 - (1 - ci) / 2])
        out[g] = (point, float(lo), float(hi))
    return out


def grid_tables(
    config: FairnessStudyConfig, parts: dict[str, Any], store: ResultStore
) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """summary (bootstrap rates and parity per config × ε, worst-case attack), distances per
    model × group, distance summary per config × group, attack check per model × ε."""
    summary: list[dict[str, Any]] = []
    distances: list[dict[str, Any]] = []
    dist_summary: list[dict[str, Any]] = []
    check: list[dict[str, Any]] = []
    for part in parts.values():
        arrays = _cell_arrays(store, part)
        groups = part.test["group"]
        names = list(part.group_names)
        eps = np.asarray(config.eval_eps(part.name), float)
        for k, a in enumerate(arrays):
            info = {"part": part.name, "model_id": part.cell_id(k), **part.model_info(k)}
            for g, label in [(-1, "all"), *enumerate(names)]:
                sel = np.ones_like(groups, bool) if g < 0 else groups == g
                dist = a["distance"][sel]
                distances.append(
                    {
                        **info,
                        "group": label,
                        "n": int(sel.sum()),
                        "softmax_margin": float(a["softmax_margin"][sel].mean()),
                        "logit_margin": float(a["logit_margin"][sel].mean()),
                        "distance_mean": float(dist.mean()),
                        "distance_median": float(np.median(dist)),
                        "share_censored": float(a["distance_censored"][sel].mean()),
                    }
                )
            correct = a["correct"]
            worst = a["flipped_rfgsm"] | a["flipped_pgd"]
            strong = worst | a["flipped_check"]
            for e_i, e in enumerate(eps):
                b0 = float(np.mean(correct & worst[e_i]))
                b1 = float(np.mean(correct & strong[e_i]))
                check.append(
                    {
                        **info,
                        "eps": float(e),
                        "boundary_default": b0,
                        "boundary_strong": b1,
                        "change": b1 - b0,
                        "points_gained": int(np.sum(correct & strong[e_i] & ~worst[e_i])),
                    }
                )
        by_config: dict[tuple, list[int]] = {}
        for k, m in enumerate(part.models):
            by_config.setdefault(config_key(m), []).append(k)
        for cfg, ks in by_config.items():
            info = {"part": part.name, "lam": cfg[0], "eps_star": cfg[1], "loss": cfg[2]}
            correct = np.stack([arrays[k]["correct"] for k in ks])
            flipped = np.stack([arrays[k]["flipped_rfgsm"] | arrays[k]["flipped_pgd"] for k in ks])
            tag = f"{part.name}/{cfg}"
            for e_i, e in enumerate(eps):
                rows = bootstrap_errors(
                    correct,
                    flipped[:, e_i],
                    groups,
                    np.random.default_rng(stats_seed(config.seed, "bootstrap", f"{tag}/{e:g}")),
                    n_boot=config.n_boot,
                    num_groups=len(names),
                    names=names,
                )
                summary.extend({**info, "eps": float(e), **r, "n_seeds": len(ks)} for r in rows)
            for metric in ("softmax_margin", "distance"):
                vals = np.stack([arrays[k][metric] for k in ks])
                cis = _mean_ci(vals, groups, stats_seed(config.seed, metric, tag), config.n_boot)
                for g, (v, lo, hi) in cis.items():
                    dist_summary.append(
                        {
                            **info,
                            "metric": metric,
                            "group": "all" if g < 0 else names[g],
                            "value": v,
                            "ci_low": lo,
                            "ci_high": hi,
                            "n_seeds": len(ks),
                        }
                    )
    return summary, distances, dist_summary, check


#: Rows whose columns equal the query (re-exported for the readings and tests).
pick = rows_where


def write_tables_and_figures(
    config: FairnessStudyConfig,
    parts: dict[str, Any],
    rows: list[dict[str, Any]],
    store: ResultStore,
    run: StudyRun,
) -> FairnessResults:
    """Writes every CSV and figure of the study; returns the tables for the readings."""
    theory, curve, checks = theory_tables(config)
    run.table("theory_classifiers", theory)
    run.table("theory_lambda", curve)
    losses = loss_thresholds(config)
    run.table("theory_losses", losses)
    run.table("theorem_checks", checks)
    summary, distances, dist_summary, check = grid_tables(config, parts, store)
    run.table("errors", rows)
    run.table("error_summary", summary)
    run.table("distances", distances)
    run.table("distance_summary", dist_summary)
    run.table("attack_check", check)
    paths: dict[str, Any] = {}
    grid = np.linspace(-2.0, 3.0, 401, dtype=np.float32)
    curves = {
        float(k): {
            "theta": grid,
            "natural": np.asarray(fx.natural_error(jnp.asarray(grid), k)),
            "violation": np.asarray(fx.fairness_gap(jnp.asarray(grid), k)),
            "robust": np.asarray(fx.robust_error(jnp.asarray(grid), config.theory_eps, k)),
        }
        for k in config.theory_k
    }
    paths["theory"] = run.figure(
        "theory", figs.plot_theory_panel, (theory, curves), "theory_thresholds_and_errors.png"
    )
    paths["theorem3"] = run.figure(
        "theorem3", figs.plot_theorem3, curve, "theorem3_fair_threshold_vs_lambda.png"
    )
    kw = {"parts": list(parts)}
    paths["fig4"] = run.figure(
        "fig4",
        figs.plot_vs_lambda,
        (summary, dist_summary),
        "error_violation_margin_distance_vs_lambda.png",
        **kw,
    )
    paths["fig5"] = run.figure(
        "fig5", figs.plot_boundary_vs_eps, summary, "boundary_error_vs_eval_eps.png", **kw
    )
    paths["fig6"] = run.figure(
        "fig6", figs.plot_vs_eps_star, summary, "natural_error_violation_vs_eps_star.png", **kw
    )
    paths["fig7"] = run.figure(
        "fig7", figs.plot_robust_vs_eps, summary, "robust_error_vs_eval_eps.png", **kw
    )
    paths["groups"] = run.figure(
        "groups",
        figs.plot_group_distances,
        dist_summary,
        "group_distance_vs_lambda.png",
        **kw,
    )
    return FairnessResults(
        theory, curve, losses, checks, rows, summary, distances, dist_summary, check, paths
    )
