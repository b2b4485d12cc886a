"""The subgroup robustness study of 000 as :class:`~vaerob_jax.studies.runner.Study` pieces.

* inputs: the training split, n examples per intersectional subgroup of the sampled split
  (seeded), a clean reference set for latent neighbourhoods, the VAE;
* training: the β grid in one compiled, vmapped program, plus one attribute classifier per
  protected attribute (000 Tables 1-2), both resumed from ``out``;
* cells: one per (β, ε); all ε of one β are one compiled program (the maximum-damage attack,
  Eq. 4 of 000, vmapped over samples × ε), storing per-example Δc (Eq. 5), the
  reconstruction loss, the latent shift, the adversarial means and classifier predictions;
* outputs: :mod:`~vaerob_jax.studies.subgroups.tables` and
  :mod:`~vaerob_jax.studies.subgroups.readings`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax import attacks as atk
from vaerob_jax import objectives
from vaerob_jax.data import (
    Dataset,
    available_datasets,
    check_eps,
    load,
    sample_per_subgroup,
    size_kwargs,
)
from vaerob_jax.models import COMPUTE_DTYPES, VAE, make_classifier, make_vae, predict
from vaerob_jax.robustness import DEVIATION_KINDS, evaluate_attacks
from vaerob_jax.studies.common import canonical_grid, study_key, train_config_for
from vaerob_jax.studies.runner import CellPlan, StudyRun
from vaerob_jax.studies.subgroups.attack_checks import (
    attack_diagnostics,
    check_attack_cells,
    run_convergence,
    study_attacks,
)
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig
from vaerob_jax.sweeps import GridSpec, ResultStore, params_digest, stack_digests
from vaerob_jax.train import (
    CheckpointError,
    TrainConfig,
    load_params,
    make_grid,
    save_params,
    train_grid,
)

__all__ = ["StudyInputs", "SubgroupStudy", "Trained", "prepare_inputs", "validate_config"]

# Protected attributes with readable (false, true) level names, for single-attribute tables.
ATTRIBUTE_LEVELS = {"Young": ("age", ("old", "young")), "Male": ("gender", ("women", "men"))}
# Settings that only affect statistics and figures computed after the attacks.
POST_PROCESSING_FIELDS = ("betas", "eps", "n_boot", "n_perm", "knn_k", "n_reference", "tsne_points")
CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 1e-3
# Batches uniform with replacement, as the classifiers were trained before the grid trainer.
CLASSIFIER_SAMPLING = "replacement"
# deviation.csv columns a cell must hold finite values in to be stored as done.
DEVIATION_FINITE = ("delta_c", "recon_loss", "latent_shift", "attack_value")


@dataclasses.dataclass(frozen=True)
class StudyInputs:
    """What the study works on, built and validated before any training."""

    train: Dataset
    sample: Dataset
    reference: Dataset
    model: VAE
    attributes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Trained:
    """The trained β grid (params stacked on β) and the attribute classifiers by attribute."""

    params: Any
    classifiers: dict[str, tuple[Any, Any]]
    steps: int


SAMPLE_SPLITS = ("train", "test")


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
    if config.attack_rule not in atk.PGD_RULES:
        raise ValueError(
            f"unknown attack_rule {config.attack_rule!r}; choose one of {atk.PGD_RULES}"
        )
    if config.attack_schedule not in atk.SCHEDULES:
        raise ValueError(
            f"unknown attack_schedule {config.attack_schedule!r}; choose one of {atk.SCHEDULES}"
        )
    if config.attack_rule == "apgd" and config.attack_schedule != "constant":
        raise ValueError(
            "attack_rule 'apgd' halves its own step size: use attack_schedule 'constant' with "
            f"it (got {config.attack_schedule!r})"
        )
    if config.attack_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"unknown attack_dtype {config.attack_dtype!r}; choose one of {COMPUTE_DTYPES}"
        )
    if config.sample_split not in SAMPLE_SPLITS:
        raise ValueError(
            f"unknown sample_split {config.sample_split!r}; choose one of {SAMPLE_SPLITS}"
        )
    if config.deviation_kind not in DEVIATION_KINDS:
        raise ValueError(
            f"unknown deviation_kind {config.deviation_kind!r}; choose one of {DEVIATION_KINDS}"
        )
    if config.convergence_factor != 0 and config.convergence_factor < 2:
        raise ValueError(
            f"convergence_factor must be 0 (off) or >= 2, got {config.convergence_factor}"
        )
    if config.attack_step is not None and not (
        np.isfinite(config.attack_step) and config.attack_step > 0
    ):
        raise ValueError(
            f"attack_step (a fraction of ε) must be > 0 or None, got {config.attack_step}"
        )
    for name in ("convergence_restarts", "attack_seeds"):
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("n_per_subgroup", "train_steps", "attack_steps", "restarts", "knn_k"):
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.knn_k > config.n_reference:
        raise ValueError(
            f"knn_k={config.knn_k} exceeds n_reference={config.n_reference}, the reference "
            "examples the neighbours are drawn from"
        )
    if config.classifier_steps < 0 or config.tsne_points < 0 or config.n_reference < 1:
        raise ValueError("classifier_steps and tsne_points must be >= 0 and n_reference >= 1")


def prepare_inputs(config: SubgroupStudyConfig, log: Any = print) -> StudyInputs:
    """Loads data, builds subgroups and the attacked sample, and the model; fails fast."""
    validate_config(config)
    kw = size_kwargs(config.dataset, config.n_train)
    subgroups = config.subgroups if isinstance(config.subgroups, str) else list(config.subgroups)
    train = load(
        config.dataset,
        "train",
        image_size=config.image_size,
        subgroups=subgroups,
        seed=config.seed,
        **kw,
    )
    if config.sample_split == "train":  # the paper's choice: the learned distribution itself
        pool = train
    else:
        pool_kw = size_kwargs(config.dataset, config.n_test)
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
    if config.disparity_reference not in ("largest", *sample.subgroup_names):
        raise ValueError(
            f"disparity_reference {config.disparity_reference!r} is neither 'largest' nor a "
            f"subgroup of this data: {list(sample.subgroup_names)}"
        )
    # Neighbourhood reference set: clean examples of the pool that were not attacked.
    rest = np.flatnonzero(~np.isin(pool.example_ids, sample.example_ids))
    rest = rest[pool.subgroup_ids[rest] >= 0]
    rng = np.random.default_rng([config.seed, 2])
    reference = pool.take(np.sort(rng.permutation(rest)[: config.n_reference]))
    if config.knn_k > len(reference):  # checked here, not after training and attacks
        raise ValueError(
            f"knn_k={config.knn_k} exceeds the {len(reference)} clean reference examples "
            f"the {config.sample_split!r} split leaves after the attacked sample "
            f"(n_reference={config.n_reference}); use a smaller knn_k"
        )
    attributes = tuple(a for a in ATTRIBUTE_LEVELS if a in train.attributes)
    model = make_vae(
        config.backbone,
        train.image_shape,
        config.latent_dim,
        likelihood=config.likelihood,
    )
    return StudyInputs(train, sample, reference, model, attributes)


def _train_or_load_classifiers(
    config: SubgroupStudyConfig, inputs: StudyInputs, run: StudyRun
) -> dict[str, tuple[Any, Any]]:
    """One attribute classifier per protected attribute, trained on clean training images."""
    result: dict[str, tuple[Any, Any]] = {}
    if config.classifier_steps == 0:
        return result
    for attr in inputs.attributes:
        clf = make_classifier(inputs.train.image_shape, 2)
        folder = run.out / "classifiers" / attr
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
                run.log(f"classifier checkpoint for {attr} unusable ({err}); retraining")
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
            run.log(f"classifier '{attr}' trained in {time.perf_counter() - t0:.1f}s")
        result[attr] = (clf, params)
    return result


@functools.partial(jax.jit, static_argnames="model")
def embed_batch(model: Any, params: Any, xs: jax.Array) -> jax.Array:
    """Point codes of a batch (one compiled program per model and shape)."""
    return model.embed(params, xs)


@functools.partial(jax.jit, static_argnames="model")
def reconstruct_batch(model: Any, params: Any, xs: jax.Array) -> jax.Array:
    return model.reconstruct(params, xs)


@functools.partial(jax.jit, static_argnames="model")
def embed_stack(model: Any, stacked: Any, xs: jax.Array) -> jax.Array:
    """(K, N, d) point codes of every model of a stack."""
    return jax.vmap(lambda p: model.embed(p, xs))(stacked)


@functools.partial(jax.jit, static_argnames="model")
def reconstruct_stack(model: Any, stacked: Any, xs: jax.Array) -> jax.Array:
    return jax.vmap(lambda p: model.reconstruct(p, xs))(stacked)


def example_indices(sample: Dataset, n_show: int = 4) -> np.ndarray:
    """The examples whose perturbations are stored for the example figure: the first of each
    subgroup (at most ``n_show``)."""
    return np.unique(sample.subgroup_ids, return_index=True)[1][: min(n_show, len(sample))]


def cell_arrays(store: ResultStore, cell: Any) -> dict[str, np.ndarray]:
    """The arrays a finished attack cell stored (every cell of this study stores some)."""
    arrays = store.load(cell).arrays
    if arrays is None:
        raise ValueError(f"cell {cell.key} in {store.out_dir} has no arrays; rerun with --fresh")
    return arrays


class SubgroupStudy:
    """``vaerob subgroups``: the pieces the runner calls (see the module docstring)."""

    name = "subgroups"
    title = "Subgroup robustness of β-VAEs"
    state_folders: tuple[str, ...] = ("train", "classifiers", "cells")

    def validate(self, config: SubgroupStudyConfig) -> None:
        validate_config(config)

    def normalize(self, config: SubgroupStudyConfig) -> SubgroupStudyConfig:
        # Grid values as the result store keys them, for training, attacks and lookups alike.
        return canonical_grid(config, ("betas", "eps"))

    def prepare(self, config: SubgroupStudyConfig, run: StudyRun) -> StudyInputs:
        return prepare_inputs(config, run.log)

    def train(self, config: SubgroupStudyConfig, inputs: StudyInputs, run: StudyRun) -> Trained:
        betas = [float(b) for b in config.betas]
        with run.timed("train_vae"):
            trained = train_grid(
                inputs.model,
                objectives.beta_elbo(inputs.model, config.kl_reduction),
                inputs.train.images,
                {"beta": betas},
                train_config_for(config),
                jax.random.key(config.seed),
                workdir=run.out / "train",
                progress=run.progress,
            )
        run.log(f"β grid {betas}: {trained.step} steps ({run.timings['train_vae_s']:.0f}s)")
        with run.timed("train_classifiers"):
            classifiers = _train_or_load_classifiers(config, inputs, run)
        return Trained(trained.params, classifiers, trained.step)

    def plan(
        self, config: SubgroupStudyConfig, inputs: StudyInputs, trained: Trained, run: StudyRun
    ) -> CellPlan:
        model, sample = inputs.model, inputs.sample
        betas = [float(b) for b in config.betas]
        xs = jnp.asarray(sample.images)
        attacks = study_attacks(config, model)
        attack = attacks["default"]
        # One key for every β and ε: example n starts from the same point everywhere, so
        # models and budgets are compared on paired attacks, whatever the grid's history.
        attack_key = study_key(config.seed, "attack")
        show_idx = example_indices(sample)
        eps_top = max(float(e) for e in config.eps)
        model_digests = [d[:16] for d in stack_digests(trained.params)]

        def compute(cells: list[Any]) -> list[tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
            k = betas.index(float(cells[0]["beta"]))
            params = jax.tree.map(lambda a: a[k], trained.params)
            eps_grid = jnp.asarray([float(c["eps"]) for c in cells], jnp.float32)
            result = atk.run_attack(attack, params, {"x": xs}, eps_grid, attack_key)
            deltas = result.delta
            diagnostics = attack_diagnostics(result)
            check_attack_cells(cells, diagnostics, run.log)
            metrics = {
                name: np.asarray(v)
                for name, v in evaluate_attacks(
                    model, params, xs, deltas, kind=config.deviation_kind
                ).items()
            }
            # x + δ as Δc saw it (the projection keeps it in the pixel box).
            x_adv = (xs[None] + deltas).reshape((-1, *xs.shape[1:]))
            mu_adv = np.asarray(embed_batch(model, params, x_adv))
            mu_adv = mu_adv.reshape((len(cells), len(sample), -1))
            recon_adv = np.asarray(reconstruct_batch(model, params, x_adv)).reshape(deltas.shape)
            results = []
            for e, cell in enumerate(cells):
                arrays = {"mu_adv": mu_adv[e], "example_deltas": np.asarray(deltas[e, show_idx])}
                if float(cell["eps"]) == eps_top and "strong" in attacks:
                    arrays.update(
                        run_convergence(attacks, model, params, xs, float(cell["eps"]), config)
                    )
                for attr, (clf, cparams) in trained.classifiers.items():
                    arrays[f"pred_adv_{attr}"] = predict(clf, cparams, recon_adv[e])
                rows = deviation_rows(
                    cell["beta"],
                    cell["eps"],
                    sample,
                    {m: v[e] for m, v in {**metrics, **diagnostics}.items()},
                    model_digests[k],
                )
                results.append((rows, arrays))
            return results

        spec = GridSpec({"beta": betas, "eps": [float(e) for e in config.eps]})
        # A cell is tied to the VAE it attacked and the classifiers that read its
        # reconstructions: retrained or restored-but-different models recompute it.
        cell_digest = {
            b: params_digest(
                {
                    "vae": jax.tree.map(lambda a, k=k: a[k], trained.params),
                    "classifiers": {a: p for a, (_, p) in sorted(trained.classifiers.items())},
                }
            )
            for k, b in enumerate(betas)
        }
        return CellPlan(
            spec,
            compute,
            batch_axes=("eps",),
            params_digest=lambda cell: cell_digest[float(cell["beta"])],
            finite=DEVIATION_FINITE,
        )

    def store_config(self, config: SubgroupStudyConfig) -> dict[str, Any]:
        # The cells' fingerprint holds only what changes a cell: not the grid axes (a new ε
        # keeps finished cells) nor the settings of the statistics and figures computed later.
        store_cfg = {k: v for k, v in config.to_dict().items() if k not in POST_PROCESSING_FIELDS}
        store_cfg["cell_rows"] = "attack diagnostics, model digest"  # older cells lack them
        if config.attack_dtype == "float32":  # the folders of float32 runs stay valid
            del store_cfg["attack_dtype"]
        return store_cfg

    def outputs(
        self,
        config: SubgroupStudyConfig,
        inputs: StudyInputs,
        trained: Trained,
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        from vaerob_jax.studies.subgroups.readings import report_sections
        from vaerob_jax.studies.subgroups.tables import write_tables_and_figures

        results = write_tables_and_figures(config, inputs, trained, rows, store, run)
        return report_sections(config, inputs, results, run)


def deviation_rows(
    beta: float,
    eps: float,
    sample: Dataset,
    metrics: dict[str, np.ndarray],
    model_digest: str,
) -> list[dict[str, Any]]:
    """One ``deviation.csv`` row per attacked example of a (β, ε) cell; ``model_digest`` (16
    hex digits of :func:`~vaerob_jax.sweeps.params_digest`) names the VAE attacked, so other
    studies join these rows only with results of the same model."""
    names = sample.subgroup_names
    return [
        {
            "beta": float(beta),
            "model_digest": model_digest,
            "eps": float(eps),
            "subgroup": names[int(g)],
            "example_id": int(eid),
            "delta_c": float(dc),
            "recon_loss": float(rl),
            "latent_shift": float(ls),
            "attack_value": float(v),
            "attack_start_value": float(v0),
            "attack_nonfinite_steps": int(nf),
            "attack_failed": int(fail),
        }
        for g, eid, dc, rl, ls, v, v0, nf, fail in zip(
            sample.subgroup_ids,
            sample.example_ids,
            metrics["delta_c"],
            metrics["recon_loss"],
            metrics["latent_shift"],
            metrics["attack_value"],
            metrics["attack_start_value"],
            metrics["attack_nonfinite_steps"],
            metrics["attack_failed"],
        )
    ]
