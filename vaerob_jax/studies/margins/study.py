"""The margin study of 001 as :class:`~vaerob_jax.studies.runner.Study` pieces.

* inputs: the training split, the evaluated examples (the subgroup study's draw, or every
  example of the chosen subgroups), the VAE;
* training: the β × τ grid (τ = the encoder-std offset of 001 Fig. 7), or a copy of a
  subgroup study's trained β grid when its settings match;
* cells: one per (β, τ): the compiled per-example program of
  :mod:`vaerob_jax.robustness.certificates` over fixed-size chunks of examples;
* outputs: :mod:`~vaerob_jax.studies.margins.tables` and
  :mod:`~vaerob_jax.studies.margins.readings`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax import objectives
from vaerob_jax.attacks import AttackFailedError
from vaerob_jax.data import Dataset, load, sample_per_subgroup, size_kwargs
from vaerob_jax.models import VAE, make_vae
from vaerob_jax.robustness.certificates import make_margin_program, run_in_chunks
from vaerob_jax.studies.common import canonical_grid, study_key, train_config_for
from vaerob_jax.studies.margins.config import (
    BOXES,
    TRAIN_FIELDS,
    MarginStudyConfig,
    validate_margin_config,
)
from vaerob_jax.studies.runner import CellPlan, StudyRun
from vaerob_jax.sweeps import GridSpec, ResultStore, read_json, stack_digests
from vaerob_jax.sweeps.progress import Progress
from vaerob_jax.train import CheckpointError, make_grid, train_grid

__all__ = [
    "MARGIN_FINITE",
    "MarginInputs",
    "MarginStudy",
    "check_margin_attacks",
    "prepare_margin_inputs",
]

# margins.csv columns a cell must hold finite values in to be stored as done (the bound may
# be undefined, NaN, and a censored margin has an infinite bracket, by design).
MARGIN_FINITE = ("sigma_min", "jac_fro", "p_r", "margin_estimate")


@dataclasses.dataclass(frozen=True)
class MarginInputs:
    """What the study works on, built and validated before any training."""

    train: Dataset
    sample: Dataset
    model: VAE
    reuse: Path | None  # the subgroup study's trained grid folder to copy, where usable
    deviation: Path | None  # its deviation.csv, joined with the margins


def prepare_margin_inputs(config: MarginStudyConfig, log: Callable[[str], None] = print):
    """Validates the config, loads the data and the evaluated examples, builds the model.

    The examples are ``sample_per_subgroup(split, max_per_subgroup, study_key(seed, "sample"))``,
    the subgroup study's draw (its lowest-scored members per subgroup, so a smaller n gives a
    subset of a larger one), or every example in a subgroup when ``max_per_subgroup`` is None.
    """
    validate_margin_config(config)
    kw = size_kwargs(config.dataset, config.n_train)
    subgroups = config.subgroups if isinstance(config.subgroups, str) else list(config.subgroups)
    common: dict[str, Any] = {
        "image_size": config.image_size,
        "subgroups": subgroups,
        "seed": config.seed,
    }
    train = load(config.dataset, "train", **common, **kw)
    if config.split == "train":  # as the subgroup study: the training data itself
        pool = train
    else:
        pool_kw = size_kwargs(config.dataset, config.n_test)
        pool = load(config.dataset, config.split, **common, **pool_kw)
    if config.max_per_subgroup is None:
        keep = np.nonzero(pool.subgroup_ids >= 0)[0]
        keep = keep[np.argsort(pool.subgroup_ids[keep], kind="stable")]
        sample = pool.take(keep)
    else:
        # The subgroup study's sampling key: with max_per_subgroup <= its n_per_subgroup
        # these are the same examples, so its Δc joins every margin row.
        sample = sample_per_subgroup(
            pool, config.max_per_subgroup, study_key(config.seed, "sample")
        )
    if len(sample) == 0:
        raise ValueError(f"no example of split {config.split!r} falls in a subgroup")
    log(
        f"data: {config.dataset} train {len(train)}, {config.split} {len(pool)}; evaluated "
        f"examples per subgroup {sample.counts()}"
    )
    model = make_vae(config.backbone, train.image_shape, config.latent_dim, config.likelihood)
    reuse, deviation = _reusable_train_dir(config, log)
    return MarginInputs(train, sample, model, reuse, deviation)


def _canon(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return [_canon(x) for x in v]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return v


def _reusable_train_dir(
    config: MarginStudyConfig, log: Callable[[str], None]
) -> tuple[Path | None, Path | None]:
    """(trained grid folder to copy, deviation.csv) of the subgroup study, where usable."""
    if config.subgroup_study_dir is None:
        return None, None
    folder = Path(config.subgroup_study_dir)
    dev = folder / "deviation.csv"
    dev_path = dev if dev.exists() else None
    if dev_path is None:
        log(f"{folder} has no deviation.csv: no margin-vs-Δc figure")
    cfg_path, train_dir = folder / "config.json", folder / "train"
    if not (cfg_path.exists() and (train_dir / "checkpoints").is_dir()):
        log(f"{folder} has no trained β grid: training our own")
        return None, dev_path
    theirs = read_json(cfg_path)
    mine = config.to_dict()
    if theirs.get("sample_split", "test") != config.split:
        log(
            f"the subgroup study attacked its {theirs.get('sample_split', 'test')!r} split but "
            f"these margins use {config.split!r}: its Δc cannot join these rows (--split)"
        )
    diff = [
        f
        for f in TRAIN_FIELDS
        if f in theirs and _canon(theirs[f]) != _canon(mine[f]) or f not in theirs
    ]
    if tuple(float(t) for t in config.taus) != (0.0,):
        diff.append("taus (the subgroup study trains τ = 0 only)")
    if diff:
        log(f"subgroup study's β grid not reused: settings differ ({', '.join(diff)})")
        return None, dev_path
    return train_dir, dev_path


def check_indices(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` example indices spread evenly over a sample of ``n`` sorted by subgroup
    (so every subgroup is represented), for the margin attack's convergence check."""
    if k <= 0 or n == 0:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(np.int64))


def check_margin_attacks(
    beta: float, tau: float, res: dict[str, np.ndarray], log: Callable[[str], None]
) -> None:
    """Raises before a (β, τ) cell is stored if none of its attacks gained over its random
    start (its margins would measure random perturbations); logs partial failures."""
    runs, failed = int(np.sum(res["attacks"])), int(np.sum(res["attack_failed"]))
    nonfinite = int(np.sum(res["attack_nonfinite_steps"]))
    where = f"β={beta:g}, τ={tau:g}"
    if runs and failed == runs:
        raise AttackFailedError(
            f"none of the {runs} margin attacks at {where} gained over its random start "
            f"(non-finite steps: {nonfinite}); check the objective and the step size before "
            "trusting any margin of this model"
        )
    if failed or nonfinite:
        n_ex = int(np.sum(np.asarray(res["attack_failed"]) > 0))
        log(
            f"warning: at {where}, {failed} of {runs} margin attacks (on {n_ex} "
            f"example{'' if n_ex == 1 else 's'}) gained nothing over their random start and "
            f"{nonfinite} steps were non-finite "
            "(attack_failed / attack_nonfinite_steps in margins.csv)"
        )


class MarginStudy:
    """``vaerob margins``: the pieces the runner calls (see the module docstring)."""

    name = "margins"
    title = "Margins of r-robustness (001)"
    state_folders: tuple[str, ...] = ("train", "cells")

    def validate(self, config: MarginStudyConfig) -> None:
        validate_margin_config(config)

    def normalize(self, config: MarginStudyConfig) -> MarginStudyConfig:
        return canonical_grid(config, ("betas", "taus"))  # the values cells are keyed by

    def prepare(self, config: MarginStudyConfig, run: StudyRun) -> MarginInputs:
        return prepare_margin_inputs(config, run.log)

    def train(self, config: MarginStudyConfig, inputs: MarginInputs, run: StudyRun) -> Any:
        workdir = run.out / "train"
        if inputs.reuse is not None and not (workdir / "checkpoints").exists():
            # A copy keeps the subgroup study's folder untouched and this study self-contained.
            shutil.copytree(inputs.reuse, workdir, dirs_exist_ok=True)
            run.log(f"reusing the trained β grid of {inputs.reuse.parent}")
        train_cfg = train_config_for(config)

        def fit() -> Any:
            return train_grid(
                inputs.model,
                objectives.beta_elbo(inputs.model, config.kl_reduction),
                inputs.train.images,
                make_grid(
                    {
                        "beta": [float(b) for b in config.betas],
                        "tau": [float(t) for t in config.taus],
                    }
                ),
                train_cfg,
                jax.random.key(config.seed),
                workdir=workdir,
                progress=run.progress,
            )

        try:
            trained = fit()
        except CheckpointError as err:
            if inputs.reuse is None:
                raise
            run.log(f"copied checkpoint unusable ({err}); training our own")
            shutil.rmtree(workdir)
            trained = fit()
        run.log(f"grid β {list(config.betas)} × τ {list(config.taus)} ready")
        return trained

    def plan(
        self, config: MarginStudyConfig, inputs: MarginInputs, trained: Any, run: StudyRun
    ) -> CellPlan:
        from vaerob_jax.studies.margins.tables import rows_for_model

        index = {(g["beta"], g["tau"]): g["model"] for g in trained.rows()}

        def margin_program(steps: int, restarts: int) -> Any:
            return make_margin_program(
                inputs.model,
                n_samples=config.n_samples,
                n_iter=config.n_iter,
                attack_steps=steps,
                attack_rule=config.attack_rule,
                restarts=restarts,
                n_starts=config.n_starts,
                method=config.method,
                log_range=config.log_range,
                apply_to=config.apply_to,
                n_probes=config.n_probes,
                box=BOXES[config.box],
            )

        program = margin_program(config.attack_steps, config.restarts)
        strong = (
            margin_program(config.check_factor * config.attack_steps, config.check_restarts)
            if config.check_examples
            else None
        )
        spec = GridSpec(
            {"beta": [float(b) for b in config.betas], "tau": [float(t) for t in config.taus]}
        )
        # One key for every model: example i gets the same noise draws and attack starts on
        # every (β, τ), so models are compared on paired randomness whatever the grid's order.
        key = study_key(config.seed, "margins")
        scalars = tuple(jnp.asarray(v, jnp.float32) for v in (config.r, config.m, config.r_max))
        sample = inputs.sample
        images, ids = sample.images, np.asarray(sample.example_ids)
        counter = Progress(
            len(spec) * len(sample),
            unit="model·examples",
            mode="log" if run.progress else "off",
            min_interval_s=10.0,
            emit=run.log,
        )

        check_idx = check_indices(len(sample), config.check_examples)

        def compute(cell: Any) -> Any:
            beta, tau = float(cell["beta"]), float(cell["tau"])
            params = jax.tree.map(lambda a, k=index[(beta, tau)]: a[k], trained.params)
            args = (key, (*scalars, jnp.asarray(tau, jnp.float32)), config.chunk_size)
            res = run_in_chunks(program, params, images, ids, *args, counter.advance)
            check_margin_attacks(beta, tau, res, run.log)
            rows = rows_for_model(beta, tau, sample, res, digests[index[(beta, tau)]][:16])
            if strong is None:
                return rows
            # The same examples, noise draws and search with a stronger attack: how far the
            # default attack's (upper) margin estimates are from converged.
            res_strong = run_in_chunks(strong, params, images[check_idx], ids[check_idx], *args)
            return rows, {"check_index": check_idx, "check_estimate": res_strong["estimate"]}

        digests = stack_digests(trained.params)
        return CellPlan(
            spec,
            compute,
            params_digest=lambda cell: digests[index[(float(cell["beta"]), float(cell["tau"]))]],
            finite=MARGIN_FINITE,
        )

    def store_config(self, config: MarginStudyConfig) -> dict[str, Any]:
        # Grid axes, the join source and the post-processing level stay out of the
        # fingerprint: a new β or τ keeps cells.
        store_cfg = {
            k: v
            for k, v in config.to_dict().items()
            if k not in ("betas", "taus", "subgroup_study_dir", "bound_level")
        }
        store_cfg["cell_rows"] = "model digest, attack record, check"  # older cells lack them
        return store_cfg

    def outputs(
        self,
        config: MarginStudyConfig,
        inputs: MarginInputs,
        trained: Any,
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        from vaerob_jax.studies.margins.readings import report_sections
        from vaerob_jax.studies.margins.tables import write_tables_and_figures

        n_cells = len(store.spec) if store.spec is not None else 1
        run.timings["per_model_example_s"] = run.timings["cells_s"] / max(
            1, n_cells * len(inputs.sample)
        )
        results = write_tables_and_figures(config, inputs, rows, run, store)
        return report_sections(config, rows, results, run)
