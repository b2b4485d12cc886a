"""The report of the margin study: sections whose readings are computed from its tables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaerob_jax import report
from vaerob_jax.studies.margins.config import MARGIN_SUMMARY_COLUMNS, MarginStudyConfig
from vaerob_jax.studies.margins.tables import MarginResults
from vaerob_jax.studies.runner import StudyRun

__all__ = ["report_sections"]

BOX_WORDS = {
    "pixel": "x + δ kept in the [0, 1] pixel box",
    "none": "no pixel box (Eq. 3 as written)",
}


def theorem1_reading(n_exceed: int, n_compared: int) -> str:
    """What the count of bounds above their estimated margin says about Theorem 1."""
    if n_compared == 0:
        return "No pair has both a defined bound and an uncensored margin: nothing to compare."
    if n_exceed == 0:
        return (
            "Every compared bound lies at or below its estimated margin, as Theorem 1 (a lower "
            "bound up to its O(ε) term) predicts."
        )
    return (
        f"{n_exceed} of the {n_compared} compared bounds ({100 * n_exceed / n_compared:.1f} %) "
        "exceed the estimated margin: "
        "there the O(ε) term Theorem 1 drops, the Monte-Carlo error of p_r, or an attack too "
        "weak to find the true (smaller) margin is not negligible."
    )


def conservative_reading(rows: list[dict[str, Any]], config: MarginStudyConfig) -> str:
    """The conservative (Clopper–Pearson) bound next to the point-estimate bound."""
    cons = np.array([r.get("bound_conservative", math.nan) for r in rows], float)
    pt = np.array([r["bound"] for r in rows], float)
    if not np.isfinite(cons).any():
        return (
            f"With p_r replaced by its {100 * config.bound_level:g} % Clopper–Pearson lower "
            f"limit ({config.n_samples} draws) no bound is defined."
        )
    both = np.isfinite(cons) & np.isfinite(pt)
    ratio = float(np.median(cons[both] / pt[both])) if both.any() else math.nan
    return (
        f"With p_r replaced by its {100 * config.bound_level:g} % Clopper–Pearson lower limit "
        f"({config.n_samples} draws; bound_conservative) the bound is defined for "
        f"{100 * np.isfinite(cons).mean():.0f} % of pairs, at a median {ratio:.2f}× the "
        "point-estimate bound; neither is a certificate."
    )


def report_sections(
    config: MarginStudyConfig, rows: list[dict[str, Any]], res: MarginResults, run: StudyRun
) -> list[dict[str, Any]]:
    """The report's sections: setting, bound against margin, smallest margins, distributions,
    trends against β (and τ), margin against Δc when joined."""
    paths, summary, joined, eps_max = run.paths, res.summary, res.joined, res.eps_max
    est = np.array([r["margin_estimate"] for r in rows], float)
    bnd = np.array([r["bound"] for r in rows], float)
    ok = np.isfinite(bnd)
    cen = np.array([bool(r["censored"]) for r in rows])
    cmp = ok & ~cen
    share_le = float(np.mean(bnd[cmp] <= est[cmp])) if cmp.any() else math.nan
    corr = report.pearson(bnd[ok], est[ok]) if ok.sum() > 1 else math.nan
    overall = (
        f"The bound is defined (p_r > 0.5) for {100 * ok.mean():.0f} % of {len(rows)} "
        f"model·example pairs; where defined and the margin is not censored at r_max "
        f"({int(cmp.sum())} pairs) it is ≤ the estimated margin for {100 * share_le:.1f} % "
        f"of them (Pearson ρ over defined bounds = {corr:.2f}). "
        + theorem1_reading(int(np.sum(bnd[cmp] > est[cmp])), int(cmp.sum()))
        + " The margin estimate is an upper estimate of the true margin (an attack that misses "
        "a violation overstates it), "
        + bracket_reading(rows)
        + ". "
        + conservative_reading(rows, config)
    )
    per_model = []
    for s in summary:
        if s["subgroup"] != "all":
            continue
        groups = [g for g in summary if (g["beta"], g["tau"]) == (s["beta"], s["tau"])]
        groups = [g for g in groups if g["subgroup"] != "all"]
        per_model.append(smallest_margin_reading(s, groups))
    trend = beta_trend_readings(rows)
    sections: list[dict[str, Any]] = [
        {
            "heading": "Setting",
            "reading": (
                f"{config.dataset} ({config.backbone}, latent {config.latent_dim}), β ∈ "
                f"{list(config.betas)}, τ ∈ {list(config.taus)}; r = {config.r:g} on "
                f"‖g(μ(x)+ησ) − g(μ(x))‖₂, m = {config.m:g}, {config.n_samples} η draws; "
                f"margin by {config.n_iter}-step {config.method} on the L2 radius in "
                f"{search_range(config)} with a {config.attack_steps}-step {config.attack_rule} "
                f"PGD maximum-damage attack (Eq. 5 of 001), "
                f"{BOX_WORDS[config.box]}; "
                f"{config.split} examples per "
                f"subgroup: {_counts(rows)}; "
                f"config fingerprint {config.fingerprint()}."
            ),
        },
        {
            "heading": "Theorem 1's bound against the estimated margin (001 Fig. 6)",
            "reading": overall,
            "figure": paths.get("fig_bound_vs_margin"),
        },
        {
            "heading": "Which subgroup has the smallest margin?",
            "reading": "\n\n".join(per_model),
            "table": summary,
            "columns": list(MARGIN_SUMMARY_COLUMNS),
        },
    ]
    if res.check:
        sections.append(
            {
                "heading": "Has the margin's attack converged?",
                "reading": attack_check_reading(res.check, config),
            }
        )
    for name, p in paths.items():
        if name.startswith("fig_margin_distributions"):
            sections.append(
                {
                    "heading": "Margin distributions per subgroup (001 Fig. 9a)",
                    "reading": "Box plots of the estimated margin per subgroup, one panel per β.",
                    "figure": p,
                }
            )
        if name.startswith("fig_vs_beta"):
            sections.append(
                {
                    "heading": "σ, ‖J‖_F, margin and bound against β (001 Fig. 9c-d)",
                    "reading": " ".join(trend),
                    "figure": p,
                }
            )
    if "fig_margin_vs_tau" in paths:
        sections.append(
            {
                "heading": "Margin against τ (001 Fig. 7)",
                "reading": tau_trend_reading(rows),
                "figure": paths["fig_margin_vs_tau"],
            }
        )
    if joined:
        sections.append(
            {
                "heading": "Margin against the subgroup study's Δc",
                "reading": margin_deviation_reading(joined, eps_max),
                "figure": paths.get("fig_margin_vs_deviation"),
            }
        )
    return sections


def smallest_margin_reading(overall: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """One model's line: median margin and bound, the share whose clean input is already not
    r-robust (margin 0), and the subgroup(s) of smallest median margin, ties named as ties."""
    text = (
        f"β={overall['beta']:g}, τ={overall['tau']:g}: median margin "
        f"{overall['margin_median']:.3g} (bound {overall['bound_median']:.3g})"
    )
    zero = float(overall.get("share_zero_margin", 0.0))
    if zero > 0:
        text += f"; {100 * zero:.0f} % of examples are not r-robust even unperturbed (margin 0)"
    tied = [g["subgroup"] for g in report.tied_extremes(groups, "margin_median", highest=False)]
    low = min(g["margin_median"] for g in groups)
    if len(tied) == 1:
        return text + f"; smallest median margin: {tied[0]} ({low:.3g})."
    if len(tied) == len(groups):
        return text + f"; every subgroup's median margin is {low:.3g}, so none is smallest."
    return text + f"; smallest median margin {low:.3g}, shared by {', '.join(tied)}."


def beta_trend_readings(rows: list[dict[str, Any]]) -> list[str]:
    """Per τ: whether the mean σ_min grows, the mean ‖J‖_F shrinks and the mean margin grows
    monotonically with β (001 Fig. 9); with one β, that no trend can be read."""
    trend = []
    for t in sorted({r["tau"] for r in rows}):
        by_beta = {}
        for col in ("sigma_min", "jac_fro", "margin_estimate"):
            by_beta[col] = [
                float(np.mean([r[col] for r in rows if r["tau"] == t and r["beta"] == b]))
                for b in sorted({r["beta"] for r in rows})
            ]
        if len(by_beta["sigma_min"]) < 2:
            trend.append(f"τ={t:g}: one β only, so no trend against β can be read.")
            continue
        word = {True: "grows", False: "does not grow"}
        mono_s = bool(np.all(np.diff(by_beta["sigma_min"]) > 0))
        mono_j = bool(np.all(np.diff(by_beta["jac_fro"]) < 0))
        mono_m = bool(np.all(np.diff(by_beta["margin_estimate"]) > 0))
        trend.append(
            f"τ={t:g}: with β, mean σ_min {word[mono_s]} monotonically, mean ‖J‖_F "
            f"{'shrinks' if mono_j else 'does not shrink'} monotonically and the mean margin "
            f"{word[mono_m]} monotonically (001 Fig. 9 expects all three)."
        )
    return trend


def tau_trend_reading(rows: list[dict[str, Any]]) -> str:
    """Whether the mean estimated margin grows with τ at each β (001 Fig. 7 finds it does)."""
    parts = []
    for b in sorted({float(r["beta"]) for r in rows}):
        taus = sorted({float(r["tau"]) for r in rows if float(r["beta"]) == b})
        means = [
            float(
                np.mean(
                    [
                        r["margin_estimate"]
                        for r in rows
                        if float(r["beta"]) == b and float(r["tau"]) == t
                    ]
                )
            )
            for t in taus
        ]
        if len(means) < 2:
            continue
        grows = bool(np.all(np.diff(means) > 0))
        shown = ", ".join(f"{m:.3g}" for m in means)
        parts.append(f"β={b:g}: {shown} ({'grows' if grows else 'does not grow'} monotonically)")
    if not parts:
        return "Mean ± sd over examples; one τ only, so no trend against τ can be read."
    return (
        "Mean ± sd over examples; 001 finds the margin grows with τ. Here the mean margin by "
        "increasing τ is " + "; ".join(parts) + "."
    )


def _critical_rho(n: int) -> float:
    """Two-sided 5 % critical |rho| of no association for n pairs, 1.96 / sqrt(n - 1) (normal
    approximation to Spearman's rho under independence)."""
    return 1.96 / math.sqrt(max(n - 1, 1))


def _direction(rho: float, n: int) -> str:
    """The direction of a Spearman rho in words, claimed only beyond its critical value."""
    if not math.isfinite(rho):
        return "undefined (too few examples or constant values)"
    if abs(rho) < _critical_rho(n):
        return f"no monotone association at 0.05: |ρ| < {_critical_rho(n):.2f}"
    return (
        "examples with smaller margins are damaged more"
        if rho < 0
        else "examples with larger margins are damaged more"
    )


def margin_deviation_reading(joined: list[dict[str, Any]], eps_max: float) -> str:
    """Spearman rho between the estimated margin and the subgroup study's delta_c, pooled and
    per beta (beta moves both, so the pooled value mixes models), with its direction in words."""

    def rho_of(rows: list[dict[str, Any]]) -> float:
        if len(rows) < 3:
            return math.nan
        x = np.array([r["margin_estimate"] for r in rows], float)
        y = np.array([r["delta_c"] for r in rows], float)
        return float(report.spearman(x, y))

    pooled = rho_of(joined)
    betas = sorted({float(r["beta"]) for r in joined})
    per_beta = [(b, rho_of([r for r in joined if float(r["beta"]) == b])) for b in betas]
    text = (
        f"{len(joined)} examples attacked in both studies; Spearman ρ between the margin and "
        f"Δc at ε={eps_max:g} is {pooled:.2f} over all models ({_direction(pooled, len(joined))})"
    )
    if len(betas) > 1:
        sizes = {b: sum(float(r["beta"]) == b for r in joined) for b in betas}

        def significant(b: float, r: float) -> bool:
            return math.isfinite(r) and abs(r) >= _critical_rho(sizes[b])

        parts = ", ".join(
            f"β={b:g}: {r:.2f}" + ("*" if significant(b, r) else "") for b, r in per_beta
        )
        text += f" and {parts} within each β (* beyond the 5 % critical value)"
        signs = {np.sign(r) for b, r in per_beta if significant(b, r)}
        if len(signs) > 1:
            text += " (the direction differs between β)"
    return text + "."


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    first = (rows[0]["beta"], rows[0]["tau"])
    out: dict[str, int] = {}
    for r in rows:
        if (r["beta"], r["tau"]) == first:
            out[r["subgroup"]] = out.get(r["subgroup"], 0) + 1
    return out


def search_range(config: MarginStudyConfig) -> str:
    """The radius interval the margin search halves, in words."""
    if config.method == "logbisect":
        return f"[{config.r_max / config.log_range:g}, {config.r_max:g}] (halved in log radius)"
    return f"[0, {config.r_max:g}]"


def bracket_reading(rows: list[dict[str, Any]]) -> str:
    """How tightly the margins are bracketed, from the table's relative bracket widths."""
    rel = np.asarray([r["margin_bracket_rel"] for r in rows], np.float64)
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return "with no finite bracket (every margin censored or zero)"
    return (
        f"bracketed to ±{50 * float(np.median(rel)):.1f} % of the estimate (median over the "
        f"{rel.size} pairs with a finite bracket; at most ±{50 * float(rel.max()):.1f} %)"
    )


def attack_check_reading(check: list[dict[str, Any]], config: MarginStudyConfig) -> str:
    """How much a stronger attack moves the margin estimates, from ``margin_attack_check``."""
    n_models = len({(c["beta"], c["tau"]) for c in check})
    est = np.asarray([c["margin_estimate"] for c in check], np.float64)
    strong = np.asarray([c["margin_estimate_strong"] for c in check], np.float64)
    moved = np.asarray([c["moved"] for c in check])
    change = np.asarray([c["change"] for c in check], np.float64)
    finite = np.isfinite(change)
    worst = int(np.nanargmin(change)) if finite.any() else -1
    if worst >= 0 and change[worst] < 0:
        fall = (
            f" (largest fall {100 * -float(change[worst]):.0f} %, {check[worst]['subgroup']}, "
            f"β={check[worst]['beta']:g})"
        )
    elif finite.any():
        fall = " (no estimate fell)"
    else:
        fall = " (no finite change to compare)"
    return (
        f"On {len(check)} examples ({len(check) // max(n_models, 1)} per model, spread over "
        f"the subgroups), the search with a {config.check_factor * config.attack_steps}-step, "
        f"{config.check_restarts}-restart attack gives a median margin of "
        f"{float(np.median(strong)):.3g} against {float(np.median(est)):.3g} with the study's "
        f"{config.attack_steps}-step, {config.restarts}-restart attack on the same examples; "
        f"{int(np.sum(moved < 0))} estimates fell and {int(np.sum(moved > 0))} rose by more "
        f"than their bracket{fall}. "
        + (
            "The margins are upper estimates that a stronger attack still lowers: read "
            "differences between subgroups smaller than that with care."
            if np.sum(moved < 0) > 0
            else "No estimate fell beyond its bracket."
        )
        + (
            " Estimates that rose show the search is not monotone in the attack's strength "
            "(a different attack at one radius can miss a violation the other found): the "
            "margin depends on the attack, not only on the model."
            if np.sum(moved > 0) > 0
            else ""
        )
    )
