"""The margin study of 001 end to end (``vaerob margins``): Theorem 1 against the estimate.

For every model of a β × τ grid (τ = the encoder-std offset of 001 Fig. 7) and every chosen
example of the evaluation split, one compiled program computes

* ``sigma_min`` = min_i σ_i(x) + τ, ``jac_fro`` = ‖J_μ(x)‖_F (exact, latent-dim VJPs) and
  ``p_r`` = p(‖Δ(x)‖₂ ≤ r) by Monte Carlo, hence Theorem 1's lower bound (Eq. 4 of 001)
  ``bound = sigma_min · Φ⁻¹(p_r) / jac_fro`` (NaN where p_r ≤ 0.5: the theorem needs the clean
  input to be r-robust, Eq. 2);
* the numerically estimated margin R^r_X(x) (Eq. 3 of 001): bisection on the L2 input radius
  with the output maximum-damage PGD attack (Eq. 5) at each radius, ``margin_estimate`` the
  bracket midpoint and ``margin_bracket`` its width;
* a random-probe estimate of ‖J_μ(x)‖_F and its standard error (extra columns).

The bound and the margin search use the same Monte-Carlo draws η (common random numbers), so
``p_r`` equals the estimator's clean ``p_clean`` and "bound defined" coincides with "robust
at δ = 0" when m = 0.5.

Outputs: ``margins.csv`` (one row per model × example), ``margin_summary.csv`` (per model and
subgroup), figures (001 Fig. 6: bound vs estimate; Fig. 9: σ, ‖J‖_F and the margin against β;
margin distributions per subgroup; margin vs Δc when a subgroup study is joined),
``report.md`` and ``timings.json``. Finished (β, τ) cells are stored as they complete, so an
interrupted run resumes; every input is validated before anything is trained.
"""

from __future__ import annotations

import dataclasses
import math
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
from vaerob_jax.data import Dataset, available_datasets, load, sample_per_subgroup
from vaerob_jax.models import VAE, make_vae
from vaerob_jax.robustness import (
    APPLY_TO,
    MARGIN_METHODS,
    encoder_jacobian_fro_probe,
    make_margin_estimator,
    pgd_attack_fn,
    theorem1_bound,
)
from vaerob_jax.studies.config import (
    SubgroupStudyConfig,
    canonical_grid,
    config_fingerprint,
    study_key,
    train_config_for,
)
from vaerob_jax.sweeps import (
    GridSpec,
    ResultStore,
    join_rows,
    read_csv,
    read_json,
    run_grid,
    write_csv,
    write_json,
)
from vaerob_jax.train import CheckpointError, make_grid, train_grid

__all__ = [
    "MARGIN_COLUMNS",
    "MARGIN_PRESETS",
    "MARGIN_SUMMARY_COLUMNS",
    "MarginStudyConfig",
    "make_example_program",
    "prepare_margin_inputs",
    "run_margin_study",
    "summarize_margins",
    "validate_margin_config",
]

MARGIN_COLUMNS = (
    "beta",
    "tau",
    "subgroup",
    "example_id",
    "sigma_min",
    "jac_fro",
    "p_r",
    "bound",
    "margin_estimate",
    "margin_bracket",
)
EXTRA_COLUMNS = (
    "p_r_se",
    "bound_defined",
    "margin_low",
    "margin_high",
    "p_clean",
    "censored",
    "jac_fro_probe",
    "jac_fro_probe_se",
)
MARGIN_SUMMARY_COLUMNS = (
    "beta",
    "tau",
    "subgroup",
    "n",
    "margin_median",
    "margin_iqr",
    "margin_mean",
    "bound_median",
    "bound_iqr",
    "bound_mean",
    "share_bound_defined",
    "share_bound_le_margin",
    "n_censored",
)

# Settings that must agree with a subgroup study's config for its trained β grid to be reused.
_TRAIN_FIELDS = (
    "dataset",
    "image_size",
    "backbone",
    "latent_dim",
    "likelihood",
    "betas",
    "kl_reduction",
    "train_steps",
    "batch_size",
    "learning_rate",
    "n_train",
    "seed",
)


# Model and training defaults are the subgroup study's, so its trained β grid can be reused.
_SG = SubgroupStudyConfig()


@dataclasses.dataclass(frozen=True)
class MarginStudyConfig:
    """The margin study of 001 (Theorem 1, Eq. 3-5, Figs. 6, 7, 9) on a β × τ grid.

    Model and training defaults equal those of the subgroup study (``SubgroupStudyConfig``) so
    its trained β grid can be reused (``subgroup_study_dir``), and the examples are drawn with
    the same key, so they are a subset of the subgroup study's attacked examples when
    ``max_per_subgroup`` is at most its ``n_per_subgroup`` (the join with its ``deviation.csv``
    then covers every margin row at τ = 0).

    ``r`` is the OUTPUT radius of 001 Eq. 2-3: ‖g(μ(x) + ησ(x)) − g(μ(x))‖₂ ≤ r over the
    decoder mean. 001 used r = 4 (Fig. 7) and 8 on 28×28 MNIST. On the default 32×32×3 shapes
    models the per-example median of ‖Δ(x)‖ is about 1.8 / 2.4 / 2.8 and its 90th percentile
    3.4 / 3.7 / 4.5 for β = 1 / 5 / 10 (measured on 32 test examples, 64 draws each), so the
    default r = 3 gives p_r of roughly 0.9 / 0.75 / 0.6: the bound is defined for most
    examples and Φ⁻¹(p_r) is rarely at its clipping cap (r = 6 gave p_r = 1 almost everywhere).
    ``r_max`` caps the input radius (the reference scanned up to 10).
    """

    dataset: str = "shapes"
    image_size: int = _SG.image_size
    subgroups: str | tuple[str, ...] = "age_gender"
    backbone: str = _SG.backbone
    latent_dim: int = _SG.latent_dim
    likelihood: str = "bernoulli"
    betas: tuple[float, ...] = _SG.betas
    # τ grid (001 Fig. 7 uses 0, 0.1, 0.5, 1); models are trained with σ + τ.
    taus: tuple[float, ...] = (0.0,)
    kl_reduction: str = "sum"
    train_steps: int = _SG.train_steps
    batch_size: int = _SG.batch_size
    learning_rate: float = _SG.learning_rate
    n_train: int | None = None
    # Size of the embedded data's evaluated split: the subgroup study's, so both draw the same
    # examples (TFDS data: keep None).
    n_test: int | None = _SG.n_test
    # Margin and bound (001 Eq. 2-4).
    r: float = 3.0
    m: float = 0.5
    n_samples: int = 32
    n_iter: int = 6
    r_max: float = 10.0
    method: str = "bisect"
    apply_to: str = "mean"
    attack_steps: int = 10
    attack_rule: str = "sign"
    restarts: int = 1
    n_starts: int = 1
    n_probes: int = 4
    # Examples: None = every example of the chosen subgroups in the split.
    max_per_subgroup: int | None = 64  # the subgroup study's n_per_subgroup: Δc joins all
    split: str = "test"
    chunk_size: int = 8  # examples per call of the compiled per-example program
    seed: int = 0
    subgroup_study_dir: str | None = None

    def fingerprint(self) -> str:
        return config_fingerprint(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MARGIN_PRESETS: dict[str, MarginStudyConfig] = {
    "shapes": MarginStudyConfig(),
    "tiny": MarginStudyConfig(
        image_size=32,
        backbone="conv32",
        latent_dim=4,
        betas=(1.0, 5.0),
        n_train=256,
        n_test=None,
        train_steps=20,
        batch_size=32,
        r=2.0,
        n_samples=16,
        n_iter=3,
        r_max=3.0,
        attack_steps=2,
        n_probes=2,
        max_per_subgroup=2,
        chunk_size=3,
    ),
}


def _log(msg: str) -> None:
    print(f"[margins] {msg}", flush=True)


def validate_margin_config(config: MarginStudyConfig) -> None:
    """Cheap checks of a config, raising ValueError that names the offending field."""
    if config.dataset not in available_datasets():
        raise ValueError(
            f"unknown dataset {config.dataset!r}; available: {', '.join(available_datasets())}"
        )
    if len(set(config.betas)) != len(config.betas) or len(set(config.taus)) != len(config.taus):
        raise ValueError(f"betas and taus must not repeat values: {config.betas}, {config.taus}")
    if len(config.betas) == 0 or len(config.taus) == 0:
        raise ValueError(f"betas and taus must be non-empty, got {config.betas}, {config.taus}")
    make_grid({"beta": config.betas, "tau": config.taus})  # finite numbers
    for name in ("betas", "taus"):
        if any(float(v) < 0 for v in getattr(config, name)):
            raise ValueError(f"{name} must be >= 0, got {list(getattr(config, name))}")
    if config.kl_reduction not in objectives.KL_REDUCTIONS:
        raise ValueError(
            f"unknown kl_reduction {config.kl_reduction!r}; choose one of "
            f"{objectives.KL_REDUCTIONS}"
        )
    for name in ("r", "r_max"):
        v = float(getattr(config, name))
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not 0.0 < float(config.m) < 1.0:
        raise ValueError(f"m must lie in the open interval (0, 1), got {config.m}")
    for name in (
        "n_samples",
        "n_iter",
        "attack_steps",
        "restarts",
        "n_starts",
        "n_probes",
        "chunk_size",
        "train_steps",
        "batch_size",
    ):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    mps = config.max_per_subgroup
    if mps is not None and (isinstance(mps, bool) or not isinstance(mps, int) or mps < 1):
        raise ValueError(f"max_per_subgroup must be None or an integer >= 1, got {mps!r}")
    if config.method not in MARGIN_METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose one of {MARGIN_METHODS}")
    if config.apply_to not in APPLY_TO:
        raise ValueError(f"unknown apply_to {config.apply_to!r}; choose one of {APPLY_TO}")
    if config.attack_rule not in atk.RULES:
        raise ValueError(f"unknown attack_rule {config.attack_rule!r}; choose one of {atk.RULES}")
    if config.subgroup_study_dir is not None and not Path(config.subgroup_study_dir).is_dir():
        raise ValueError(f"subgroup_study_dir {config.subgroup_study_dir!r} is not a folder")


@dataclasses.dataclass(frozen=True)
class MarginInputs:
    """What the study works on, built and validated before any training."""

    train: Dataset
    sample: Dataset
    model: VAE


def prepare_margin_inputs(
    config: MarginStudyConfig, log: Callable[[str], None] = _log
) -> MarginInputs:
    """Validates the config, loads the data and the evaluated examples, builds the model.

    The examples are ``sample_per_subgroup(split, max_per_subgroup, study_key(seed, "sample"))``,
    the subgroup study's draw (its lowest-scored members per subgroup, so a smaller n gives a
    subset of a larger one), or every example in a subgroup when ``max_per_subgroup`` is None.
    """
    validate_margin_config(config)
    kw: dict[str, Any] = {} if config.n_train is None else {"n": config.n_train}
    subgroups = config.subgroups if isinstance(config.subgroups, str) else list(config.subgroups)
    common: dict[str, Any] = {
        "image_size": config.image_size,
        "subgroups": subgroups,
        "seed": config.seed,
    }
    train = load(config.dataset, "train", **common, **kw)
    pool_kw: dict[str, Any] = {} if config.n_test is None else {"n": config.n_test}
    pool = load(config.dataset, config.split, **common, **pool_kw)
    if config.max_per_subgroup is None:
        keep = np.nonzero(pool.subgroup_ids >= 0)[0]
        keep = keep[np.argsort(pool.subgroup_ids[keep], kind="stable")]
        sample = pool.take(keep)
    else:
        # The subgroup study's sampling key: with max_per_subgroup <= its n_per_subgroup
        # these are the same examples, so its Δc joins every margin row.
        key = study_key(config.seed, "sample")
        sample = sample_per_subgroup(pool, config.max_per_subgroup, key)
    if len(sample) == 0:
        raise ValueError(f"no example of split {config.split!r} falls in a subgroup")
    log(
        f"data: {config.dataset} train {len(train)}, {config.split} {len(pool)}; evaluated "
        f"examples per subgroup {sample.counts()}"
    )
    model = make_vae(config.backbone, train.image_shape, config.latent_dim, config.likelihood)
    return MarginInputs(train, sample, model)


def make_example_program(
    model: VAE,
    *,
    n_samples: int,
    n_iter: int,
    attack_steps: int,
    attack_rule: str = "sign",
    restarts: int = 1,
    n_starts: int = 1,
    method: str = "bisect",
    apply_to: str = "mean",
    n_probes: int = 4,
) -> Callable[..., dict[str, jax.Array]]:
    """The jitted per-example computation of the study, vmapped over a chunk of examples.

    Returns ``program(params, xs, ids, key, r, m, r_max, tau) -> dict of (B,) arrays`` for one
    model's params and a chunk ``xs`` of B examples. Example ``i`` draws all its randomness
    from ``fold_in(key, ids[i])`` (its example id), so results do not depend on the chunking.
    ``r``, ``m``, ``r_max`` and ``tau`` are array arguments: one compiled program serves every
    model of the grid and every chunk of the same size.

    Fields: ``sigma_min``, ``jac_fro``, ``p_r``, ``p_r_se``, ``bound``, ``bound_defined``
    (Theorem 1 of 001, Eq. 4), ``estimate``, ``low``, ``high``, ``width``, ``p_clean``,
    ``censored`` (the margin of Eq. 3 by bisection with the Eq. 5 attack), ``jac_fro_probe``
    = sqrt of the Hutchinson estimate of ‖J‖_F² and ``jac_fro_probe_se`` its delta-method
    standard error (inf with one probe).
    """
    attack_fn = pgd_attack_fn(model, steps=attack_steps, rule=attack_rule, restarts=restarts)
    estimator = make_margin_estimator(
        model,
        attack_fn,
        n_samples=n_samples,
        n_iter=n_iter,
        n_starts=n_starts,
        method=method,
        apply_to=apply_to,
    )

    def one(params: Any, x: jax.Array, key: jax.Array, r: Any, m: Any, r_max: Any, tau: Any):
        k_margin = jax.random.fold_in(key, 0)
        # The estimator gives its only example fold_in(k_margin, 0) and draws η from
        # fold_in(that, 0): feeding the bound the same key makes p_r the estimator's p_clean.
        k_mc = jax.random.fold_in(jax.random.fold_in(k_margin, 0), 0)
        b = theorem1_bound(model, params, x, r, k_mc, n_samples, tau, m=m)
        g = estimator(params, x[None], r, k_margin, m, r_max, tau)
        sq, sq_se = encoder_jacobian_fro_probe(
            model, params, x, jax.random.fold_in(key, 1), n_probes
        )
        fro = jnp.sqrt(sq)
        out = {k: b[k] for k in ("sigma_min", "jac_fro", "p_r", "p_r_se", "bound")}
        out["bound_defined"] = b["bound_defined"]
        out.update({k: g[k][0] for k in ("estimate", "low", "high", "width", "p_clean")})
        out["censored"] = g["censored"][0]
        out["jac_fro_probe"] = fro
        out["jac_fro_probe_se"] = sq_se / (2.0 * jnp.maximum(fro, 1e-30))
        return out

    @jax.jit
    def program(params, xs, ids, key, r, m, r_max, tau):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
        return jax.vmap(one, in_axes=(None, 0, 0, None, None, None, None))(
            params, xs, keys, r, m, r_max, tau
        )

    return program


def _run_chunks(
    program: Callable[..., dict[str, jax.Array]],
    params: Any,
    images: np.ndarray,
    ids: np.ndarray,
    key: jax.Array,
    scalars: tuple[jax.Array, ...],
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Runs ``program`` over fixed-size chunks (the last padded by repeating its first row)."""
    n = images.shape[0]
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, chunk):
        idx = np.arange(start, min(start + chunk, n))
        pad = np.concatenate([idx, np.full(chunk - idx.size, idx[0])])
        res = program(params, jnp.asarray(images[pad]), jnp.asarray(ids[pad], jnp.int32), key,
                      *scalars)  # fmt: skip
        parts.append({k: np.asarray(v)[: idx.size] for k, v in res.items()})
        if progress is not None:
            progress(int(idx.size))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _rows_for_model(
    beta: float, tau: float, sample: Dataset, res: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    names = sample.subgroup_names
    rows = []
    for i, (g, eid) in enumerate(zip(sample.subgroup_ids, sample.example_ids)):
        defined = bool(res["bound_defined"][i])
        rows.append(
            {
                "beta": float(beta),
                "tau": float(tau),
                "subgroup": names[int(g)],
                "example_id": int(eid),
                "sigma_min": float(res["sigma_min"][i]),
                "jac_fro": float(res["jac_fro"][i]),
                "p_r": float(res["p_r"][i]),
                "bound": float(res["bound"][i]) if defined else math.nan,
                "margin_estimate": float(res["estimate"][i]),
                "margin_bracket": float(res["width"][i]),
                "p_r_se": float(res["p_r_se"][i]),
                "bound_defined": defined,
                "margin_low": float(res["low"][i]),
                "margin_high": float(res["high"][i]),
                "p_clean": float(res["p_clean"][i]),
                "censored": bool(res["censored"][i]),
                "jac_fro_probe": float(res["jac_fro_probe"][i]),
                "jac_fro_probe_se": float(res["jac_fro_probe_se"][i]),
            }
        )
    return rows


def summarize_margins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (β, τ, subgroup) summary of the per-example table, plus an 'all' row per model.

    Medians/IQRs/means of ``margin_estimate`` over all examples and of ``bound`` over the
    examples where it is defined; the share of defined bounds; among those, the share with
    bound ≤ estimated margin (Theorem 1 says it should be ~1, up to the O(ε) term and the
    estimator's own error), counted over examples whose margin is not censored (robust at
    ``r_max``, so the estimate is only a lower end); the number of censored examples.
    """
    out = []
    models = sorted({(r["beta"], r["tau"]) for r in rows})
    for beta, tau in models:
        mine = [r for r in rows if r["beta"] == beta and r["tau"] == tau]
        groups = list(dict.fromkeys(r["subgroup"] for r in mine))
        for name in [*groups, "all"]:
            sel = [r for r in mine if name == "all" or r["subgroup"] == name]
            est = np.array([r["margin_estimate"] for r in sel], np.float64)
            bnd = np.array([r["bound"] for r in sel], np.float64)
            ok = np.isfinite(bnd)
            cen = np.array([bool(r["censored"]) for r in sel])
            b_ok = bnd[ok]
            cmp = ok & ~cen  # a censored estimate (r_max) is only a lower end of the margin

            def iqr(v: np.ndarray) -> float:
                if v.size == 0:
                    return math.nan
                q75, q25 = np.percentile(v, [75, 25])
                return float(q75 - q25)

            out.append(
                {
                    "beta": beta,
                    "tau": tau,
                    "subgroup": name,
                    "n": len(sel),
                    "margin_median": float(np.median(est)),
                    "margin_iqr": iqr(est),
                    "margin_mean": float(np.mean(est)),
                    "bound_median": float(np.median(b_ok)) if b_ok.size else math.nan,
                    "bound_iqr": iqr(b_ok),
                    "bound_mean": float(np.mean(b_ok)) if b_ok.size else math.nan,
                    "share_bound_defined": float(np.mean(ok)),
                    "share_bound_le_margin": float(np.mean(bnd[cmp] <= est[cmp]))
                    if cmp.any()
                    else math.nan,
                    "n_censored": int(sum(bool(r["censored"]) for r in sel)),
                }
            )
    return out


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
    diff = [
        f
        for f in _TRAIN_FIELDS
        if f in theirs and _canon(theirs[f]) != _canon(mine[f]) or f not in theirs
    ]
    if tuple(float(t) for t in config.taus) != (0.0,):
        diff.append("taus (the subgroup study trains τ = 0 only)")
    if diff:
        log(f"subgroup study's β grid not reused: settings differ ({', '.join(diff)})")
        return None, dev_path
    return train_dir, dev_path


def _canon(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return [_canon(x) for x in v]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return v


def _train_or_load(
    config: MarginStudyConfig,
    inputs: MarginInputs,
    out: Path,
    reuse: Path | None,
    progress: bool,
    log: Callable[[str], None],
) -> Any:
    workdir = out / "train"
    if reuse is not None and not (workdir / "checkpoints").exists():
        # A copy keeps the subgroup study's folder untouched and this study self-contained.
        shutil.copytree(reuse, workdir, dirs_exist_ok=True)
        log(f"reusing the trained β grid of {reuse.parent}")
    train_cfg = train_config_for(config)

    def fit() -> Any:
        return train_grid(
            inputs.model,
            objectives.beta_elbo(inputs.model, config.kl_reduction),
            inputs.train.images,
            make_grid(
                {"beta": [float(b) for b in config.betas], "tau": [float(t) for t in config.taus]}
            ),
            train_cfg,
            jax.random.key(config.seed),
            workdir=workdir,
            progress=progress,
        )

    try:
        return fit()
    except CheckpointError as err:
        if reuse is None:
            raise
        log(f"copied checkpoint unusable ({err}); training our own")
        shutil.rmtree(workdir)
        return fit()


def run_margin_study(
    config: MarginStudyConfig,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> dict[str, Path]:
    """Runs the margin study into ``out_dir`` and returns the paths of what it wrote.

    Args:
      config: the study settings (validated before anything is trained).
      out_dir: output folder; an existing one of the same config is resumed.
      fresh: discard finished cells of an earlier run with a different config.
      progress: progress bars / periodic lines with ETA.
      log: where one-line status messages go.

    Returns:
      Mapping from artefact name ('margins', 'summary', 'report', 'timings', 'fig_*') to path.

    Raises:
      ValueError: a bad config (named field), unknown subgroup attributes, too few examples.
      FingerprintMismatchError: ``out_dir`` holds cells of another config and not ``fresh``.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    validate_margin_config(config)  # before canonicalising, so errors name the fields
    config = canonical_grid(config, ("betas", "taus"))  # the values cells are keyed by
    inputs = prepare_margin_inputs(config, log)
    reuse, dev_path = _reusable_train_dir(config, log)
    out = Path(out_dir)
    if fresh:  # everything computed for another config goes, not just the cells
        for folder in ("train", "cells"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config.to_dict(), "fingerprint": config.fingerprint()})
    sample = inputs.sample

    t0 = time.perf_counter()
    trained = _train_or_load(config, inputs, out, reuse, progress, log)
    timings["train_s"] = time.perf_counter() - t0
    index = {(g["beta"], g["tau"]): g["model"] for g in trained.rows()}
    log(f"grid β {list(config.betas)} × τ {list(config.taus)} ready ({timings['train_s']:.0f}s)")

    t0 = time.perf_counter()
    program = make_example_program(
        inputs.model,
        n_samples=config.n_samples,
        n_iter=config.n_iter,
        attack_steps=config.attack_steps,
        attack_rule=config.attack_rule,
        restarts=config.restarts,
        n_starts=config.n_starts,
        method=config.method,
        apply_to=config.apply_to,
        n_probes=config.n_probes,
    )
    spec = GridSpec(
        {"beta": [float(b) for b in config.betas], "tau": [float(t) for t in config.taus]}
    )
    # Grid axes and the join source stay out of the fingerprint: adding a β or τ keeps cells.
    store_cfg = {
        k: v
        for k, v in config.to_dict().items()
        if k not in ("betas", "taus", "subgroup_study_dir")
    }
    store = ResultStore(out / "cells", store_cfg, fresh=fresh)
    # One key for every model: example i gets the same noise draws and attack starts on every
    # (β, τ), so models are compared on paired randomness whatever the grid's order.
    key = study_key(config.seed, "margins")
    scalars = tuple(jnp.asarray(v, jnp.float32) for v in (config.r, config.m, config.r_max))
    images, ids = sample.images, np.asarray(sample.example_ids)
    n_todo = len(store.pending(spec)) * len(sample)
    done = [0]
    t_loop = time.perf_counter()
    last = [t_loop]

    def tick(n: int) -> None:
        done[0] += n
        now = time.perf_counter()
        if progress and (now - last[0] > 10.0 or done[0] == n_todo):
            rate = done[0] / max(now - t_loop, 1e-9)
            eta = (n_todo - done[0]) / rate if rate > 0 else math.inf
            log(f"{done[0]}/{n_todo} model·examples, {rate:.2f}/s, ETA {eta:.0f}s")
            last[0] = now

    def compute(cell: Any) -> list[dict[str, Any]]:
        beta, tau = float(cell["beta"]), float(cell["tau"])
        k = index[(beta, tau)]
        params = jax.tree.map(lambda a: a[k], trained.params)
        res = _run_chunks(
            program,
            params,
            images,
            ids,
            key,
            (*scalars, jnp.asarray(tau, jnp.float32)),
            config.chunk_size,
            tick,
        )
        return _rows_for_model(beta, tau, sample, res)

    rows = run_grid(spec, compute, store, progress=progress)
    timings["margins_s"] = time.perf_counter() - t0
    n_models = len(spec)
    timings["per_model_example_s"] = timings["margins_s"] / max(1, n_models * len(sample))
    log(f"margins: {n_models} models × {len(sample)} examples ({timings['margins_s']:.0f}s)")

    t0 = time.perf_counter()
    paths = _write_outputs(config, rows, dev_path, out, log)
    timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    write_json(out / "timings.json", timings)
    paths["timings"] = out / "timings.json"
    log(f"done in {timings['total_s']:.0f}s; report: {paths['report']}")
    return paths


def _deviation_rows(dev_path: Path) -> tuple[list[dict[str, Any]], float]:
    """The subgroup study's Δc rows at its largest ε (one row per β, subgroup, example)."""
    dev = read_csv(dev_path, types={"subgroup": str})
    eps_max = max(float(r["eps"]) for r in dev)
    return [r for r in dev if float(r["eps"]) == eps_max], eps_max


def _plot_margin_vs_tau(rows: list[dict[str, Any]], path: Path) -> None:
    """Mean ± sd of the estimated margin and the bound against τ, one line per β (001 Fig. 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    betas = sorted({r["beta"] for r in rows})
    taus = sorted({r["tau"] for r in rows})
    for ax, col in zip(axes, ("margin_estimate", "bound")):
        for b in betas:
            stats = []
            for t in taus:
                v = np.array([r[col] for r in rows if r["beta"] == b and r["tau"] == t], float)
                v = v[np.isfinite(v)]
                stats.append((v.mean(), v.std()) if v.size else (math.nan, math.nan))
            mean, sd = np.array(stats).T
            ax.errorbar(taus, mean, yerr=sd, marker="o", capsize=3, label=f"β = {b:g}")
        ax.set_xlabel("τ (encoder std offset)")
        ax.set_ylabel(col)
        ax.legend(fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, path)
    plt.close(fig)


def _write_outputs(
    config: MarginStudyConfig,
    rows: list[dict[str, Any]],
    dev_path: Path | None,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    write_csv(out / "margins.csv", rows, [*MARGIN_COLUMNS, *EXTRA_COLUMNS])
    paths["margins"] = out / "margins.csv"
    summary = summarize_margins(rows)
    write_csv(out / "margin_summary.csv", summary, MARGIN_SUMMARY_COLUMNS)
    paths["summary"] = out / "margin_summary.csv"
    taus = sorted({float(t) for t in config.taus})

    def figure(name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        try:
            fn(*args, **kw)
            paths[name] = Path(args[1])
        except ValueError as err:  # e.g. fewer than 2 defined bounds on a tiny run
            log(f"figure {name} skipped: {err}")

    figure(
        "fig_bound_vs_margin", report.plot_bound_vs_margin, rows, fig_dir / "bound_vs_margin.png"
    )
    for t in taus:
        sfx = "" if len(taus) == 1 else f"_tau{t:g}"
        at_t = [r for r in rows if r["tau"] == t]
        figure(
            f"fig_vs_beta{sfx}",
            report.plot_vs_beta,
            at_t,
            fig_dir / f"sigma_jacobian_margin_vs_beta{sfx}.png",
            columns=("sigma_min", "jac_fro", "margin_estimate", "bound"),
        )
        figure(
            f"fig_margin_distributions{sfx}",
            report.plot_margin_distributions,
            at_t,
            fig_dir / f"margin_distributions{sfx}.png",
        )
    if len(taus) > 1:
        figure("fig_margin_vs_tau", _plot_margin_vs_tau, rows, fig_dir / "margin_vs_tau.png")
    joined: list[dict[str, Any]] = []
    eps_max = math.nan
    if dev_path is not None:
        dev, eps_max = _deviation_rows(dev_path)
        at0 = [r for r in rows if r["tau"] == 0.0]
        joined = join_rows(at0, dev, on=("beta", "subgroup", "example_id"))
        log(f"joined {len(joined)} of {len(at0)} τ=0 margin rows with Δc at ε={eps_max:g}")
        if joined:
            write_csv(out / "margins_with_deviation.csv", joined)
            paths["margins_with_deviation"] = out / "margins_with_deviation.csv"
            figure(
                "fig_margin_vs_deviation",
                report.plot_margin_vs_deviation,
                joined,
                fig_dir / "margin_vs_deviation.png",
            )
    paths["report"] = _write_report(config, out, paths, rows, summary, joined, eps_max)
    return paths


def _write_report(
    config: MarginStudyConfig,
    out: Path,
    paths: dict[str, Path],
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    joined: list[dict[str, Any]],
    eps_max: float,
) -> Path:
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
        f"({int(cmp.sum())} pairs) it is ≤ the estimated margin for {100 * share_le:.0f} % "
        f"of them (Pearson ρ over defined bounds = {corr:.2f}). Theorem 1 holds up to "
        f"first order, and the estimate is itself an upper estimate (a stronger attack can "
        f"only lower it) bracketed to ±{config.r_max / 2 ** (config.n_iter + 1):.3g}."
    )
    per_model = []
    for s in summary:
        if s["subgroup"] != "all":
            continue
        groups = [g for g in summary if (g["beta"], g["tau"]) == (s["beta"], s["tau"])]
        groups = [g for g in groups if g["subgroup"] != "all"]
        low = min(groups, key=lambda g: g["margin_median"])
        per_model.append(
            f"β={s['beta']:g}, τ={s['tau']:g}: median margin {s['margin_median']:.3g} "
            f"(bound {s['bound_median']:.3g}); smallest median margin: {low['subgroup']} "
            f"({low['margin_median']:.3g})."
        )
    trend = []
    for t in sorted({r["tau"] for r in rows}):
        by_beta = {}
        for col in ("sigma_min", "jac_fro", "margin_estimate"):
            by_beta[col] = [
                float(np.mean([r[col] for r in rows if r["tau"] == t and r["beta"] == b]))
                for b in sorted({r["beta"] for r in rows})
            ]
        word = {True: "grows", False: "does not grow"}
        mono_s = bool(np.all(np.diff(by_beta["sigma_min"]) > 0))
        mono_j = bool(np.all(np.diff(by_beta["jac_fro"]) < 0))
        mono_m = bool(np.all(np.diff(by_beta["margin_estimate"]) > 0))
        trend.append(
            f"τ={t:g}: with β, mean σ_min {word[mono_s]} monotonically, mean ‖J‖_F "
            f"{'shrinks' if mono_j else 'does not shrink'} monotonically and the mean margin "
            f"{word[mono_m]} monotonically (001 Fig. 9 expects all three)."
        )
    sections: list[dict[str, Any]] = [
        {
            "heading": "Setting",
            "reading": (
                f"{config.dataset} ({config.backbone}, latent {config.latent_dim}), β ∈ "
                f"{list(config.betas)}, τ ∈ {list(config.taus)}; r = {config.r:g} on "
                f"‖g(μ(x)+ησ) − g(μ(x))‖₂, m = {config.m:g}, {config.n_samples} η draws; "
                f"margin by {config.n_iter}-step {config.method} on the L2 radius in "
                f"[0, {config.r_max:g}] with a {config.attack_steps}-step {config.attack_rule} "
                f"PGD maximum-damage attack (Eq. 5 of 001); {config.split} examples per "
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
                "reading": "Mean ± sd over examples; 001 finds the margin grows with τ.",
                "figure": paths["fig_margin_vs_tau"],
            }
        )
    if joined:
        x = np.array([r["margin_estimate"] for r in joined], float)
        y = np.array([r["delta_c"] for r in joined], float)
        rho = report.spearman(x, y) if len(joined) > 1 else math.nan
        sections.append(
            {
                "heading": "Margin against the subgroup study's Δc",
                "reading": (
                    f"{len(joined)} examples attacked in both studies; Spearman ρ between the "
                    f"margin and Δc at ε={eps_max:g} is {rho:.2f} (negative: examples with "
                    f"small margins are damaged most)."
                ),
                "figure": paths.get("fig_margin_vs_deviation"),
            }
        )
    sections = [{k: v for k, v in s.items() if v is not None} for s in sections]
    return report.write_report(out / "report.md", "Margins of r-robustness (001)", sections)


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    first = (rows[0]["beta"], rows[0]["tau"])
    out: dict[str, int] = {}
    for r in rows:
        if (r["beta"], r["tau"]) == first:
            out[r["subgroup"]] = out.get(r["subgroup"], 0) + 1
    return out
