"""Tables and figures of the margin study, computed from its finished cells.

``margins`` (one row per model and example: the columns of :data:`MARGIN_COLUMNS`, then
:data:`EXTRA_COLUMNS`), ``margin_summary`` (per model and subgroup, plus 'all'),
``margins_with_deviation`` (joined with a subgroup study's Δc at its largest ε), figures
named after what they show (001 Figs. 6, 7, 9).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from vaerob_jax import report
from vaerob_jax.data import Dataset
from vaerob_jax.robustness import conservative_bound
from vaerob_jax.studies.margins.config import (
    EXTRA_COLUMNS,
    MARGIN_COLUMNS,
    MARGIN_SUMMARY_COLUMNS,
    MarginStudyConfig,
)
from vaerob_jax.studies.runner import StudyRun
from vaerob_jax.sweeps import join_rows, read_csv

__all__ = [
    "ATTACK_CHECK_COLUMNS",
    "MarginResults",
    "attack_check_rows",
    "join_same_models",
    "rows_for_model",
    "summarize_margins",
    "write_tables_and_figures",
]

Rows = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class MarginResults:
    """The tables the report's readings are computed from."""

    summary: Rows
    joined: Rows
    eps_max: float
    check: Rows = dataclasses.field(default_factory=list)


def rows_for_model(
    beta: float, tau: float, sample: Dataset, res: dict[str, np.ndarray], model_digest: str
) -> list[dict[str, Any]]:
    """One ``margins.csv`` row per evaluated example of a (β, τ) model; ``model_digest`` (16
    hex digits of :func:`~vaerob_jax.sweeps.params_digest`) names the model."""
    names = sample.subgroup_names
    rows = []
    for i, (g, eid) in enumerate(zip(sample.subgroup_ids, sample.example_ids)):
        defined = bool(res["bound_defined"][i])
        rows.append(
            {
                "beta": float(beta),
                "tau": float(tau),
                "model_digest": model_digest,
                "subgroup": names[int(g)],
                "example_id": int(eid),
                "sigma_min": float(res["sigma_min"][i]),
                "jac_fro": float(res["jac_fro"][i]),
                "p_r": float(res["p_r"][i]),
                "bound": float(res["bound"][i]) if defined else math.nan,
                "margin_estimate": float(res["estimate"][i]),
                "margin_bracket": float(res["width"][i]),
                "margin_bracket_rel": float(res["width_rel"][i]),
                "p_r_se": float(res["p_r_se"][i]),
                "bound_defined": defined,
                "margin_low": float(res["low"][i]),
                "margin_high": float(res["high"][i]),
                "p_clean": float(res["p_clean"][i]),
                "censored": bool(res["censored"][i]),
                "jac_fro_probe": float(res["jac_fro_probe"][i]),
                "jac_fro_probe_se": float(res["jac_fro_probe_se"][i]),
                "attacks": int(res["attacks"][i]),
                "attack_failed": int(res["attack_failed"][i]),
                "attack_nonfinite_steps": int(res["attack_nonfinite_steps"][i]),
            }
        )
    return rows


def summarize_margins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (β, τ, subgroup) summary of the per-example table, plus an 'all' row per model.

    Medians/IQRs/means of ``margin_estimate`` over all examples and of ``bound`` over the
    examples where it is defined; the share of defined bounds; among those, the share with
    bound ≤ estimated margin (Theorem 1 says it should be ~1, up to the O(ε) term and the
    estimator's own error), counted over examples whose margin is not censored (robust at
    ``r_max``, so the estimate is only a lower end); the number of censored examples.
    """
    out = []
    models = sorted({(r["beta"], r["tau"]) for r in rows})
    for beta, tau in models:
        mine = [r for r in rows if r["beta"] == beta and r["tau"] == tau]
        groups = list(dict.fromkeys(r["subgroup"] for r in mine))
        for name in [*groups, "all"]:
            sel = [r for r in mine if name == "all" or r["subgroup"] == name]
            est = np.array([r["margin_estimate"] for r in sel], np.float64)
            bnd = np.array([r["bound"] for r in sel], np.float64)
            ok = np.isfinite(bnd)
            cen = np.array([bool(r["censored"]) for r in sel])
            b_ok = bnd[ok]
            cmp = ok & ~cen  # a censored estimate (r_max) is only a lower end of the margin

            def iqr(v: np.ndarray) -> float:
                if v.size == 0:
                    return math.nan
                q75, q25 = np.percentile(v, [75, 25])
                return float(q75 - q25)

            out.append(
                {
                    "beta": beta,
                    "tau": tau,
                    "subgroup": name,
                    "n": len(sel),
                    "margin_median": float(np.median(est)),
                    "margin_iqr": iqr(est),
                    "margin_mean": float(np.mean(est)),
                    "bound_median": float(np.median(b_ok)) if b_ok.size else math.nan,
                    "bound_iqr": iqr(b_ok),
                    "bound_mean": float(np.mean(b_ok)) if b_ok.size else math.nan,
                    "share_bound_defined": float(np.mean(ok)),
                    "share_bound_le_margin": float(np.mean(bnd[cmp] <= est[cmp]))
                    if cmp.any()
                    else math.nan,
                    "n_censored": int(sum(bool(r["censored"]) for r in sel)),
                    # not r-robust even unperturbed (Eq. 2's p <= m at delta = 0): margin 0
                    "share_zero_margin": float(np.mean(est == 0.0)),
                }
            )
    return out


def deviation_rows(dev_path: Path) -> tuple[Rows, float]:
    """The subgroup study's Δc rows at its largest ε (one row per β, subgroup, example)."""
    dev = read_csv(dev_path, types={"subgroup": str, "model_digest": str})
    eps_max = max(float(r["eps"]) for r in dev)
    return [r for r in dev if float(r["eps"]) == eps_max], eps_max


def join_same_models(margins: Rows, dev: Rows, log: Any = print) -> Rows:
    """Margin rows joined with Δc rows of the *same* models only (equal ``model_digest``).

    Per β, the join happens where the margin study's model and the subgroup study's attacked
    model have the same parameter digest; every β whose models differ (other settings, other
    training) is skipped with a line naming it, and a deviation table without digests
    (written before they existed) is not joined at all: its models cannot be identified.
    """
    if dev and "model_digest" not in dev[0]:
        log(
            "the subgroup study's deviation.csv names no model digests (an older version "
            "wrote it), so its models cannot be matched with these: Δc not joined"
        )
        return []
    mine = {float(r["beta"]): r["model_digest"] for r in margins}
    theirs: dict[float, set[str]] = {}
    for r in dev:
        theirs.setdefault(float(r["beta"]), set()).add(str(r["model_digest"]))
    same = {b for b, d in mine.items() if theirs.get(b) == {d}}
    differ = sorted(b for b in mine if b in theirs and b not in same)
    if differ:
        log(
            f"Δc not joined for β {differ}: the subgroup study attacked other models than "
            "these (their parameter digests differ: other settings or other training)"
        )
    if not same:
        return []
    keep = [r for r in dev if float(r["beta"]) in same]
    at = [r for r in margins if float(r["beta"]) in same]
    return join_rows(at, keep, on=("beta", "model_digest", "subgroup", "example_id"))


def add_conservative_bound(config: MarginStudyConfig, rows: Rows) -> None:
    """Adds ``bound_conservative``: Theorem 1 with p_r replaced by its one-sided
    Clopper–Pearson lower limit at ``config.bound_level`` over the ``n_samples`` draws."""
    if not rows:
        return
    cons = conservative_bound(
        [r["sigma_min"] for r in rows],
        [r["jac_fro"] for r in rows],
        [r["p_r"] for r in rows],
        config.n_samples,
        config.m,
        config.bound_level,
    )
    for r, b in zip(rows, cons):
        r["bound_conservative"] = float(b)


ATTACK_CHECK_COLUMNS = (
    "beta",
    "tau",
    "subgroup",
    "example_id",
    "margin_estimate",
    "margin_estimate_strong",
    "change",
    "margin_bracket_rel",
    "moved",
)


def attack_check_rows(config: MarginStudyConfig, rows: Rows, store: Any) -> Rows:
    """Per checked example: the margin estimate under the study's attack and under the
    stronger one (same examples, noise draws and search), the relative change and ``moved``:
    -1 / +1 where it fell / rose by more than the estimate's relative bracket, else 0."""
    if not config.check_examples or store is None or store.spec is None:
        return []
    out: Rows = []
    for cell in store.spec:
        arrays = store.load(cell).arrays or {}
        if "check_estimate" not in arrays:
            continue
        beta, tau = float(cell["beta"]), float(cell["tau"])
        # A model's rows are in sample order, the order check_index counts in.
        model_rows = [r for r in rows if r["beta"] == beta and r["tau"] == tau]
        for i, strong in zip(arrays["check_index"], arrays["check_estimate"]):
            r = model_rows[int(i)]
            est, rel = float(r["margin_estimate"]), float(r["margin_bracket_rel"])
            change = (float(strong) - est) / est if est > 0 else math.nan
            tol = rel if math.isfinite(rel) else math.inf
            moved = 0 if not math.isfinite(change) or abs(change) <= tol else int(np.sign(change))
            out.append(
                {
                    "beta": beta,
                    "tau": tau,
                    "subgroup": r["subgroup"],
                    "example_id": r["example_id"],
                    "margin_estimate": est,
                    "margin_estimate_strong": float(strong),
                    "change": change,
                    "margin_bracket_rel": rel,
                    "moved": moved,
                }
            )
    return out


def write_tables_and_figures(
    config: MarginStudyConfig, inputs: Any, rows: Rows, run: StudyRun, store: Any = None
) -> MarginResults:
    """Writes every table and figure of the study; returns the tables for the readings."""
    add_conservative_bound(config, rows)
    run.table("margins", rows, [*MARGIN_COLUMNS, *EXTRA_COLUMNS])
    summary = summarize_margins(rows)
    run.table("margin_summary", summary, MARGIN_SUMMARY_COLUMNS)
    taus = sorted({float(t) for t in config.taus})
    run.figure("bound_vs_margin", report.plot_bound_vs_margin, rows, "bound_vs_margin.png")
    for t in taus:
        sfx = "" if len(taus) == 1 else f"_tau{t:g}"
        at_t = [r for r in rows if r["tau"] == t]
        run.figure(
            f"vs_beta{sfx}",
            report.plot_vs_beta,
            at_t,
            f"sigma_jacobian_margin_vs_beta{sfx}.png",
            columns=("sigma_min", "jac_fro", "margin_estimate", "bound"),
        )
        run.figure(
            f"margin_distributions{sfx}",
            report.plot_margin_distributions,
            at_t,
            f"margin_distributions{sfx}.png",
        )
    if len(taus) > 1:
        run.figure("margin_vs_tau", report.plot_margin_vs_tau, rows, "margin_vs_tau.png")
    joined: Rows = []
    eps_max = math.nan
    if inputs.deviation is not None:
        dev, eps_max = deviation_rows(inputs.deviation)
        at0 = [r for r in rows if r["tau"] == 0.0]
        joined = join_same_models(at0, dev, run.log)
        run.log(f"joined {len(joined)} of {len(at0)} τ=0 margin rows with Δc at ε={eps_max:g}")
        if joined:
            run.table("margins_with_deviation", joined)
            run.figure(
                "margin_vs_deviation",
                report.plot_margin_vs_deviation,
                joined,
                "margin_vs_deviation.png",
            )
    check = attack_check_rows(config, rows, store)
    if check:
        run.table("margin_attack_check", check, ATTACK_CHECK_COLUMNS)
    return MarginResults(summary, joined, eps_max, check)
