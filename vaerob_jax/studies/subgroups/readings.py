"""The report of the subgroup study: sections whose readings are computed from its tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaerob_jax import attacks as atk
from vaerob_jax import report
from vaerob_jax.studies.common import config_fingerprint
from vaerob_jax.studies.runner import StudyRun
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig
from vaerob_jax.studies.subgroups.study import StudyInputs
from vaerob_jax.studies.subgroups.tables import (
    CONVERGENCE_TOLERANCE,
    SUMMARY_COLUMNS,
    SubgroupResults,
)

__all__ = ["omnibus_reading", "pairwise_reading", "report_sections"]

ALPHA = 0.05  # the level the readings test at


def omnibus_reading(omnibus: list[dict[str, Any]], alpha: float) -> str:
    """How many (β, ε) cells the omnibus test rejects "all subgroups alike" in, and how."""
    rejected = [o for o in omnibus if o["p_value"] < alpha]
    n_perm = sorted({int(o["n_perm"]) for o in omnibus})
    cells = ", ".join(f"β={o['beta']:g}, ε={o['eps']:g}" for o in rejected) or "none"
    return (
        f"The omnibus p-values come from a {omnibus[0]['procedure']} ({n_perm[0]} "
        f"permutations); they hold for the highest-median subgroup picked from these same data. "
        f'It rejects "every subgroup alike" at {alpha:g} in {len(rejected)} of '
        f"{len(omnibus)} (β, ε) cells ({cells})."
    )


def ordering_change(convergence: list[dict[str, Any]], beta: float) -> str | None:
    """A sentence replacing the headline at ``beta`` when the strong attack ranks another
    subgroup highest (None when the ordering survives or there is no convergence table)."""
    rows = [r for r in convergence if r["beta"] == beta]
    if not rows:
        return None
    top = max(rows, key=lambda r: r["median_default"])
    top_strong = max(rows, key=lambda r: r["median_strong"])
    if top["subgroup"] == top_strong["subgroup"]:
        return None
    return (
        f"No least-robust subgroup is claimed at β={beta:g}, ε={top['eps']:g}: "
        f"{top['subgroup']} have the highest median Δc under the study's {top['steps']}-step, "
        f"{top['restarts']}-restart attack "
        f"({top['median_default']:.3g}) but {top_strong['subgroup']} under the "
        f"{top_strong['strong_steps']}-step, {top_strong['strong_restarts']}-restart attack "
        f"({top_strong['median_strong']:.3g})."
    )


def headline_reading(
    summary: list[dict[str, Any]], beta: float, eps: float, p_omni: float | None, alpha: float
) -> str:
    """The highest-median subgroup at (β, ε) with its omnibus p; where the omnibus test does
    not reject, the sentence says first that no subgroup is least robust by that test."""
    text = report.reading_highest_median(summary, beta, eps, p_value=p_omni, p_label="omnibus p")
    if p_omni is not None and not p_omni < alpha:
        text = (
            f"No subgroup is least robust at β={beta:g}, ε={eps:g} by the omnibus test "
            f"(p={p_omni:.2g} ≥ {alpha:g}); descriptively, " + text
        )
    return text


def convergence_reading(convergence: list[dict[str, Any]]) -> str:
    """How much the subgroup medians move under stronger attacks and other random starts,
    against the gaps between subgroups; computed from ``attack_convergence``."""
    doubled = max(convergence, key=lambda r: abs(r["change_doubled"]))
    strong = max(convergence, key=lambda r: abs(r["change_strong"]))
    seeds = max(convergence, key=lambda r: r["seed_spread"])
    betas = sorted({r["beta"] for r in convergence})
    ok = [b for b in betas if all(r["converged"] for r in convergence if r["beta"] == b)]
    ok_steps = [
        b for b in betas if all(r["converged_steps"] for r in convergence if r["beta"] == b)
    ]
    gaps = []
    for b in betas:
        meds = [r["median_default"] for r in convergence if r["beta"] == b]
        gaps.append((max(meds) - min(meds)) / min(meds) if min(meds) > 0 else float("nan"))
    r0 = convergence[0]
    tol = f"{100 * CONVERGENCE_TOLERANCE:g} %"

    def where(bs: list[float]) -> str:
        return "{" + ", ".join(f"{b:g}" for b in bs) + "}"

    largest_move = max(
        (abs(r[c]) for r in convergence for c in ("change_doubled", "change_strong")),
        key=lambda m: m if np.isfinite(m) else -1.0,
    )
    objective_moves = [
        abs(r.get(c, np.nan))
        for r in convergence
        for c in ("objective_change_doubled", "objective_change_strong")
    ]
    # each row's own Δc moves against its own spread over random keys
    within_spread = all(
        max(abs(r["change_doubled"]), abs(r["change_strong"])) <= r["seed_spread"]
        for r in convergence
        if all(np.isfinite(r[c]) for c in ("change_doubled", "change_strong", "seed_spread"))
    )
    objective_converged = bool(objective_moves) and all(
        np.isfinite(m) and m < CONVERGENCE_TOLERANCE for m in objective_moves
    )
    doubled_moves = [abs(r.get("objective_change_doubled", np.nan)) for r in convergence]
    objective_steps_converged = bool(doubled_moves) and all(
        np.isfinite(m) and m < CONVERGENCE_TOLERANCE for m in doubled_moves
    )
    if len(ok) == len(betas):
        verdict = f"every subgroup median has converged at every β (both moves < {tol})"
    elif objective_converged and within_spread:
        verdict = (
            "Δc has not converged, but the attack has in what it maximises (every median "
            f"latent shift moves < {tol}, below), and each subgroup's Δc moves are no larger "
            "than its own spread over independent random starts (up to "
            f"{100 * seeds['seed_spread']:.1f} %): a stronger "
            "attack lands on other near-optimal δ of almost equal latent shift with another "
            "Δc rather than finding more damage, and that spread is the attack's share of "
            "the uncertainty of Δc"
        )
    elif objective_converged:
        verdict = (
            f"Δc has not converged at β ∈ {where([b for b in betas if b not in ok])}, although "
            f"the attack has in what it maximises (every median latent shift moves < {tol}, "
            "below): a stronger attack lands on other near-optimal δ whose median Δc differs "
            f"by up to {100 * largest_move:.1f} %, for some subgroup more than its own spread "
            f"over independent random starts (up to {100 * seeds['seed_spread']:.1f} %), so Δc "
            "differences smaller than that are unresolved there"
        )
    elif len(ok_steps) == len(betas):
        gains = any(
            r["change_strong"] >= CONVERGENCE_TOLERANCE for r in convergence if not r["converged"]
        )
        verdict = (
            f"more steps change nothing, but more random starts do: the attack has not "
            f"converged over its starts at β ∈ {where([b for b in betas if b not in ok])}, "
            + (
                "so its Δc are lower estimates of the maximum damage there (raise restarts)"
                if gains
                else "where they lower Δc rather than raise it: other near-optimal δ, not "
                "more damage"
            )
        )
    elif objective_steps_converged:
        verdict = (
            f"Δc moves when the steps double at β ∈ "
            f"{where([b for b in betas if b not in ok_steps])}, although the attack's "
            f"objective moves < {tol} there (below): the steps find other near-optimal δ, "
            "not more latent shift"
        )
    else:
        verdict = (
            f"the attack has not converged in its steps at β ∈ "
            f"{where([b for b in betas if b not in ok_steps])} (raise attack_steps)"
        )
    return (
        f"At ε={r0['eps']:g}, doubling the attack's {r0['steps']} steps ({r0['restarts']} "
        "restarts) moves a subgroup "
        f"median by at most {100 * abs(doubled['change_doubled']):.1f} % ({doubled['subgroup']}, "
        f"β={doubled['beta']:g}); the strong attack ({r0['strong_steps']} steps, "
        f"{r0['strong_restarts']} restarts) by up to {100 * abs(strong['change_strong']):.1f} % "
        f"({strong['subgroup']}, β={strong['beta']:g}). By the {tol} criterion {verdict}. "
        f"{objective_reading(convergence)}"
        f"Over {r0['seeds']} independent random starts a subgroup "
        f"median varies by up to {100 * seeds['seed_spread']:.1f} % ({seeds['subgroup']}, "
        f"β={seeds['beta']:g}), against gaps of "
        + ", ".join(f"{100 * g:.0f} %" for g in gaps)
        + " between the highest and lowest subgroup medians at β = "
        + ", ".join(f"{b:g}" for b in betas)
        + "."
    )


def objective_reading(convergence: list[dict[str, Any]]) -> str:
    """How far the stronger attacks move the median of what the attack maximises (the latent
    shift), next to Δc's moves; empty for a table without objective columns."""
    rows = [r for r in convergence if np.isfinite(r.get("objective_change_strong", np.nan))]
    if not rows:
        return ""
    doubled = max(abs(r["objective_change_doubled"]) for r in rows)
    strong = max(abs(r["objective_change_strong"]) for r in rows)
    strong_gain = max(r["objective_change_strong"] for r in rows)  # signed: a rise
    dc_doubled = max(abs(r["change_doubled"]) for r in rows)
    text = (
        f"In its own objective, the latent shift ‖μ(x+δ) − μ(x)‖₂, the medians move by at most "
        f"{100 * doubled:.2f} % when the steps double and {100 * strong:.2f} % under the strong "
        "attack"
    )
    if doubled >= CONVERGENCE_TOLERANCE:
        return text + ": the steps have not converged even in the objective (raise attack_steps). "
    text += ": its steps have converged in what it maximises"
    if dc_doubled >= CONVERGENCE_TOLERANCE:
        text += (
            f", so Δc's larger moves at 2× the steps (up to {100 * dc_doubled:.1f} %) come from "
            "near-optimal δ of almost equal latent shift that differ in Δc (the random-start "
            "spread below measures that)"
        )
    if strong_gain >= CONVERGENCE_TOLERANCE:
        text += (
            f"; more random starts still find larger shifts (up to {100 * strong_gain:.1f} %), "
            "so the Δc are lower estimates of the maximum damage"
        )
    return text + ". "


def accuracy_reading(accuracy: list[dict[str, Any]], eps: float) -> str:
    """The lowest classifier accuracy on adversarial reconstructions at ``eps``, ties named."""
    rows = [r for r in accuracy if r["input"] == "adv_recon" and r["eps"] == eps]
    tied = report.tied_extremes(rows, "accuracy", highest=False)
    low = tied[0]["accuracy"]
    where = "; ".join(
        f"the {r['classifier']} classifier on {r['subgroup']} at β={r['beta']:g}" for r in tied
    )
    return (
        f"Lowest accuracy on adversarial reconstructions at ε={eps:g} ({low:.2f}): {where}"
        + (f" ({len(tied)} tied)" if len(tied) > 1 else "")
        + "."
    )


def neighbour_reading(at_max: list[dict[str, Any]], k: int, eps: float) -> str:
    """The subgroup the attack pulls furthest into other subgroups' latent neighbourhoods
    (ties named), or that it pulls none, against the base rate of an unstructured embedding."""
    tied = report.tied_extremes(at_max, "pull", highest=True)
    first = tied[0]
    top = first["pull"]
    who = f"{first['subgroup']} at β={first['beta']:g}"
    if len(tied) > 1:
        who += " (tied with " + ", ".join(f"{s['subgroup']} at β={s['beta']:g}" for s in tied[1:])
        who += ")"
    detail = (
        f"{100 * first['other_before']:.0f} % → {100 * first['other_after']:.0f} % of their "
        f"{k} nearest latent neighbours are from other subgroups (pull "
        f"{100 * first['pull']:+.0f} points), against {100 * first['other_base_rate']:.0f} % "
        "expected with no latent structure (one minus their share of the reference set)"
    )
    if top > 0:
        lead = f"The attack pulls {who} furthest into other subgroups' neighbourhoods: "
    else:
        lead = (
            f"At ε={eps:g} the attack pulls no subgroup into other subgroups' neighbourhoods "
            f"(every pull ≤ 0); the largest pull is {who}'s: "
        )
    return (
        lead + detail + ". Ranked by pull, not by the share itself, which is high for small "
        "subgroups by construction."
    )


def eps_trend_reading(summary: list[dict[str, Any]]) -> str:
    """Whether the gap between the highest and lowest subgroup median grows with ε, per β."""
    parts = []
    for beta in sorted({float(r["beta"]) for r in summary}):
        gaps = []
        for eps in sorted({float(r["eps"]) for r in summary if float(r["beta"]) == beta}):
            meds = [
                float(r["median"])
                for r in summary
                if float(r["beta"]) == beta and float(r["eps"]) == eps
            ]
            if meds and min(meds) > 0:
                gaps.append((eps, max(meds) / min(meds) - 1.0))
        if len(gaps) < 2:
            continue
        trend = np.diff([g for _, g in gaps])
        word = (
            "grows"
            if np.all(trend > 0)
            else "shrinks"
            if np.all(trend < 0)
            else "does not change monotonically"
        )
        shown = ", ".join(f"{100 * g:.0f} %" for _, g in gaps)
        parts.append(f"β={beta:g}: {shown} ({word})")
    text = "Medians with bootstrap 95 % CIs."
    if parts:
        text += (
            " The gap between the highest and lowest subgroup median, by increasing ε, "
            + "; ".join(parts)
            + "."
        )
    return text


def reference_name(config: SubgroupStudyConfig, res: SubgroupResults) -> str:
    refs = sorted({str(d["reference"]) for d in res.disparity})
    name = refs[0] if len(refs) == 1 else " / ".join(refs)
    if config.disparity_reference != "largest":
        how = "named in the config"
    elif len({d["n"] for d in res.disparity}) == 1:
        how = "the first subgroup: all are equally large"
    else:
        how = "the largest subgroup"
    return f"{name} ({how}; fixed in advance)"


def pairwise_reading(
    config: SubgroupStudyConfig, res: SubgroupResults, eps: float, alpha: float
) -> str:
    """The pairwise comparisons at ``eps``: which subgroups differ from the reference after
    Holm's adjustment over the comparisons of each (β, ε) cell."""
    at = [d for d in res.disparity if d["eps"] == eps and d["subgroup"] != d["reference"]]
    parts = []
    for beta in sorted({d["beta"] for d in at}):
        sig = [
            f"{d['subgroup']} ({d['ratio']:.3g}×, Holm p={d['p_holm']:.2g})"
            for d in at
            if d["beta"] == beta and d["p_holm"] < alpha
        ]
        parts.append(f"β={beta:g}: {', '.join(sig) if sig else 'none'}")
    return (
        f"Ratio of each subgroup's median Δc to that of the reference, with two-sided "
        f"permutation p-values for the difference of medians ({config.n_perm} permutations), "
        f"raw and Holm-adjusted over the comparisons of each (β, ε) cell. Subgroups that differ "
        f"at Holm p < {alpha:g}, at ε={eps:g}: " + "; ".join(parts) + "."
    )


def report_sections(
    config: SubgroupStudyConfig, inputs: StudyInputs, res: SubgroupResults, run: StudyRun
) -> list[dict[str, Any]]:
    """The report's sections, in order: setting, least robust subgroup, Δc against ε,
    disparities, Δc against reconstruction, single attributes, classifiers, neighbourhoods,
    t-SNE, examples."""
    paths = run.paths
    betas = [float(b) for b in config.betas]
    eps_max = max(float(e) for e in config.eps)
    readings = []
    for beta in betas:
        omni = [o for o in res.omnibus if o["beta"] == beta and o["eps"] == eps_max]
        unstable = ordering_change(res.convergence, beta)
        if unstable is not None:  # a disparity the stronger attack does not reproduce
            readings.append(unstable)
            continue
        p_omni = omni[0]["p_value"] if omni else None
        readings.append(headline_reading(res.summary, beta, eps_max, p_omni, ALPHA))
    if res.omnibus:
        readings.append(omnibus_reading(res.omnibus, ALPHA))
    counts = inputs.sample.counts()
    sections: list[dict[str, Any]] = [
        {
            "heading": "Setting",
            "reading": (
                f"{config.dataset} ({config.backbone}, latent {config.latent_dim}), β ∈ {betas}, "
                f"{config.norm} ε ∈ {list(config.eps)}, {config.attack_steps}-step "
                f"{rule_name(config.attack_rule)} ({schedule_note(config)}, best of "
                f"{config.restarts} random starts) maximising ‖μ(x+δ) − μ(x)‖₂ (Eq. 4 of 000)"
                f"{precision_note(config.attack_dtype)}; Δc = "
                f"‖g(μ(x+δ)) − g(μ(x))‖₂ (Eq. 5); {config.n_per_subgroup} attacked examples per "
                f"subgroup ({', '.join(f'{k}: {v}' for k, v in counts.items())}); config "
                f"fingerprint {config_fingerprint(config)}."
            ),
        },
        {
            "heading": "Which subgroup is least robust?",
            "reading": "\n\n".join(readings),
            "figure": paths.get("fig_deviation_distributions"),
            "table": [s for s in res.summary if s["eps"] == eps_max],
            "columns": list(SUMMARY_COLUMNS),
        },
        *(
            [
                {
                    "heading": "Has the attack converged?",
                    "reading": convergence_reading(res.convergence),
                    "figure": paths.get("fig_attack_convergence"),
                    "table": res.convergence,
                    "columns": [
                        "beta",
                        "subgroup",
                        "median_default",
                        "median_doubled",
                        "median_strong",
                        "change_doubled",
                        "change_strong",
                        "seed_spread",
                        "objective_change_doubled",
                        "objective_change_strong",
                        "converged",
                    ],  # fmt: skip
                }
            ]
            if res.convergence
            else []
        ),
        {
            "heading": "Median Δc against the budget",
            "reading": eps_trend_reading(res.summary),
            "figure": paths.get("fig_median_vs_eps"),
        },
        {
            "heading": f"Disparity to {reference_name(config, res)}",
            "reading": pairwise_reading(config, res, eps_max, ALPHA),
            "table": [d for d in res.disparity if d["eps"] == eps_max],
        },
        {
            "heading": "Deviation against reconstruction quality",
            "reading": f"Each point is one attacked example at ε={eps_max:g} (000 Fig. 2).",
            "figure": paths.get("fig_deviation_vs_recon"),
        },
    ]
    for key, heading in (("fig_age", "By age"), ("fig_gender", "By gender")):
        if key in paths:
            label = key[4:]
            sections.append(
                {
                    "heading": heading,
                    "reading": f"Single-attribute groups ({label}) at every β and ε.",
                    "figure": paths[key],
                    "table": [
                        r
                        for r in res.by_attribute
                        if r["attribute"] == label and r["eps"] == eps_max
                    ],
                }
            )
    if res.accuracy:
        sections.append(
            {
                "heading": "Attribute classifiers on reconstructions",
                "reading": accuracy_reading(res.accuracy, eps_max),
                "figure": paths.get("fig_classifier_accuracy"),
            }
        )
    at_max = [s for s in res.neighbours_summary if s["eps"] == eps_max]
    sections.append(
        {
            "heading": "Latent neighbourhoods",
            "reading": neighbour_reading(at_max, config.knn_k, eps_max),
            "figure": paths.get("fig_neighbour_pull"),
        }
    )
    if "fig_tsne" in paths:
        sections.append(
            {
                "heading": "t-SNE of the latent means",
                "reading": "Reference examples coloured by subgroup; attacked examples as stars "
                "shaded by Δc, with arrows to their adversarial embeddings.",
                "figure": paths["fig_tsne"],
            }
        )
    sections.append(
        {
            "heading": "Examples",
            "reading": "Rows: x, x+δ, g(μ(x)), g(μ(x+δ)).",
            "figure": paths.get("fig_examples"),
        }
    )
    return sections


def precision_note(dtype: str) -> str:
    """What the Setting says about the attack's precision (nothing for float32)."""
    if dtype == "float32":
        return ""
    return f", run in {dtype} mixed precision (Δc measured in float32)"


def rule_name(rule: str) -> str:
    """The attack's step rule in words."""
    return {"sign": "sign-gradient PGD", "adam": "Adam PGD", "apgd": "Auto-PGD"}.get(
        rule, f"{rule} PGD"
    )


def schedule_note(config: SubgroupStudyConfig) -> str:
    """The attack's step sizes in words, from the config."""
    if config.attack_rule == "apgd":
        start = "2·ε" if config.attack_step is None else f"{config.attack_step:g}·ε"
        halvings = sum(w < config.attack_steps for w in atk.apgd_checkpoints(config.attack_steps))
        return (
            f"sign steps from {start} with momentum 0.75, halved at any of {halvings} "
            "checkpoints where the objective stalls, then resumed from the best point"
        )
    step = "2.5·ε/steps" if config.attack_step is None else f"{config.attack_step:g}·ε"
    if config.attack_schedule == "cosine":
        return f"steps cosine-decayed from {step}"
    return f"steps of {step}"
