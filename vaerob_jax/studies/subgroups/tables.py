"""Tables and figures of the subgroup study, computed from its finished cells.

Tables (tidy CSV, one row per what the name says): ``deviation`` (β, ε, subgroup, example),
``summary`` and ``disparity`` (β, ε, subgroup; pairwise against a reference fixed in advance,
raw and Holm-adjusted p-values), ``disparity_omnibus`` (β, ε: the selection-aware
permutation test of max − min subgroup medians), ``summary_by_attribute`` (attribute level),
``classifier_accuracy`` (classifier, input, β, ε, subgroup; Tables 1-2 of 000),
``neighbours`` / ``neighbours_summary`` (latent k-NN before and after the attack, with the
base rate of an unstructured embedding), ``attack_convergence`` (β, subgroup at the largest
ε: median Δc under the default, doubled and strong attacks and over independent starts). Figures are
named after what they show. Everything here reads the cells' rows and stored arrays; the
models are only used for clean encodings and reconstructions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax import report
from vaerob_jax.models import accuracy_by_group, predict
from vaerob_jax.robustness import (
    disparity,
    median_range_test,
    neighbourhood_pull,
    summarize,
    tsne_embedding,
)
from vaerob_jax.studies.common import stats_seed
from vaerob_jax.studies.runner import StudyRun
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig
from vaerob_jax.studies.subgroups.study import (
    ATTRIBUTE_LEVELS,
    StudyInputs,
    Trained,
    cell_arrays,
    embed_stack,
    example_indices,
    reconstruct_batch,
    reconstruct_stack,
)
from vaerob_jax.sweeps import ResultStore

__all__ = ["DEVIATION_COLUMNS", "SUMMARY_COLUMNS", "SubgroupResults", "write_tables_and_figures"]

DEVIATION_COLUMNS = (
    "beta",
    "eps",
    "subgroup",
    "example_id",
    "delta_c",
    "recon_loss",
    "latent_shift",
    "attack_value",
    "attack_start_value",
    "attack_nonfinite_steps",
    "attack_failed",
    "model_digest",
)
SUMMARY_COLUMNS = ("beta", "eps", "subgroup", "n", "median", "iqr", "mean", "ci_low", "ci_high")
ARROWS_IN_TSNE = 12  # attacked examples (highest Δc) whose move is drawn in the t-SNE figure

Rows = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class SubgroupResults:
    """The tables the report's readings are computed from."""

    rows: Rows
    summary: Rows
    disparity: Rows
    omnibus: Rows
    convergence: Rows
    by_attribute: Rows
    accuracy: Rows
    neighbours_summary: Rows


OMNIBUS_PROCEDURE = (
    "permutation test of max − min subgroup median, all subgroup labels permuted and the "
    "highest and lowest subgroups re-selected on every permutation"
)


def summaries(
    config: SubgroupStudyConfig,
    rows: Rows,
    groups_of: Callable[[dict], str],
    reference: str = "largest",
    tests: bool = True,
) -> tuple[Rows, Rows, Rows]:
    """Per (β, ε) summaries, pairwise disparities against ``reference`` (Holm-adjusted) and
    the omnibus test of Δc over groups given by ``groups_of(row)`` (the last two only with
    ``tests``)."""
    summary, disp, omnibus = [], [], []
    cells = sorted({(r["beta"], r["eps"]) for r in rows})
    for beta, eps in cells:
        cell_rows = [r for r in rows if r["beta"] == beta and r["eps"] == eps]
        labels = [groups_of(r) for r in cell_rows]
        names = sorted(set(labels), key=labels.index)
        ids = np.asarray([names.index(label) for label in labels])
        values = np.asarray([r["delta_c"] for r in cell_rows], np.float64)
        cell = f"beta={beta!r}|eps={eps!r}"
        boot = np.random.default_rng(stats_seed(config.seed, "bootstrap", cell))
        for s in summarize(values, ids, boot, n_boot=config.n_boot, names=names):
            summary.append({"beta": beta, "eps": eps, "subgroup": s.pop("group"), **s})
        if tests and len(names) > 1:
            perm = np.random.default_rng(stats_seed(config.seed, "permutation", cell))
            ref = reference if reference in names else "largest"
            for d in disparity(values, ids, perm, reference=ref, n_perm=config.n_perm, names=names):
                disp.append({"beta": beta, "eps": eps, "subgroup": d.pop("group"), **d})
            omni = np.random.default_rng(stats_seed(config.seed, "omnibus", cell))
            test = median_range_test(values, ids, omni, n_perm=config.n_perm, names=names)
            omnibus.append({"beta": beta, "eps": eps, **test, "procedure": OMNIBUS_PROCEDURE})
    return summary, disp, omnibus


CONVERGENCE_TOLERANCE = 0.02  # a median that moves less when the attack doubles has converged


def convergence_table(
    config: SubgroupStudyConfig, rows: Rows, store: ResultStore, spec_cells: list[Any]
) -> Rows:
    """Per β and subgroup at the largest ε: the median Δc under the default attack, with 2×
    the steps, under the strong attack, and the range over independent random starts."""
    if config.convergence_factor == 0:
        return []
    eps_max = max(float(e) for e in config.eps)
    out: Rows = []
    for cell in spec_cells:
        if float(cell["eps"]) != eps_max:
            continue
        beta = float(cell["beta"])
        arrays = cell_arrays(store, cell)
        cell_rows = [r for r in rows if r["beta"] == beta and r["eps"] == eps_max]
        dc = np.asarray([r["delta_c"] for r in cell_rows], np.float64)
        objective = np.asarray([r["attack_value"] for r in cell_rows], np.float64)
        labels = [r["subgroup"] for r in cell_rows]
        seeds = [dc] + [arrays[f"dc_seed{k}"] for k in range(1, config.attack_seeds)]
        for g in sorted(set(labels), key=labels.index):
            m = np.asarray([label == g for label in labels])
            med = float(np.median(dc[m]))
            doubled = float(np.median(arrays["dc_doubled"][m]))
            strong = float(np.median(arrays["dc_strong"][m]))
            seed_meds = [float(np.median(s[m])) for s in seeds]
            # The attack's own objective (the latent shift it maximises); cells stored before
            # it was recorded have no obj_* arrays.
            obj = float(np.median(objective[m]))
            obj_arm = {
                arm: float(np.median(arrays[f"obj_{arm}"][m])) if f"obj_{arm}" in arrays else np.nan
                for arm in ("doubled", "strong")
            }
            out.append(
                {
                    "beta": beta,
                    "eps": eps_max,
                    "subgroup": g,
                    "n": int(m.sum()),
                    "steps": config.attack_steps,
                    "restarts": config.restarts,
                    "median_default": med,
                    "median_doubled": doubled,
                    "strong_steps": config.convergence_factor * config.attack_steps,
                    "strong_restarts": config.convergence_restarts,
                    "median_strong": strong,
                    "change_doubled": _relative(doubled, med),
                    "change_strong": _relative(strong, med),
                    "seeds": len(seeds),
                    "seed_median_min": min(seed_meds),
                    "seed_median_max": max(seed_meds),
                    "seed_spread": _relative(max(seed_meds), med) - _relative(min(seed_meds), med),
                    "objective_default": obj,
                    "objective_change_doubled": _relative(obj_arm["doubled"], obj),
                    "objective_change_strong": _relative(obj_arm["strong"], obj),
                    # steps: doubling them moves the median < 2 %; converged: the strong attack
                    # (more steps AND restarts) does not move it by more either
                    "converged_steps": int(abs(_relative(doubled, med)) < CONVERGENCE_TOLERANCE),
                    "converged": int(
                        abs(_relative(doubled, med)) < CONVERGENCE_TOLERANCE
                        and abs(_relative(strong, med)) < CONVERGENCE_TOLERANCE
                    ),
                }
            )
    return out


def _relative(value: float, ref: float) -> float:
    return (value - ref) / ref if ref > 0 else float("nan")


def attribute_summaries(config: SubgroupStudyConfig, inputs: StudyInputs, rows: Rows) -> Rows:
    """The same summaries per single protected attribute (age, gender)."""
    sample = inputs.sample
    by_id = {int(e): i for i, e in enumerate(sample.example_ids)}
    out: Rows = []
    for attr in inputs.attributes:
        label, (lo, hi) = ATTRIBUTE_LEVELS[attr]
        values = sample.attributes[attr]

        def level(r: dict[str, Any], v: np.ndarray = values, lo: str = lo, hi: str = hi) -> str:
            return hi if v[by_id[r["example_id"]]] else lo

        s, _, _ = summaries(config, rows, level, tests=False)
        out += [{"attribute": label, **r} for r in s]
    return out


def classifier_accuracy(
    config: SubgroupStudyConfig,
    inputs: StudyInputs,
    trained: Trained,
    store: ResultStore,
    spec_cells: list[Any],
    log: Callable[[str], None],
) -> Rows:
    """Attribute classifiers on clean images, clean and adversarial reconstructions (Tables
    1-2 of 000), per subgroup, β and ε."""
    model, sample, reference = inputs.model, inputs.sample, inputs.reference
    names = sample.subgroup_names
    betas = [float(b) for b in config.betas]
    xs = jnp.asarray(sample.images)
    recon = np.asarray(reconstruct_stack(model, trained.params, xs))
    rows: Rows = []
    for attr, (clf, cparams) in trained.classifiers.items():
        label = ATTRIBUTE_LEVELS[attr][0]
        truth = sample.attributes[attr].astype(np.int32)

        def acc(pred: np.ndarray, truth: np.ndarray = truth) -> Rows:
            correct = (np.asarray(pred) == truth).astype(np.float64)
            return [
                {
                    "subgroup": names[g],
                    "n": int(np.sum(sample.subgroup_ids == g)),
                    "accuracy": float(correct[sample.subgroup_ids == g].mean()),
                }
                for g in range(len(names))
                if np.any(sample.subgroup_ids == g)
            ]

        base = {"classifier": label}
        for r in acc(predict(clf, cparams, sample.images)):
            rows.append({**base, "input": "clean", "beta": None, "eps": None, **r})
        for k, beta in enumerate(betas):
            for r in acc(predict(clf, cparams, recon[k])):
                rows.append({**base, "input": "recon", "beta": beta, "eps": None, **r})
            for cell in spec_cells:
                if float(cell["beta"]) != beta:
                    continue
                pred = cell_arrays(store, cell)[f"pred_adv_{attr}"]
                for r in acc(pred):
                    rows.append(
                        {**base, "input": "adv_recon", "beta": beta, "eps": float(cell["eps"]), **r}
                    )
    if trained.classifiers:
        first = inputs.attributes[0]
        clf, cparams = trained.classifiers[first]
        check = accuracy_by_group(
            clf,
            cparams,
            reference.images,
            reference.attributes[first].astype(np.int32),
            np.zeros(len(reference), np.int32),
        )
        log(f"{first} classifier clean accuracy (reference set): {check[0]['accuracy']:.3f}")
    return rows


def neighbours(
    config: SubgroupStudyConfig,
    inputs: StudyInputs,
    trained: Trained,
    store: ResultStore,
    spec_cells: list[Any],
) -> tuple[Rows, Rows, np.ndarray, np.ndarray]:
    """Latent neighbourhoods (k-NN in μ space) of every attacked example before and after the
    attack; returns (per-example rows, per-subgroup summary, clean μ of the sample, of the
    reference set) with μ stacked over β."""
    model, sample, reference = inputs.model, inputs.sample, inputs.reference
    names = sample.subgroup_names
    betas = [float(b) for b in config.betas]
    mu_sample = np.asarray(embed_stack(model, trained.params, jnp.asarray(sample.images)))
    mu_ref = np.asarray(embed_stack(model, trained.params, jnp.asarray(reference.images)))
    rows: Rows = []
    summary: Rows = []
    for k, beta in enumerate(betas):
        for cell in spec_cells:
            if float(cell["beta"]) != beta:
                continue
            pull = neighbourhood_pull(
                mu_sample[k],
                cell_arrays(store, cell)["mu_adv"],
                reference.subgroup_ids,
                mu_ref[k],
                sample.subgroup_ids,
                k=config.knn_k,
                names=names,
            )
            for i in range(len(sample)):
                rows.append(
                    {
                        "beta": beta,
                        "eps": float(cell["eps"]),
                        "subgroup": names[sample.subgroup_ids[i]],
                        "example_id": int(sample.example_ids[i]),
                        "other_share_clean": float(pull.other_before[i]),
                        "other_share_adv": float(pull.other_after[i]),
                    }
                )
            for srow in pull.summary:
                row = {"beta": beta, "eps": float(cell["eps"]), "subgroup": srow.pop("group")}
                summary.append({**row, **srow})
    return rows, summary, mu_sample, mu_ref


def _example_and_tsne_figures(
    config: SubgroupStudyConfig,
    inputs: StudyInputs,
    trained: Trained,
    store: ResultStore,
    spec_cells: list[Any],
    rows: Rows,
    mu: tuple[np.ndarray, np.ndarray],
    run: StudyRun,
) -> None:
    """Example grid and t-SNE for the first β at the largest ε."""
    model, sample, reference = inputs.model, inputs.sample, inputs.reference
    names = sample.subgroup_names
    betas = [float(b) for b in config.betas]
    eps_max = max(float(e) for e in config.eps)
    cell0 = next(
        c for c in spec_cells if float(c["beta"]) == betas[0] and float(c["eps"]) == eps_max
    )
    arrays0 = cell_arrays(store, cell0)
    show_idx = example_indices(sample, len(arrays0["example_deltas"]))
    clean = sample.images[show_idx]
    adv = clean + arrays0["example_deltas"]
    params0 = jax.tree.map(lambda a: a[0], trained.params)
    path = run.fig_dir / f"examples_beta{betas[0]:g}_eps{eps_max:g}.png"
    report.plot_example_grid(
        clean,
        adv,
        np.asarray(reconstruct_batch(model, params0, clean)),
        np.asarray(reconstruct_batch(model, params0, adv)),
        [names[g] for g in sample.subgroup_ids[show_idx]],
        path,
    )
    run.paths["fig_examples"] = path
    if config.tsne_points <= 0:
        return
    mu_sample, mu_ref = mu
    n_ref = min(len(reference), max(config.tsne_points - len(sample), 0))
    pts = np.concatenate([mu_ref[0][:n_ref], mu_sample[0], arrays0["mu_adv"]])
    xy = tsne_embedding(pts, seed=config.seed, perplexity=min(30.0, (len(pts) - 1) / 3))
    n_s = len(sample)
    groups = np.concatenate([reference.subgroup_ids[:n_ref], sample.subgroup_ids])
    shade = np.full(len(groups), np.nan)
    dc0 = {
        r["example_id"]: r["delta_c"] for r in rows if r["beta"] == betas[0] and r["eps"] == eps_max
    }
    shade[n_ref:] = [dc0[int(e)] for e in sample.example_ids]
    xy_adv = np.concatenate([np.full((n_ref, 2), np.nan), xy[n_ref + n_s :]])
    # Arrows to the adversarial embedding only for the most damaged examples: one per
    # attacked example would hide the picture.
    calm = np.argsort(-shade[n_ref:])[ARROWS_IN_TSNE:]
    xy_adv[n_ref + calm] = np.nan
    path = run.fig_dir / f"latent_tsne_beta{betas[0]:g}_eps{eps_max:g}.png"
    report.plot_embedding(xy[: n_ref + n_s], groups, names, path, shade, xy_adv=xy_adv)
    run.paths["fig_tsne"] = path


def write_tables_and_figures(
    config: SubgroupStudyConfig,
    inputs: StudyInputs,
    trained: Trained,
    rows: Rows,
    store: ResultStore,
    run: StudyRun,
) -> SubgroupResults:
    """Writes every table and figure of the study; returns the tables for the readings."""
    names = inputs.sample.subgroup_names
    eps_max = max(float(e) for e in config.eps)
    if store.spec is None:
        raise ValueError("the study's result store has no grid spec")
    spec_cells = store.spec.cells()

    run.table("deviation", rows, DEVIATION_COLUMNS)
    summary, disp, omnibus = summaries(
        config, rows, lambda r: r["subgroup"], config.disparity_reference
    )
    run.table("summary", summary, SUMMARY_COLUMNS)
    run.table("disparity", disp)
    run.table("disparity_omnibus", omnibus)
    convergence = convergence_table(config, rows, store, spec_cells)
    if convergence:
        run.table("attack_convergence", convergence)
        run.figure(
            "attack_convergence",
            report.plot_attack_convergence,
            convergence,
            "median_deviation_vs_attack_steps.png",
        )
    attr_rows = attribute_summaries(config, inputs, rows)
    if attr_rows:
        run.table("summary_by_attribute", attr_rows)
    acc_rows = classifier_accuracy(config, inputs, trained, store, spec_cells, run.log)
    if acc_rows:
        run.table("classifier_accuracy", acc_rows)
    nb_rows, nb_summary, mu_sample, mu_ref = neighbours(config, inputs, trained, store, spec_cells)
    run.table("neighbours", nb_rows)
    run.table("neighbours_summary", nb_summary)

    at_max = [r for r in rows if r["eps"] == eps_max]
    run.figure(
        "deviation_vs_recon", report.plot_deviation_vs_recon, at_max, "deviation_vs_recon_loss.png"
    )
    run.figure(
        "deviation_distributions",
        report.plot_deviation_distributions,
        rows,
        "deviation_distributions_by_subgroup.png",
    )
    run.figure("median_vs_eps", report.plot_median_vs_eps, summary, "median_deviation_vs_eps.png")
    run.figure(
        "neighbour_pull",
        report.plot_neighbour_pull,
        [r for r in nb_rows if r["eps"] == eps_max],
        "neighbour_pull.png",
    )
    if acc_rows:
        adv_max = [r for r in acc_rows if r["input"] != "adv_recon" or r["eps"] == eps_max]
        run.figure(
            "classifier_accuracy",
            report.plot_classifier_accuracy,
            adv_max,
            "classifier_accuracy.png",
        )
    for attr in inputs.attributes:
        label = ATTRIBUTE_LEVELS[attr][0]
        if set(names) <= set(report.ATTRIBUTE_GROUPS[label]):
            run.figure(
                label,
                report.plot_single_attribute,
                rows,
                f"deviation_by_{label}.png",
                attribute=label,
            )
    _example_and_tsne_figures(
        config, inputs, trained, store, spec_cells, rows, (mu_sample, mu_ref), run
    )
    return SubgroupResults(
        rows, summary, disp, omnibus, convergence, attr_rows, acc_rows, nb_summary
    )
