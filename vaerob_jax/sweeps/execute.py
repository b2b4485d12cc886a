"""Run a grid through a :class:`~vaerob_jax.sweeps.ResultStore`: compute only what is not done.

:func:`run_grid` asks the store which cells are usable (verified files, the current models'
parameter digest, finite declared columns), computes the others (singly or in groups along
``batch_axes``), and commits each result as soon as it is computed, so an interruption loses
at most the group in flight. Progress goes to tqdm on a terminal, or to periodic lines with an
ETA elsewhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vaerob_jax.sweeps.checks import DigestSpec, NonFiniteResultError, digest_for
from vaerob_jax.sweeps.grid import Cell, GridSpec, same_value
from vaerob_jax.sweeps.progress import Progress, format_duration
from vaerob_jax.sweeps.store import CellRecomputeWarning, CellResult, ResultStore
from vaerob_jax.sweeps.tables import Row, as_rows

__all__ = ["format_duration", "run_grid"]


def _normalize(result: Any, cell: Cell, add_axis_columns: bool) -> CellResult:
    if isinstance(result, CellResult):
        rows, arrays = result
    elif (
        isinstance(result, tuple)
        and len(result) == 2
        and not isinstance(result[0], Mapping)
        and (result[1] is None or isinstance(result[1], Mapping))
    ):
        rows, arrays = result  # (rows, arrays); a tuple of two row dicts falls through
    else:
        rows, arrays = result, None
    if rows is None:
        raise ValueError(f"compute_fn returned no rows for cell {cell.key!r}")
    rows_ = as_rows(rows)
    if add_axis_columns:
        for r in rows_:
            for name, value in cell.items:
                if name not in r:
                    r[name] = value
                elif not same_value(r[name], value):
                    raise ValueError(
                        f"compute_fn returned a row with {name}={r[name]!r} for cell {cell.key!r}"
                    )
    return CellResult(rows_, None if arrays is None else dict(arrays))


def run_grid(
    spec: GridSpec,
    compute_fn: Callable[[Any], Any],
    store: ResultStore,
    *,
    batch_axes: Sequence[str] | None = None,
    progress: bool | str = True,
    log_every_s: float = 30.0,
    add_axis_columns: bool = True,
    params_digest: DigestSpec = None,
    finite: Sequence[str] = (),
    arrays_finite: bool | Sequence[str] = True,
    shard: tuple[int, int] | None = None,
) -> list[Row]:
    """Compute every unfinished cell of ``spec``, saving each as it finishes; return all rows.

    Finished cells (from an earlier, possibly interrupted run with the same config) are
    skipped, so rerunning after a crash loses at most the batch that was in flight. A stored
    cell is recomputed when its files are damaged (a :class:`CellRecomputeWarning` names the
    file), when it was computed from other model parameters than ``params_digest`` says, or
    when it violates ``finite`` (one warning each, listing the cells).

    Args:
      spec: the grid.
      compute_fn: without ``batch_axes``: ``compute_fn(cell) -> rows | (rows, arrays)``. With
        ``batch_axes``: ``compute_fn(cells) -> results``, where ``cells`` is the list of
        *pending* cells of one group (cells differing only along ``batch_axes``, e.g. all ε of
        one β for a program vmapped over ε) and ``results`` is a sequence aligned with
        ``cells`` or a mapping from cell key to result. Rows are dicts or a dict of columns.
      store: where results live; see :class:`ResultStore`.
      batch_axes: axes computed together (``()`` calls the batched form with single cells).
      progress: True/'auto' (tqdm on a terminal, else periodic lines with ETA on stderr),
        'tqdm', 'log', or False.
      log_every_s: minimum seconds between progress lines in 'log' mode.
      add_axis_columns: add the cell's axis values to rows lacking them, and check rows that
        carry them agree with the cell.
      params_digest: the :func:`~vaerob_jax.sweeps.params_digest` of the models each cell is
        computed from: one string for all cells, a mapping by cell key, or a function
        ``cell -> digest`` (e.g. the digest of the β model of a grid). Recorded with every
        saved cell; stored cells with another digest are recomputed. None: not checked.
      finite: columns that must be finite in every row (e.g. ``("delta_c",)``); a result
        violating it is not saved (NaN in unlisted columns, e.g. an undefined bound, is fine).
      arrays_finite: True: every float array of a result must be finite; a sequence: these
        arrays; False: no check.
      shard: ``(index, count)``: compute only the groups of cells ``i ≡ index (mod count)``
        (groups numbered in grid order over the whole grid, so a rerun deals them the same
        way), as process ``index`` of a ``count``-process run does
        (:mod:`vaerob_jax.sweeps.distributed`). None: every group.

    Returns:
      All rows of all cells, in grid order (as :meth:`ResultStore.all_rows`); with ``shard``,
      the rows of this share's cells only (the other shares' cells may still be in flight).

    Raises:
      NonFiniteResultError: some computed cells were non-finite (listed); the other cells of
        their group were saved first.
      ValueError: unknown batch axes, a batched result that does not cover its cells, or a
        bad ``params_digest``/``finite`` declaration.
    """
    finite = (finite,) if isinstance(finite, str) else tuple(finite)
    batched = batch_axes is not None
    groups = spec.batches(tuple(batch_axes or ())) if batched else [[c] for c in spec]
    if shard is not None:
        index, count = shard
        if not (isinstance(count, int) and count >= 1 and isinstance(index, int)):
            raise ValueError(f"shard must be (index, count) with count >= 1, got {shard!r}")
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} is outside 0..{count - 1}")
        groups = groups[index::count]
        spec_cells = [c for g in groups for c in g]
    else:
        spec_cells = list(spec)
    digests = {c.key: digest_for(c, params_digest) for c in spec}
    status = {
        c.key: store.status(c, params_digest=digests[c.key], finite=finite) for c in spec_cells
    }
    for reason, what in (
        ("stale", "were computed from other model parameters than this run's (params digest)"),
        ("nonfinite", f"hold non-finite values in {list(finite)}"),
    ):
        keys = [k for k, s in status.items() if s == reason]
        if keys:
            warnings.warn(
                f"{len(keys)} stored cells in {store.out_dir} {what}; recomputing them: "
                f"{keys[:5]}{' ...' if len(keys) > 5 else ''}",
                CellRecomputeWarning,
                stacklevel=2,
            )
    pending_groups = [[c for c in g if status[c.key] != "done"] for g in groups]
    n_pending = sum(len(g) for g in pending_groups)
    prog = Progress(
        len(spec_cells),
        done=len(spec_cells) - n_pending,
        desc="run_grid",
        unit="cells",
        mode=progress,
        min_interval_s=log_every_s,
        first_line=True,
    )
    try:
        for cells in pending_groups:
            if not cells:
                continue
            if not batched:
                results = [compute_fn(cells[0])]
            else:
                out = compute_fn(list(cells))
                if isinstance(out, Mapping):
                    missing = [c.key for c in cells if c.key not in out]
                    if missing:
                        raise ValueError(f"compute_fn returned no result for cells {missing}")
                    results = [out[c.key] for c in cells]
                else:
                    results = list(out)
                    if len(results) != len(cells):
                        raise ValueError(
                            f"compute_fn returned {len(results)} results for {len(cells)} cells "
                            f"{[c.key for c in cells]}"
                        )
            normalized = [_normalize(r, c, add_axis_columns) for r, c in zip(results, cells)]
            failed: list[NonFiniteResultError] = []
            for cell, res in zip(cells, normalized):
                try:
                    store.save(
                        cell,
                        res.rows,
                        res.arrays,
                        params_digest=digests[cell.key],
                        finite=finite,
                        arrays_finite=arrays_finite,
                    )
                except NonFiniteResultError as err:
                    failed.append(err)
            prog.advance(len(cells) - len(failed))
            if failed:
                raise NonFiniteResultError(
                    "\n".join(str(e) for e in failed) if len(failed) > 1 else str(failed[0])
                ) from failed[0]
    finally:
        prog.close()
    if shard is not None:  # every cell of the share is done here (a failure raised above)
        return [r for c in spec_cells for r in store.load(c, params_digest=digests[c.key]).rows]
    return store.all_rows(spec, params_digest=digests, finite=finite)
