"""Grid training: K β-VAEs (β × τ × seed) trained by one jitted, vmapped step.

The objective is the batch mean of the per-example negative β-ELBO (Eq. 2 of 000; with the
σ-offset τ of 001 Fig. 7 when given). The step is written for one model and one batch, then
``jax.vmap``-ed over the stack of K models (params with a leading axis K) and ``jax.jit``-ed
once per (model, shapes, shared settings): β and τ are array arguments, so a new β grid reuses
the compiled program.

Randomness is a pure function of the run key, the model seed and the step:
  * model key      m_k = fold_in(key, seed_k)
  * initial params from fold_in(m_k, 0)
  * batch order: epoch e uses permutation(fold_in(fold_in(m_k, 1), e), N), sliced by the step's
    position in the epoch (batches without replacement, the last partial batch dropped)
  * latent noise at step t from fold_in(fold_in(m_k, 2), t)
so a run resumed from a checkpoint reproduces the uninterrupted one exactly, and model k of a
grid equals the same (β, τ, seed) trained alone. Models that share a seed share initial params
and batch order (common random numbers), so β comparisons are not confounded by the seed.

How a step runs the K models is chosen in one place, :func:`resolve_model_axis`: vmapping a
conv over stacked kernels yields a grouped convolution, which XLA's CPU backend runs slower
than K plain ones (K=4 burgess64 at 64x64: 'vmap' 0.70x of K separate programs), so on CPU
the default ('auto') calls one compiled single-model step K times from Python
('sequential'); on accelerators it vmaps. 'map' (``lax.map`` inside one program) is ~5x
slower on that CPU and kept for comparison. All give the same results.

Steps are driven from Python over the jitted step: on the 2-core CPU a ``lax.fori_loop`` over
steps ran ~3x slower (ENVIRONMENT_NOTES).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.data.validate import check_images
from vaerob_jax.models import VAE
from vaerob_jax.objectives import beta_vae_loss
from vaerob_jax.train.checkpoint import CheckpointError, GridCheckpointer
from vaerob_jax.train.config import TrainConfig
from vaerob_jax.train.progress import MetricsLog, ProgressReporter

__all__ = [
    "TrainResult",
    "batch_indices",
    "grid_fingerprint",
    "make_grid",
    "train_grid",
    "train_step_traces",
]

_INIT, _DATA, _NOISE = 0, 1, 2
# Number of times the grid step has been traced (a recompile test reads this).
_TRACE_COUNT = {"step": 0}


def train_step_traces() -> int:
    """How many times the jitted grid step has been traced in this process."""
    return _TRACE_COUNT["step"]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_grid` returns.

    Attributes:
      params: stacked params of the K models (leading axis K).
      opt_state: stacked Adam state.
      history: metrics logged by this call: 'step' (T,), and 'loss', 'recon', 'kl' (T, K),
        each the batch mean at that step before the update (loss = negative β-ELBO per example).
      betas, sigma_offsets, seeds: (K,) grid entry of each model.
      step: number of updates the params have received.
      resumed_from: checkpoint step this call resumed from (None: trained from scratch).
      workdir: where checkpoints/metrics went (None: nothing written).
      elapsed_s: wall time of this call.
    """

    params: Any
    opt_state: Any
    history: dict[str, np.ndarray]
    betas: np.ndarray
    sigma_offsets: np.ndarray
    seeds: np.ndarray
    step: int
    resumed_from: int | None = None
    workdir: Path | None = None
    elapsed_s: float = 0.0

    @property
    def num_models(self) -> int:
        return int(self.betas.shape[0])

    def grid(self) -> list[dict[str, Any]]:
        """One dict per model index: {'model', 'beta', 'sigma_offset', 'seed'}."""
        return [
            {"model": k, "beta": float(b), "sigma_offset": float(t), "seed": int(s)}
            for k, (b, t, s) in enumerate(zip(self.betas, self.sigma_offsets, self.seeds))
        ]


def _as_1d(values: Any, name: str, dtype: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64 if dtype is float else np.int64)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    return arr


def make_grid(
    betas: Sequence[float] | np.ndarray,
    sigma_offsets: Sequence[float] | np.ndarray | None = None,
    seeds: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validates a grid and expands it to per-model arrays (β outermost, seed innermost).

    Args:
      betas: KL weights, finite and >= 0.
      sigma_offsets: τ values added to the encoder std (001 Fig. 7), finite and >= 0;
        None means (0.0,).
      seeds: model seeds (ints); None means (0,).

    Returns:
      (betas_k, taus_k, seeds_k), each of length K = len(betas)·len(taus)·len(seeds).
    """
    try:
        b = _as_1d(betas, "betas", float)
        t = _as_1d([0.0] if sigma_offsets is None else sigma_offsets, "sigma_offsets", float)
        s_raw = np.asarray([0] if seeds is None else seeds)
    except (TypeError, ValueError) as err:
        raise ValueError(f"grid values must be numbers: {err}") from err
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ValueError(f"betas must be finite and >= 0, got {b.tolist()}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"sigma_offsets must be finite and >= 0, got {t.tolist()}")
    if s_raw.ndim == 0:
        s_raw = s_raw[None]
    if s_raw.ndim != 1 or s_raw.size == 0 or not np.issubdtype(s_raw.dtype, np.integer):
        raise ValueError(f"seeds must be a non-empty 1-D sequence of ints, got {s_raw!r}")
    if np.any(s_raw < 0):
        raise ValueError(f"seeds must be >= 0, got {s_raw.tolist()}")
    s = s_raw.astype(np.int64)
    for name, arr in (("betas", b), ("sigma_offsets", t), ("seeds", s)):
        if len(np.unique(arr)) != len(arr):
            raise ValueError(f"{name} contains duplicates ({arr.tolist()}): models would coincide")
    bb, tt, ss = np.meshgrid(b, t, s, indexing="ij")
    return bb.ravel(), tt.ravel(), ss.ravel()


def _key_data(key: jax.Array) -> list[int]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)).ravel().tolist()
    return np.asarray(key).ravel().tolist()


def _check_key(key: Any) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if (typed and key.shape != ()) or (not typed and key.shape != (2,)):
        raise ValueError(
            f"key must be one PRNG key (jax.random.key(seed)), got shape {key.shape} "
            f"and dtype {key.dtype}"
        )
    return key


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate, config.adam_b1, config.adam_b2, config.adam_eps)


def _step_settings(config: TrainConfig) -> TrainConfig:
    # Fields that do not enter the compiled program are reset so the cache ignores them.
    return dataclasses.replace(config, steps=1, checkpoint_every=0, log_every=1, max_to_keep=1)


def batch_indices(data_key: jax.Array, step: jax.Array | int, num_examples: int, batch_size: int):
    """Indices of the examples in the batch of ``step`` (0-based), a pure function of the key.

    Epoch e = step // (N // B) visits the examples in the order
    ``permutation(fold_in(data_key, e), N)``, B at a time (without replacement; the last
    N mod B examples of each permutation are skipped). Because it depends only on
    (data_key, step), a resumed run sees exactly the batches of the uninterrupted one.
    """
    steps_per_epoch = num_examples // batch_size
    epoch, pos = step // steps_per_epoch, step % steps_per_epoch
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    return jax.lax.dynamic_slice_in_dim(perm, pos * batch_size, batch_size)


@functools.lru_cache(maxsize=32)
def _init_one_fn(model: VAE, config: TrainConfig):
    optimizer = _optimizer(config)

    def init_one(key):
        params = model.init(key)
        return params, optimizer.init(params)

    return jax.jit(init_one)


def _init_stack(model: VAE, config: TrainConfig, keys: jax.Array) -> tuple[Any, Any]:
    """Initial (params, opt_state) stacked over models.

    One jitted single-model init called K times (not a hot path): on CPU its program compiles
    several times faster than the vmapped one, and it is shared by every grid size K.
    """
    init = _init_one_fn(model, config)
    states = [init(keys[k]) for k in range(keys.shape[0])]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def resolve_model_axis(model_axis: str) -> str:
    """'auto' -> 'sequential' on CPU, 'vmap' on GPU/TPU; other values are returned as given."""
    if model_axis != "auto":
        return model_axis
    return "sequential" if jax.default_backend() == "cpu" else "vmap"


def _sequential(one_model):
    """A grid step that runs one compiled single-model step per model.

    Model k's slice is taken and written back inside the compiled programs (the stack stays
    on the device; one dispatch per model and step), so it is a drop-in for the vmapped step.
    """

    @jax.jit
    def step_k(params, opt_state, images, data_keys, noise_keys, betas, taus, step, k):
        take = functools.partial(jax.tree.map, lambda a: a[k])
        p, o, metrics = one_model(
            take(params),
            take(opt_state),
            images,
            data_keys[k],
            noise_keys[k],
            betas[k],
            taus[k],
            step,
        )
        put = functools.partial(jax.tree.map, lambda a, v: a.at[k].set(v))
        return put(params, p), put(opt_state, o), metrics

    def step(params, opt_state, images, data_keys, noise_keys, betas, taus, step):
        per_model = []
        for k in range(betas.shape[0]):
            params, opt_state, metrics = step_k(
                params, opt_state, images, data_keys, noise_keys, betas, taus, step, jnp.int32(k)
            )
            per_model.append(metrics)
        return params, opt_state, jax.tree.map(lambda *m: jnp.stack(m), *per_model)

    return step


@functools.lru_cache(maxsize=32)
def _grid_step_fn(model: VAE, config: TrainConfig):
    """The jitted step for a stack of models; cached so a new β grid reuses the program."""
    optimizer = _optimizer(config)
    batch_size = config.batch_size

    def one_model(params, opt_state, images, data_key, noise_key, beta, tau, step):
        _TRACE_COUNT["step"] += 1  # runs at trace time only
        batch = images[batch_indices(data_key, step, images.shape[0], batch_size)]
        keys = jax.random.split(jax.random.fold_in(noise_key, step), batch_size)

        def loss_fn(p):
            def per_example(x, k):
                return beta_vae_loss(
                    model,
                    p,
                    x,
                    k,
                    beta,
                    kl_reduction=config.kl_reduction,
                    batch_size=batch_size,
                    tau=tau,
                )

            losses, aux = jax.vmap(per_example)(batch, keys)
            return jnp.mean(losses), {"recon": jnp.mean(aux["recon"]), "kl": jnp.mean(aux["kl"])}

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, **aux}

    axis = resolve_model_axis(config.model_axis)
    if axis == "vmap":
        return jax.jit(jax.vmap(one_model, in_axes=(0, 0, None, 0, 0, 0, 0, None)))
    if axis == "sequential":
        return _sequential(one_model)

    def mapped(params, opt_state, images, data_keys, noise_keys, betas, taus, step):
        def body(xs):
            return one_model(*xs[:2], images, *xs[2:], step)

        return jax.lax.map(body, (params, opt_state, data_keys, noise_keys, betas, taus))

    return jax.jit(mapped)


def _param_shapes(model: VAE, config: TrainConfig) -> dict[str, list[int]]:
    abstract = jax.eval_shape(_init_one_fn(model, _step_settings(config)), jax.random.key(0))[0]
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
    return {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in flat}


def grid_fingerprint(
    model: VAE,
    images: np.ndarray,
    betas: np.ndarray,
    sigma_offsets: np.ndarray,
    seeds: np.ndarray,
    config: TrainConfig,
    key: jax.Array,
) -> dict[str, Any]:
    """JSON description of everything that fixes the training trajectory of a grid.

    Stored with every checkpoint; resuming with a different fingerprint is refused. The number
    of steps, checkpoint/log cadence and max_to_keep are left out (a run may be extended).
    """
    data_sum = float(np.sum(images, dtype=np.float64))
    train = {
        k: v
        for k, v in config.to_dict().items()
        if k not in ("steps", "checkpoint_every", "log_every", "max_to_keep", "model_axis")
    }
    return {
        "format": 1,
        "model": {
            "backbone": model.backbone,
            "image_shape": list(model.image_shape),
            "latent_dim": model.latent_dim,
            "likelihood": model.likelihood,
            "obs_std": model.obs_std,
            "logvar_range": list(model.logvar_range),
            "param_shapes": _param_shapes(model, config),
        },
        "grid": {
            "num_models": int(betas.shape[0]),
            "betas": [float(b) for b in betas],
            "sigma_offsets": [float(t) for t in sigma_offsets],
            "seeds": [int(s) for s in seeds],
        },
        "key": _key_data(key),
        "train": train,
        "data": {"shape": list(images.shape), "sum": data_sum},
    }


def _restore_latest(
    checkpointer: GridCheckpointer,
    model: VAE,
    step_config: TrainConfig,
    init_keys: jax.Array,
    steps: int,
) -> tuple[int, Any, Any] | None:
    """(step, params, opt_state) of the checkpoint to resume, or None when there is none."""
    latest = checkpointer.latest_step()
    if latest is None:
        return None
    target_step = latest
    if latest > steps:
        if steps not in checkpointer.all_steps():
            raise CheckpointError(
                f"checkpoints in {checkpointer.directory} are at steps "
                f"{checkpointer.all_steps()}, beyond the requested {steps} steps "
                f"and none is at that step; ask for at least {latest} steps or use another "
                "workdir"
            )
        target_step = steps
    abstract_params, abstract_opt = jax.eval_shape(
        lambda keys: _init_stack(model, step_config, keys), init_keys
    )
    abstract = {
        "params": abstract_params,
        "opt_state": abstract_opt,
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    start, state = checkpointer.restore(abstract, target_step)
    if int(state["step"]) != start:
        raise CheckpointError(
            f"checkpoint {checkpointer.directory / str(start)} stores step "
            f"{int(state['step'])}, inconsistent with its folder name"
        )
    # Host round trip: restored arrays are committed to a device, which would make jit
    # compile the step a second time for the same shapes.
    state = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), state)
    return start, state["params"], state["opt_state"]


def train_grid(
    model: VAE,
    images: Any,
    betas: Sequence[float] | np.ndarray,
    config: TrainConfig,
    key: jax.Array,
    *,
    seeds: Sequence[int] | np.ndarray | None = None,
    sigma_offsets: Sequence[float] | np.ndarray | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains a grid of β-VAEs (β × τ × seed) in one compiled, vmapped program.

    Minimises, for each model k, the batch mean of the per-example negative β-ELBO
    recon + β_k · KL (Eq. 2 of 000), with the encoder std offset by τ_k (001 Fig. 7) when
    ``sigma_offsets`` is given, using Adam.

    With a ``workdir``, checkpoints go to ``workdir/checkpoints`` every
    ``config.checkpoint_every`` steps and at the end, metrics to ``workdir/metrics.csv`` and
    the grid to ``workdir/grid.json``; an existing checkpoint of the same run is resumed (so a
    finished run is simply loaded), one of a different run raises :class:`CheckpointError`.

    Args:
      model: the VAE (all K models share its architecture).
      images: (N, H, W, C) float pixels in [0, 1], H, W, C = ``model.image_shape``.
      betas: KL weights (finite, >= 0).
      config: shared settings (steps, batch size, Adam, KL reduction, cadence).
      key: the run's PRNG key.
      seeds: model seeds (default (0,)); each model's randomness is fold_in(key, seed).
      sigma_offsets: τ grid (default (0.0,)).
      workdir: folder for checkpoints and metrics; None keeps everything in memory.
      progress: show a progress bar (TTY) or periodic lines with ETA; False is silent.

    Returns:
      A :class:`TrainResult` with the stacked params (model k = grid entry k; β outermost).

    Raises:
      ValueError: bad grid, images, key or batch size (before anything is compiled).
      CheckpointError: the workdir holds a checkpoint of a different run, or an unreadable one.
      FloatingPointError: a logged loss is NaN/inf (the message names the models).

    Example:
      >>> model = make_vae("burgess64", (64, 64, 3), latent_dim=16)
      >>> res = train_grid(model, ds.images, [1.0, 5.0, 10.0], TrainConfig(steps=500),
      ...                  jax.random.key(0), workdir="runs/beta")
      >>> res.params  # leading axis 3: one model per β
    """
    t_start = time.perf_counter()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    key = _check_key(key)
    betas_k, taus_k, seeds_k = make_grid(betas, sigma_offsets, seeds)
    images_np = check_images(images, expected_shape=model.image_shape, name="images", batched=True)
    images_np = np.asarray(images_np, dtype=np.float32)
    n = images_np.shape[0]
    if config.batch_size > n:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the number of images {n}; "
            "use a smaller batch or more data"
        )
    num_models = betas_k.shape[0]

    model_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(seeds_k))

    def derive(i: int) -> jax.Array:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(model_keys, i)

    init_keys, data_keys, noise_keys = derive(_INIT), derive(_DATA), derive(_NOISE)
    step_config = _step_settings(config)

    with contextlib.ExitStack() as cleanup:
        start, resumed_from = 0, None
        params = opt_state = None
        checkpointer = None
        out_dir = None if workdir is None else Path(workdir).absolute()
        if out_dir is not None:
            fingerprint = grid_fingerprint(model, images_np, betas_k, taus_k, seeds_k, config, key)
            checkpointer = GridCheckpointer(
                out_dir / "checkpoints", fingerprint, config.max_to_keep
            )
            cleanup.callback(checkpointer.close)  # waits for pending saves, also on errors
            restored = _restore_latest(checkpointer, model, step_config, init_keys, config.steps)
            if restored is not None:
                start, params, opt_state = restored
                resumed_from = start
            (out_dir / "grid.json").write_text(
                json.dumps(
                    {"models": _grid_rows(betas_k, taus_k, seeds_k), "fingerprint": fingerprint},
                    indent=2,
                )
            )
        if params is None:
            params, opt_state = _init_stack(model, step_config, init_keys)
        metrics_log = MetricsLog(
            None if out_dir is None else out_dir / "metrics.csv",
            betas_k,
            taus_k,
            seeds_k,
            resume_step=start,
        )

        step_fn = _grid_step_fn(model, step_config)
        images_dev = jax.device_put(images_np)
        betas_dev = jnp.asarray(betas_k, jnp.float32)
        taus_dev = jnp.asarray(taus_k, jnp.float32)
        history: dict[str, list[Any]] = {"step": [], "loss": [], "recon": [], "kl": []}
        reporter = ProgressReporter(config.steps, start, enabled=progress)
        cleanup.callback(reporter.close)
        t_loop = time.perf_counter()
        for s in range(start, config.steps):
            params, opt_state, metrics = step_fn(
                params,
                opt_state,
                images_dev,
                data_keys,
                noise_keys,
                betas_dev,
                taus_dev,
                jnp.int32(s),
            )
            done = s + 1
            if done % config.log_every == 0 or done == config.steps:
                host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
                if not all(np.all(np.isfinite(v)) for v in host.values()):
                    bad = sorted(
                        {int(k) for v in host.values() for k in np.nonzero(~np.isfinite(v))[0]}
                    )
                    raise FloatingPointError(
                        f"non-finite loss at step {done} for models {bad} "
                        f"(betas {[float(betas_k[k]) for k in bad]}); lower the learning rate"
                    )
                history["step"].append(done)
                for name in ("loss", "recon", "kl"):
                    history[name].append(host[name])
                metrics_log.append(done, host, time.perf_counter() - t_loop)
                reporter.update(done, host["loss"])
            else:
                reporter.update(done)
            if checkpointer is not None and (
                done == config.steps
                or (config.checkpoint_every and done % config.checkpoint_every == 0)
            ):
                checkpointer.save(
                    done, {"params": params, "opt_state": opt_state, "step": jnp.int32(done)}
                )

    hist = {
        "step": np.asarray(history["step"], dtype=np.int64),
        **{
            name: np.asarray(history[name], dtype=np.float64).reshape(-1, num_models)
            for name in ("loss", "recon", "kl")
        },
    }
    return TrainResult(
        params=params,
        opt_state=opt_state,
        history=hist,
        betas=betas_k,
        sigma_offsets=taus_k,
        seeds=seeds_k,
        step=config.steps,
        resumed_from=resumed_from,
        workdir=out_dir,
        elapsed_s=time.perf_counter() - t_start,
    )


def _grid_rows(betas: np.ndarray, taus: np.ndarray, seeds: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"model": k, "beta": float(b), "sigma_offset": float(t), "seed": int(s)}
        for k, (b, t, s) in enumerate(zip(betas, taus, seeds))
    ]
