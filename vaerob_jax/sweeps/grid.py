"""Grid specifications: named axes, canonical cell keys, deterministic iteration.

A study such as 000's β × ε × subgroup sweep is a product of named axes. Every point of the
product is a :class:`Cell` whose :attr:`Cell.key` (e.g. ``"beta=5|eps=0.1"``) is a stable
string: floats are written with 12 significant digits so ``0.1``, ``0.10000000000000001`` and
``np.float32(0.1)`` all give the same key, and a resumed run finds the cells it already
finished. Iteration is row-major (the first axis varies slowest), independent of hashing or
dict order of the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORBIDDEN_IN_VALUES = ("|", "=")


def canonical_value(value: Any) -> Any:
    """The Python value a grid value is stored as (numpy scalars become Python scalars).

    Floats are rounded to 12 significant digits (float32/float16 scalars first to the shortest
    decimal that round-trips in their precision), so float32 and float64 spellings of the same
    decimal number compare equal; integral floats stay floats (``5.0`` keeps its type but its
    key is ``"5"``).

    Raises:
      ValueError: for values that are not bool, int, float or str, or strings holding ``|``/``=``.
    """
    if not isinstance(value, np.generic) and hasattr(value, "__array__"):
        arr = np.asarray(value)  # e.g. a 0-d jax.Array
        if arr.ndim != 0:
            raise ValueError(f"grid values must be scalars, got shape {arr.shape}")
        value = arr[()]
    if isinstance(value, np.floating) and np.finfo(value.dtype).bits < 64:
        # Shortest decimal that round-trips in the value's own precision: float32(0.1) -> 0.1.
        value = float(str(value))
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"grid values must be finite, got {value!r}")
        return float(f"{value:.12g}")
    if isinstance(value, str):
        if any(c in value for c in _FORBIDDEN_IN_VALUES) or not value:
            raise ValueError(f"grid string values must be non-empty without '|' or '=': {value!r}")
        return value
    raise ValueError(
        f"grid values must be bool, int, float or str, got {type(value).__name__}: {value!r}"
    )


def format_value(value: Any) -> str:
    """Canonical text of one grid value, as it appears in cell keys.

    Example:
      >>> format_value(0.10000000000000001), format_value(np.float32(0.1)), format_value(5.0)
      ('0.1', '0.1', '5')
    """
    value = canonical_value(value)
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def same_value(a: Any, b: Any) -> bool:
    """Whether two grid or table values are the same value.

    Numbers compare to float32 precision (``rel_tol=1e-6``), because rows often come from
    float32 math and CSV round trips; everything else compares by its canonical text. This is
    the one equality every table filter, grid match and figure selection uses.

    Example:
      >>> same_value(np.float32(0.1), 0.1), same_value(5, 5.0), same_value("a", "b")
      (True, True, False)
    """
    if is_number(a) or is_number(b):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    try:
        return format_value(a) == format_value(b)
    except (TypeError, ValueError):
        return bool(a == b)


def is_number(v: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a grid: ``(axis name, value)`` pairs in the grid's axis order."""

    items: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        """Stable string key, e.g. ``"beta=5|eps=0.1"``."""
        return "|".join(f"{name}={format_value(v)}" for name, v in self.items)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def __getitem__(self, name: str) -> Any:
        for n, v in self.items:
            if n == name:
                return v
        raise KeyError(f"cell {self.key!r} has no axis {name!r}")

    def __str__(self) -> str:
        return self.key


def cell_key(values: Mapping[str, Any]) -> str:
    """Key of a cell given as a mapping (in the mapping's order)."""
    return Cell(tuple((n, canonical_value(v)) for n, v in values.items())).key


class GridSpec:
    """Named grid axes with values; cells iterate row-major (first axis slowest).

    Args:
      axes: mapping axis name -> sequence of values (bool, int, float or str). Order matters:
        it fixes the key layout and the iteration order.

    Example:
      >>> spec = GridSpec({"beta": [1.0, 5.0], "eps": [0.05, 0.1]})
      >>> [c.key for c in spec]
      ['beta=1|eps=0.05', 'beta=1|eps=0.1', 'beta=5|eps=0.05', 'beta=5|eps=0.1']

    Raises:
      ValueError: no axes, a bad axis name, an empty axis, or duplicate values on an axis.
    """

    def __init__(self, axes: Mapping[str, Sequence[Any]]):
        if not axes:
            raise ValueError("GridSpec needs at least one axis")
        built: list[tuple[str, tuple[Any, ...]]] = []
        for name, values in axes.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(f"axis names must be identifiers, got {name!r}")
            if hasattr(values, "__array__"):
                seq = list(np.asarray(values).ravel())  # keeps float32 scalars as float32
            elif isinstance(values, Sequence) and not isinstance(values, str | bytes):
                seq = list(values)
            else:
                raise ValueError(f"axis {name!r}: values must be a sequence, got {values!r}")
            vals = tuple(canonical_value(v) for v in seq)
            if not vals:
                raise ValueError(f"axis {name!r} has no values")
            texts = [format_value(v) for v in vals]
            dups = sorted({t for t in texts if texts.count(t) > 1})
            if dups:
                raise ValueError(f"axis {name!r} has duplicate values (canonically): {dups}")
            built.append((name, vals))
        self.axes: tuple[tuple[str, tuple[Any, ...]], ...] = tuple(built)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.axes)

    def values(self, name: str) -> tuple[Any, ...]:
        for n, v in self.axes:
            if n == name:
                return v
        raise KeyError(f"grid has no axis {name!r}; axes are {self.names}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.axes)

    def __len__(self) -> int:
        return math.prod(self.shape)

    def __iter__(self) -> Iterator[Cell]:
        for idx in np.ndindex(*self.shape):
            yield Cell(tuple((n, vals[i]) for (n, vals), i in zip(self.axes, idx)))

    def cells(self) -> list[Cell]:
        return list(self)

    def index(self, cell: Cell | str) -> int:
        """Position of a cell (or key) in iteration order."""
        key = cell.key if isinstance(cell, Cell) else cell
        order = {c.key: i for i, c in enumerate(self)}
        if key not in order:
            raise KeyError(f"cell {key!r} is not in this grid")
        return order[key]

    def batches(self, batch_axes: Sequence[str] = ()) -> list[list[Cell]]:
        """Cells grouped so that each group varies only along ``batch_axes``.

        Groups are ordered by their first cell in iteration order and hold their cells in
        iteration order: with axes (beta, eps) and ``batch_axes=("eps",)`` each group is one β
        with all ε, the unit a vmapped-over-ε program computes at once.

        Raises:
          ValueError: a batch axis that is not a grid axis.
        """
        unknown = [a for a in batch_axes if a not in self.names]
        if unknown:
            raise ValueError(f"batch_axes {unknown} are not grid axes {self.names}")
        groups: dict[str, list[Cell]] = {}
        for cell in self:
            outer = "|".join(f"{n}={format_value(v)}" for n, v in cell.items if n not in batch_axes)
            groups.setdefault(outer, []).append(cell)
        return list(groups.values())

    def to_dict(self) -> dict[str, list[Any]]:
        return {n: list(v) for n, v in self.axes}

    def fingerprint(self) -> str:
        """Hash of the axes and their canonical values."""
        blob = json.dumps([[n, [format_value(v) for v in vals]] for n, vals in self.axes])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"GridSpec({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridSpec) and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash(self.fingerprint())
