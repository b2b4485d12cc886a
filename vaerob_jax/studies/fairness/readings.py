"""The fairness study's report: 004's claims checked one by one, every sentence from a table.

:func:`claim_rows` turns the summary tables into one row per claim and part: the quantity
before and after (with their bootstrap CIs over seeds and test examples), whether the claim's
direction held, and whether the two CIs are disjoint (the change is then not seed or sampling
noise at the 95 % level of either end). The report quotes these rows; nothing in it is typed
independently of the numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaerob_jax.studies.fairness.config import FairnessStudyConfig
from vaerob_jax.studies.fairness.tables import FairnessResults, pick
from vaerob_jax.studies.runner import StudyRun

__all__ = ["CLAIM_COLUMNS", "claim_rows", "report_sections"]

CLAIM_COLUMNS = (
    "claim",
    "part",
    "comparison",
    "before",
    "before_ci",
    "after",
    "after_ci",
    "held",
    "cis_disjoint",
    "attack_gap",
    "degenerate",
)


def _one(rows: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    if len(rows) > 1:
        raise ValueError(f"{len(rows)} rows for {what}, expected one")
    return rows[0] if rows else None


def _ci(r: dict[str, Any]) -> str:
    return f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"


def degenerate_configs(summary: list[dict[str, Any]]) -> dict[tuple, float]:
    """(part, λ, ε*, loss) -> natural error, for configs no better than chance: error >=
    1 − 1/C with C the number of groups (= classes here), e.g. the ramp's "all wrong" optimum
    (§7 of 004). Claims about such a model's margins or boundary errors say nothing."""
    out = {}
    for part in {r["part"] for r in summary}:
        n_cls = len({r["group"] for r in summary if r["part"] == part and r["group"] != "all"})
        eps0 = min(float(r["eps"]) for r in summary if r["part"] == part)
        for r in pick(summary, part=part, eps=eps0, error="natural", statistic="rate", group="all"):
            if r["value"] >= 1.0 - 1.0 / max(n_cls, 1):
                out[(part, float(r["lam"]), float(r["eps_star"]), r["loss"])] = float(r["value"])
    return out


def _claim(claim: str, part: str, comparison: str, a: Any, b: Any, direction: int) -> dict | None:
    """A claim row comparing table rows a (before) and b (after); direction +1: b > a holds."""
    if a is None or b is None:
        return None
    held = (b["value"] - a["value"]) * direction > 0
    disjoint = a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]
    return {
        "claim": claim,
        "part": part,
        "comparison": comparison,
        "before": float(a["value"]),
        "before_ci": _ci(a),
        "after": float(b["value"]),
        "after_ci": _ci(b),
        "held": bool(held),
        "cis_disjoint": bool(disjoint),
        "attack_gap": 0.0,
        "degenerate": False,
        "_configs": [_config_of(a), _config_of(b)],
        "_eps": float(a["eps"]) if a.get("error") in ("boundary", "robust") else None,
    }


def _config_of(r: dict[str, Any]) -> tuple:
    return (r["part"], float(r["lam"]), float(r["eps_star"]), r["loss"])


def claim_rows(config: FairnessStudyConfig, res: FairnessResults) -> list[dict[str, Any]]:
    """One row per (claim of 004, part) that the grid can test (see the module docstring)."""
    out: list[dict[str, Any] | None] = []
    s, d = res.summary, res.distance_summary
    bad = degenerate_configs(s)
    for part in config.parts:
        lams = sorted(float(v) for v in config.lambdas(part))
        stars = sorted(float(v) for v in config.eps_stars(part))
        eps = sorted(float(v) for v in config.eval_eps(part))
        lo, hi, e_hi, e_lo = lams[0], lams[-1], eps[-1], eps[0]
        lam_txt = f"λ {lo:g} → {hi:g} (ε* = 0, CE)"

        def err(
            lam: float,
            eps_star: float,
            error: str,
            stat: str,
            e: float,
            loss: str = "ce",
            part: str = part,
        ) -> dict[str, Any] | None:
            q = dict(
                part=part,
                lam=lam,
                eps_star=eps_star,
                loss=loss,
                eps=e,
                error=error,
                statistic=stat,
                group="all",
            )
            return _one(pick(s, **q), str(q))

        def dist(
            lam: float, metric: str, group: str = "all", loss: str = "ce", part: str = part
        ) -> dict[str, Any] | None:
            q = dict(part=part, lam=lam, eps_star=0.0, loss=loss, metric=metric, group=group)
            return _one(pick(d, **q), str(q))

        if len(lams) > 1 and 0.0 in stars:
            out += [
                _claim(
                    "Fig. 4: natural error rises with λ",
                    part,
                    lam_txt,
                    err(lo, 0.0, "natural", "rate", e_lo),
                    err(hi, 0.0, "natural", "rate", e_lo),
                    +1,
                ),
                _claim(
                    "Fig. 4: accuracy-parity violation falls with λ",
                    part,
                    lam_txt,
                    err(lo, 0.0, "natural", "to_overall", e_lo),
                    err(hi, 0.0, "natural", "to_overall", e_lo),
                    -1,
                ),
                _claim(
                    "Fig. 4: mean softmax margin (the paper's distance proxy) falls with λ",
                    part,
                    lam_txt,
                    dist(lo, "softmax_margin"),
                    dist(hi, "softmax_margin"),
                    -1,
                ),
                _claim(
                    "Fig. 4: mean distance to the boundary (PGD bisection bound) falls with λ",
                    part,
                    lam_txt,
                    dist(lo, "distance"),
                    dist(hi, "distance"),
                    -1,
                ),
                _claim(
                    f"Fig. 5: boundary error at ε = {e_hi:g} rises with λ",
                    part,
                    lam_txt,
                    err(lo, 0.0, "boundary", "rate", e_hi),
                    err(hi, 0.0, "boundary", "rate", e_hi),
                    +1,
                ),
            ]
            # §5's per-group mechanism: the boundary moves toward the advantaged group.
            base = [
                r
                for r in pick(
                    s,
                    part=part,
                    lam=lo,
                    eps_star=0.0,
                    loss="ce",
                    eps=e_lo,
                    error="natural",
                    statistic="rate",
                )
                if r["group"] != "all"
            ]
            # with every group at the same error there is no advantaged group to follow
            if base and min(r["value"] for r in base) < max(r["value"] for r in base):
                adv = min(base, key=lambda r: r["value"])["group"]
                dis = max(base, key=lambda r: r["value"])["group"]
                out += [
                    _claim(
                        f"§5: the advantaged group's distance falls with λ (group {adv}, "
                        "lowest error at λ = min)",
                        part,
                        lam_txt,
                        dist(lo, "distance", adv),
                        dist(hi, "distance", adv),
                        -1,
                    ),
                    _claim(
                        f"§5: the disadvantaged group's distance rises with λ (group {dis}, "
                        "highest error at λ = min)",
                        part,
                        lam_txt,
                        dist(lo, "distance", dis),
                        dist(hi, "distance", dis),
                        +1,
                    ),
                ]
        # The ramp at the largest λ > 0 where it did not collapse (else at the largest λ,
        # marked degenerate): the "all wrong" optimum says nothing about the remedy.
        ramp_lams = [lam for lam in lams if lam > 0 and (part, lam, 0.0, "ramp") not in bad]
        ramp_lam = max(ramp_lams) if ramp_lams else hi
        if part == "digits" and config.digits_ramp and hi > 0:
            txt = f"CE → ramp at λ = {ramp_lam:g}, ε* = 0"
            out += [
                _claim(
                    "§7: the ramp loss lowers the fair model's natural error",
                    part,
                    txt,
                    err(ramp_lam, 0.0, "natural", "rate", e_lo),
                    err(ramp_lam, 0.0, "natural", "rate", e_lo, "ramp"),
                    -1,
                ),
                _claim(
                    f"§7: the ramp loss lowers the fair model's boundary error (ε = {e_hi:g})",
                    part,
                    txt,
                    err(ramp_lam, 0.0, "boundary", "rate", e_hi),
                    err(ramp_lam, 0.0, "boundary", "rate", e_hi, "ramp"),
                    -1,
                ),
            ]
        if len(stars) > 1:
            s_lo, s_hi = stars[0], stars[-1]
            for lam in (lo, hi):
                txt = f"ε* {s_lo:g} → {s_hi:g} at λ = {lam:g}"
                out += [
                    _claim(
                        "Fig. 6: adversarial training costs natural accuracy",
                        part,
                        txt,
                        err(lam, s_lo, "natural", "rate", e_lo),
                        err(lam, s_hi, "natural", "rate", e_lo),
                        +1,
                    ),
                    _claim(
                        f"Fig. 7: adversarial training lowers the robust error (ε = {e_hi:g})",
                        part,
                        txt,
                        err(lam, s_lo, "robust", "rate", e_hi),
                        err(lam, s_hi, "robust", "rate", e_hi),
                        -1,
                    ),
                ]
            if len(lams) > 1:
                txt = f"λ {lo:g} → {hi:g} at ε* = {s_hi:g}"
                out.append(
                    _claim(
                        "Fig. 6: the penalty lowers the violation also under adversarial training",
                        part,
                        txt,
                        err(lo, s_hi, "natural", "to_overall", e_lo),
                        err(hi, s_hi, "natural", "to_overall", e_lo),
                        -1,
                    )
                )
    out += loss_claims(res)
    rows = [r for r in out if r is not None]
    for r in rows:
        configs, eps = r.pop("_configs"), r.pop("_eps")
        r["degenerate"] = any(c in bad for c in configs)
        if eps is not None:  # how much the stronger check attack moved these models' errors
            moved = [
                c["change"]
                for c in res.attack_check
                if (c["part"], float(c["lam"]), float(c["eps_star"]), c["loss"]) in configs
                and math.isclose(float(c["eps"]), eps, rel_tol=1e-9)
            ]
            r["attack_gap"] = float(max(moved, default=0.0))
    return rows


def loss_claims(res: FairnessResults) -> list[dict[str, Any]]:
    """Fig. 8 at the largest λ > 0: the ramp against the better of the logistic and the
    exponential loss (closed-form errors of one sample's thresholds: no CI)."""
    lams = sorted({float(r["lam"]) for r in res.theory_losses if r["lam"] > 0})
    if not lams:
        return []
    lam = lams[-1]
    by = {r["loss"]: r for r in pick(res.theory_losses, lam=lam)}
    if not {"ramp", "logistic", "exp"} <= set(by):
        return []
    txt = f"ramp vs best of logistic/exp, 1-D mixture K = {by['ramp']['K']:g}, λ = {lam:g}"
    out = []
    for claim, value in (
        ("Fig. 8: the ramp's fair threshold is the closest to the 0/1 optimum", "gap"),
        (
            f"Fig. 8: the ramp's fair threshold has the lowest robust error (ε = "
            f"{by['ramp']['eps']:g})",
            "robust",
        ),
    ):

        def get(r: dict[str, Any], value: str = value) -> float:
            return abs(r["gap_to_zero_one"]) if value == "gap" else float(r["robust"])

        other = min(get(by["logistic"]), get(by["exp"]))
        out.append(
            {
                "claim": claim,
                "part": "theory",
                "comparison": txt,
                "before": other,
                "before_ci": "",
                "after": get(by["ramp"]),
                "after_ci": "",
                "held": bool(get(by["ramp"]) < other),
                "cis_disjoint": False,
                "attack_gap": 0.0,
                "degenerate": False,
                "_configs": [],
                "_eps": None,
            }
        )
    return out


def losses_sentence(res: FairnessResults) -> str:
    parts = []
    for lam in sorted({float(r["lam"]) for r in res.theory_losses}):
        rows = pick(res.theory_losses, lam=lam)
        parts.append(
            f"λ = {lam:g}: "
            + ", ".join(
                f"{r['loss']} θ = {r['theta']:.3f} (robust error {r['robust']:.3f})" for r in rows
            )
        )
    return "Fair thresholds per loss on one sample of the 1-D mixture — " + "; ".join(parts) + "."


def _count_sentence(claims: list[dict[str, Any]]) -> str:
    if not claims:
        return "The grids hold no pair of settings a claim of 004 compares."
    n_degenerate = sum(bool(c["degenerate"]) for c in claims)
    claims = [c for c in claims if not c["degenerate"]]
    prefix = (
        f"{n_degenerate} check{'s' if n_degenerate != 1 else ''} involving a model no better than "
        "chance are set aside; of the rest, "
        if n_degenerate
        else ""
    )
    if not claims:
        return prefix + "none remain."
    held = [c for c in claims if c["held"]]

    def clear(c: dict[str, Any]) -> bool:  # disjoint CIs and a change beyond the attack's own
        return bool(c["cis_disjoint"]) and abs(c["after"] - c["before"]) > c.get("attack_gap", 0.0)

    firm = [c for c in held if clear(c)]
    against = [c for c in claims if not c["held"] and clear(c)]
    return prefix + (
        f"{len(held)} of {len(claims)} claim checks went the paper's way, {len(firm)} of them "
        "with disjoint 95 % CIs (seeds and test examples resampled) and a change larger than "
        "the stronger check attack moved those models' errors (attack_gap); "
        f"{len(against)} went clearly the other way (disjoint CIs and a change beyond "
        "attack_gap)"
        + (": " + "; ".join(f"{c['claim']} ({c['part']})" for c in against) if against else "")
        + "."
    )


def theory_sentences(res: FairnessResults) -> tuple[str, str]:
    """Theorem checks and the Theorem 3 curve against trained thresholds."""
    cases = sum(int(r["cases"]) for r in res.theorems)
    bad = sum(int(r["violations"]) for r in res.theorems)
    failing = [r["statement"] for r in res.theorems if int(r["violations"]) > 0]
    checks = (
        f"Theorems 1–3 and Corollaries 1–2 checked at {cases} grid points inside their "
        f"hypotheses ({len(res.theorems)} statements): {bad} violations"
        + (f" (in: {'; '.join(failing)})." if failing else ".")
    )
    gaps = np.abs([r["theta_gap"] for r in res.theory_lambda])
    worst = max(res.theory_lambda, key=lambda r: abs(r["theta_gap"]))
    curve = (
        f"Thresholds trained by gradient descent on a smooth 0/1 surrogate (sampled data) lie "
        f"within {gaps.max():.3g} of Theorem 3's closed form θ_f(λ) (median {np.median(gaps):.3g}; "
        f"largest at K = {worst['K']:g}, λ = {worst['lam']:g})."
    )
    return checks, curve


def fig2_sentence(res: FairnessResults) -> str:
    parts = []
    for k in sorted({r["K"] for r in res.theory}):
        rows = {r["classifier"].split()[0]: r for r in pick(res.theory, K=k)}
        nat, fair = rows["natural"], rows["fair"]
        toward = (
            "toward"
            if fair["distance_g0"] < nat["distance_g0"]
            else "away from"
            if fair["distance_g0"] > nat["distance_g0"]
            else "neither toward nor away from"
        )
        parts.append(
            f"K = {k:g}: the fair threshold {fair['theta']:.3f} vs the natural {nat['theta']:.3f} "
            f"moves the boundary {toward} the low-variance class (its distance "
            f"{nat['distance_g0']:.3f} → {fair['distance_g0']:.3f}, the other's "
            f"{nat['distance_g1']:.3f} → {fair['distance_g1']:.3f}; boundary error "
            f"{nat['boundary']:.3f} → {fair['boundary']:.3f})"
        )
    return "; ".join(parts) + "."


def attack_sentence(res: FairnessResults, config: FairnessStudyConfig) -> str:
    if not res.attack_check:
        return "No attack check was run."
    worst = max(res.attack_check, key=lambda r: abs(r["change"]))
    changes = np.array([r["change"] for r in res.attack_check])
    verb = (
        "rose by at most"
        if changes.max() > 0 and worst["change"] > 0
        else "changed by at most"
        if changes.max() > 0
        else "did not rise; it moved by at most"
    )
    return (
        f"With {config.check_factor}× the PGD steps and {config.check_restarts} "
        f"restart{'s' if config.check_restarts != 1 else ''} the "
        f"boundary error of the {len(res.attack_check)} (model, ε) pairs {verb} "
        f"{abs(worst['change']):.4f} ({worst['model_id']}, ε = {worst['eps']:g}; median "
        f"{np.median(changes):+.4f}); the reported errors are "
        + ("converged to 0.01." if abs(worst["change"]) <= 0.01 else "NOT converged to 0.01 there.")
    )


def report_sections(
    config: FairnessStudyConfig,
    parts: dict[str, Any],
    res: FairnessResults,
    run: StudyRun,
) -> list[dict[str, Any]]:
    """The report's sections, each reading computed from the tables it shows."""
    claims = claim_rows(config, res)
    run.table("claims", claims, CLAIM_COLUMNS)
    bad = degenerate_configs(res.summary)
    collapsed = (
        "Models no better than chance (natural error ≥ 1 − 1/C, mean over seeds): "
        + "; ".join(
            f"{p} λ = {lam:g}, ε* = {es:g}, {loss}: {v:.3f}"
            for (p, lam, es, loss), v in sorted(bad.items())
        )
        + "."
        if bad
        else "No model ended at or below chance accuracy."
    )
    checks, curve = theory_sentences(res)
    sizes = "; ".join(
        f"{p.name}: {len(p.models)} models, {len(p.test['label'])} test examples in "
        f"{len(p.group_names)} groups"
        for p in parts.values()
    )
    sections: list[dict[str, Any]] = [
        {
            "heading": "The paper's claims here",
            "reading": _count_sentence(claims) + f" ({sizes}.) " + collapsed,
            "table": claims,
            "columns": CLAIM_COLUMNS,
            "digits": 3,
        },
        {
            "heading": "Theory (§5): the two-Gaussian model",
            "reading": fig2_sentence(res) + " " + checks,
            "figure": res.paths.get("theory"),
            "table": [
                {
                    k: r[k]
                    for k in (
                        "K",
                        "classifier",
                        "theta",
                        "natural",
                        "violation",
                        "boundary",
                        "robust",
                        "distance",
                        "distance_g0",
                        "distance_g1",
                    )
                }
                for r in res.theory
            ],
        },
        {"heading": "Theorem 3: θ_f(λ)", "reading": curve, "figure": res.paths.get("theorem3")},
        {
            "heading": "Fig. 8: the loss of the fair threshold",
            "reading": losses_sentence(res),
            "table": res.theory_losses,
        },
        {
            "heading": "Has the evaluation attack converged?",
            "reading": attack_sentence(res, config),
        },
    ]
    for key, heading in (
        ("fig4", "Error, violation, margin and distance against λ (Fig. 4)"),
        ("groups", "Per-group distance against λ"),
        ("fig5", "Boundary error against the attack budget (Fig. 5)"),
        ("fig6", "Adversarial training: natural error and violation against ε* (Fig. 6)"),
        ("fig7", "Robust error against the attack budget (Fig. 7)"),
    ):
        if res.paths.get(key) is not None:
            sections.append({"heading": heading, "figure": res.paths[key]})
    sections.append(
        {
            "heading": "How it was measured",
            "reading": (
                f"Errors per Eqs. 4–7 of 004 (robust = natural + boundary); 'flipped' is the "
                f"per-point OR of R+FGSM (α = ε/2, Tramèr's step ε − α) and PGD-"
                f"{config.eval_pgd_steps} on the logit margin of the model's own prediction "
                f"({config.eval_pgd_restarts} random starts). Fair training is Eq. 3's "
                f"penalty ({config.penalty_reduce} over groups) on the clean loss; adversarial "
                f"training is in-step PGD-{config.pgd_steps} at ε*. The ramp trains "
                f"{100 * config.ramp_warmup_share:.0f} % of its steps with cross-entropy first "
                "(the ramp has no gradient from a random start). Distances: the top-2 softmax gap "
                f"and an L∞ upper bound by {config.distance_halvings} PGD bisection halvings. "
                f"CIs: {config.n_boot} bootstrap resamples over seeds {list(config.seeds)} and "
                "test examples (stratified by group)."
            ),
        }
    )
    if any(math.isnan(float(c["before"])) for c in claims):
        raise FloatingPointError("a claim compares a non-finite value")
    return sections
