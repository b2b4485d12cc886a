"""Tidy tables without pandas: lists of dict rows, numpy columns, CSV and JSON files.

A tidy table has one row per observation (e.g. one attacked example at one β and ε) and one
column per variable. Rows are ``dict[str, scalar]``; :func:`to_columns` turns them into a dict
of numpy arrays for vectorised reductions, :func:`as_rows` goes back. Files are written
atomically (temp file + ``os.replace``) so a reader never sees half a table.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vaerob_jax.sweeps.grid import format_value, is_number, same_value

Row = dict[str, Any]
Table = Sequence[Mapping[str, Any]] | Mapping[str, Any]


def to_python(value: Any) -> Any:
    """A JSON/CSV-friendly Python scalar from a numpy/jax scalar (0-d arrays included)."""
    if not isinstance(value, np.generic) and hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.ndim == 0:
            value = arr[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_rows(table: Table) -> list[Row]:
    """Rows from either a list of dict rows or a dict of equal-length columns.

    Raises:
      ValueError: columns of different lengths, or rows that are not mappings.
    """
    if isinstance(table, Mapping):
        cols = {k: np.asarray(v) for k, v in table.items()}
        lengths = {k: (v.shape[0] if v.ndim else -1) for k, v in cols.items()}
        if len(set(lengths.values())) > 1 or -1 in lengths.values():
            raise ValueError(f"columns must be 1-D and of equal length, got lengths {lengths}")
        n = next(iter(lengths.values()), 0)
        return [{k: to_python(v[i]) for k, v in cols.items()} for i in range(n)]
    rows = list(table)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValueError(f"row {i} is a {type(r).__name__}, expected a mapping")
    return [{k: to_python(v) for k, v in r.items()} for r in rows]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the rows' keys in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def to_columns(table: Table, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Dict of numpy arrays (numeric columns numeric, others object/str) from rows.

    Raises:
      ValueError: a requested column missing from some row.
    """
    rows = as_rows(table)
    cols = list(columns) if columns is not None else columns_of(rows)
    require_columns(rows, cols, allow_empty=True)
    return {c: np.asarray([r[c] for r in rows]) for c in cols}


def require_columns(
    rows: Sequence[Mapping[str, Any]],
    columns: Iterable[str],
    *,
    what: str = "rows",
    allow_empty: bool = False,
) -> None:
    """Raise a clear ValueError when rows are empty or lack any of ``columns``."""
    if not rows and not allow_empty:
        raise ValueError(f"{what}: no rows given")
    columns = list(columns)
    for i, r in enumerate(rows):
        missing = [c for c in columns if c not in r]
        if missing:
            raise ValueError(
                f"{what}: row {i} lacks column(s) {missing}; it has {sorted(r)}; "
                f"required: {columns}"
            )


def join_rows(left: Table, right: Table, on: Sequence[str], *, how: str = "inner") -> list[Row]:
    """Inner join of two tidy tables on key columns (e.g. margins with deviations).

    Key values are compared canonically (floats at 12 significant digits) so β stored as
    float32 in one table and float64 in the other still match. Columns present in both tables
    besides the keys take the right table's value only when the left lacks it.

    Raises:
      ValueError: unknown ``how``, missing key columns, or duplicate keys in ``right``.
    """

    if how != "inner":
        raise ValueError(f"only how='inner' is supported, got {how!r}")
    lrows, rrows = as_rows(left), as_rows(right)
    require_columns(lrows, on, what="join left")
    require_columns(rrows, on, what="join right")

    def key(r: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(format_value(r[c]) if is_number(r[c]) else str(r[c]) for c in on)

    index: dict[tuple[str, ...], Row] = {}
    for r in rrows:
        k = key(r)
        if k in index:
            raise ValueError(f"join right has duplicate key {dict(zip(on, k))}")
        index[k] = r
    out = []
    for r in lrows:
        match = index.get(key(r))
        if match is not None:
            out.append({**match, **r})
    return out


def filter_rows(rows: Sequence[Mapping[str, Any]], **equal: Any) -> list[Row]:
    """Rows whose columns equal the given values (floats compared canonically)."""
    return [dict(r) for r in rows if all(same_value(r.get(k), v) for k, v in equal.items())]


# ---------------------------------------------------------------------------------------------
# Atomic files.


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Call ``writer(tmp_path)``, fsync the temp file, then move it onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """JSON text with numpy support; NaN/inf written as ``NaN``/``Infinity`` (Python's JSON)."""
    return json.dumps(obj, default=_json_default, indent=indent, allow_nan=True)


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: one text per value, so its checksum identifies it.

    Floats are written as ``repr`` (exact round trip), NaN/inf as ``NaN``/``Infinity``, so
    ``canonical_json(json.loads(canonical_json(x))) == canonical_json(x)``.
    """
    return json.dumps(
        obj, default=_json_default, sort_keys=True, separators=(",", ":"), allow_nan=True
    )


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (numpy arrays/scalars converted; NaN kept as ``NaN``)."""
    atomic_write_bytes(path, (dumps_json(obj, indent=indent) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# CSV.


def _csv_cell(v: Any) -> str:
    v = to_python(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest text that round-trips exactly; 'nan', 'inf'
    return str(v)


def write_csv(
    path: str | os.PathLike,
    rows: Table,
    columns: Sequence[str] | None = None,
) -> None:
    """Write a tidy table as CSV with a fixed column order; floats round-trip exactly.

    Args:
      path: output file (parent folders are created; written atomically).
      rows: list of dict rows or dict of columns.
      columns: column order; default the rows' keys in first-seen order. Every row must have
        every column (``None`` is written as an empty field).

    Raises:
      ValueError: no columns, or a row lacking a column.
    """
    rows_ = as_rows(rows)
    cols = list(columns) if columns is not None else columns_of(rows_)
    if not cols:
        raise ValueError("write_csv: no columns (empty rows and no columns given)")
    require_columns(rows_, cols, what="write_csv", allow_empty=True)

    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows_:
        w.writerow([_csv_cell(r[c]) for c in cols])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _parse_column(texts: list[str]) -> list[Any]:
    present = [t for t in texts if t != ""]
    if not present:
        return [None] * len(texts)

    def conv(fn: Callable[[str], Any]) -> list[Any] | None:
        try:
            return [fn(t) if t != "" else None for t in texts]
        except ValueError:
            return None

    if all(t in ("True", "False") for t in present):
        return [None if t == "" else t == "True" for t in texts]
    for fn in (int, float):
        out = conv(fn)
        if out is not None:
            return out
    return [t if t != "" else None for t in texts]


def read_csv(
    path: str | os.PathLike, types: Mapping[str, Callable[[str], Any]] | None = None
) -> list[Row]:
    """Read a CSV written by :func:`write_csv`, restoring column types.

    A column whose non-empty fields all parse as ``int`` becomes int, else all as ``float``
    becomes float (``repr`` text restores the exact double), ``True``/``False`` become bool,
    anything else stays str; empty fields become ``None``. ``types`` forces a converter for
    named columns (e.g. ``{"subgroup": str}`` for numeric-looking labels).
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"read_csv: {path} is empty (no header)") from None
        records = list(reader)
    for i, rec in enumerate(records):
        if len(rec) != len(header):
            raise ValueError(
                f"read_csv: {path} line {i + 2} has {len(rec)} fields, header has {len(header)}"
            )
    types = dict(types or {})
    parsed: dict[str, list[Any]] = {}
    for j, name in enumerate(header):
        texts = [rec[j] for rec in records]
        if name in types:
            parsed[name] = [types[name](t) if t != "" else None for t in texts]
        else:
            parsed[name] = _parse_column(texts)
    return [{name: parsed[name][i] for name in header} for i in range(len(records))]


def is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
