"""The study runner: what every study repeats, in one place.

``run_study(study, config, out_dir)`` runs

    validate → check and lock the output folder → prepare (data, models; fails fast) →
    check the folder's stored config → train or load → resumable cells over the grid, tied
    to the models they came from → tables → figures → ``report.md`` (+ ``artefacts.json``,
    ``timings.json``)

with progress lines and timings, and a paper's study supplies only its pieces through the
:class:`Study` protocol: its config checks, its inputs, its training, its cell computation
(:class:`CellPlan`) and its outputs (tables and figures written through the :class:`StudyRun`
helpers, and report sections whose readings are computed from those tables).

Finished cells are stored one file each by :class:`~vaerob_jax.sweeps.ResultStore`, so an
interrupted run resumes where it stopped; a rerun with another config refuses to mix results
unless ``fresh`` (which removes the study's state folders first).

What is checked before anything is written: the config (:meth:`Study.validate`), the output
folder (a file, under a file, not writable: :class:`~vaerob_jax.sweeps.OutputDirError`), that
no other run holds it (:class:`~vaerob_jax.sweeps.OutputLockedError`; the lock is held for the
whole run), the data (:meth:`Study.prepare`) and the folder's stored cell config against this
one (:class:`~vaerob_jax.sweeps.FingerprintMismatchError`), so a run with other settings
(e.g. another number of training steps) is refused before it can train over the folder's
models. ``config.json`` is written only after those checks. Each cell records the digest of
the model parameters it came from (:attr:`CellPlan.params_digest`) and is recomputed when
the models differ; a cell whose declared columns are non-finite is never stored as done.

A Ctrl-C ends with :class:`RunInterrupted`, whose message says what the folder kept
(finished cells, the last checkpoint) and that the same command resumes.

In a multi-process run (:mod:`vaerob_jax.sweeps.distributed`) every process runs the same
steps on the same shared folder: process 0 holds the folder's lock, discards state for
``fresh``, opens the cell store and writes ``config.json`` before the others open it; training
splits the grid's models between the processes; each process computes its share of the cells
(``run_grid(shard=...)``); after a barrier process 0 alone reads every cell and writes the
tables, figures and report while the others wait at a last barrier. A process that dies stops
the others at their next barrier (once the coordination service misses its heartbeats); the
same command on every host then resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vaerob_jax import report
from vaerob_jax.sweeps import (
    GridSpec,
    ResultStore,
    check_output_dir,
    distributed,
    lock_output,
    run_grid,
    write_csv,
    write_json,
)
from vaerob_jax.sweeps.checks import DigestSpec

__all__ = ["CellPlan", "RunInterrupted", "Study", "StudyRun", "model_cells", "run_study"]


class RunInterrupted(KeyboardInterrupt):
    """A study run stopped by Ctrl-C; the message says what was kept and how to resume."""


@dataclasses.dataclass
class StudyRun:
    """What a study's steps share: the output folder, logging, timings and written artefacts.

    Attributes:
      out: the output folder.
      fresh: whether earlier results of another config are discarded.
      progress: whether to show progress bars / periodic lines with ETA.
      log: where one-line status messages go.
      timings: seconds per phase (``<phase>_s``), written to ``timings.json``.
      paths: artefact name -> path of everything written (``artefacts.json``).
    """

    out: Path
    fresh: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def fig_dir(self) -> Path:
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Records the wall time of the ``with`` block as ``timings[phase + '_s']``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[f"{phase}_s"] = self.timings.get(f"{phase}_s", 0.0) + (
                time.perf_counter() - t0
            )

    def table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
    ) -> Path:
        """Writes ``<out>/<name>.csv`` (tidy rows, given column order first) and records it."""
        path = self.out / f"{name}.csv"
        write_csv(path, list(rows), columns)
        self.paths[name] = path
        return path

    def figure(
        self, name: str, fn: Callable[..., Any], data: Any, filename: str, **kw: Any
    ) -> Path | None:
        """Draws ``fn(data, <out>/figures/<filename>, **kw)`` and records it as ``fig_<name>``.

        A figure that cannot be drawn from the data (the figure function raises ValueError,
        e.g. fewer than two defined points on a tiny run) is skipped with a log line naming
        why, so a report never points at a missing file.
        """
        path = self.fig_dir / filename
        try:
            fn(data, path, **kw)
        except ValueError as err:
            self.log(f"figure {filename} skipped: {err}")
            return None
        self.paths[f"fig_{name}"] = path
        return path


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """A study's grid of resumable cells.

    Attributes:
      spec: the grid (axis name -> values).
      compute: ``compute(cell) -> rows | (rows, arrays)``, or with ``batch_axes``
        ``compute(cells) -> results`` for the pending cells of one group (see
        :func:`vaerob_jax.sweeps.run_grid`).
      batch_axes: axes computed together in one call (e.g. all ε of one β), or None.
      params_digest: the digest of the parameters each cell is computed from (one string, a
        mapping by cell key or a function of the cell, see :func:`vaerob_jax.sweeps.run_grid`);
        stored cells of other parameters (retrained, restored from another checkpoint) are
        recomputed. None: not checked.
      finite: row columns that must be finite for a cell to be stored as done.
    """

    spec: GridSpec
    compute: Callable[[Any], Any]
    batch_axes: tuple[str, ...] | None = None
    params_digest: DigestSpec = None
    finite: tuple[str, ...] = ()


def model_cells(
    groups: Mapping[str, Sequence[str]],
    digests: Mapping[str, str],
    evaluate: Callable[[list[str]], Mapping[str, Any]],
    finite: tuple[str, ...] = (),
) -> CellPlan:
    """One resumable cell per model (grid axis ``model_id``), computed a group at a time.

    Args:
      groups: group -> its model ids (models that are evaluated together, e.g. one params
        stack); every model in exactly one group.
      digests: model id -> digest of the parameters its cell comes from.
      evaluate: ``evaluate(model_ids)`` for the pending models of one group -> model id ->
        ``rows`` or ``(rows, arrays)``.
      finite: row columns that must be finite for a cell to be stored as done.
    """
    ids = [m for members in groups.values() for m in members]

    def compute(cells: list[Any]) -> list[Any]:
        wanted = [c["model_id"] for c in cells]
        results: dict[str, Any] = {}
        for members in groups.values():
            todo = [m for m in members if m in wanted]
            if todo:
                results.update(evaluate(todo))
        return [results[m] for m in wanted]

    return CellPlan(
        GridSpec({"model_id": ids}),
        compute,
        batch_axes=("model_id",),
        params_digest=lambda cell: digests[cell["model_id"]],
        finite=finite,
    )


class Study(Protocol):
    """What a paper's study supplies to :func:`run_study`.

    Attributes:
      name: command name and log prefix ('subgroups').
      title: the report's title.
      state_folders: folders under ``out`` holding computed state (checkpoints, cells) that
        ``fresh`` removes.
    """

    name: str
    title: str
    state_folders: tuple[str, ...]

    def validate(self, config: Any) -> None:
        """Cheap checks; ValueError naming the offending field. Runs before anything else."""

    def normalize(self, config: Any) -> Any:
        """The config with grid values as the result store keys them (e.g. canonical floats)."""

    def store_config(self, config: Any) -> Mapping[str, Any]:
        """What changes a cell's result (its fingerprint ties the cell store to it), from the
        config alone, so a run of other settings is refused before it trains. Leave out grid
        axes that may grow and settings used only after the cells."""

    def prepare(self, config: Any, run: StudyRun) -> Any:
        """Loads data and builds models; fails fast on bad data (before any training)."""

    def train(self, config: Any, inputs: Any, run: StudyRun) -> Any:
        """Trains (or loads from ``run.out``) what the cells need."""

    def plan(self, config: Any, inputs: Any, trained: Any, run: StudyRun) -> CellPlan:
        """The grid of cells and their computation."""

    def outputs(
        self,
        config: Any,
        inputs: Any,
        trained: Any,
        rows: list[dict[str, Any]],
        store: ResultStore,
        run: StudyRun,
    ) -> list[dict[str, Any]]:
        """Writes tables and figures (through ``run``) and returns the report's sections."""


def run_study(
    study: Study,
    config: Any,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs ``study`` with ``config`` into ``out_dir``; returns the artefacts it wrote.

    Args:
      study: the paper's pieces (:class:`Study`).
      config: its config (a frozen dataclass with ``to_dict`` and ``fingerprint``).
      out_dir: output folder; an existing one of the same config is resumed.
      fresh: discard what the folder holds for another config (the study's state folders).
      progress: progress bars / periodic lines with ETA.
      log: where one-line status messages go (default: printed with the study's name).

    Returns:
      Artefact name -> path (tables, ``fig_*`` figures, 'report', 'timings').
    """
    if log is None:

        def log(msg: str) -> None:
            print(f"[{study.name}] {msg}", flush=True)

    t_start = time.perf_counter()
    study.validate(config)  # before normalising, so errors name the config's own fields
    config = study.normalize(config)
    out = check_output_dir(out_dir)
    count, index = distributed.process_count(), distributed.process_index()
    coordinator = index == 0
    if count > 1:
        plain_log = log

        def log(msg: str) -> None:
            plain_log(f"(process {index}/{count}) {msg}")

    run = StudyRun(out, fresh=fresh, progress=progress, log=log)
    store: ResultStore | None = None
    spec: GridSpec | None = None
    command = f"vaerob {study.name} (config {config.fingerprint()})"
    try:
        with lock_output(distributed.lock_folder(out), command=command):
            with run.timed("prepare"):
                inputs = study.prepare(config, run)
            if fresh and coordinator:
                for folder in study.state_folders:
                    shutil.rmtree(run.out / folder, ignore_errors=True)
            store_cfg = study.store_config(config)
            # Refuses a folder of other settings before training can touch its models.
            opened = None
            if coordinator:
                opened = ResultStore(run.out / "cells", store_cfg, fresh=fresh)
                write_json(
                    run.out / "config.json",
                    {**config.to_dict(), "fingerprint": config.fingerprint()},
                )
            distributed.barrier(f"{study.name}/store")
            store = opened or ResultStore(run.out / "cells", store_cfg)
            with run.timed("train"):
                trained = study.train(config, inputs, run)
            plan = study.plan(config, inputs, trained, run)
            spec = plan.spec
            if coordinator:
                store = ResultStore(run.out / "cells", store_cfg, spec=spec)  # records the grid
            distributed.barrier(f"{study.name}/grid")
            with run.timed("cells"):
                rows = run_grid(
                    spec,
                    plan.compute,
                    store,
                    batch_axes=plan.batch_axes,
                    progress=progress,
                    params_digest=plan.params_digest,
                    finite=plan.finite,
                    shard=(index, count) if count > 1 else None,
                )
            if count > 1:
                log(f"{len(rows)} rows of this process's cells ready; waiting for the others")
                distributed.barrier(f"{study.name}/cells")
                if not coordinator:
                    distributed.barrier(f"{study.name}/outputs")
                    log("the coordinator wrote the tables and report")
                    return _artefacts_of(run.out)
                rows = store.all_rows(
                    spec, strict=True, params_digest=plan.params_digest, finite=plan.finite
                )
            log(f"{len(spec)} cells ready ({run.timings['cells_s']:.0f}s)")

            with run.timed("outputs"):
                sections = study.outputs(config, inputs, trained, rows, store, run)
                sections = [{k: v for k, v in s.items() if v is not None} for s in sections]
                run.paths["report"] = report.write_report(
                    run.out / "report.md", study.title, sections
                )
            (run.out / "artefacts.json").write_text(
                json.dumps({k: str(v) for k, v in run.paths.items()}, indent=2, sort_keys=True)
            )
            run.timings["total_s"] = time.perf_counter() - t_start
            write_json(run.out / "timings.json", run.timings)
            run.paths["timings"] = run.out / "timings.json"
            distributed.barrier(f"{study.name}/outputs")
    except KeyboardInterrupt as err:
        if isinstance(err, RunInterrupted):
            raise
        raise RunInterrupted(interrupted_message(run.out, store, spec)) from None
    log(f"done in {run.timings['total_s']:.0f}s; report: {run.paths['report']}")
    return dict(run.paths)


def _artefacts_of(out: Path) -> dict[str, Path]:
    """The artefacts the coordinator of a multi-process run wrote (its ``artefacts.json``)."""
    names = json.loads((out / "artefacts.json").read_text())
    return {k: Path(v) for k, v in names.items()} | {"timings": out / "timings.json"}


def interrupted_message(out: Path, store: ResultStore | None, spec: GridSpec | None) -> str:
    """One line: what an interrupted study run kept in ``out``, and how to resume."""
    from vaerob_jax.train import checkpoint_steps

    kept = []
    if store is not None and spec is not None:
        kept.append(f"{sum(store.done(c) for c in spec)} of {len(spec)} finished cells")
    elif store is not None:
        kept.append(f"{len(list(store.cells_dir.glob('*.json')))} finished cells")
    steps = checkpoint_steps(out / "train" / "checkpoints")
    if steps:
        kept.append(f"training checkpoints up to step {steps[-1]}")
    else:  # studies training several grids keep one checkpoint folder per grid
        folders = [f for f in sorted((out / "train").glob("**/checkpoints")) if checkpoint_steps(f)]
        if folders:
            latest = ", ".join(
                f"{f.parent.relative_to(out / 'train')} step {checkpoint_steps(f)[-1]}"
                for f in folders
            )
            kept.append(f"training checkpoints ({latest})")
    what = " and ".join(kept) if kept else "nothing computed yet"
    return f"interrupted: {out} keeps {what}; rerun the same command to resume from there"
