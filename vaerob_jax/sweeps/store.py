"""Resumable sweep results: one atomically written file per finished grid cell.

Layout of ``out_dir``::

    run.json            fingerprint of the config that produced the results, the grid, times
    cells/<name>.json   the cell's key and tidy rows  (written last: the commit record)
    cells/<name>.npz    the cell's arrays, when any    (written first)

Every file is written to a temp file in the same folder and moved into place with
``os.replace``, so a crash mid-write leaves at worst a stray ``.*.tmp`` file, which is never
read; a cell counts as done only when its JSON record exists, parses and names the cell. A
store opened with a different config fingerprint refuses to mix results (``fresh=True``
discards the old ones), which is how an interrupted sweep resumes safely: rerun it with the
same config and only unfinished cells are computed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vaerob_jax.sweeps.grid import Cell, GridSpec, format_value
from vaerob_jax.sweeps.tables import (
    Row,
    as_rows,
    atomic_write_bytes,
    atomic_write_with,
    dumps_json,
    read_json,
)

_FORMAT_VERSION = 1


class FingerprintMismatchError(ValueError):
    """The output folder holds results of a different configuration."""


class CellResult(NamedTuple):
    """What one grid cell produced: tidy rows plus optional named arrays."""

    rows: list[Row]
    arrays: dict[str, np.ndarray] | None = None


def config_to_jsonable(config: Any) -> Any:
    """A JSON-able view of a config (dataclass, mapping, object with ``to_dict``, or None)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.loads(dumps_json(dataclasses.asdict(config), indent=None))
    if hasattr(config, "to_dict"):
        return json.loads(dumps_json(config.to_dict(), indent=None))
    if isinstance(config, Mapping):
        return json.loads(dumps_json(dict(config), indent=None))
    raise ValueError(
        f"config must be a dataclass, a mapping or have to_dict(), got {type(config).__name__}"
    )


def fingerprint_of(config: Any) -> str:
    """SHA-256 (16 hex digits) of the config's canonical JSON (sorted keys)."""
    blob = json.dumps(config_to_jsonable(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _safe_name(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9.=_-]+", "__", key)[:80]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _key_of(cell: Cell | str) -> str:
    if isinstance(cell, Cell):
        return cell.key
    if isinstance(cell, str):
        return cell
    raise ValueError(f"expected a Cell or a cell key string, got {type(cell).__name__}")


class ResultStore:
    """Per-cell persistent results under ``out_dir``, tied to one config fingerprint.

    Args:
      out_dir: folder (created if needed).
      config: the run's configuration (dataclass, mapping or object with ``to_dict``); its
        fingerprint is recorded in ``run.json``. Leave out the grid axes you may extend later
        (e.g. adding an ε) if finished cells should stay valid when they change.
      spec: the grid, recorded in ``run.json`` and used by :meth:`all_rows` for ordering.
      fresh: discard existing results in ``out_dir`` (cells and ``run.json``) first.

    Raises:
      FingerprintMismatchError: ``out_dir`` holds results of a different config and
        ``fresh`` is False.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        config: Any = None,
        *,
        spec: GridSpec | None = None,
        fresh: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.cells_dir = self.out_dir / "cells"
        self.run_path = self.out_dir / "run.json"
        self.config = config_to_jsonable(config)
        self.fingerprint = fingerprint_of(config)
        self.spec = spec
        if fresh:
            self.clear()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cells_dir.mkdir(exist_ok=True)
        self._check_or_write_run()

    # -- run.json ------------------------------------------------------------------------------

    def _check_or_write_run(self) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if self.run_path.exists():
            try:
                run = read_json(self.run_path)
            except (OSError, json.JSONDecodeError) as e:
                raise FingerprintMismatchError(
                    f"{self.run_path} is unreadable ({e}); pass fresh=True to start over"
                ) from e
            old = run.get("fingerprint")
            if old != self.fingerprint:
                old_cfg = run.get("config", {})
                diff = sorted(
                    k
                    for k in set(old_cfg) | set(self.config)
                    if old_cfg.get(k, "<absent>") != self.config.get(k, "<absent>")
                )
                raise FingerprintMismatchError(
                    f"{self.out_dir} holds results of config {old}, this run has config "
                    f"{self.fingerprint} (differing keys: {diff or 'unknown'}). Use another "
                    "output folder, or pass fresh=True to discard the old results."
                )
            run["updated"] = now
        else:
            run = {
                "format": _FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "config": self.config,
                "created": now,
            }
        if self.spec is not None:
            run["grid"] = self.spec.to_dict()
        atomic_write_bytes(self.run_path, (dumps_json(run) + "\n").encode())

    def clear(self) -> None:
        """Remove this store's results (the ``cells`` folder and ``run.json``) only."""
        if self.cells_dir.exists():
            shutil.rmtree(self.cells_dir)
        if self.run_path.exists():
            self.run_path.unlink()

    # -- cells ---------------------------------------------------------------------------------

    def _paths(self, cell: Cell | str) -> tuple[str, Path, Path]:
        key = _key_of(cell)
        name = _safe_name(key)
        return key, self.cells_dir / f"{name}.json", self.cells_dir / f"{name}.npz"

    def _record(self, cell: Cell | str) -> dict[str, Any] | None:
        key, jpath, _ = self._paths(cell)
        if not jpath.exists():
            return None
        try:
            rec = read_json(jpath)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"ignoring unreadable cell record {jpath}", stacklevel=3)
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or "rows" not in rec:
            warnings.warn(f"ignoring cell record {jpath} that does not name {key!r}", stacklevel=3)
            return None
        return rec

    def done(self, cell: Cell | str) -> bool:
        """True when the cell's result was committed completely."""
        return self._record(cell) is not None

    def save(
        self,
        cell: Cell | str,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        arrays: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist one cell atomically: arrays (``.npz``) first, then the JSON record.

        Args:
          cell: the cell or its key.
          rows: the cell's tidy rows (list of dicts, or dict of columns).
          arrays: optional named arrays (e.g. perturbations), stored without pickling.

        Raises:
          ValueError: rows that are not mappings, or arrays of object dtype.
        """
        key, jpath, npath = self._paths(cell)
        rows_ = as_rows(rows)
        names: list[str] = []
        if arrays:
            arrs = {str(k): np.asarray(v) for k, v in arrays.items()}
            bad = [k for k, v in arrs.items() if v.dtype == object]
            if bad:
                raise ValueError(f"arrays {bad} have object dtype; store numeric arrays only")

            def _write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrs)  # type: ignore[arg-type]

            atomic_write_with(npath, _write)
            names = sorted(arrs)
        record = {"key": key, "rows": rows_, "arrays": names, "fingerprint": self.fingerprint}
        atomic_write_bytes(jpath, (dumps_json(record, indent=None) + "\n").encode())
        if not names and npath.exists():
            npath.unlink()  # stale arrays of an earlier save of this cell

    def load(self, cell: Cell | str) -> CellResult:
        """The saved rows and arrays of a finished cell.

        Raises:
          KeyError: the cell is not done.
        """
        rec = self._record(cell)
        if rec is None:
            raise KeyError(f"cell {_key_of(cell)!r} has no finished result in {self.out_dir}")
        arrays = None
        if rec.get("arrays"):
            _, _, npath = self._paths(cell)
            with np.load(npath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in rec["arrays"]}
        return CellResult(list(rec["rows"]), arrays)

    def pending(self, spec: GridSpec | None = None) -> list[Cell]:
        """Cells of the grid without a finished result, in grid order."""
        return [c for c in self._spec(spec) if not self.done(c)]

    def _spec(self, spec: GridSpec | None) -> GridSpec:
        spec = spec or self.spec
        if spec is None:
            raise ValueError("no grid spec: pass spec= here or to ResultStore(...)")
        return spec

    def all_rows(self, spec: GridSpec | None = None, *, strict: bool = False) -> list[Row]:
        """Concatenated rows of all finished cells, in grid order.

        Args:
          spec: grid giving the order (default: the store's spec).
          strict: raise if some cell is not finished (default: skip it).

        Raises:
          ValueError: ``strict`` and unfinished cells remain (their keys are listed).
        """
        spec = self._spec(spec)
        if strict:
            missing = [c.key for c in spec if not self.done(c)]
            if missing:
                raise ValueError(f"{len(missing)} cells unfinished: {missing[:5]}...")
        rows: list[Row] = []
        for c in spec:
            rec = self._record(c)
            if rec is not None:
                rows.extend(rec["rows"])
        return rows


# ---------------------------------------------------------------------------------------------
# Execution.


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
                elif not _same_value(r[name], value):
                    raise ValueError(
                        f"compute_fn returned a row with {name}={r[name]!r} for cell {cell.key!r}"
                    )
    return CellResult(rows_, None if arrays is None else dict(arrays))


def _same_value(a: Any, b: Any) -> bool:
    """Equal as grid values; floats to float32 precision (rows often come from float32 math)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    try:
        return format_value(a) == format_value(b)
    except ValueError:
        return str(a) == str(b)


def format_duration(seconds: float) -> str:
    """``'1h02m03s'``, ``'4m05s'`` or ``'12s'``; ``'?'`` when unknown."""
    if not np.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


class _Progress:
    """tqdm on a terminal; otherwise periodic lines with the ETA (e.g. in CI logs)."""

    def __init__(self, total: int, resumed: int, mode: bool | str, log_every_s: float):
        self.total, self.resumed, self.finished = total, resumed, resumed
        self.start = time.monotonic()
        self.last_line = -np.inf
        self.log_every_s = log_every_s
        if mode is True or mode == "auto":
            mode = "tqdm" if sys.stderr.isatty() else "log"
        self.mode = mode or "off"
        if self.mode not in ("tqdm", "log", "off"):
            raise ValueError(f"progress must be bool, 'auto', 'tqdm' or 'log', got {mode!r}")
        self.bar = None
        if self.mode == "tqdm":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=resumed, desc="grid cells", unit="cell")
        elif self.mode == "log":
            self._line(force=True)

    def eta(self) -> float:
        computed = self.finished - self.resumed
        remaining = self.total - self.finished
        if remaining == 0:
            return 0.0
        if computed == 0:
            return float("nan")
        return (time.monotonic() - self.start) / computed * remaining

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_line < self.log_every_s:
            return
        self.last_line = now
        print(
            f"[run_grid] {self.finished}/{self.total} cells done ({self.resumed} resumed), "
            f"elapsed {format_duration(now - self.start)}, ETA {format_duration(self.eta())}",
            file=sys.stderr,
            flush=True,
        )

    def update(self, n: int) -> None:
        self.finished += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log":
            self._line(force=self.finished == self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_grid(
    spec: GridSpec,
    compute_fn: Callable[[Any], Any],
    store: ResultStore,
    *,
    batch_axes: Sequence[str] | None = None,
    progress: bool | str = True,
    log_every_s: float = 30.0,
    add_axis_columns: bool = True,
) -> list[Row]:
    """Compute every unfinished cell of ``spec``, saving each as it finishes; return all rows.

    Finished cells (from an earlier, possibly interrupted run with the same config) are
    skipped, so rerunning after a crash loses at most the batch that was in flight.

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

    Returns:
      All rows of all cells, in grid order (as :meth:`ResultStore.all_rows`).

    Raises:
      ValueError: unknown batch axes, or a batched result that does not cover its cells.
    """
    batched = batch_axes is not None
    groups = spec.batches(tuple(batch_axes or ())) if batched else [[c] for c in spec]
    pending_groups = [[c for c in g if not store.done(c)] for g in groups]
    n_pending = sum(len(g) for g in pending_groups)
    prog = _Progress(len(spec), len(spec) - n_pending, progress, log_every_s)
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
            for cell, res in zip(cells, normalized):
                store.save(cell, res.rows, res.arrays)
            prog.update(len(cells))
    finally:
        prog.close()
    return store.all_rows(spec)
