"""The disentanglement-and-robustness study of 002 as :class:`~vaerob_jax.studies.runner.Study`
pieces.

* inputs: train / test images with ground-truth factors (validated before training), one
  :class:`~vaerob_jax.models.hierarchical.HierarchicalVAE` per (kind, L) stack, its β-TC loss,
  and the seeded input–target pairs every model is attacked on;
* training: one vmapped :func:`~vaerob_jax.train.train_grid` program per stack over β (and
  the free-bits τ), resumable from ``train/<stack>``;
* cells: one per model, computed per stack: the latent attack (Eq. 13; Eq. 14 at z^1 for
  β-TCDLGM, Eq. 15 over all layers for Seatbelt) and the output attack (Eq. 12) at every λ on
  every pair by the batched L-BFGS of :mod:`vaerob_jax.attacks.lbfgsb` — models × pairs × λ
  in one jitted program per mode — with 002's per-attack record; the stronger check attack
  on the first pairs and the scipy L-BFGS-B reference on a few problems; MIG and full-data
  TC on the training split, the β = 1 ELBO and Gaussian-noise log-likelihoods on the test
  split;
* outputs: :mod:`~vaerob_jax.studies.disentangle.tables` and
  :mod:`~vaerob_jax.studies.disentangle.readings`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.targeted import (
    attack_record,
    dlgm_latent_objective,
    lambda_grid,
    output_objective,
    sample_pairs,
    seatbelt_latent_objective,
)
from vaerob_jax.models.hierarchical import make_hierarchical
from vaerob_jax.objectives.hierarchical import hierarchical_tc_loss
from vaerob_jax.objectives.tc import tc_decomposition
from vaerob_jax.robustness.disentangle import (
    elbo_evaluation,
    mutual_information_gap,
    noise_robustness,
)
from vaerob_jax.studies.common import stack_params, study_key
from vaerob_jax.studies.disentangle.config import (
    MODES,
    DisentangleStudyConfig,
    ModelSpec,
    validate_disentangle_config,
)
from vaerob_jax.studies.runner import CellPlan, StudyRun, model_cells
from vaerob_jax.sweeps import ResultStore, parallel, params_digest
from vaerob_jax.train import TrainConfig, train_grid

__all__ = [
    "CELL_FINITE",
    "DisentangleInputs",
    "DisentangleStudy",
    "RECORD_FIELDS",
    "attack_program",
    "evaluate_stack",
    "prepare_disentangle_inputs",
]

#: What 002 records per attack (``attacks.targeted.attack_record``) plus the solver's own
#: diagnostics, one row column each.
RECORD_FIELDS = (
    "d_norm",
    "divergence",
    "delta_value",
    "divergence_d0",
    "target_nll",
    "target_nll_d0",
    "target_nll_self",
    "recon_to_target",
    "recon_to_input",
    "ref_target_recon",
    "ref_input_to_target",
    "ref_input_recon",
    "grad_norm_d0",
)
SOLVER_FIELDS = ("start_value", "iterations", "evaluations", "converged", "nonfinite", "pg_norm")
#: Row columns a cell must hold finite values in to be stored as done.
CELL_FINITE = ("d_norm", "divergence", "delta_value", "target_nll")


@dataclasses.dataclass(frozen=True)
class DisentangleInputs:
    """Everything the cells read: data, models per stack, losses, specs and attack pairs."""

    train_x: np.ndarray
    train_factors: dict[str, np.ndarray]
    test_x: np.ndarray
    specs: tuple[ModelSpec, ...]
    models: dict[str, Any]  # stack -> HierarchicalVAE
    losses: dict[str, Any]  # stack -> BatchLoss
    pairs: np.ndarray  # (P, 2) input / target indices into the test split
    lambdas: np.ndarray  # (E,) the attacked λ (float64)
    lambda_index: np.ndarray  # (E,) their indices in 002's grid
    mig_exclude: tuple[str, ...]
    train_config: TrainConfig

    def spec(self, name: str) -> ModelSpec:
        return next(s for s in self.specs if s.name == name)

    def stacks(self) -> dict[str, list[ModelSpec]]:
        """stack -> its models, in config order."""
        out: dict[str, list[ModelSpec]] = {}
        for s in self.specs:
            out.setdefault(s.stack, []).append(s)
        return out


def _load(c: DisentangleStudyConfig) -> tuple[np.ndarray, dict, np.ndarray, tuple[str, ...]]:
    from vaerob_jax.data import load

    if c.dataset == "shapes":
        train = load("shapes", "train", image_size=c.image_size, seed=c.seed, n=c.n_train)
        test = load("shapes", "test", image_size=c.image_size, seed=c.seed, n=c.n_test)
        tr_x, te_x, factors = train.images, test.images, train.factors
        exclude: tuple[str, ...] = ()
    else:  # dsprites: one split in TFDS; shuffled with the seed, then cut
        kw = {} if c.data_dir is None else {"data_dir": c.data_dir}
        ds = load(
            c.dataset,
            "train",
            image_size=c.image_size,
            limit=c.n_train + c.n_test,
            seed=c.seed,
            **kw,
        )
        if len(ds.images) < c.n_train + c.n_test:
            raise ValueError(
                f"{c.dataset} has {len(ds.images)} images, fewer than n_train + n_test = "
                f"{c.n_train + c.n_test}"
            )
        tr_x, te_x = ds.images[: c.n_train], ds.images[c.n_train : c.n_train + c.n_test]
        factors = (
            None
            if ds.factors is None
            else {k: np.asarray(v)[: c.n_train] for k, v in ds.factors.items()}
        )
        # Chen et al.: dSprites' shape is not a factor of MIG; the real-valued copies of the
        # class factors would count each factor twice.
        exclude = tuple(k for k in (factors or {}) if k == "shape" or k.startswith("value_"))
    if factors is None:
        raise ValueError(f"{c.dataset} carries no ground-truth factors: MIG cannot be computed")
    for name, x in (("train", tr_x), ("test", te_x)):
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:3] != (c.image_size, c.image_size):
            raise ValueError(
                f"{c.dataset} {name} images have shape {x.shape[1:]}, expected side {c.image_size}"
            )
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{c.dataset} {name} pixels must be finite and lie in [0, 1]")
    return (
        np.asarray(tr_x, np.float32),
        {k: np.asarray(v) for k, v in factors.items()},
        np.asarray(te_x, np.float32),
        exclude,
    )


def prepare_disentangle_inputs(config: DisentangleStudyConfig) -> DisentangleInputs:
    """Validates the config, loads and checks the data, builds models, losses and pairs."""
    c = config
    validate_disentangle_config(c)
    train_x, factors, test_x, exclude = _load(c)
    shape = tuple(int(s) for s in train_x.shape[1:])
    specs = c.model_specs()
    models: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    for s in specs:
        if s.stack in models:
            continue
        model = make_hierarchical(
            c.backbone,
            shape,
            (c.latent_dim,) * s.layers,
            kind=s.kind,
            hidden=tuple(c.hidden) if c.backbone == "mlp" else None,
            layer_hidden=tuple(c.layer_hidden),
        )
        models[s.stack] = model
        losses[s.stack] = hierarchical_tc_loss(model, c.estimator, dataset_size=len(train_x))
    pairs = sample_pairs(len(test_x), c.n_pairs, c.seed)
    idx = np.asarray(c.lambda_indices(), np.int64)
    return DisentangleInputs(
        train_x=train_x,
        train_factors=factors,
        test_x=test_x,
        specs=specs,
        models=models,
        losses=losses,
        pairs=pairs,
        lambdas=lambda_grid(c.lambda_count)[idx],
        lambda_index=idx,
        mig_exclude=exclude,
        train_config=TrainConfig(
            steps=c.train_steps,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            checkpoint_every=max(1, c.train_steps // 4),
            log_every=max(1, c.train_steps // 50),
            # MLP stacks: one vmapped program (the CPU default runs models one at a time,
            # right for convolutions only).
            model_axis="vmap" if c.backbone == "mlp" else "auto",
        ),
    )


# ----------------------------------------------------------------------------------- attacks


@functools.lru_cache(maxsize=32)
def objectives_for(model: Any, output_draws: int, layer_dist: str = "mean_path") -> dict[str, Any]:
    """The two attack objectives of a stack's model: latent (Eq. 13 / 14 / 15) and output."""
    if model.kind == "dlgm":  # Eq. 14: β-TCDLGM is attacked at z^1 only
        latent = dlgm_latent_objective(model)
    else:  # Eq. 15 (all layers); at L = 1 this is Eq. 13
        latent = seatbelt_latent_objective(model, layer_dist=layer_dist, n_draws=output_draws)
    return {"latent": latent, "output": output_objective(model, n_draws=output_draws)}


@functools.lru_cache(maxsize=32)
def attack_program(model: Any, objective: Any, memory: int, penalty: str):
    """jit(params (K, ...), x (P, ...), x_t (P, ...), lams (E,), keys (P,), iterations ())
    -> dict of (K, P, E) records (and 'delta' (K, P, E, H, W, C)): every model × pair × λ in
    one program.

    Pair p's objective noise and start come from ``keys[p]``, the same for every model and λ
    (paired comparisons). ``iterations`` is a runtime int32 scalar, so the attack and its
    longer convergence check share one compiled program."""
    from vaerob_jax.attacks.lbfgsb import targeted_attack

    attack = targeted_attack(objective, memory=memory, penalty=penalty)

    def one(params, x, x_t, lam, key, iterations):
        inputs = {"x": x, "target": x_t}
        out = attack(params, inputs, lam, key, n_iterations=iterations)
        rec = attack_record(
            model, objective, params, inputs, out["delta"], lam, key, penalty=penalty
        )
        # d = 0 is a local minimiser of divergence + λ‖d‖₂ on the box iff the feasible part
        # of the divergence's gradient there is at most λ (the kink of the unsquared norm):
        # an attack that stays at d ≈ 0 is then right, not stuck.
        g0 = jax.grad(lambda d: -objective(params, inputs, d, key))(jnp.zeros_like(x))
        g0 = jnp.where(((x <= 0) & (g0 > 0)) | ((x >= 1) & (g0 < 0)), 0.0, g0)
        rec["grad_norm_d0"] = jnp.sqrt(jnp.sum(jnp.square(g0)))
        return {**rec, **{k: out[k] for k in SOLVER_FIELDS}, "delta": out["delta"]}

    over_lam = jax.vmap(one, in_axes=(None, None, None, 0, None, None))
    over_pairs = jax.vmap(over_lam, in_axes=(None, 0, 0, None, 0, None))
    return jax.jit(jax.vmap(over_pairs, in_axes=(0, None, None, None, None, None)))


def _take(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda a: a[k], tree)


def example_lambda(delta_values: np.ndarray) -> int:
    """Fig. 1's example rule (after Gondim-Ribeiro et al.): among the λ whose Δ is at most
    the mean over λ, the one with the largest Δ. ``delta_values`` (E,)."""
    v = np.asarray(delta_values, np.float64)
    ok = np.flatnonzero(v <= v.mean())
    return int(ok[np.argmax(v[ok])])


def scipy_problem_indices(n_lambdas: int, n_problems: int) -> list[tuple[int, int]]:
    """(mode index, λ index) of the scipy reference problems of one model, on pair 0:
    alternating modes, λ spread evenly over the grid."""
    out = []
    for i in range(n_problems):
        mode = i % len(MODES)
        per_mode = (n_problems - mode + len(MODES) - 1) // len(MODES)
        j = i // len(MODES)
        e = 0 if per_mode <= 1 else round(j * (n_lambdas - 1) / (per_mode - 1))
        out.append((mode, int(e)))
    return out


def evaluate_stack(
    config: DisentangleStudyConfig,
    inputs: DisentangleInputs,
    trained: dict[str, Any],
    names: list[str],
    run: StudyRun,
) -> dict[str, tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
    """The cells of the models ``names`` of one stack (see the module docstring).

    Returns:
      name -> (rows per mode × pair × λ, arrays: the check attack's Δ, the scipy reference,
      MIG, TC, per-image ELBO terms and noise log-likelihoods, Fig. 1's strips).
    """
    c = config
    specs = [inputs.spec(n) for n in names]
    model = inputs.models[specs[0].stack]
    stack = stack_params([trained["params"][n] for n in names])
    x = jnp.asarray(inputs.test_x[inputs.pairs[:, 0]])
    x_t = jnp.asarray(inputs.test_x[inputs.pairs[:, 1]])
    lams = jnp.asarray(inputs.lambdas, jnp.float32)
    base = study_key(c.seed, "attack")
    keys = jax.vmap(lambda p: jax.random.fold_in(base, p))(jnp.arange(len(inputs.pairs)))
    objectives = objectives_for(model, int(c.output_draws), c.layer_dist)
    per: list[dict[str, Any]] = [{"rows": [], "arrays": {}} for _ in names]
    n_chk = int(c.check_pairs)
    for mode in MODES:
        obj = objectives[mode]
        t0 = time.perf_counter()
        prog = attack_program(model, obj, c.attack_memory, c.penalty)
        n_it = jnp.int32(c.attack_iterations)
        # pairs split over the devices of an active mesh (one device: a plain call)
        out = parallel.call_split(
            prog, stack, x, x_t, lams, keys, n_it, split=(1, 2, 4), out_axis=1
        )
        res = {k: np.asarray(v) for k, v in out.items()}
        t_main = time.perf_counter() - t0
        chk = None
        if n_chk:
            t0 = time.perf_counter()
            n_chk_it = jnp.int32(c.check_factor * c.attack_iterations)
            chk = parallel.call_split(
                prog, stack, x[:n_chk], x_t[:n_chk], lams, keys[:n_chk], n_chk_it,
                split=(1, 2, 4), out_axis=1,
            )  # fmt: skip
            chk = {k: np.asarray(chk[k]) for k in ("delta_value", "divergence", "d_norm")}
            t_chk = time.perf_counter() - t0
        else:
            t_chk = 0.0
        n_att = len(names) * len(inputs.pairs) * len(lams)
        run.log(
            f"{mode} attack, {specs[0].stack}: {n_att} L-BFGS attacks × {c.attack_iterations} "
            f"iterations in {t_main:.0f}s, check ({c.check_factor}×) {t_chk:.0f}s"
        )
        for k, s in enumerate(specs):
            info = model_info(s)
            for p, (i_in, i_t) in enumerate(inputs.pairs):
                for e, lam in enumerate(inputs.lambdas):
                    row = {
                        **info,
                        "mode": mode,
                        "pair": p,
                        "input": int(i_in),
                        "target": int(i_t),
                        "lambda": float(lam),
                        "lambda_index": int(inputs.lambda_index[e]),
                        "log2_lambda": float(np.log2(lam)),
                    }
                    for f in (*RECORD_FIELDS, *SOLVER_FIELDS):
                        v = res[f][k, p, e]
                        row[f] = (
                            bool(v)
                            if f == "converged"
                            else (
                                int(v)
                                if f in ("iterations", "evaluations", "nonfinite")
                                else float(v)
                            )
                        )
                    per[k]["rows"].append(row)
            arrays = per[k]["arrays"]
            if chk is not None:
                arrays[f"check_delta_value_{mode}"] = chk["delta_value"][k].astype(np.float64)
                arrays[f"check_divergence_{mode}"] = chk["divergence"][k].astype(np.float64)
            # Fig. 1's example: pair 0 at the example-rule λ.
            e_ex = example_lambda(res["delta_value"][k, 0])
            d = res["delta"][k, 0, e_ex]
            p_k = _take(stack, k)
            recon = _reconstruct(model)
            x0, xt0 = np.asarray(x[0]), np.asarray(x_t[0])
            arrays[f"strip_{mode}"] = np.stack(
                [
                    x0,
                    np.asarray(recon(p_k, x[0])),
                    x0 + d,
                    d,
                    np.asarray(recon(p_k, x[0] + d)),
                    xt0,
                ]
            ).astype(np.float32)
            arrays[f"strip_lambda_{mode}"] = np.asarray([inputs.lambdas[e_ex]])
    _scipy_reference(c, inputs, model, objectives, stack, names, x, x_t, keys, per, run)
    _metrics(c, inputs, model, stack, names, per, run)
    return {n: (per[k]["rows"], per[k]["arrays"]) for k, n in enumerate(names)}


@functools.lru_cache(maxsize=32)
def _reconstruct(model: Any):
    return jax.jit(model.reconstruct)


def model_info(s: ModelSpec) -> dict[str, Any]:
    """The table columns naming a model."""
    return {
        "model_id": s.name,
        "model": s.label,
        "family": s.family,
        "layers": s.layers,
        "beta": s.beta,
    }


def _scipy_reference(c, inputs, model, objectives, stack, names, x, x_t, keys, per, run):
    """scipy L-BFGS-B (float64, m = 25, factr = 10) on a few problems per model; the batched
    solver's Δ on the same problems is read from the rows afterwards."""
    from vaerob_jax.attacks.lbfgsb import targeted_attack_scipy

    if not c.scipy_problems:
        return
    t0 = time.perf_counter()
    probs = scipy_problem_indices(len(inputs.lambdas), int(c.scipy_problems))
    for k in range(len(names)):
        p_k = _take(stack, k)
        values, mode_idx, lam_idx = [], [], []
        for m, e in probs:
            out = targeted_attack_scipy(
                objectives[MODES[m]],
                p_k,
                {"x": x[0], "target": x_t[0]},
                float(inputs.lambdas[e]),
                keys[0],
                maxiter=int(c.scipy_maxiter),
                penalty=c.penalty,
            )
            values.append(float(out["value"]))
            mode_idx.append(m)
            lam_idx.append(e)
        arrays = per[k]["arrays"]
        arrays["scipy_delta_value"] = np.asarray(values, np.float64)
        arrays["scipy_mode"] = np.asarray(mode_idx, np.int64)
        arrays["scipy_lambda"] = np.asarray(lam_idx, np.int64)
    run.log(
        f"scipy L-BFGS-B reference: {len(probs) * len(names)} attacks in "
        f"{time.perf_counter() - t0:.0f}s"
    )


def _metrics(c, inputs, model, stack, names, per, run):
    """MIG and full-data TC (train split), β = 1 ELBO and noise log-likelihoods (test split)."""
    t0 = time.perf_counter()
    train = jnp.asarray(inputs.train_x)
    test = jnp.asarray(inputs.test_x)
    for k in range(len(names)):
        p_k = _take(stack, k)
        arrays = per[k]["arrays"]
        mig = mutual_information_gap(
            model,
            p_k,
            train,
            inputs.train_factors,
            study_key(c.seed, "mig"),
            n_samples=int(c.mig_samples),
            n_bins=int(c.mig_bins),
            exclude=inputs.mig_exclude,
        )
        arrays["mig"] = np.asarray([mig["mig"]], np.float64)
        arrays["mig_gaps"] = np.asarray(mig["gaps"], np.float64)
        tc = tc_decomposition(model, p_k, train, study_key(c.seed, "tc"), int(c.mig_samples))
        for f in ("mi", "tc", "dwkl", "kl"):
            arrays[f"full_{f}"] = np.asarray([float(tc[f])], np.float64)
        elbo = elbo_evaluation(model, p_k, test, study_key(c.seed, "elbo"), int(c.elbo_draws))
        for f in ("recon", "kl", "elbo"):
            arrays[f"elbo_{f}"] = np.asarray(elbo[f], np.float64)
        arrays["noise_loglik"] = noise_robustness(
            model, p_k, test, study_key(c.seed, "noise"), list(c.noise_scales)
        ).astype(np.float64)
        arrays["noise_scales"] = np.asarray(c.noise_scales, np.float64)
    run.log(f"{', '.join(names)}: MIG, TC, ELBO, noise ({time.perf_counter() - t0:.0f}s)")


# ---------------------------------------------------------------------------------- the study


class DisentangleStudy:
    """``vaerob disentangle``: the pieces the runner calls (see the module docstring)."""

    name = "disentangle"
    title = "Disentangled and hierarchical VAEs under targeted attacks (002)"
    state_folders: tuple[str, ...] = ("train", "cells")

    def validate(self, config: DisentangleStudyConfig) -> None:
        validate_disentangle_config(config)

    def normalize(self, config: DisentangleStudyConfig) -> DisentangleStudyConfig:
        return config

    def store_config(self, config: DisentangleStudyConfig) -> dict[str, Any]:
        # The model list is the grid axis (it may grow); the bootstrap is read after the cells.
        return {k: v for k, v in config.to_dict().items() if k not in ("models", "n_boot")}

    def prepare(self, config: DisentangleStudyConfig, run: StudyRun) -> DisentangleInputs:
        inputs = prepare_disentangle_inputs(config)
        run.log(
            f"{config.dataset}: {len(inputs.train_x)} train / {len(inputs.test_x)} test images "
            f"{inputs.train_x.shape[1:]}, {len(inputs.specs)} models in "
            f"{len(inputs.models)} stacks, {len(inputs.pairs)} pairs × "
            f"{len(inputs.lambdas)} λ × {len(MODES)} modes"
        )
        return inputs

    def train(
        self, config: DisentangleStudyConfig, inputs: DisentangleInputs, run: StudyRun
    ) -> dict[str, Any]:
        """One resumable train_grid program per stack over β (and τ).

        Returns:
          {'params': model name -> params, 'results': stack -> TrainResult}.
        """
        params: dict[str, Any] = {}
        results: dict[str, Any] = {}
        for stack, specs in inputs.stacks().items():
            grid = {
                "beta": np.asarray([s.beta for s in specs], np.float64),
                "free_bits": np.full(len(specs), float(config.free_bits)),
            }
            res = train_grid(
                inputs.models[stack],
                inputs.losses[stack],
                {"x": inputs.train_x},
                grid,
                inputs.train_config,
                study_key(config.seed, f"train/{stack}"),
                workdir=run.out / "train" / stack,
                progress=run.progress,
            )
            results[stack] = res
            for j, s in enumerate(specs):
                params[s.name] = _take(res.params, j)
            run.log(f"{stack}: {len(specs)} model(s) trained ({res.elapsed_s:.0f}s)")
        return {"params": params, "results": results}

    def plan(
        self,
        config: DisentangleStudyConfig,
        inputs: DisentangleInputs,
        trained: dict[str, Any],
        run: StudyRun,
    ) -> CellPlan:
        names = [s.name for s in inputs.specs]
        return model_cells(
            {stack: [s.name for s in specs] for stack, specs in inputs.stacks().items()},
            {n: params_digest(trained["params"][n]) for n in names},
            lambda todo: evaluate_stack(config, inputs, trained, todo, run),
            CELL_FINITE,
        )

    def outputs(
        self,
        config: DisentangleStudyConfig,
        inputs: DisentangleInputs,
        trained: dict[str, Any],
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        from vaerob_jax.studies.disentangle.readings import report_sections
        from vaerob_jax.studies.disentangle.tables import write_tables_and_figures

        results = write_tables_and_figures(config, inputs, trained, rows, store, run)
        return report_sections(config, inputs, results, run)
