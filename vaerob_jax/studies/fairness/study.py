"""The fairness-versus-robustness study of 004 as :class:`~vaerob_jax.studies.runner.Study` pieces.

* inputs: per trained part ('gmm2d', 'digits') the train / test arrays with their groups
  (group = label, validated before training), the MLP, the fair-robust loss and the grid of
  (λ, ε*, loss, seed) values, one model each;
* training: per part one vmapped :func:`~vaerob_jax.train.train_grid` program for the ε* = 0
  models (no PGD in the step) and one for the ε* > 0 models (resumable from
  ``train/<part>/<kind>``); model k of a sub-grid equals the same point trained alone, so the
  split changes no result;
* cells: one per model, computed together per part (:func:`vaerob_jax.fairness.evaluate.
  evaluate_classifiers`, vmapped over the models): per-group natural / boundary / robust errors
  at every evaluation ε for R+FGSM, PGD and their per-point OR, and the same OR with a stronger
  PGD (the convergence check); per-example flags, margins and distances are stored with the
  cell for the bootstrap and the distance tables;
* outputs: :mod:`~vaerob_jax.studies.fairness.tables` (theory panel, tables, figures) and
  :mod:`~vaerob_jax.studies.fairness.readings` (report sections computed from them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.data import load_digits_dataset
from vaerob_jax.data.utkface import LABEL_FIELDS, load_utkface
from vaerob_jax.fairness import make_gmm2d
from vaerob_jax.fairness.evaluate import EvalSettings, evaluate_classifiers
from vaerob_jax.models import make_classifier, make_mlp_classifier
from vaerob_jax.objectives.fairness import (
    check_saturated_groups,
    fair_robust_loss,
    validate_fairness_data,
)
from vaerob_jax.robustness.boundary import decomposition_rows, error_decomposition
from vaerob_jax.studies.common import study_key
from vaerob_jax.studies.fairness.config import (
    PREFIX,
    FairnessStudyConfig,
    validate_fairness_config,
)
from vaerob_jax.studies.runner import CellPlan, StudyRun
from vaerob_jax.sweeps import GridSpec, ResultStore, stack_digests
from vaerob_jax.train import TrainConfig, train_grid

__all__ = ["ERROR_FINITE", "FairnessStudy", "Part", "prepare_parts", "train_part"]

#: errors.csv columns a cell must hold finite values in to be stored as done.
ERROR_FINITE = ("natural", "boundary", "robust")
#: Attacks reported per cell: the two of 004, their per-point OR, and the OR with the
#: stronger PGD of the convergence check.
CELL_ATTACKS = ("rfgsm", "pgd", "worst", "worst_check")


@dataclasses.dataclass(frozen=True)
class Part:
    """One trained grid of the study: its data, model, loss and models' hyperparameters."""

    name: str
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    group_names: tuple[str, ...]
    clf: Any
    losses: dict[str, Any]  # 'clean' (ε* = 0: no PGD in the step) and 'adversarial'
    grid: dict[str, np.ndarray]
    models: tuple[dict[str, Any], ...]  # {model, lam, eps_star, loss, seed} per model
    train_config: TrainConfig
    eval_settings: EvalSettings
    check_settings: EvalSettings
    box: tuple[float, float] | None

    def cell_id(self, k: int) -> str:
        return f"{self.name}-{k:03d}"

    def model_info(self, k: int) -> dict[str, Any]:
        """The table columns naming model k: λ, ε*, loss and seed."""
        m = self.models[k]
        return {
            "lam": float(m["lam"]),
            "eps_star": float(m["eps_star"]),
            "loss": m["loss"],
            "seed": int(m["seed"]),
        }

    def subgrids(self) -> dict[str, np.ndarray]:
        """Model indices trained by each loss: 'clean' (ε* = 0) and 'adversarial' (ε* > 0)."""
        eps = self.grid["eps_star"]
        out = {"clean": np.flatnonzero(eps == 0), "adversarial": np.flatnonzero(eps > 0)}
        return {kind: idx for kind, idx in out.items() if idx.size}

    def subgrid(self, kind: str) -> dict[str, np.ndarray]:
        idx = self.subgrids()[kind]
        grid = {k: v[idx] for k, v in self.grid.items()}
        if kind == "clean":
            grid.pop("eps_star")
        return grid


def _grid(config: FairnessStudyConfig, part: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """λ × ε* × seed with cross-entropy, plus (digits, ``digits_ramp``) λ × seed with the ramp
    at ε* = 0. Returns the trainer's grid arrays and one description per model."""
    models: list[dict[str, Any]] = []
    for lam in config.lambdas(part):
        for eps_star in config.eps_stars(part):
            for seed in config.seeds:
                models.append({"lam": lam, "eps_star": eps_star, "loss": "ce", "seed": seed})
    if part == "digits" and config.digits_ramp:
        for lam in config.lambdas(part):
            for seed in config.seeds:
                models.append({"lam": lam, "eps_star": 0.0, "loss": "ramp", "seed": seed})
    losses = ("ce", "ramp") if any(m["loss"] == "ramp" for m in models) else ("ce",)
    grid: dict[str, np.ndarray] = {
        "lam": np.array([m["lam"] for m in models], np.float64),
        "eps_star": np.array([m["eps_star"] for m in models], np.float64),
        "seed": np.array([m["seed"] for m in models], np.int64),
    }
    if len(losses) > 1:
        grid["loss_id"] = np.array([losses.index(m["loss"]) for m in models], np.int64)
    for k, m in enumerate(models):
        m["model"] = k
    return grid, models


def _data(config: FairnessStudyConfig, part: str) -> tuple[dict, dict, tuple[str, ...], Any]:
    if part == "gmm2d":
        train = make_gmm2d(study_key(config.seed, "gmm2d/train"), config.gmm_n_train, config.gmm_k)
        test = make_gmm2d(study_key(config.seed, "gmm2d/test"), config.gmm_n_test, config.gmm_k)
        gmm_names = ("class 0 (sd 1)", f"class 1 (sd {config.gmm_k:g})")
        as_np = {
            k: {n: np.asarray(v) for n, v in d.items()} for k, d in (("tr", train), ("te", test))
        }
        return as_np["tr"], as_np["te"], gmm_names, None
    out = []
    names: tuple[str, ...] = tuple(str(i) for i in range(10))
    for split in ("train", "test"):
        if part == "digits":
            raw = load_digits_dataset(split, image_size=config.digits_image_size, seed=config.seed)
        else:  # utkface: label = group (race by default), a seeded split of the user's folder
            raw = load_utkface(
                split,
                image_size=config.utkface_image_size,
                limit=config.utkface_n_train if split == "train" else None,
                seed=config.seed,
                data_dir=config.utkface_dir,
                label=config.utkface_label,
            )
            names = tuple(LABEL_FIELDS[config.utkface_label])
        y = np.asarray(raw.labels, np.int32)
        out.append({"x": np.asarray(raw.images, np.float32), "label": y, "group": y.copy()})
    return out[0], out[1], names, (0.0, 1.0)


def prepare_parts(config: FairnessStudyConfig) -> dict[str, Part]:
    """Validates the config, loads and checks every part's data, builds models and losses."""
    validate_fairness_config(config)
    parts: dict[str, Part] = {}
    for name in config.parts:
        train, test, names, box = _data(config, name)
        num_classes = len(names)
        for split, d in (("train", train), ("test", test)):
            validate_fairness_data(
                d["label"], d["group"], num_classes, len(names), name=f"{name} {split}"
            )
        if name == "utkface":  # 004's CNN: 3 conv stages + dense layers
            clf = make_classifier(
                train["x"].shape[1:], num_classes, config.utkface_channels, config.utkface_hidden
            )
        else:
            clf = make_mlp_classifier(train["x"].shape[1:], num_classes, config.of(name, "hidden"))
        grid, models = _grid(config, name)
        steps = int(config.of(name, "steps"))
        warmup = int(round(config.ramp_warmup_share * steps))
        losses = ("ce", "ramp") if "loss_id" in grid else "ce"
        # ε* = 0 models train without the in-step PGD (its term has weight 1[ε* > 0] = 0, so
        # the result is the same and 5/6 of their step is saved); ε* > 0 models with it.
        loss_fns = {
            kind: fair_robust_loss(
                clf,
                num_groups=len(names),
                loss=losses,
                penalty_reduce=config.penalty_reduce,
                pgd_steps=pgd,
                box=box,
                ramp_warmup_steps=warmup if "loss_id" in grid else 0,
            )
            for kind, pgd in (("clean", 0), ("adversarial", config.pgd_steps))
        }
        batch = int(config.of(name, "batch_size"))
        if batch > len(train["label"]):
            raise ValueError(
                f"{PREFIX[name]}_batch_size {batch} exceeds the {len(train['label'])} "
                "training examples"
            )
        common = {
            "eps": config.eval_eps(name),
            "box": box,
            "distance_halvings": config.distance_halvings,
            "distance_steps": config.distance_steps,
            "chunk": 256 if name == "utkface" else 2048,  # conv activations per call
        }
        parts[name] = Part(
            name=name,
            train=train,
            test=test,
            group_names=names,
            clf=clf,
            losses=loss_fns,
            grid=grid,
            models=tuple(models),
            train_config=TrainConfig(
                steps=steps,
                batch_size=batch,
                learning_rate=config.learning_rate,
                checkpoint_every=max(1, steps // 4),
                log_every=max(1, steps // 50),
                # MLPs: one vmapped program over the grid (the CPU default 'sequential' is for
                # convs, where XLA's grouped convolutions are slow; for MLPs it is ~20x slower).
                # The CNN keeps 'auto': one model at a time on CPU, vmapped on accelerators.
                model_axis="auto" if name == "utkface" else "vmap",
                # Uniform minibatches with replacement: the epoch sampler's per-step
                # permutation of N (a vmapped sort over K models) cost 0.85 s of a 0.89 s step
                # for 45 models on N = 20,000 (2-core CPU); with replacement, 0.04 s.
                batch_sampling="replacement",
            ),
            eval_settings=EvalSettings(
                pgd_steps=config.eval_pgd_steps,
                pgd_restarts=config.eval_pgd_restarts,
                distance_max=float(config.of(name, "distance_max")),
                **common,
            ),
            check_settings=EvalSettings(
                pgd_steps=config.check_factor * config.eval_pgd_steps,
                pgd_restarts=config.check_restarts,
                distance_max=None,
                **common,
            ),
            box=box,
        )
    return parts


def train_part(
    config: FairnessStudyConfig, part: Part, train_dir: Path, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Trains (or loads) a part's models: one vmapped program per loss ('clean': ε* = 0,
    'adversarial'), resumable from ``train_dir/<part>/<kind>``.

    Returns:
      The params of every model stacked in the part's model order, and the
      :class:`~vaerob_jax.train.TrainResult` of each kind.
    """
    stacks, order, results = [], [], {}
    for kind, idx in part.subgrids().items():
        results[kind] = train_grid(
            part.clf,
            part.losses[kind],
            part.train,
            part.subgrid(kind),
            part.train_config,
            study_key(config.seed, f"train/{part.name}"),
            workdir=train_dir / part.name / kind,
            progress=progress,
        )
        stacks.append(results[kind].params)
        order.append(idx)
    inverse = np.argsort(np.concatenate(order))
    params = jax.tree.map(lambda *leaves: jnp.concatenate(leaves)[inverse], *stacks)
    return params, results


def cell_rows(part: Part, k: int, flags: dict[str, np.ndarray], eps: np.ndarray) -> list[dict]:
    """errors.csv rows of model k: per attack × ε × group (``'all'`` first)."""
    info = part.model_info(k)
    rows = []
    groups = part.test["group"]
    for attack in CELL_ATTACKS:
        for e_i, e in enumerate(eps):
            dec = error_decomposition(
                flags["correct"], flags[attack][e_i], groups, len(part.group_names)
            )
            for r in decomposition_rows(dec, part.group_names):
                rows.append(
                    {
                        "part": part.name,
                        "model_id": part.cell_id(k),
                        **info,
                        "attack": attack,
                        "eps": float(e),
                        **r,
                    }
                )
    return rows


class FairnessStudy:
    """``vaerob fairness``: the pieces the runner calls (see the module docstring)."""

    name = "fairness"
    title = "Fairness versus adversarial robustness (004)"
    state_folders: tuple[str, ...] = ("train", "cells")

    def validate(self, config: FairnessStudyConfig) -> None:
        validate_fairness_config(config)

    def normalize(self, config: FairnessStudyConfig) -> FairnessStudyConfig:
        return config

    def store_config(self, config: FairnessStudyConfig) -> dict[str, Any]:
        # The theory panel and the bootstrap are computed after the cells.
        skip = (
            "theory_k",
            "theory_eps",
            "theory_lambdas",
            "theory_n",
            "theorem_n_eps",
            "theorem_n_k",
            "losses_k",
            "losses_lambdas",
            "losses_eps",
            "n_boot",
        )
        return {k: v for k, v in config.to_dict().items() if k not in skip}

    def prepare(self, config: FairnessStudyConfig, run: StudyRun) -> dict[str, Part]:
        parts = prepare_parts(config)
        for p in parts.values():
            run.log(
                f"{p.name}: {len(p.train['label'])} train / {len(p.test['label'])} test, "
                f"{len(p.group_names)} groups, {len(p.models)} models"
            )
        return parts

    def train(self, config: FairnessStudyConfig, inputs: dict[str, Part], run: StudyRun) -> Any:
        """Per part, :func:`train_part` into ``train/<part>``; returns part -> params stacked
        in the part's model order."""
        trained: dict[str, Any] = {}
        for name, part in inputs.items():
            trained[name], results = train_part(config, part, run.out / "train", run.progress)
            for kind, idx in part.subgrids().items():
                self._check_saturated(part, idx, results[kind], run)
                run.log(
                    f"{name}/{kind}: {idx.size} models trained ({results[kind].elapsed_s:.0f}s)"
                )
        return trained

    @staticmethod
    def _check_saturated(part: Part, idx: np.ndarray, res: Any, run: StudyRun) -> None:
        """Bounded losses: "every group all wrong" is a penalty-0 optimum (§7 of 004)."""
        ramp = np.array([part.models[k]["loss"] == "ramp" for k in idx])
        if ramp.any() and "group_loss_max" in res.history and res.history["step"].size:
            hi, lo = res.history["group_loss_max"][-1], res.history["group_loss_min"][-1]
            flagged = check_saturated_groups(np.stack([lo, hi], -1)[ramp], warn=False)
            if flagged.any():
                run.log(
                    f"{part.name}: {int(flagged.sum())} ramp models ended saturated (all wrong)"
                )

    def plan(
        self, config: FairnessStudyConfig, inputs: dict[str, Part], trained: Any, run: StudyRun
    ) -> CellPlan:
        ids = [p.cell_id(k) for p in inputs.values() for k in range(len(p.models))]
        where = {p.cell_id(k): (p.name, k) for p in inputs.values() for k in range(len(p.models))}
        digests = {name: stack_digests(trained[name]) for name in inputs}

        def compute(cells: list[Any]) -> list[Any]:
            results: dict[str, Any] = {}
            for name, part in inputs.items():
                ks = [where[c["model"]][1] for c in cells if where[c["model"]][0] == name]
                if not ks:
                    continue
                # One key for every model: paired attack randomness across the grid. CNNs on CPU
                # go one model per program (vmapped convolutions are grouped ones: slow, and
                # their evaluation ran out of memory in spec 004's prototype).
                key = study_key(config.seed, f"eval/{name}")
                x, y = part.test["x"], part.test["label"]
                conv_on_cpu = name == "utkface" and jax.default_backend() == "cpu"
                for group in [[k] for k in ks] if conv_on_cpu else [ks]:
                    self._evaluate(part, trained[name], group, x, y, key, results)
            return [results[c["model"]] for c in cells]

        return CellPlan(
            GridSpec({"model": ids}),
            compute,
            batch_axes=("model",),
            params_digest=lambda cell: digests[where[cell["model"]][0]][where[cell["model"]][1]],
            finite=ERROR_FINITE,
        )

    @staticmethod
    def _evaluate(
        part: Part, stack: Any, ks: list[int], x: Any, y: Any, key: Any, results: dict[str, Any]
    ) -> None:
        """Evaluates models ``ks`` of a part's stack in one program; adds their cell results."""
        idx = jnp.asarray(ks)
        params = jax.tree.map(lambda a, i=idx: a[i], stack)
        ev = evaluate_classifiers(part.clf, params, x, y, key, part.eval_settings)
        chk = evaluate_classifiers(part.clf, params, x, y, key, part.check_settings)
        for j, k in enumerate(ks):
            flags = {
                "correct": ev.correct[j],
                "rfgsm": ev.flipped["rfgsm"][j],
                "pgd": ev.flipped["pgd"][j],
                "worst": ev.flipped["worst"][j],
                "worst_check": chk.flipped["worst"][j] | ev.flipped["worst"][j],
            }
            assert ev.distance is not None and ev.distance_censored is not None
            arrays = {
                "correct": flags["correct"],
                "flipped_rfgsm": flags["rfgsm"],
                "flipped_pgd": flags["pgd"],
                "flipped_check": chk.flipped["pgd"][j],
                "softmax_margin": ev.softmax_margin[j],
                "logit_margin": ev.logit_margin[j],
                "distance": ev.distance[j],
                "distance_censored": ev.distance_censored[j],
            }
            results[part.cell_id(k)] = (cell_rows(part, k, flags, ev.eps), arrays)

    def outputs(
        self,
        config: FairnessStudyConfig,
        inputs: dict[str, Part],
        trained: Any,
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        from vaerob_jax.studies.fairness.readings import report_sections
        from vaerob_jax.studies.fairness.tables import write_tables_and_figures

        results = write_tables_and_figures(config, inputs, rows, store, run)
        return report_sections(config, inputs, results, run)
