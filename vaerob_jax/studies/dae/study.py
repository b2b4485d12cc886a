"""The robust deterministic-autoencoder study of 003 as :class:`~vaerob_jax.studies.runner.Study`
pieces.

* inputs: the train / test images and labels (validated before training), the VAE and the
  DAE on one backbone, the GMM prior, one :class:`ModelEntry` per compared model and the
  seeded (source, target) pairs every model is attacked on;
* training: one vmapped :func:`~vaerob_jax.train.train_grid` program per loss (VAE and β-VAE
  share the β-ELBO, the coupled models share Eqs. 9-11 over α × s), each resumable from
  ``train/<group>``, plus the feature classifier of FD-clf (``train/feature_clf``);
* cells: one per model, computed per family (VAEs / DAEs, one stack each): the latent attack
  (Eq. 12) and the maximum-damage attack (Eq. 13) by L2-PGD at every λ on every pair, the
  stronger check attack on the first trials, the L-BFGS-B cross-check, per-example MS-SSIM
  and L2 metrics, FD-clf of decoded prior samples, clean reconstruction quality and Table 3's
  latent classifier (clean and attacked codes);
* outputs: :mod:`~vaerob_jax.studies.dae.tables` (tables and figures) and
  :mod:`~vaerob_jax.studies.dae.readings` (report sections computed from them).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.attacks import (
    ball,
    code_distance_objective,
    make_attack,
    output_damage,
    run_attack,
)
from vaerob_jax.models import make_mlp_classifier, make_vae
from vaerob_jax.models.dae import make_dae
from vaerob_jax.models.gmm_prior import make_gmm_prior
from vaerob_jax.objectives import beta_elbo, cross_entropy
from vaerob_jax.objectives.gmm_dae import check_gmm_hyperparameters, gmm_dae_objective
from vaerob_jax.objectives.tc import beta_tcvae_loss
from vaerob_jax.robustness.frechet import frechet_distance
from vaerob_jax.robustness.msssim import ms_ssim
from vaerob_jax.studies.common import stack_params, study_key
from vaerob_jax.studies.dae.config import DAEStudyConfig, validate_dae_config
from vaerob_jax.studies.runner import CellPlan, StudyRun, model_cells
from vaerob_jax.sweeps import ResultStore, params_digest
from vaerob_jax.train import TrainConfig, train_grid

__all__ = [
    "ATTACKS",
    "DAEInputs",
    "DAEStudy",
    "ModelEntry",
    "attack_pairs",
    "lbfgsb_attack",
    "prepare_dae_inputs",
    "study_attack",
    "train_latent_classifiers",
]

#: The two attacks of 003 §4: the latent attack towards a target (Eq. 12) and the
#: maximum-damage attack (Eq. 13), both under a hard L2 bound λ.
ATTACKS = ("latent", "damage")
#: The metric each attack's robustness is read from (Table 1): the latent attack's
#: MS-SSIM(x_t, x̃_a) (lower = more robust) and the maximum damage's MS-SSIM(x̃, x̃_a)
#: (higher = more robust).
HEADLINE = {"latent": "ms_target", "damage": "ms_recon"}
#: Row columns a cell must hold finite values in to be stored as done.
CELL_FINITE = ("loss", "ms_target", "ms_recon", "ms_input")
BOX = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One compared model: its id, the label the tables print, and its training group."""

    model_id: str
    label: str
    kind: str  # one of MODEL_KINDS
    family: str  # 'vae' | 'dae' (which architecture, hence which params structure)
    group: str  # training program it belongs to
    hp: tuple[tuple[str, float], ...]  # the grid values it is trained with

    def info(self) -> dict[str, Any]:
        """The table columns naming the model."""
        hp = dict(self.hp)
        return {
            "model_id": self.model_id,
            "model": self.label,
            "kind": self.kind,
            "beta": hp.get("beta", math.nan),
            "alpha": hp.get("alpha", math.nan),
            "latent_noise": hp.get("latent_noise", math.nan),
        }


@dataclasses.dataclass(frozen=True)
class DAEInputs:
    """Everything the cells read: data, models, losses, entries and attack pairs."""

    train_x: np.ndarray
    train_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray | None
    models: dict[str, Any]  # family -> model object
    prior: Any
    entries: tuple[ModelEntry, ...]
    groups: dict[str, tuple[Any, dict[str, np.ndarray], tuple[int, ...]]]  # loss, grid, entries
    pairs: np.ndarray  # (M, 2) source / target indices into the test split
    trial: np.ndarray  # (M,) trial of each pair
    feature_clf: Any | None
    train_config: TrainConfig

    def entry(self, model_id: str) -> ModelEntry:
        return next(e for e in self.entries if e.model_id == model_id)


def _fmt(v: float) -> str:
    return f"{float(v):g}"


def _entries(c: DAEStudyConfig) -> list[ModelEntry]:
    out: list[ModelEntry] = []
    hp: tuple[tuple[str, float], ...]
    if "vae" in c.models:
        out.append(ModelEntry("vae", "VAE", "vae", "vae", "vae", (("beta", 1.0),)))
    if "beta_vae" in c.models:
        label = f"β-VAE (β={_fmt(c.beta_vae_beta)})"
        out.append(
            ModelEntry("beta_vae", label, "beta_vae", "vae", "vae", (("beta", c.beta_vae_beta),))
        )
    if "beta_tcvae" in c.models:
        label = f"β-TCVAE (β={_fmt(c.tcvae_beta)})"
        hp = (("beta", float(c.tcvae_beta)),)
        out.append(ModelEntry("beta_tcvae", label, "beta_tcvae", "vae", "beta_tcvae", hp))
    base = (("lambda_rec", float(c.lambda_rec)), ("latent_noise", float(c.latent_noise)))
    if "gmm_dae" in c.models:
        out.append(ModelEntry("gmm_dae", "GMM-DAE", "gmm_dae", "dae", "gmm_dae", base))
    if "augmented" in c.models:
        hp = (*base, ("eps", float(c.eps)))
        out.append(ModelEntry("augmented", "Augmented", "augmented", "dae", "augmented", hp))
    if "coupled" in c.models:
        points = [(float(a), float(c.latent_noise)) for a in c.coupled_alphas]
        points += [(float(c.headline_alpha), float(s)) for s in c.noise_variants]
        for a, s in points:
            noise = "" if s == float(c.latent_noise) else f"_s{_fmt(s)}"
            label = f"Ours (α={_fmt(a)}" + ("" if not noise else f", s={_fmt(s)}") + ")"
            hp = (
                ("lambda_rec", float(c.lambda_rec)),
                ("latent_noise", s),
                ("eps", float(c.eps)),
                ("alpha", a),
            )
            out.append(
                ModelEntry(f"coupled_a{_fmt(a)}{noise}", label, "coupled", "dae", "coupled", hp)
            )
    return out


def headline_id(c: DAEStudyConfig) -> str:
    """The model id of 003's method at the headline α and the paper's latent noise."""
    return f"coupled_a{_fmt(c.headline_alpha)}"


def _load(c: DAEStudyConfig, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    if c.dataset == "digits":
        from vaerob_jax.data import load_digits_dataset

        raw = load_digits_dataset(
            split,
            image_size=c.image_size,
            limit=c.n_train if split == "train" else None,
            seed=c.seed,
        )
        return np.asarray(raw.images, np.float32), np.asarray(raw.labels, np.int64)
    from vaerob_jax.data import load

    kw = {} if c.data_dir is None else {"data_dir": c.data_dir}
    ds = load(
        c.dataset,
        split,
        image_size=c.image_size,
        limit=c.n_train if split == "train" else None,
        seed=c.seed,
        **kw,
    )
    labels = None if ds.labels is None else np.asarray(ds.labels, np.int64)
    return np.asarray(ds.images, np.float32), labels


def attack_pairs(
    labels: np.ndarray | None, n: int, trials: int, per_trial: int, seed: int, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (source, target) test indices for ``trials`` × ``per_trial`` attacks.

    Trial t draws ``per_trial`` distinct sources from its own seeded permutation of the test
    split (sources repeat across trials, not within one) and, per source, a target drawn
    uniformly from the test images of another class (``rule='different_class'``, 003) or from
    any other test image (``'random'``). The same pairs serve every model.

    Returns:
      pairs (M, 2) int64 and trial (M,) int64, M = trials · per_trial.

    Raises:
      ValueError: fewer test images than ``per_trial``, no labels for 'different_class', or a
        source whose class fills the whole split.
    """
    if per_trial > n:
        raise ValueError(f"images_per_trial {per_trial} exceeds the {n} test images")
    if rule == "different_class" and labels is None:
        raise ValueError(
            "targets='different_class' needs class labels and this dataset has none; use "
            "targets='random' (003's choice for CelebA)"
        )
    pairs, trial = [], []
    for t in range(trials):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDAE, t]))
        sources = rng.permutation(n)[:per_trial]
        for s in sources:
            if rule == "different_class":
                assert labels is not None
                pool = np.flatnonzero(labels != labels[s])
            else:
                pool = np.delete(np.arange(n), s)
            if pool.size == 0:
                raise ValueError(f"test image {s} has no possible target (one class only?)")
            pairs.append((int(s), int(pool[rng.integers(pool.size)])))
            trial.append(t)
    return np.asarray(pairs, np.int64), np.asarray(trial, np.int64)


def prepare_dae_inputs(config: DAEStudyConfig) -> DAEInputs:
    """Validates the config, loads and checks the data, builds models, losses and pairs."""
    c = config
    validate_dae_config(c)
    train_x, train_y = _load(c, "train")
    test_x, test_y = _load(c, "test")
    for name, x in (("train", train_x), ("test", test_x)):  # noqa: B007
        if x.ndim != 4 or x.shape[1:3] != (c.image_size, c.image_size):
            raise ValueError(
                f"{c.dataset} {name} images have shape {x.shape[1:]}, expected side {c.image_size}"
            )
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{c.dataset} {name} pixels must be finite and lie in [0, 1]")
    if c.batch_size > len(train_x):
        raise ValueError(f"batch_size {c.batch_size} exceeds the {len(train_x)} training images")
    pairs, trial = attack_pairs(
        test_y, len(test_x), c.trials, c.images_per_trial, c.seed, c.targets
    )
    shape = tuple(int(s) for s in train_x.shape[1:])
    grey = shape[-1] == 1
    backbone, hidden = ("mlp", tuple(c.hidden)) if grey else ("conv32", None)
    if not grey and c.image_size != 32:
        raise ValueError(
            f"colour images use the conv32 backbone: image_size must be 32, got {c.image_size}"
        )
    vae = make_vae(backbone, shape, c.latent_dim, likelihood=c.vae_likelihood, hidden=hidden)
    dae = make_dae(backbone, shape, c.latent_dim, hidden=hidden)
    prior = make_gmm_prior(c.latent_dim, c.n_modes)
    entries = _entries(c)
    losses: dict[str, Any] = {
        "vae": beta_elbo(vae),
        "beta_tcvae": beta_tcvae_loss(vae, dataset_size=len(train_x)),
        "gmm_dae": gmm_dae_objective(dae, prior, "gmm_dae"),
        "augmented": gmm_dae_objective(dae, prior, "augmented"),
        "coupled": gmm_dae_objective(dae, prior, "coupled"),
    }
    groups: dict[str, tuple[Any, dict[str, np.ndarray], tuple[int, ...]]] = {}
    for g in ("vae", "beta_tcvae", "gmm_dae", "augmented", "coupled"):
        idx = tuple(i for i, e in enumerate(entries) if e.group == g)
        if not idx:
            continue
        names = [n for n, _ in entries[idx[0]].hp]
        grid = {n: np.array([dict(entries[i].hp)[n] for i in idx], np.float64) for n in names}
        check_gmm_hyperparameters(grid)
        groups[g] = (losses[g], grid, idx)
    feature_clf = None
    if train_y is not None:
        n_classes = int(max(train_y.max(), test_y.max() if test_y is not None else 0)) + 1
        feature_clf = make_mlp_classifier(shape, n_classes, tuple(c.feature_hidden))
    return DAEInputs(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        models={"vae": vae, "dae": dae},
        prior=prior,
        entries=tuple(entries),
        groups=groups,
        pairs=pairs,
        trial=trial,
        feature_clf=feature_clf,
        train_config=TrainConfig(
            steps=c.train_steps,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            checkpoint_every=max(1, c.train_steps // 4),
            log_every=max(1, c.train_steps // 50),
            # One vmapped program per loss: these are MLPs, for which the CPU default
            # (one model at a time, right for convolutions) is ~2x slower (measured 37 vs
            # 69 ms per step for the 4 coupled models, 2-core CPU).
            model_axis="vmap" if shape[-1] == 1 else "auto",
        ),
    )


# --------------------------------------------------------------------------- per-example metrics


@functools.lru_cache(maxsize=8)
def _metrics_program(model: Any):
    """jit(params, x (M,...), x_t (M,...), delta (E, M, ...)) -> dict of (E, M) metrics."""

    def one(params, x, x_t, delta):
        x_a = x + delta
        z, z_a, z_t = (model.embed(params, v) for v in (x, x_a, x_t))
        r, r_a = model.decode(params, z), model.decode(params, z_a)
        return {
            "d_norm": jnp.sqrt(jnp.sum(jnp.square(delta))),
            "latent_to_target": jnp.linalg.norm(z_a - z_t),
            "latent_clean_distance": jnp.linalg.norm(z - z_t),
            "latent_shift": jnp.linalg.norm(z_a - z),
            "ms_target": ms_ssim(x_t, r_a),
            "ms_recon": ms_ssim(r, r_a),
            "ms_input": ms_ssim(x, x_a),
            "ms_target_reference": ms_ssim(x_t, r_a, combine="reference"),
            "ms_recon_reference": ms_ssim(r, r_a, combine="reference"),
            "l2_target": jnp.linalg.norm((x_t - r_a).ravel()),
            "l2_recon": jnp.linalg.norm((r - r_a).ravel()),
            "box_violation": jnp.maximum(jnp.max(-x_a), jnp.max(x_a - 1.0)),
        }

    per_m = jax.vmap(one, in_axes=(None, 0, 0, 0))
    per_e = jax.vmap(per_m, in_axes=(None, None, None, 0))
    return jax.jit(per_e)


@functools.lru_cache(maxsize=8)
def _quality_program(model: Any):
    """jit(params, x (N,...)) -> (MS-SSIM(x, f(z(x))) (N,), squared error per image (N,))."""

    def one(params, x):
        r = model.reconstruct(params, x)
        return ms_ssim(x, r), jnp.mean(jnp.square(r - x))

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


# --------------------------------------------------------------------------------- L-BFGS-B


@functools.lru_cache(maxsize=16)
def _lbfgs_value_and_grad(objective: Any):
    def loss(params, inputs, noise, lam):
        norm = jnp.sqrt(jnp.sum(jnp.square(noise)) + 1e-24)
        d = jnp.where(norm > lam, noise * (lam / norm), noise)
        return -objective(params, inputs, d, jax.random.key(0))

    return jax.jit(jax.value_and_grad(loss, argnums=2))


def lbfgsb_attack(
    objective: Any,
    params: Any,
    inputs: dict[str, np.ndarray],
    lam: float,
    key: jax.Array,
    *,
    memory: int = 25,
    maxiter: int = 150,
) -> tuple[np.ndarray, float]:
    """003's public-code optimiser for one example: scipy L-BFGS-B on the raw noise.

    Per-pixel bounds [−x, 1 − x] keep x + d in the box; inside the objective (and once more
    after the solve) noise ← λ·noise/‖noise‖ when ‖noise‖ > λ. The start is uniform in the
    L2 ball (direction on the sphere × λ·U^(1/d)); the public code's radius draw is not
    uniform in the ball, and no start is privileged. ``factr = 10`` as in the code;
    ``maxiter`` caps the iterations (the code runs to convergence).

    Returns:
      (delta, attack loss = −objective at delta), float64 on the host.
    """
    from scipy.optimize import fmin_l_bfgs_b

    x = np.asarray(inputs["x"], np.float64)
    d = x.size
    k_dir, k_rad = jax.random.split(key)
    direction = np.asarray(jax.random.normal(k_dir, (d,)), np.float64)
    direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
    radius = lam * float(jax.random.uniform(k_rad)) ** (1.0 / d)
    x0 = np.clip(x.ravel() + radius * direction, 0.0, 1.0) - x.ravel()
    vg = _lbfgs_value_and_grad(objective)
    jin = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    lam32 = jnp.float32(lam)

    def f(v: np.ndarray) -> tuple[float, np.ndarray]:
        val, g = vg(params, jin, jnp.asarray(v.reshape(x.shape), jnp.float32), lam32)
        return float(val), np.asarray(g, np.float64).ravel()

    bounds = list(zip((-x).ravel(), (1.0 - x).ravel(), strict=True))
    v, _, _ = fmin_l_bfgs_b(
        f, x0, m=memory, factr=10.0, pgtol=1e-20, bounds=bounds, maxiter=maxiter
    )
    norm = np.linalg.norm(v)
    if norm > lam:
        v = v * (lam / norm)
    val, _ = f(v)
    return v.reshape(x.shape), float(val)


# ---------------------------------------------------------------------- latent classifiers


@functools.lru_cache(maxsize=8)
def _latent_clf_program(clf: Any, steps: int, batch: int, lr: float):
    opt = optax.adam(lr)

    def train_one(codes, labels, key):
        params = clf.init(jax.random.fold_in(key, 0))
        state = opt.init(params)
        n = codes.shape[0]

        def step(carry, t):
            p, s = carry
            idx = jax.random.randint(jax.random.fold_in(key, t + 1), (batch,), 0, n)

            def loss(q):
                logits = clf.logits(q, codes[idx])
                return jnp.mean(
                    optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx])
                )

            g = jax.grad(loss)(p)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), None

        (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))
        return params

    return jax.jit(jax.vmap(train_one, in_axes=(0, None, None)))


def train_latent_classifiers(
    clf: Any,
    codes: Any,
    labels: Any,
    key: jax.Array,
    steps: int,
    batch: int = 128,
    lr: float = 1e-3,
) -> Any:
    """Table 3's latent MLP classifiers, one per model of a stack, in one vmapped program.

    Args:
      clf: an MLP classifier on codes (``make_mlp_classifier((D,), C, hidden)``).
      codes: (K, N, D) standardised training codes of K models; labels (N,) int.
      key: the same key for every model (paired initialisations and batches).
      steps, batch, lr: Adam steps on uniform minibatches with replacement.

    Returns:
      The classifiers' params stacked on K.
    """
    return _latent_clf_program(clf, int(steps), int(batch), float(lr))(
        jnp.asarray(codes, jnp.float32), jnp.asarray(labels, jnp.int32), key
    )


# ---------------------------------------------------------------------------------- the study


class DAEStudy:
    """``vaerob dae``: the pieces the runner calls (see the module docstring)."""

    name = "dae"
    title = "Robust GMM-regularised deterministic autoencoders (003)"
    state_folders: tuple[str, ...] = ("train", "cells")

    def validate(self, config: DAEStudyConfig) -> None:
        validate_dae_config(config)

    def normalize(self, config: DAEStudyConfig) -> DAEStudyConfig:
        return config

    def store_config(self, config: DAEStudyConfig) -> dict[str, Any]:
        # The bootstrap and the figures' budget are read after the cells.
        return {k: v for k, v in config.to_dict().items() if k not in ("n_boot",)}

    def prepare(self, config: DAEStudyConfig, run: StudyRun) -> DAEInputs:
        inputs = prepare_dae_inputs(config)
        run.log(
            f"{config.dataset}: {len(inputs.train_x)} train / {len(inputs.test_x)} test images "
            f"{inputs.train_x.shape[1:]}, {len(inputs.entries)} models, "
            f"{len(inputs.pairs)} attack pairs"
        )
        return inputs

    def train(self, config: DAEStudyConfig, inputs: DAEInputs, run: StudyRun) -> dict[str, Any]:
        """Per group one resumable train_grid program; the feature classifier of FD-clf.

        Returns:
          {'params': model_id -> params, 'results': group -> TrainResult,
           'feature_clf': params or None}.
        """
        params: dict[str, Any] = {}
        results: dict[str, Any] = {}
        for g, (loss, grid, idx) in inputs.groups.items():
            family = inputs.entries[idx[0]].family
            res = train_grid(
                inputs.models[family],
                loss,
                {"x": inputs.train_x},
                grid,
                inputs.train_config,
                study_key(config.seed, f"train/{g}"),
                workdir=run.out / "train" / g,
                progress=run.progress,
            )
            results[g] = res
            for j, i in enumerate(idx):
                params[inputs.entries[i].model_id] = jax.tree.map(lambda a, j=j: a[j], res.params)
            run.log(f"{g}: {len(idx)} models trained ({res.elapsed_s:.0f}s)")
        clf_params = None
        if inputs.feature_clf is not None:
            clf = inputs.feature_clf
            cfg = dataclasses.replace(
                inputs.train_config,
                steps=config.feature_clf_steps,
                learning_rate=1e-3,
                checkpoint_every=max(1, config.feature_clf_steps // 2),
                log_every=max(1, config.feature_clf_steps // 20),
            )
            res = train_grid(
                clf,
                cross_entropy(clf),
                {"x": inputs.train_x, "label": inputs.train_y},
                {},
                cfg,
                study_key(config.seed, "train/feature_clf"),
                workdir=run.out / "train" / "feature_clf",
                progress=run.progress,
            )
            clf_params = jax.tree.map(lambda a: a[0], res.params)
            results["feature_clf"] = res
        return {"params": params, "results": results, "feature_clf": clf_params}

    def plan(
        self, config: DAEStudyConfig, inputs: DAEInputs, trained: dict[str, Any], run: StudyRun
    ) -> CellPlan:
        ids = [e.model_id for e in inputs.entries]
        clf_digest = "" if trained["feature_clf"] is None else params_digest(trained["feature_clf"])
        families = {f: [i for i in ids if inputs.entry(i).family == f] for f in ("vae", "dae")}
        return model_cells(
            {f: members for f, members in families.items() if members},
            {i: params_digest(trained["params"][i]) + clf_digest for i in ids},
            lambda todo: evaluate_models(config, inputs, trained, todo, run),
            CELL_FINITE,
        )

    def outputs(
        self,
        config: DAEStudyConfig,
        inputs: DAEInputs,
        trained: dict[str, Any],
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        from vaerob_jax.studies.dae.readings import report_sections
        from vaerob_jax.studies.dae.tables import write_tables_and_figures

        results = write_tables_and_figures(config, inputs, trained, rows, store, run)
        return report_sections(config, inputs, results, run)


@functools.lru_cache(maxsize=64)
def _jitted(obj: Any, method: str) -> Any:
    """``jit(obj.method)`` for a (hashable) model or classifier: one compile per shape
    instead of one per Flax op when called eagerly."""
    return jax.jit(getattr(obj, method))


@functools.lru_cache(maxsize=16)
def _objectives(model: Any) -> dict[str, Any]:
    return {"latent": code_distance_objective(model), "damage": output_damage(model)}


@functools.lru_cache(maxsize=32)
def study_attack(objective: Any, steps: int, restarts: int, step_factor: float) -> Any:
    """The study's L2-PGD: normalised-gradient steps of ``step_factor``·λ/steps, exact
    L2 ∩ [0, 1] projection, random start, best iterate, ``restarts`` starts (cached, so a
    resumed run reuses the compiled programs)."""
    factor = float(step_factor) / max(int(steps), 1)
    return make_attack(
        objective,
        ball("l2", box=BOX),
        rule="sign",
        steps=steps,
        restarts=restarts,
        step_size=lambda budget: factor * budget,
    )


def evaluate_models(
    config: DAEStudyConfig,
    inputs: DAEInputs,
    trained: dict[str, Any],
    model_ids: list[str],
    run: StudyRun,
) -> dict[str, tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
    """The cells of models of one family, attacked as one stack (see the module docstring).

    Returns:
      model_id -> (rows, arrays): rows per attack × λ × pair; arrays with the check attack's
      losses, the L-BFGS-B cross-check, quality metrics, FD-clf, latent-classifier
      correctness and Fig. 3's image strips.
    """
    c = config
    entries = [inputs.entry(i) for i in model_ids]
    model = inputs.models[entries[0].family]
    stack = stack_params([trained["params"][i] for i in model_ids])
    k_models = len(model_ids)
    src, tgt = inputs.pairs[:, 0], inputs.pairs[:, 1]
    x = jnp.asarray(inputs.test_x[src])
    x_t = jnp.asarray(inputs.test_x[tgt])
    att_in = {"x": x, "target": x_t}
    budgets = np.asarray(c.budgets, np.float32)
    key = study_key(c.seed, "attack")
    n_check = int(c.check_images)
    chk_in = {k: v[:n_check] for k, v in att_in.items()}
    metrics_fn = _metrics_program(model)
    objectives = _objectives(model)
    reconstruct, embed = _jitted(model, "reconstruct"), _jitted(model, "embed")
    per_model: list[dict[str, Any]] = [{"rows": [], "arrays": {}} for _ in model_ids]
    b_strip = list(map(float, c.budgets)).index(float(c.strip_budget))
    b_lbfgs = list(map(float, c.budgets)).index(float(c.lbfgs_budget))
    b_clf = list(map(float, c.budgets)).index(float(c.latent_clf_budget))
    attacked_codes = None
    for attack in ATTACKS:
        obj = objectives[attack]
        restarts = c.latent_restarts if attack == "latent" else c.damage_restarts
        t0 = time.perf_counter()
        atk = study_attack(obj, c.attack_steps, restarts, c.attack_step_factor)
        res = run_attack(atk, stack, att_in, budgets, key, models=True)
        check = study_attack(
            obj,
            c.check_factor * c.attack_steps,
            c.check_restart_factor * restarts,
            c.attack_step_factor,
        )
        chk = run_attack(check, stack, chk_in, budgets, key, models=True)
        jax.block_until_ready(chk.value)
        t_attack = time.perf_counter() - t0
        t0 = time.perf_counter()
        value = np.asarray(res.value, np.float64)  # (K, E, M)
        moved = np.asarray(res.value > res.start_value)
        nonfinite = np.asarray(res.nonfinite)
        for k in range(k_models):
            p_k = jax.tree.map(lambda a, k=k: a[k], stack)
            met = {
                n: np.asarray(v, np.float64)
                for n, v in metrics_fn(p_k, x, x_t, res.delta[k]).items()
            }
            info = entries[k].info()
            for e, lam in enumerate(c.budgets):
                for m in range(len(src)):
                    per_model[k]["rows"].append(
                        {
                            **info,
                            "attack": attack,
                            "budget": float(lam),
                            "trial": int(inputs.trial[m]),
                            "pair": m,
                            "source": int(src[m]),
                            "target": int(tgt[m]),
                            "loss": float(-value[k, e, m]),
                            **{n: float(v[e, m]) for n, v in met.items()},
                            "moved": bool(moved[k, e, m]),
                            "nonfinite_steps": int(nonfinite[k, e, m]),
                        }
                    )
            arrays = per_model[k]["arrays"]
            # The check attack: its loss, and the headline metric at whichever of the two
            # attacks reached the lower loss on each example (the strongest known attack).
            chk_loss = -np.asarray(chk.value[k], np.float64)  # (E, Mc)
            arrays[f"check_loss_{attack}"] = chk_loss
            chk_met = metrics_fn(p_k, x[:n_check], x_t[:n_check], chk.delta[k])
            metric = HEADLINE[attack]
            better = chk_loss < -value[k, :, :n_check]
            arrays[f"check_{metric}_{attack}"] = np.where(
                better, np.asarray(chk_met[metric], np.float64), met[metric][:, :n_check]
            )
            delta_strip = np.asarray(res.delta[k, b_strip, 0])
            x0, xt0 = np.asarray(x[0]), np.asarray(x_t[0])
            arrays[f"strip_{attack}"] = np.stack(
                [
                    x0,
                    np.asarray(reconstruct(p_k, x0)),
                    x0 + delta_strip,
                    np.asarray(reconstruct(p_k, x0 + delta_strip)),
                    xt0,
                ]
            )
            # L-BFGS-B cross-check on the first images at λ = lbfgs_budget.
            lb = []
            for m in range(int(c.lbfgs_images)):
                _, loss = lbfgsb_attack(
                    obj,
                    p_k,
                    {"x": np.asarray(x[m]), "target": np.asarray(x_t[m])},
                    float(c.lbfgs_budget),
                    jax.random.fold_in(study_key(c.seed, "lbfgs"), m),
                    memory=25 if attack == "latent" else 100,
                    maxiter=c.lbfgs_maxiter,
                )
                lb.append(loss)
            arrays[f"lbfgs_loss_{attack}"] = np.asarray(lb, np.float64)
            arrays[f"lbfgs_pgd_loss_{attack}"] = -value[k, b_lbfgs, : int(c.lbfgs_images)]
        run.log(
            f"{attack} attack on {k_models} model(s): PGD and check {t_attack:.0f}s, "
            f"metrics and L-BFGS-B {time.perf_counter() - t0:.0f}s"
        )
        if attack == "latent":
            attacked_codes = [
                np.asarray(embed(jax.tree.map(lambda a, k=k: a[k], stack), x + res.delta[k, b_clf]))
                for k in range(k_models)
            ]
    t0 = time.perf_counter()
    _quality_and_latent_clf(c, inputs, trained, model, stack, entries, attacked_codes, per_model)
    run.log(
        f"{', '.join(model_ids)}: attacked and measured (quality {time.perf_counter() - t0:.0f}s)"
    )
    return {i: (per_model[k]["rows"], per_model[k]["arrays"]) for k, i in enumerate(model_ids)}


def _quality_and_latent_clf(
    c: DAEStudyConfig,
    inputs: DAEInputs,
    trained: dict[str, Any],
    model: Any,
    stack: Any,
    entries: list[ModelEntry],
    attacked_codes: Any,
    per_model: list[dict[str, Any]],
) -> None:
    """Clean reconstruction quality, FD-clf of prior samples and Table 3's classifiers."""
    quality = _quality_program(model)
    test = jnp.asarray(inputs.test_x)
    clf, clf_p = inputs.feature_clf, trained["feature_clf"]
    embed, decode = _jitted(model, "embed"), _jitted(model, "decode")
    reconstruct = _jitted(model, "reconstruct")
    features = None if clf is None else _jitted(clf, "features")
    test_feat = None if features is None else np.asarray(features(clf_p, test), np.float64)
    train_codes, test_codes = [], []
    for k, e in enumerate(entries):
        p_k = jax.tree.map(lambda a, k=k: a[k], stack)
        arrays = per_model[k]["arrays"]
        ms, mse = quality(p_k, test)
        arrays["recon_msssim"] = np.asarray(ms, np.float64)
        arrays["recon_mse"] = np.asarray(mse, np.float64)
        fds = []
        for draw in range(2):
            kz = jax.random.fold_in(study_key(c.seed, "fd_samples"), draw)
            if e.family == "dae":
                z = inputs.prior.sample(kz, c.fd_samples)
            else:  # VAEs sample their N(0, I) prior
                z = jax.random.normal(kz, (c.fd_samples, c.latent_dim))
            gen = decode(p_k, z)
            if draw == 0:
                arrays["samples"] = np.asarray(gen[:16])
            if features is not None and test_feat is not None:
                fds.append(frechet_distance(np.asarray(features(clf_p, gen)), test_feat))
        if features is not None and test_feat is not None:
            arrays["fd_prior"] = np.asarray(fds, np.float64)
            recon_feat = np.asarray(features(clf_p, reconstruct(p_k, test)))
            arrays["fd_recon"] = np.asarray([frechet_distance(recon_feat, test_feat)])
        train_codes.append(np.asarray(embed(p_k, jnp.asarray(inputs.train_x))))
        test_codes.append(np.asarray(embed(p_k, test)))
    if inputs.train_y is None or inputs.test_y is None:
        return
    tr = np.stack(train_codes)  # (K, N, D)
    mu, sd = tr.mean(1, keepdims=True), tr.std(1, keepdims=True) + 1e-6
    n_classes = int(max(inputs.train_y.max(), inputs.test_y.max())) + 1
    lclf = make_mlp_classifier((c.latent_dim,), n_classes, tuple(c.latent_clf_hidden))
    lparams = train_latent_classifiers(
        lclf, (tr - mu) / sd, inputs.train_y, study_key(c.seed, "latent_clf"), c.latent_clf_steps
    )
    src = inputs.pairs[:, 0]
    for k in range(len(entries)):
        p = jax.tree.map(lambda a, k=k: a[k], lparams)

        def correct(z: np.ndarray, y: np.ndarray, k: int = k, p: Any = p) -> np.ndarray:
            zs = (z - mu[k]) / sd[k]
            logits = _jitted(lclf, "logits")(p, jnp.asarray(zs, jnp.float32))
            return np.asarray(jnp.argmax(logits, -1)) == y

        arrays = per_model[k]["arrays"]
        arrays["clf_correct_test"] = correct(test_codes[k], inputs.test_y)
        arrays["clf_correct_clean"] = correct(test_codes[k][src], inputs.test_y[src])
        arrays["clf_correct_attacked"] = correct(attacked_codes[k], inputs.test_y[src])
