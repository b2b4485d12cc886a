"""Resumable sweep results: one checksummed, atomically written file pair per finished cell.

Layout of ``out_dir``::

    run.json            fingerprint of the config that produced the results, the grid, times
    cells/<name>.npz    the cell's arrays, when any    (written first)
    cells/<name>.json   the cell's commit record: key, tidy rows, array names, checksums,
                        the digest of the model parameters it came from  (written last)

Result store guarantees:

* **Atomic, ordered writes.** Every file goes to a temp file in the same folder, is fsynced
  and moved into place with ``os.replace``; the arrays are in place before the record that
  commits them. A crash leaves at worst a stray ``.*.tmp`` file, which is never read.
* **Verified on every read.** The record holds the SHA-256 of the canonical JSON of its rows
  and of the ``.npz`` bytes. :meth:`ResultStore.done`, :meth:`~ResultStore.load` and
  :meth:`~ResultStore.all_rows` verify them; a truncated, damaged, missing or unreadable file
  makes the cell *not done*, with a :class:`CellRecomputeWarning` naming the file, so the
  next :func:`run_grid` recomputes it (never a ``BadZipFile`` traceback). Records of the
  previous format (no checksums) are accepted when their files open completely.
* **Tied to the models.** ``save(..., params_digest=d)`` records the
  :func:`~vaerob_jax.sweeps.params_digest` of the parameters a cell was computed from;
  asking ``done``/``pending``/``run_grid`` with a digest treats a cell stored with another
  (or no) digest as not done, so retrained or restored-but-different models never reuse old
  cells. Without a digest nothing is checked (the behaviour before digests existed).
* **Never a non-finite result as done.** ``save``/``run_grid`` take ``finite=(column, ...)``:
  a row whose listed column is NaN, ±inf or None is refused with
  :class:`NonFiniteResultError` naming the cell, the column and the count, before anything
  is written (NaN in other columns, e.g. an undefined bound, stays allowed); with
  ``arrays_finite=True`` (the default) every float array must be finite too. Asking
  ``done``/``run_grid`` with ``finite=`` also recomputes stored cells that violate it.
* **One config per folder.** A store opened with a different config fingerprint refuses to
  mix results (:class:`FingerprintMismatchError`; ``fresh=True`` discards the old ones), which
  is how an interrupted sweep resumes safely: rerun it with the same config and only
  unfinished cells are computed.

Concurrent writers are not coordinated here: hold :func:`vaerob_jax.sweeps.lock_output` on the
output folder for the whole run.

Why one file of ~510 lines: the write order, the checksums, the verification on every read
and the recovery of damaged cells are one protocol whose invariants each part relies on;
split, each half would have to restate the other's guarantees.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vaerob_jax.sweeps.checks import DigestSpec, NonFiniteResultError, check_finite, digest_for
from vaerob_jax.sweeps.digest import bytes_digest
from vaerob_jax.sweeps.grid import Cell, GridSpec
from vaerob_jax.sweeps.tables import (
    Row,
    as_rows,
    atomic_write_bytes,
    canonical_json,
    dumps_json,
    read_json,
)

_FORMAT_VERSION = 1  # run.json
_CELL_FORMAT = 2  # cell records: 1 = no checksums/digest (before issue 9), 2 = with them


class FingerprintMismatchError(ValueError):
    """The output folder holds results of a different configuration."""


class CellRecomputeWarning(UserWarning):
    """A stored cell is not used (damaged file, other model parameters, non-finite values)."""


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


class _Checked(NamedTuple):
    record: dict[str, Any] | None
    problem: str | None  # why a present record is unusable (damage), None when fine/missing


class ResultStore:
    """Per-cell persistent results under ``out_dir``, tied to one config fingerprint.

    See the module docstring for what the store guarantees.

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
        self._checked: dict[str, tuple[tuple[Any, ...], _Checked]] = {}
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
                if not isinstance(run, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise FingerprintMismatchError(
                    f"{self.run_path} is damaged ({e}), so it cannot tell which config the "
                    f"results in {self.out_dir} belong to; use another output folder, or "
                    "pass fresh=True (--fresh on the command line) to discard them"
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
                    "output folder, or pass fresh=True (--fresh on the command line) to "
                    "discard the old results."
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
        self._checked.clear()

    # -- verification --------------------------------------------------------------------------

    def _paths(self, cell: Cell | str) -> tuple[str, Path, Path]:
        key = _key_of(cell)
        name = _safe_name(key)
        return key, self.cells_dir / f"{name}.json", self.cells_dir / f"{name}.npz"

    def _warn(self, path: Path, key: str, what: str) -> None:
        warnings.warn(
            f"{path}: {what}; cell {key!r} counts as not done and the next run recomputes it",
            CellRecomputeWarning,
            stacklevel=4,
        )

    def _check_files(self, key: str, jpath: Path, npath: Path) -> _Checked:
        """Read and verify a record and its arrays (no warnings; see :meth:`_verified`)."""
        try:
            rec = json.loads(jpath.read_bytes())
        except FileNotFoundError:
            return _Checked(None, None)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return _Checked(None, f"unreadable cell record ({type(e).__name__}: {e})")
        if not isinstance(rec, dict) or rec.get("key") != key:
            return _Checked(None, f"cell record that does not name {key!r}")
        rows, names = rec.get("rows"), rec.get("arrays") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return _Checked(None, "cell record without a list of rows")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return _Checked(None, "cell record with a malformed list of arrays")
        sums = rec.get("checksums") if rec.get("format", 1) >= 2 else None
        if rec.get("format", 1) >= 2:
            if not isinstance(sums, dict) or not isinstance(sums.get("rows"), str):
                return _Checked(None, "cell record without its checksums")
            if bytes_digest(canonical_json(rows).encode()) != sums["rows"]:
                return _Checked(None, "cell record whose rows do not match their checksum")
        if names:
            problem = self._check_arrays(npath, names, None if sums is None else sums.get("npz"))
            if problem:
                return _Checked(None, problem)
        return _Checked(rec, None)

    @staticmethod
    def _check_arrays(npath: Path, names: list[str], checksum: str | None) -> str | None:
        try:
            data = npath.read_bytes()
        except FileNotFoundError:
            return f"arrays file {npath.name} of this record is missing"
        except OSError as e:
            return f"arrays file {npath.name} is unreadable ({e})"
        if checksum is not None:
            if bytes_digest(data) != checksum:
                return (
                    f"arrays file {npath.name} does not match its checksum (truncated or damaged)"
                )
            return None
        try:  # a format-1 record: the file must at least open completely
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                for n in names:
                    z[n]
        except Exception as e:
            return f"arrays file {npath.name} is unreadable ({type(e).__name__}: {e})"
        return None

    def _verified(self, cell: Cell | str) -> dict[str, Any] | None:
        """The cell's verified record, or None (missing, or damaged: then warn naming the file).

        Verification is cached per file state (inode, size, mtime), so repeated ``done``/
        ``pending``/``all_rows`` calls hash each file once.
        """
        key, jpath, npath = self._paths(cell)
        sig = tuple(_stat_sig(p) for p in (jpath, npath))
        cached = self._checked.get(key)
        if cached is not None and cached[0] == sig:
            checked = cached[1]
        else:
            checked = self._check_files(key, jpath, npath)
            self._checked[key] = (sig, checked)
        if checked.problem is not None:
            bad = npath if checked.problem.startswith("arrays file") else jpath
            self._warn(bad, key, checked.problem)
        return checked.record

    # -- cells ---------------------------------------------------------------------------------

    def status(
        self, cell: Cell | str, *, params_digest: str | None = None, finite: Sequence[str] = ()
    ) -> str:
        """Why a cell is or is not done.

        Args:
          cell: the cell or its key.
          params_digest: the digest of the parameters this run would compute the cell from;
            None: not checked.
          finite: columns the stored rows must hold finite numbers in (empty: not checked).

        Returns:
          ``'done'``, ``'missing'`` (never committed), ``'damaged'`` (a file is unreadable,
          truncated or fails its checksum; a warning names it), ``'stale'`` (computed from
          other model parameters, or stored without a digest) or ``'nonfinite'``.
        """
        finite = (finite,) if isinstance(finite, str) else tuple(finite)
        rec = self._verified(cell)
        if rec is None:
            key, jpath, _ = self._paths(cell)
            checked = self._checked.get(key)
            return "damaged" if checked is not None and checked[1].problem else "missing"
        if params_digest is not None and rec.get("params_digest") != params_digest:
            return "stale"
        if finite:
            try:
                check_finite(rec["key"], rec["rows"], None, finite, arrays_finite=False)
            except (NonFiniteResultError, ValueError):
                return "nonfinite"
        return "done"

    def done(
        self, cell: Cell | str, *, params_digest: str | None = None, finite: Sequence[str] = ()
    ) -> bool:
        """True when the cell's result was committed completely and verifies (see
        :meth:`status` for the arguments)."""
        return self.status(cell, params_digest=params_digest, finite=finite) == "done"

    def save(
        self,
        cell: Cell | str,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        arrays: Mapping[str, Any] | None = None,
        *,
        params_digest: str | None = None,
        finite: Sequence[str] = (),
        arrays_finite: bool | Sequence[str] = True,
    ) -> None:
        """Persist one cell atomically: arrays (``.npz``) first, then the JSON commit record.

        Args:
          cell: the cell or its key.
          rows: the cell's tidy rows (list of dicts, or dict of columns).
          arrays: optional named arrays (e.g. perturbations), stored without pickling.
          params_digest: :func:`~vaerob_jax.sweeps.params_digest` of the model parameters
            the cell was computed from (recorded; checked by ``done(params_digest=...)``).
          finite: columns that must be finite in every row (see :func:`check_finite`).
          arrays_finite: which float arrays must be finite (True: all; False: none).

        Raises:
          NonFiniteResultError: the result holds non-finite values where it must not;
            nothing is written.
          ValueError: rows that are not mappings, arrays of object dtype, an empty digest, or
            a bad ``finite`` declaration.
        """
        key, jpath, npath = self._paths(cell)
        rows_ = as_rows(rows)
        arrs = {str(k): np.asarray(v) for k, v in (arrays or {}).items()}
        bad = [k for k, v in arrs.items() if v.dtype == object]
        if bad:
            raise ValueError(f"arrays {bad} have object dtype; store numeric arrays only")
        if params_digest is not None and (not isinstance(params_digest, str) or not params_digest):
            raise ValueError(f"params_digest must be a non-empty str, got {params_digest!r}")
        check_finite(key, rows_, arrs, finite, arrays_finite)
        rows_text = canonical_json(rows_)
        rows_json = json.loads(rows_text)
        checksums: dict[str, str | None] = {
            "rows": bytes_digest(canonical_json(rows_json).encode()),
            "npz": None,
        }
        if arrs:
            buf = io.BytesIO()
            np.savez(buf, **arrs)  # type: ignore[arg-type]
            data = buf.getvalue()
            checksums["npz"] = bytes_digest(data)
            atomic_write_bytes(npath, data)
        record = {
            "format": _CELL_FORMAT,
            "key": key,
            "rows": rows_json,
            "arrays": sorted(arrs),
            "fingerprint": self.fingerprint,
            "params_digest": params_digest,
            "checksums": checksums,
        }
        self._checked.pop(key, None)
        atomic_write_bytes(jpath, (dumps_json(record, indent=None) + "\n").encode())
        if not arrs and npath.exists():
            npath.unlink()  # stale arrays of an earlier save of this cell

    def load(self, cell: Cell | str, *, params_digest: str | None = None) -> CellResult:
        """The saved rows and arrays of a finished cell, verified against their checksums.

        Raises:
          KeyError: the cell is not done (missing, damaged: a warning names the file, or,
            with ``params_digest``, computed from other model parameters).
        """
        key, _, npath = self._paths(cell)
        rec = self._verified(cell)
        if rec is None:
            raise KeyError(f"cell {key!r} has no finished result in {self.out_dir}")
        if params_digest is not None and rec.get("params_digest") != params_digest:
            raise KeyError(
                f"cell {key!r} in {self.out_dir} was computed from other model parameters "
                f"(digest {rec.get('params_digest')!r}, these models: {params_digest!r})"
            )
        arrays = None
        if rec.get("arrays"):
            data = npath.read_bytes()
            sums = rec.get("checksums") or {}
            if sums.get("npz") is not None and bytes_digest(data) != sums["npz"]:
                self._checked.pop(key, None)
                self._warn(npath, key, "arrays file changed and no longer matches its checksum")
                raise KeyError(f"cell {key!r} has no finished result in {self.out_dir}")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in rec["arrays"]}
        return CellResult(list(rec["rows"]), arrays)

    def pending(
        self,
        spec: GridSpec | None = None,
        *,
        params_digest: DigestSpec = None,
        finite: Sequence[str] = (),
    ) -> list[Cell]:
        """Cells of the grid without a usable result, in grid order (see :meth:`status`).

        ``params_digest``: one digest for all cells, a mapping by cell key, or a function
        ``cell -> digest | None``.
        """
        return [
            c
            for c in self._spec(spec)
            if not self.done(c, params_digest=digest_for(c, params_digest), finite=finite)
        ]

    def _spec(self, spec: GridSpec | None) -> GridSpec:
        spec = spec or self.spec
        if spec is None:
            raise ValueError("no grid spec: pass spec= here or to ResultStore(...)")
        return spec

    def all_rows(
        self,
        spec: GridSpec | None = None,
        *,
        strict: bool = False,
        params_digest: DigestSpec = None,
        finite: Sequence[str] = (),
    ) -> list[Row]:
        """Concatenated rows of all finished cells, in grid order.

        Args:
          spec: grid giving the order (default: the store's spec).
          strict: raise if some cell is not finished (default: skip it).
          params_digest: as in :meth:`pending`; cells of other parameters are left out.
          finite: as in :meth:`status`; cells violating it are left out.

        Raises:
          ValueError: ``strict`` and unfinished cells remain (their keys are listed).
        """
        spec = self._spec(spec)
        rows: list[Row] = []
        missing = []
        for c in spec:
            if self.done(c, params_digest=digest_for(c, params_digest), finite=finite):
                rec = self._verified(c)
                assert rec is not None
                rows.extend(rec["rows"])
            else:
                missing.append(c.key)
        if strict and missing:
            raise ValueError(f"{len(missing)} cells unfinished: {missing[:5]}...")
        return rows


def _stat_sig(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def __getattr__(name: str) -> Any:
    # run_grid/format_duration moved to sweeps.execute (which imports this module); keep the
    # old import path working without a circular import.
    if name in ("run_grid", "format_duration"):
        from vaerob_jax.sweeps import execute

        return getattr(execute, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CellRecomputeWarning",
    "CellResult",
    "FingerprintMismatchError",
    "NonFiniteResultError",
    "ResultStore",
    "check_finite",
    "config_to_jsonable",
    "digest_for",
    "fingerprint_of",
]
