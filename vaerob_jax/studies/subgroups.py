"""The subgroup robustness study of 000 end to end (``vaerob subgroups``).

One call trains (or loads) a β grid, samples n examples per intersectional subgroup, attacks
them over an ε grid with the maximum-damage attack (Eq. 4 of 000) for every β in compiled,
vmapped programs, and evaluates:

* Δc (Eq. 5 of 000), the unperturbed reconstruction loss and the latent shift per example;
* per-subgroup and per-attribute summaries (median, IQR, bootstrap CI of the median) and
  disparities (ratio of medians to the most robust subgroup, permutation p-value);
* downstream attribute classifiers on clean images, clean and adversarial reconstructions
  (Tables 1-2 of 000);
* latent neighbourhoods before and after the attack and a t-SNE picture (Figs. 7-9 of 000).

Finished (β, ε) cells are stored as they complete, so an interrupted run resumes where it
stopped; every input is validated before anything is trained.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax import attacks as atk
from vaerob_jax import objectives, report
from vaerob_jax.data import (
    Dataset,
    available_datasets,
    check_eps,
    load,
    sample_per_subgroup,
)
from vaerob_jax.models import (
    VAE,
    accuracy_by_group,
    make_classifier,
    make_vae,
    predict,
)
from vaerob_jax.robustness import (
    DEVIATION_KINDS,
    disparity,
    evaluate_attacks,
    neighbourhood_pull,
    summarize,
    tsne_embedding,
)
from vaerob_jax.studies.config import (
    SubgroupStudyConfig,
    canonical_grid,
    config_fingerprint,
    stats_seed,
    study_key,
    train_config_for,
)
from vaerob_jax.sweeps import GridSpec, ResultStore, run_grid, write_csv, write_json
from vaerob_jax.train import (
    CheckpointError,
    TrainConfig,
    load_params,
    make_grid,
    save_params,
    train_grid,
)

# Protected attributes with readable (false, true) level names, for single-attribute tables.
ATTRIBUTE_LEVELS = {"Young": ("age", ("old", "young")), "Male": ("gender", ("women", "men"))}

DEVIATION_COLUMNS = (
    "beta",
    "eps",
    "subgroup",
    "example_id",
    "delta_c",
    "recon_loss",
    "latent_shift",
)
ARROWS_IN_TSNE = 12  # attacked examples (highest Δc) whose move is drawn in the t-SNE figure
# Settings that only affect statistics and figures computed after the attacks.
POST_PROCESSING_FIELDS = ("betas", "eps", "n_boot", "n_perm", "knn_k", "n_reference", "tsne_points")
CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 1e-3
# Batches uniform with replacement, as the classifiers were trained before the grid trainer.
CLASSIFIER_SAMPLING = "replacement"
SUMMARY_COLUMNS = ("beta", "eps", "subgroup", "n", "median", "iqr", "mean", "ci_low", "ci_high")


def _csv(path: Path, rows: list[dict[str, Any]], columns: Any = None) -> Path:
    write_csv(path, rows, columns)
    return path


def _log(msg: str) -> None:
    print(f"[subgroups] {msg}", flush=True)


@dataclasses.dataclass(frozen=True)
class StudyInputs:
    """What the study works on, built and validated before any training."""

    train: Dataset
    sample: Dataset
    reference: Dataset
    model: VAE
    attributes: tuple[str, ...]


def validate_config(config: SubgroupStudyConfig) -> None:
    """Cheap checks of a config, raising ValueError that names the offending field."""
    if config.dataset not in available_datasets():
        raise ValueError(
            f"unknown dataset {config.dataset!r}; available: {', '.join(available_datasets())}"
        )
    check_eps(np.asarray(config.eps, np.float64), name="eps")
    if len(config.betas) == 0:
        raise ValueError("betas must be a non-empty sequence")
    if len(set(config.eps)) != len(config.eps) or len(set(config.betas)) != len(config.betas):
        raise ValueError(f"eps and betas must not repeat values: {config.eps}, {config.betas}")
    make_grid({"beta": config.betas})  # finite numbers
    if any(float(b) < 0 for b in config.betas):
        raise ValueError(f"betas must be >= 0, got {list(config.betas)}")
    if config.kl_reduction not in objectives.KL_REDUCTIONS:
        raise ValueError(
            f"unknown kl_reduction {config.kl_reduction!r}; choose one of "
            f"{objectives.KL_REDUCTIONS}"
        )
    if config.norm not in atk.NORMS:
        raise ValueError(f"unknown norm {config.norm!r}; choose one of {atk.NORMS}")
    if config.attack_rule not in atk.RULES:
        raise ValueError(f"unknown attack_rule {config.attack_rule!r}; choose one of {atk.RULES}")
    if config.deviation_kind not in DEVIATION_KINDS:
        raise ValueError(
            f"unknown deviation_kind {config.deviation_kind!r}; choose one of {DEVIATION_KINDS}"
        )
    for name in ("n_per_subgroup", "train_steps", "attack_steps", "restarts", "knn_k"):
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.classifier_steps < 0 or config.tsne_points < 0 or config.n_reference < 1:
        raise ValueError("classifier_steps and tsne_points must be >= 0 and n_reference >= 1")


def prepare_inputs(config: SubgroupStudyConfig, log: Callable[[str], None] = _log) -> StudyInputs:
    """Loads data, builds subgroups and the attacked sample, and the model; fails fast."""
    validate_config(config)
    kw: dict[str, Any] = {}
    if config.n_train is not None:
        kw["n"] = config.n_train
    subgroups = config.subgroups if isinstance(config.subgroups, str) else list(config.subgroups)
    train = load(
        config.dataset,
        "train",
        image_size=config.image_size,
        subgroups=subgroups,
        seed=config.seed,
        **kw,
    )
    pool_kw: dict[str, Any] = {} if config.n_test is None else {"n": config.n_test}
    pool = load(
        config.dataset,
        config.sample_split,
        image_size=config.image_size,
        subgroups=subgroups,
        seed=config.seed,
        **pool_kw,
    )
    log(
        f"data: {config.dataset} train {len(train)} images, {config.sample_split} {len(pool)}; "
        f"subgroups {pool.counts()}"
    )
    sample = sample_per_subgroup(pool, config.n_per_subgroup, study_key(config.seed, "sample"))
    # Neighbourhood reference set: clean examples of the pool that were not attacked.
    rest = np.flatnonzero(~np.isin(pool.example_ids, sample.example_ids))
    rest = rest[pool.subgroup_ids[rest] >= 0]
    rng = np.random.default_rng([config.seed, 2])
    reference = pool.take(np.sort(rng.permutation(rest)[: config.n_reference]))
    attributes = tuple(a for a in ATTRIBUTE_LEVELS if a in train.attributes)
    model = make_vae(
        config.backbone,
        train.image_shape,
        config.latent_dim,
        likelihood=config.likelihood,
    )
    return StudyInputs(train, sample, reference, model, attributes)


def _train_or_load_classifiers(
    config: SubgroupStudyConfig, inputs: StudyInputs, out: Path, log: Callable[[str], None]
) -> dict[str, tuple[Any, Any]]:
    """One attribute classifier per protected attribute, trained on clean training images."""
    result: dict[str, tuple[Any, Any]] = {}
    if config.classifier_steps == 0:
        return result
    for attr in inputs.attributes:
        clf = make_classifier(inputs.train.image_shape, 2)
        folder = out / "classifiers" / attr
        images = inputs.train.images
        meta = {
            "attribute": attr,
            "trainer": "train_grid",
            "steps": config.classifier_steps,
            "batch_size": CLASSIFIER_BATCH,
            "learning_rate": CLASSIFIER_LR,
            "batch_sampling": CLASSIFIER_SAMPLING,
            "dataset": config.dataset,
            "data_shape": list(images.shape),
            "data_sum": float(np.sum(images, dtype=np.float64)),
            "seed": config.seed,
        }
        params = None
        if folder.exists():
            try:
                params, saved = load_params(folder, like=clf.init(jax.random.key(0)))
                if saved != meta:
                    params = None
            except CheckpointError as err:
                log(f"classifier checkpoint for {attr} unusable ({err}); retraining")
                params = None
        if params is None:
            t0 = time.perf_counter()
            labels = inputs.train.attributes[attr].astype(np.int32)
            trained = train_grid(
                clf,
                objectives.cross_entropy(clf),
                {"x": images, "label": labels},
                {},
                TrainConfig(
                    steps=config.classifier_steps,
                    batch_size=CLASSIFIER_BATCH,
                    learning_rate=CLASSIFIER_LR,
                    batch_sampling=CLASSIFIER_SAMPLING,
                    log_every=config.classifier_steps,
                ),
                study_key(config.seed, f"classifier/{attr}"),
                progress=False,
            )
            params = jax.tree.map(lambda a: a[0], trained.params)
            save_params(folder, params, meta, overwrite=True)
            log(f"classifier '{attr}' trained in {time.perf_counter() - t0:.1f}s")
        result[attr] = (clf, params)
    return result


def _rows_for_cell(
    beta: float, eps: float, sample: Dataset, metrics: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    names = sample.subgroup_names
    return [
        {
            "beta": float(beta),
            "eps": float(eps),
            "subgroup": names[int(g)],
            "example_id": int(eid),
            "delta_c": float(dc),
            "recon_loss": float(rl),
            "latent_shift": float(ls),
        }
        for g, eid, dc, rl, ls in zip(
            sample.subgroup_ids,
            sample.example_ids,
            metrics["delta_c"],
            metrics["recon_loss"],
            metrics["latent_shift"],
        )
    ]


def _arrays(store: ResultStore, cell: Any) -> dict[str, np.ndarray]:
    """The arrays a finished attack cell stored (every cell of this study stores some)."""
    arrays = store.load(cell).arrays
    if arrays is None:
        raise ValueError(f"cell {cell.key} in {store.out_dir} has no arrays; rerun with --fresh")
    return arrays


@functools.partial(jax.jit, static_argnames="model")
def _means(model: VAE, params: Any, xs: jax.Array) -> jax.Array:
    """Encoder means of a batch (one compiled program per model and shape)."""
    return model.embed(params, xs)


@functools.partial(jax.jit, static_argnames="model")
def _reconstructions(model: VAE, params: Any, xs: jax.Array) -> jax.Array:
    return model.reconstruct(params, xs)


@functools.partial(jax.jit, static_argnames="model")
def _stack_means(model: VAE, stacked: Any, xs: jax.Array) -> jax.Array:
    """(K, N, d) encoder means of every model of a stack."""
    return jax.vmap(lambda p: model.embed(p, xs))(stacked)


@functools.partial(jax.jit, static_argnames="model")
def _stack_reconstructions(model: VAE, stacked: Any, xs: jax.Array) -> jax.Array:
    return jax.vmap(lambda p: model.reconstruct(p, xs))(stacked)


def run_subgroup_study(
    config: SubgroupStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> dict[str, Path]:
    """Runs the whole study into ``out_dir`` and returns the paths of what it wrote.

    Args:
      config: the study settings.
      out_dir: output folder; an existing one of the same config is resumed.
      fresh: discard finished attack cells of an earlier run with a different config.
      progress: progress bars / periodic lines with ETA.
      log: where one-line status messages go.

    Returns:
      Mapping from artefact name to path (tables, figures, report).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    # Grid values as the result store keys them, for training, attacks and lookups alike.
    validate_config(config)  # before canonicalising, so errors name the config's fields
    config = canonical_grid(config, ("betas", "eps"))
    inputs = prepare_inputs(config, log)
    out = Path(out_dir)
    if fresh:  # everything computed for another config goes, not just the attack cells
        for folder in ("train", "classifiers", "cells"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config.to_dict(), "fingerprint": config.fingerprint()})
    model, sample = inputs.model, inputs.sample
    betas = [float(b) for b in config.betas]
    eps_values = [float(e) for e in config.eps]

    # 1. The β grid, trained in one vmapped program (or loaded from its checkpoints).
    t0 = time.perf_counter()
    trained = train_grid(
        model,
        objectives.beta_elbo(model, config.kl_reduction),
        inputs.train.images,
        {"beta": betas},
        train_config_for(config),
        jax.random.key(config.seed),
        workdir=out / "train",
        progress=progress,
    )
    stacked = trained.params
    timings["train_vae_s"] = time.perf_counter() - t0
    log(f"β grid {betas}: {trained.step} steps ({timings['train_vae_s']:.0f}s)")

    # 2. Attribute classifiers (clean training images).
    t0 = time.perf_counter()
    classifiers = _train_or_load_classifiers(config, inputs, out, log)
    timings["train_classifiers_s"] = time.perf_counter() - t0

    # 3. Attacks over β × ε; all ε of one β are one compiled vmapped program.
    t0 = time.perf_counter()
    xs = jnp.asarray(sample.images)
    objective = atk.latent_damage(model)
    attack = atk.pgd(
        objective,
        norm=config.norm,
        steps=config.attack_steps,
        rule=config.attack_rule,
        restarts=config.restarts,
    )
    spec = GridSpec({"beta": betas, "eps": eps_values})
    # The cells' fingerprint holds only what changes a cell: not the grid axes (a new ε value
    # keeps finished cells) nor the settings of the statistics and figures computed later.
    store_cfg = {k: v for k, v in config.to_dict().items() if k not in POST_PROCESSING_FIELDS}
    store = ResultStore(out / "cells", store_cfg, fresh=fresh)
    # One key for every β and ε: example n starts from the same point everywhere, so models
    # and budgets are compared on paired attacks, whatever the grid's order or history.
    attack_key = study_key(config.seed, "attack")
    n_show = min(4, len(sample))
    show_idx = np.unique(sample.subgroup_ids, return_index=True)[1][:n_show]

    def compute(cells: list[Any]) -> list[tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
        k = betas.index(float(cells[0]["beta"]))
        params = jax.tree.map(lambda a: a[k], stacked)
        eps_grid = jnp.asarray([float(c["eps"]) for c in cells], jnp.float32)
        deltas = atk.attack_batch(attack, params, xs, eps_grid, attack_key)
        metrics = {
            name: np.asarray(v)
            for name, v in evaluate_attacks(
                model, params, xs, deltas, kind=config.deviation_kind
            ).items()
        }
        # x + δ as Δc saw it (the projection keeps it in the pixel box).
        x_adv = (xs[None] + deltas).reshape((-1, *xs.shape[1:]))
        mu_adv = np.asarray(_means(model, params, x_adv)).reshape((len(cells), len(sample), -1))
        recon_adv = np.asarray(_reconstructions(model, params, x_adv)).reshape(deltas.shape)
        results = []
        for e, cell in enumerate(cells):
            arrays = {"mu_adv": mu_adv[e], "example_deltas": np.asarray(deltas[e, show_idx])}
            for attr, (clf, cparams) in classifiers.items():
                arrays[f"pred_adv_{attr}"] = predict(clf, cparams, recon_adv[e])
            rows = _rows_for_cell(
                cell["beta"], cell["eps"], sample, {m: v[e] for m, v in metrics.items()}
            )
            results.append((rows, arrays))
        return results

    rows = run_grid(spec, compute, store, batch_axes=("eps",), progress=progress)
    timings["attack_s"] = time.perf_counter() - t0
    log(f"attacks: {len(spec)} cells x {len(sample)} examples ({timings['attack_s']:.0f}s)")

    # 4. Tables, figures and the report.
    t0 = time.perf_counter()
    paths = _write_outputs(config, inputs, stacked, classifiers, spec, store, rows, out, log)
    timings["evaluate_and_report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    write_json(out / "timings.json", timings)
    paths["timings"] = out / "timings.json"
    log(f"done in {timings['total_s']:.0f}s; report: {paths['report']}")
    return paths


def _summaries(
    config: SubgroupStudyConfig, rows: list[dict[str, Any]], groups_of: Callable[[dict], str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (β, ε) summaries and disparities of Δc over groups given by ``groups_of(row)``."""
    summary, disp = [], []
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
        if len(names) > 1:
            perm = np.random.default_rng(stats_seed(config.seed, "permutation", cell))
            for d in disparity(values, ids, perm, n_perm=config.n_perm, names=names):
                disp.append({"beta": beta, "eps": eps, "subgroup": d.pop("group"), **d})
    return summary, disp


def _write_outputs(
    config: SubgroupStudyConfig,
    inputs: StudyInputs,
    stacked: Any,
    classifiers: dict[str, tuple[Any, Any]],
    spec: GridSpec,
    store: ResultStore,
    rows: list[dict[str, Any]],
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Path]:
    model, sample, reference = inputs.model, inputs.sample, inputs.reference
    names = sample.subgroup_names
    betas = [float(b) for b in config.betas]
    eps_max = max(float(e) for e in config.eps)
    paths: dict[str, Path] = {}
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)

    paths["deviation"] = _csv(out / "deviation.csv", rows, DEVIATION_COLUMNS)
    summary, disp = _summaries(config, rows, lambda r: r["subgroup"])
    paths["summary"] = _csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    paths["disparity"] = _csv(out / "disparity.csv", disp)
    by_id = {int(e): i for i, e in enumerate(sample.example_ids)}
    attr_rows: list[dict[str, Any]] = []
    for attr in inputs.attributes:
        label, (lo, hi) = ATTRIBUTE_LEVELS[attr]
        values = sample.attributes[attr]

        def level(r: dict[str, Any], v: np.ndarray = values, lo: str = lo, hi: str = hi) -> str:
            return hi if v[by_id[r["example_id"]]] else lo

        s, _ = _summaries(config, rows, level)
        attr_rows += [{"attribute": label, **r} for r in s]
    if attr_rows:
        paths["summary_by_attribute"] = _csv(out / "summary_by_attribute.csv", attr_rows)

    # Classifier accuracy: clean images, clean reconstructions, adversarial reconstructions.
    acc_rows: list[dict[str, Any]] = []
    xs = jnp.asarray(sample.images)
    recon = np.asarray(_stack_reconstructions(model, stacked, xs))
    for attr, (clf, cparams) in classifiers.items():
        label = ATTRIBUTE_LEVELS[attr][0]
        truth = sample.attributes[attr].astype(np.int32)

        def acc(pred: np.ndarray, truth: np.ndarray = truth) -> list[dict[str, Any]]:
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
            acc_rows.append({**base, "input": "clean", "beta": None, "eps": None, **r})
        for k, beta in enumerate(betas):
            for r in acc(predict(clf, cparams, recon[k])):
                acc_rows.append({**base, "input": "recon", "beta": beta, "eps": None, **r})
            for cell in spec.cells():
                if float(cell["beta"]) != beta:
                    continue
                pred = _arrays(store, cell)[f"pred_adv_{attr}"]
                for r in acc(pred):
                    acc_rows.append(
                        {**base, "input": "adv_recon", "beta": beta, "eps": float(cell["eps"]), **r}
                    )
    if acc_rows:
        paths["classifier_accuracy"] = _csv(out / "classifier_accuracy.csv", acc_rows)
        # The test-set accuracy of each classifier on clean data, whole split (sanity line).
        check = accuracy_by_group(
            classifiers[inputs.attributes[0]][0],
            classifiers[inputs.attributes[0]][1],
            reference.images,
            reference.attributes[inputs.attributes[0]].astype(np.int32),
            np.zeros(len(reference), np.int32),
        )
        log(
            f"{inputs.attributes[0]} classifier clean accuracy (reference set): "
            f"{check[0]['accuracy']:.3f}"
        )

    # Latent neighbourhoods before/after the attack (k-NN in μ space) and a t-SNE picture.
    nb_rows: list[dict[str, Any]] = []
    nb_summary: list[dict[str, Any]] = []
    ref_images = jnp.asarray(reference.images)
    mu_sample = np.asarray(_stack_means(model, stacked, xs))
    mu_ref = np.asarray(_stack_means(model, stacked, ref_images))
    for k, beta in enumerate(betas):
        for cell in spec.cells():
            if float(cell["beta"]) != beta:
                continue
            mu_adv = _arrays(store, cell)["mu_adv"]
            pull = neighbourhood_pull(
                mu_sample[k],
                mu_adv,
                reference.subgroup_ids,
                mu_ref[k],
                sample.subgroup_ids,
                k=config.knn_k,
                names=names,
            )
            for i in range(len(sample)):
                nb_rows.append(
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
                nb_summary.append({**row, **srow})
    paths["neighbours"] = _csv(out / "neighbours.csv", nb_rows)
    paths["neighbours_summary"] = _csv(out / "neighbours_summary.csv", nb_summary)

    # Figures.
    at_max = [r for r in rows if r["eps"] == eps_max]
    figs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "fig_deviation_vs_recon": (
            report.plot_deviation_vs_recon,
            (at_max, fig_dir / "deviation_vs_recon_loss.png"),
        ),
        "fig_deviation_distributions": (
            report.plot_deviation_distributions,
            (rows, fig_dir / "deviation_distributions_by_subgroup.png"),
        ),
        "fig_median_vs_eps": (
            report.plot_median_vs_eps,
            (summary, fig_dir / "median_deviation_vs_eps.png"),
        ),
        "fig_neighbour_pull": (
            report.plot_neighbour_pull,
            ([r for r in nb_rows if r["eps"] == eps_max], fig_dir / "neighbour_pull.png"),
        ),
    }
    if acc_rows:
        adv_max = [r for r in acc_rows if r["input"] != "adv_recon" or r["eps"] == eps_max]
        figs["fig_classifier_accuracy"] = (
            report.plot_classifier_accuracy,
            (adv_max, fig_dir / "classifier_accuracy.png"),
        )
    for attr in inputs.attributes:
        label = ATTRIBUTE_LEVELS[attr][0]
        if set(names) <= set(report.ATTRIBUTE_GROUPS[label]):
            figs[f"fig_{label}"] = (
                lambda r, p, a=label: report.plot_single_attribute(r, p, a),
                (rows, fig_dir / f"deviation_by_{label}.png"),
            )
    for name, (fn, args) in figs.items():
        fn(*args)
        paths[name] = args[1]

    # Example grid and t-SNE for the first β at the largest ε.
    cell0 = next(
        c for c in spec.cells() if float(c["beta"]) == betas[0] and float(c["eps"]) == eps_max
    )
    res0_arrays = _arrays(store, cell0)
    show_idx = np.unique(sample.subgroup_ids, return_index=True)[1][
        : len(res0_arrays["example_deltas"])
    ]
    clean = sample.images[show_idx]
    adv = clean + res0_arrays["example_deltas"]
    params0 = jax.tree.map(lambda a: a[0], stacked)
    rec = functools.partial(_reconstructions, model)
    report.plot_example_grid(
        clean,
        adv,
        np.asarray(rec(params0, clean)),
        np.asarray(rec(params0, adv)),
        [names[g] for g in sample.subgroup_ids[show_idx]],
        fig_dir / f"examples_beta{betas[0]:g}_eps{eps_max:g}.png",
    )
    paths["fig_examples"] = fig_dir / f"examples_beta{betas[0]:g}_eps{eps_max:g}.png"
    if config.tsne_points > 0:
        n_ref = min(len(reference), max(config.tsne_points - len(sample), 0))
        pts = np.concatenate([mu_ref[0][:n_ref], mu_sample[0], res0_arrays["mu_adv"]])
        xy = tsne_embedding(pts, seed=config.seed, perplexity=min(30.0, (len(pts) - 1) / 3))
        n_s = len(sample)
        groups = np.concatenate([reference.subgroup_ids[:n_ref], sample.subgroup_ids])
        shade = np.full(len(groups), np.nan)
        dc0 = {
            r["example_id"]: r["delta_c"]
            for r in rows
            if r["beta"] == betas[0] and r["eps"] == eps_max
        }
        shade[n_ref:] = [dc0[int(e)] for e in sample.example_ids]
        xy_adv = np.concatenate([np.full((n_ref, 2), np.nan), xy[n_ref + n_s :]])
        # Arrows to the adversarial embedding only for the most damaged examples: one per
        # attacked example would hide the picture.
        calm = np.argsort(-shade[n_ref:])[ARROWS_IN_TSNE:]
        xy_adv[n_ref + calm] = np.nan
        path = fig_dir / f"latent_tsne_beta{betas[0]:g}_eps{eps_max:g}.png"
        report.plot_embedding(xy[: n_ref + n_s], groups, names, path, shade, xy_adv=xy_adv)
        paths["fig_tsne"] = path

    paths["report"] = _write_report(
        config, out, paths, summary, disp, acc_rows, nb_summary, attr_rows, sample
    )
    return paths


def _write_report(
    config: SubgroupStudyConfig,
    out: Path,
    paths: dict[str, Path],
    summary: list[dict[str, Any]],
    disp: list[dict[str, Any]],
    acc_rows: list[dict[str, Any]],
    nb_summary: list[dict[str, Any]],
    attr_rows: list[dict[str, Any]],
    sample: Dataset,
) -> Path:
    betas = [float(b) for b in config.betas]
    eps_max = max(float(e) for e in config.eps)
    readings = []
    for beta in betas:
        pvals = {
            d["subgroup"]: d["p_value"] for d in disp if d["beta"] == beta and d["eps"] == eps_max
        }
        top = max(
            (s for s in summary if s["beta"] == beta and s["eps"] == eps_max),
            key=lambda s: s["median"],
        )
        readings.append(
            report.reading_highest_median(
                summary, beta, eps_max, p_value=pvals.get(top["subgroup"])
            )
        )
    counts = sample.counts()
    sections: list[dict[str, Any]] = [
        {
            "heading": "Setting",
            "reading": (
                f"{config.dataset} ({config.backbone}, latent {config.latent_dim}), β ∈ {betas}, "
                f"{config.norm} ε ∈ {list(config.eps)}, {config.attack_steps}-step "
                f"{config.attack_rule} PGD maximising ‖μ(x+δ) − μ(x)‖₂ (Eq. 4 of 000); Δc = "
                f"‖g(μ(x+δ)) − g(μ(x))‖₂ (Eq. 5); {config.n_per_subgroup} attacked examples per "
                f"subgroup ({', '.join(f'{k}: {v}' for k, v in counts.items())}); config "
                f"fingerprint {config_fingerprint(config)}."
            ),
        },
        {
            "heading": "Which subgroup is least robust?",
            "reading": "\n\n".join(readings),
            "figure": paths["fig_deviation_distributions"],
            "table": [s for s in summary if s["eps"] == eps_max],
            "columns": list(SUMMARY_COLUMNS),
        },
        {
            "heading": "Median Δc against the budget",
            "reading": "Medians with bootstrap 95 % CIs; curves that separate show a disparity "
            "that grows with ε.",
            "figure": paths["fig_median_vs_eps"],
        },
        {
            "heading": "Disparity to the most robust subgroup",
            "reading": "Ratio of median Δc to the subgroup with the lowest median, with a "
            "two-sided permutation-test p-value for the difference of medians.",
            "table": [d for d in disp if d["eps"] == eps_max],
        },
        {
            "heading": "Deviation against reconstruction quality",
            "reading": f"Each point is one attacked example at ε={eps_max:g} (000 Fig. 2).",
            "figure": paths["fig_deviation_vs_recon"],
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
                        r for r in attr_rows if r["attribute"] == label and r["eps"] == eps_max
                    ],
                }
            )
    if acc_rows:
        worst = min(
            (r for r in acc_rows if r["input"] == "adv_recon" and r["eps"] == eps_max),
            key=lambda r: r["accuracy"],
        )
        sections.append(
            {
                "heading": "Attribute classifiers on reconstructions",
                "reading": (
                    f"Lowest accuracy on adversarial reconstructions at ε={eps_max:g}: the "
                    f"{worst['classifier']} classifier on {worst['subgroup']} "
                    f"at β={worst['beta']:g} "
                    f"({worst['accuracy']:.2f})."
                ),
                "figure": paths["fig_classifier_accuracy"],
            }
        )
    pulled = max((s for s in nb_summary if s["eps"] == eps_max), key=lambda s: s["other_after"])
    sections.append(
        {
            "heading": "Latent neighbourhoods",
            "reading": (
                f"After the attack, {pulled['subgroup']} examples at β={pulled['beta']:g} have "
                f"{100 * pulled['other_after']:.0f} % of their {config.knn_k} nearest latent "
                f"neighbours in other subgroups (before: {100 * pulled['other_before']:.0f} %)."
            ),
            "figure": paths["fig_neighbour_pull"],
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
            "figure": paths["fig_examples"],
        }
    )
    path = report.write_report(out / "report.md", "Subgroup robustness of β-VAEs", sections)
    (out / "artefacts.json").write_text(
        json.dumps({k: str(v) for k, v in paths.items()}, indent=2, sort_keys=True)
    )
    return path
