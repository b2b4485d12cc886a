"""The grid trainer: K models of one family trained by one compiled step, for any batch loss.

``train_grid(model, loss, data, grid, config, key)`` trains one model per grid entry: the β-VAE
grid of 000/001 (``objectives.beta_elbo``), 000's attribute classifiers
(``objectives.cross_entropy``), and the batch-level losses of the later papers (total
correlation, sorted-code KS, group penalties, with FGSM/PGD inner steps written inside the
loss). Keys (see :mod:`vaerob_jax.train.grid`), the compiled programs (see
:mod:`vaerob_jax.train.steps`) and the fingerprint (:mod:`vaerob_jax.train.fingerprint`) live
in their own modules; this one drives the loop: validate → resume or init → steps → logs,
checkpoints and progress.

Steps are driven from Python over the jitted step: on the 2-core CPU a ``lax.fori_loop`` over
steps ran ~3x slower (ENVIRONMENT_NOTES).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.sweeps import distributed, parallel
from vaerob_jax.sweeps.progress import Progress
from vaerob_jax.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    GridCheckpointer,
    checkpoint_steps,
)
from vaerob_jax.train.config import TrainConfig
from vaerob_jax.train.fingerprint import grid_fingerprint
from vaerob_jax.train.grid import (
    TrainGrid,
    check_key,
    float_or_int,
    is_close_row,
    model_streams,
    prepare_data,
    resolve_grid,
)
from vaerob_jax.train.progress import MetricsLog
from vaerob_jax.train.steps import init_stack, step_program, step_settings

__all__ = ["TrainResult", "train_grid"]

_RESERVED_METRICS = ("step", "model", "elapsed_s")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_grid` returns.

    Attributes:
      params: stacked params of the K models (leading axis K; model k = grid entry k).
      opt_state: stacked optimiser state.
      grid: name -> (K,) values of each model: the grid as given, plus 'seed'.
      history: metrics logged by this call: 'step' (T,), and 'loss' and every aux metric of
        the loss (T, K), each the batch value at that step before the update.
      step: number of updates the params have received.
      resumed_from: checkpoint step this call resumed from (None: trained from scratch).
      workdir: where checkpoints/metrics went (None: nothing written).
      elapsed_s: wall time of this call.
    """

    params: Any
    opt_state: Any
    grid: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    step: int
    resumed_from: int | None = None
    workdir: Path | None = None
    elapsed_s: float = 0.0

    @property
    def num_models(self) -> int:
        return int(next(iter(self.grid.values())).shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per model: ``{'model': k, <grid name>: value, ...}``."""
        return [
            {"model": k, **{n: float_or_int(v[k]) for n, v in self.grid.items()}}
            for k in range(self.num_models)
        ]

    def index(self, **values: Any) -> int:
        """The model whose grid values match ``values`` (floats compared with isclose).

        Example: ``res.index(beta=5.0, tau=0.1)``.
        """
        hits = [r["model"] for r in self.rows() if is_close_row(r, values)]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} models match {values} in the grid {self.rows()}")
        return int(hits[0])


def _restore_latest(
    checkpointer: GridCheckpointer,
    model: Any,
    step_config: TrainConfig,
    init_keys: jax.Array,
    steps: int,
    extend: bool,
) -> tuple[int, Any, Any] | None:
    """(step, params, opt_state) of the checkpoint to resume, or None when there is none.

    The folder holds one run of a recorded length: the same length resumes (or loads) it,
    a longer one continues it only with ``extend``, a shorter one is refused, all before
    anything is written (so no checkpoint of the stored run is ever pruned by accident).
    """
    latest = checkpointer.latest_step()
    if latest is None:
        return None
    where = checkpointer.directory
    saved = checkpointer.read_fingerprint(latest)
    saved_steps = saved.get("steps")
    ignore: tuple[str, ...] = ()
    if saved.get("format") == 2:  # written before the length was recorded
        ignore = ("format", "steps")
        if latest > steps or (latest < steps and not extend):
            raise CheckpointMismatchError(
                f"checkpoints in {where} (an older format that does not record the run's "
                f"length) reach step {latest}; this run asks for {steps} steps. "
                + (
                    "Pass extend=True (--extend) to train that run on to the new length, or "
                    "use another workdir."
                    if latest < steps
                    else "A shorter run is a different run: use another workdir."
                )
            )
    elif saved_steps != steps:
        if not extend or latest > steps:
            fix = (
                "Pass extend=True (--extend on the command line) to train that run on to "
                f"{steps} steps, or use another workdir."
                if latest < steps
                else "A shorter run is a different run: use another workdir (nothing was "
                "changed in this one)."
            )
            raise CheckpointMismatchError(
                f"{where} holds a run of {saved_steps} steps (last checkpoint: step {latest}); "
                f"this run asks for {steps}. {fix}"
            )
        ignore = ("steps",)
    abstract_params, abstract_opt = jax.eval_shape(
        lambda keys: init_stack(model, step_config, keys), init_keys
    )
    abstract = {
        "params": abstract_params,
        "opt_state": abstract_opt,
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    start, state = checkpointer.restore(abstract, latest, ignore=ignore)
    if int(state["step"]) != start:
        raise CheckpointError(
            f"checkpoint {checkpointer.directory / str(start)} stores step "
            f"{int(state['step'])}, inconsistent with its folder name"
        )
    # Host round trip: restored arrays are committed to a device, which would make jit
    # compile the step a second time for the same shapes.
    state = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), state)
    return start, state["params"], state["opt_state"]


def _check_objects(model: Any, loss: Any, config: Any) -> None:
    from vaerob_jax.objectives import BatchLoss

    missing = [m for m in ("init", "spec") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"model {type(model).__name__} lacks {missing} (needs init(key), spec())")
    if not isinstance(loss, BatchLoss):
        raise TypeError(
            f"loss must be an objectives.BatchLoss (e.g. objectives.beta_elbo(model)), got "
            f"{type(loss).__name__}"
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")


def _check_metrics(shapes: Mapping[str, Any], grid: TrainGrid, loss_name: str) -> list[str]:
    """The logged metric names ('loss' first), after checking every one is a scalar."""
    for name, s in shapes.items():
        if tuple(s.shape) != ():
            raise ValueError(
                f"loss {loss_name!r} returned aux metric {name!r} of shape {tuple(s.shape)}; "
                "aux metrics must be scalars (reduce over the batch inside the loss)"
            )
    clash = [n for n in shapes if n in _RESERVED_METRICS or n in grid.values]
    if clash:
        raise ValueError(
            f"loss {loss_name!r} names aux metrics {clash}, which clash with metrics.csv "
            "columns (step, model, elapsed_s and the grid names)"
        )
    return ["loss", *(n for n in shapes if n != "loss")]


def _nonfinite_error(done: int, host: Mapping[str, np.ndarray], grid: TrainGrid) -> str:
    bad = sorted({int(k) for v in host.values() for k in np.nonzero(~np.isfinite(v))[0]})
    which = sorted(n for n, v in host.items() if not np.all(np.isfinite(v)))
    models = "; ".join(f"model {k}: {grid.describe(k)}" for k in bad)
    return (
        f"non-finite {', '.join(which)} at step {done} for models {bad} ({models}); "
        "lower the learning rate or check the loss"
    )


def train_grid(
    model: Any,
    loss: Any,
    data: Any,
    grid: Mapping[str, Any],
    config: TrainConfig,
    key: jax.Array,
    *,
    workdir: str | Path | None = None,
    progress: bool = True,
    extend: bool = False,
    mesh: Any = None,
    split_processes: bool = True,
) -> TrainResult:
    """Trains one model per grid entry with a batch-level loss, in one compiled step.

    Model k minimises ``loss(params, batch, key_t, hp_k)`` where hp_k holds its grid values (the
    loss's declared hyperparameters, float32 scalars, defaults filled in) and ``'step'``; the
    optimiser (Adam or SGD, ``config``) scales its update by model k's learning rate. The keys
    are documented in :mod:`vaerob_jax.train.grid`: model k of a grid equals the same grid
    point trained alone, and a resumed run equals the uninterrupted one.

    With a ``workdir``, checkpoints go to ``workdir/checkpoints`` every
    ``config.checkpoint_every`` steps and at the end, metrics to ``workdir/metrics.csv`` and
    the grid to ``workdir/grid.json``; an existing checkpoint of the same run is resumed (so a
    finished run is simply loaded), one of a different run raises :class:`CheckpointError`.

    Args:
      model: has ``init(key) -> params`` and ``spec() -> dict`` (all K models share it).
      loss: an :class:`~vaerob_jax.objectives.BatchLoss` (``objectives.beta_elbo(model)``,
        ``objectives.cross_entropy(clf)``, ...). Reuse one loss object: the compiled step is
        cached per loss.
      data: dict of arrays with a leading axis N (``'x'`` images, ``'label'``, ...); a bare
        array means ``{'x': data}``. Images are checked against ``model.image_shape``.
      grid: name -> (K,) values, one per model (:func:`make_grid` expands a product): 'seed'
        (ints >= 0, default 0), 'learning_rate' (default ``config.learning_rate``) and the
        loss's hyperparameters. ``{}`` trains one model.
      config: shared settings (steps, batch size, optimiser, batch sampling, cadence).
      key: the run's PRNG key.
      workdir: folder for checkpoints and metrics; None keeps everything in memory.
      progress: show a progress bar (TTY) or periodic lines with ETA; False is silent.
      extend: allow continuing a stored run of fewer steps to ``config.steps`` (its
        checkpoints then belong to the longer run). Without it a workdir holding a run of
        another length is refused before anything is written.
      mesh: a device mesh (or device count) to split the models over; None uses the active
        :func:`~vaerob_jax.sweeps.parallel.use_devices` mesh, if any. On several devices the
        model axis is vmapped (``model_axis`` 'auto' or 'vmap'), padded to a multiple of the
        device count with copies of the last model (dropped again) and each device trains
        its models; with at most half as many models as devices (and a batch size the device
        count divides) each model's batch is split over the devices instead (data parallel).
        Checkpoints hold the K real models, so a run resumes on any device count.
      split_processes: in a multi-process run (:mod:`vaerob_jax.sweeps.distributed`),
        process p trains the models k ≡ p (mod P) on its own devices, with checkpoints in
        ``workdir/process-p-of-P``, and the processes then swap their models, so every
        process returns the whole grid (the coordinator also stores it as the run's final
        checkpoint, which later runs on any number of processes load). False: every process
        trains the whole grid itself.

    Returns:
      A :class:`TrainResult` with the stacked params (model k = grid entry k).

    Raises:
      TypeError: a model without init/spec, a loss that is not a BatchLoss, a bad config type.
      ValueError: bad grid (lengths, values, duplicates, names the loss does not know or
        needs), data (shapes, missing entries, N < batch size) or key, before compiling.
      CheckpointError: the workdir holds a checkpoint of a different run, or an unreadable one.
      FloatingPointError: a logged metric is NaN/inf (the message names the models and their
        grid values).

    Example:
      >>> model = make_vae("burgess64", (64, 64, 3), latent_dim=16)
      >>> res = train_grid(model, objectives.beta_elbo(model), ds.images,
      ...                  make_grid({"beta": [1.0, 5.0, 10.0]}), TrainConfig(steps=500),
      ...                  jax.random.key(0), workdir="runs/beta")
      >>> res.params  # leading axis 3: one model per β
    """
    t_start = time.perf_counter()
    _check_objects(model, loss, config)
    key = check_key(key)
    data_np = prepare_data(data, getattr(model, "image_shape", None))
    n = next(iter(data_np.values())).shape[0]
    if config.batch_size > n:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the number of examples {n}; "
            "use a smaller batch or more data"
        )
    tgrid = resolve_grid(grid, loss, config.learning_rate)
    loss.check(list(tgrid.values), list(data_np))
    loss.check_values({**tgrid.values, **tgrid.hp}, data_np)
    num_models = tgrid.num_models
    if split_processes and distributed.process_count() > 1:
        finished = workdir is not None and config.steps in checkpoint_steps(
            Path(workdir).absolute() / "checkpoints"
        )
        if not finished:  # a finished grid is loaded below, by every process alike
            return _train_split(
                model, loss, data_np, tgrid, config, key, workdir, progress, extend, mesh, t_start
            )
    init_keys, data_keys, loss_keys = model_streams(key, tgrid.seeds)
    step_config = step_settings(config)
    grid_mesh = parallel.resolve_mesh(mesh)
    if grid_mesh is not None:
        if config.model_axis not in ("auto", "vmap"):
            raise ValueError(
                f"model_axis={config.model_axis!r} cannot split the models over "
                f"{parallel.mesh_size(grid_mesh)} devices; use 'auto' or 'vmap' (or one device)"
            )
        step_config = dataclasses.replace(step_config, model_axis="vmap")
    devices = parallel.mesh_size(grid_mesh)
    # At most half as many models as devices: padding the model axis would idle half of them,
    # so every model's batch is split over the devices instead (data parallel).
    data_parallel = devices > 1 and 2 * num_models <= devices and config.batch_size % devices == 0

    with contextlib.ExitStack() as cleanup:
        start, resumed_from = 0, None
        params = opt_state = None
        checkpointer = None
        out_dir = None if workdir is None else Path(workdir).absolute()
        fingerprint = None
        if out_dir is not None:
            fingerprint = grid_fingerprint(model, loss, data_np, tgrid, config, key)
            checkpointer = GridCheckpointer(
                out_dir / "checkpoints", fingerprint, config.max_to_keep
            )
            cleanup.callback(checkpointer.close)  # waits for pending saves, also on errors
            restored = _restore_latest(
                checkpointer, model, step_config, init_keys, config.steps, extend
            )
            if restored is not None:
                start, params, opt_state = restored
                resumed_from = start
        if params is None:
            params, opt_state = init_stack(model, step_config, init_keys)

        program = step_program(loss, step_config, grid_mesh if data_parallel else None)
        data_dev = jax.device_put(data_np)
        hp_dev = {name: jnp.asarray(v, jnp.float32) for name, v in tgrid.hp.items()}
        lrs_dev = jnp.asarray(tgrid.learning_rates, jnp.float32)
        args = (params, opt_state, data_dev, data_keys, loss_keys, hp_dev, lrs_dev)
        if grid_mesh is not None:
            state = (params, opt_state, data_keys, loss_keys, hp_dev, lrs_dev)
            if data_parallel:
                state = parallel.replicate(state, grid_mesh)
            else:  # model parallel: the models, padded to a multiple of the devices, split
                state = parallel.shard_axis(parallel.pad_axis(state, 0, devices)[0], grid_mesh)
            data_dev = parallel.replicate(data_np, grid_mesh)
            params, opt_state, data_keys, loss_keys, hp_dev, lrs_dev = state
            args = (params, opt_state, data_dev, data_keys, loss_keys, hp_dev, lrs_dev)

        def real(tree: Any) -> Any:
            """The K real models of a (maybe padded, sharded) stack, on one device."""
            if grid_mesh is None:
                return tree
            return jax.device_put(parallel.take_axis(tree, 0, num_models), jax.local_devices()[0])

        metric_names = _check_metrics(
            program.metric_shapes(*args, jnp.int32(start)), tgrid, loss.name
        )
        # Several processes loading one finished grid: only the coordinator rewrites its files.
        writes = not split_processes or distributed.is_coordinator()
        if out_dir is not None and writes:
            _write_grid_json(out_dir, tgrid, fingerprint)
        metrics_log = MetricsLog(
            out_dir / "metrics.csv" if out_dir is not None and writes else None,
            tgrid.values,
            metric_names,
            resume_step=start,
        )
        history: dict[str, list[Any]] = {"step": [], **{m: [] for m in metric_names}}
        reporter = Progress(config.steps, done=start, desc="train", unit="steps", mode=progress)
        cleanup.callback(reporter.close)
        t_loop = time.perf_counter()
        for s in range(start, config.steps):
            params, opt_state, metrics = program.run(
                params, opt_state, data_dev, data_keys, loss_keys, hp_dev, lrs_dev, jnp.int32(s)
            )
            done = s + 1
            if done % config.log_every == 0 or done == config.steps:
                host = {k: np.asarray(v)[:num_models] for k, v in jax.device_get(metrics).items()}
                if not all(np.all(np.isfinite(v)) for v in host.values()):
                    raise FloatingPointError(_nonfinite_error(done, host, tgrid))
                history["step"].append(done)
                for name in metric_names:
                    history[name].append(host[name])
                metrics_log.append(done, host, time.perf_counter() - t_loop)
                loss = host["loss"]
                reporter.update(done, f"loss {np.min(loss):.4g}..{np.max(loss):.4g}")
            else:
                reporter.update(done)
            if checkpointer is not None and (
                done == config.steps
                or (config.checkpoint_every and done % config.checkpoint_every == 0)
            ):
                checkpointer.save(
                    done,
                    {"params": real(params), "opt_state": real(opt_state), "step": jnp.int32(done)},
                )
        params, opt_state = real(params), real(opt_state)

    hist = {
        "step": np.asarray(history["step"], dtype=np.int64),
        **{
            name: np.asarray(history[name], dtype=np.float64).reshape(-1, num_models)
            for name in metric_names
        },
    }
    return TrainResult(
        params=params,
        opt_state=opt_state,
        grid=dict(tgrid.values),
        history=hist,
        step=config.steps,
        resumed_from=resumed_from,
        workdir=out_dir,
        elapsed_s=time.perf_counter() - t_start,
    )


def _write_grid_json(out_dir: Path, tgrid: TrainGrid, fingerprint: Any) -> None:
    rows = [
        {"model": k, **{c: float_or_int(v[k]) for c, v in tgrid.values.items()}}
        for k in range(tgrid.num_models)
    ]
    (out_dir / "grid.json").write_text(
        json.dumps({"models": rows, "fingerprint": fingerprint}, indent=2)
    )


def _train_split(
    model: Any,
    loss: Any,
    data_np: dict[str, np.ndarray],
    tgrid: TrainGrid,
    config: TrainConfig,
    key: jax.Array,
    workdir: str | Path | None,
    progress: bool,
    extend: bool,
    mesh: Any,
    t_start: float,
) -> TrainResult:
    """:func:`train_grid` over several processes: each trains its share, then all swap.

    Process p trains models k ≡ p (mod P) (with more processes than models, process p ≥ K
    trains a copy of model p mod K and drops it). Each share is an ordinary grid run whose
    keys come from its models' own seeds, so model k is the model the whole grid would train.
    """
    num_models, count, me = (
        tgrid.num_models,
        distributed.process_count(),
        distributed.process_index(),
    )
    owner = np.arange(num_models) % count
    owned = [np.nonzero(owner == p)[0] for p in range(count)]  # grid indices of each share
    mine = owned[me]
    if mine.size == 0:
        mine = np.array([me % num_models])
    sub_grid = {name: np.asarray(v)[mine] for name, v in tgrid.values.items()}
    out_dir = None if workdir is None else Path(workdir).absolute()
    sub = train_grid(
        model,
        loss,
        data_np,
        sub_grid,
        config,
        key,
        workdir=None if out_dir is None else out_dir / f"process-{me}-of-{count}",
        progress=progress,
        extend=extend,
        mesh=mesh,
        split_processes=False,
    )
    shares = distributed.all_gather_trees("train_grid", (sub.params, sub.opt_state, sub.history))

    def merged(part: int) -> Any:
        """Leaf-wise: the K models' entries of ``part`` (0 params, 1 opt_state) in grid order."""

        def leaf(*per_process: np.ndarray) -> np.ndarray:
            out = np.empty((num_models, *per_process[0].shape[1:]), per_process[0].dtype)
            for idx, values in zip(owned, per_process, strict=True):
                out[idx] = values[: idx.size]
            return out

        return jax.tree.map(leaf, *(share[part] for share in shares))

    params, opt_state = merged(0), merged(1)
    # Shares resumed from different checkpoints logged different steps in this call: the
    # history keeps the steps every share logged.
    steps = shares[0][2]["step"]
    for share in shares[1:]:
        steps = np.intersect1d(steps, share[2]["step"])
    history = {"step": np.asarray(steps, np.int64)}
    for name in shares[0][2]:
        if name == "step":
            continue
        cols = np.empty((steps.size, num_models), np.float64)
        for idx, share in zip(owned, shares, strict=True):
            rows = np.searchsorted(share[2]["step"], steps)
            cols[:, idx] = share[2][name][rows][:, : idx.size]
        history[name] = cols
    if out_dir is not None and distributed.is_coordinator():
        # The whole grid as the run's final checkpoint: a later run on any number of
        # processes (or one) loads it instead of training again.
        fingerprint = grid_fingerprint(model, loss, data_np, tgrid, config, key)
        ckpt = GridCheckpointer(out_dir / "checkpoints", fingerprint, config.max_to_keep)
        try:
            ckpt.save(
                config.steps,
                {"params": params, "opt_state": opt_state, "step": jnp.int32(config.steps)},
            )
        finally:
            ckpt.close()
        _write_grid_json(out_dir, tgrid, fingerprint)
        _merge_metrics(out_dir, owned)
    device = jax.local_devices()[0]
    return TrainResult(
        params=jax.device_put(params, device),
        opt_state=jax.device_put(opt_state, device),
        grid=dict(tgrid.values),
        history=history,
        step=config.steps,
        resumed_from=sub.resumed_from,
        workdir=out_dir,
        elapsed_s=time.perf_counter() - t_start,
    )


def _merge_metrics(out_dir: Path, owned: list[np.ndarray]) -> None:
    """``out_dir/metrics.csv`` from the shares' files (every step each share ever logged, its
    model numbers made the grid's; ``elapsed_s`` stays each process's own clock)."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for p, models in enumerate(owned):
        path = out_dir / f"process-{p}-of-{len(owned)}" / "metrics.csv"
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = header or list(reader.fieldnames or [])
            for row in reader:
                j = int(row["model"])
                if j < models.size:  # a share's stand-in copy (more processes than models)
                    rows.append({**row, "model": str(int(models[j]))})
    rows.sort(key=lambda r: (int(r["step"]), int(r["model"])))
    with open(out_dir / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header or [])
        writer.writeheader()
        writer.writerows(rows)
