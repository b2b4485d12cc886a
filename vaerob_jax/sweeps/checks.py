"""What a cell result must satisfy before the store commits it, and whose models it came from.

:func:`check_finite` refuses results with NaN/inf where they mean a failed computation (the
columns a study declares, and float arrays), so a diverged attack or a NaN model is never
stored as a finished cell. :func:`digest_for` resolves the per-cell parameter digest a caller
gives as one string, a mapping by cell key, or a function of the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vaerob_jax.sweeps.grid import Cell

__all__ = ["DigestSpec", "NonFiniteResultError", "check_finite", "digest_for"]

#: Per-cell digest argument: one digest for all cells, a mapping by cell key, or a function.
DigestSpec = str | Mapping[str, "str | None"] | Callable[[Cell], "str | None"] | None


class NonFiniteResultError(FloatingPointError):
    """A cell's result holds NaN/inf where it must be finite; it was not stored as done."""


def digest_for(cell: Cell, params_digest: DigestSpec) -> str | None:
    """The params digest ``params_digest`` gives for ``cell`` (None: nothing to check).

    Raises:
      ValueError: a mapping without the cell's key, or a digest that is not a non-empty str.
    """
    if params_digest is None:
        return None
    if isinstance(params_digest, str):
        d: Any = params_digest
    elif isinstance(params_digest, Mapping):
        if cell.key not in params_digest:
            raise ValueError(f"params_digest mapping has no entry for cell {cell.key!r}")
        d = params_digest[cell.key]
    elif callable(params_digest):
        d = params_digest(cell)
    else:
        raise ValueError(
            "params_digest must be a str, a mapping by cell key or a function of the cell, "
            f"got {type(params_digest).__name__}"
        )
    if d is not None and (not isinstance(d, str) or not d):
        raise ValueError(f"params_digest for cell {cell.key!r} must be a non-empty str, got {d!r}")
    return d


def check_finite(
    key: str,
    rows: Sequence[Mapping[str, Any]],
    arrays: Mapping[str, np.ndarray] | None = None,
    finite: Sequence[str] = (),
    arrays_finite: bool | Sequence[str] = True,
) -> None:
    """Refuse a cell result holding non-finite values where they mean a failed computation.

    Args:
      key: the cell's key (for messages).
      rows: its tidy rows.
      arrays: its named arrays.
      finite: columns that must be finite numbers in every row (None counts as non-finite).
      arrays_finite: True: every float/complex array must be finite; a sequence: these
        arrays; False: no array check.

    Raises:
      NonFiniteResultError: naming the cell, each offending column/array and the count.
      ValueError: a listed column missing from rows or holding non-numbers, or an unknown
        array name in ``arrays_finite``.
    """
    if isinstance(finite, str):
        finite = (finite,)
    problems = []
    for col in finite:
        missing = sum(col not in r for r in rows)
        if missing:
            raise ValueError(
                f"cell {key!r}: column {col!r} (declared finite) is missing from {missing} "
                f"of {len(rows)} rows"
            )
        bad = 0
        for r in rows:
            v = r[col]
            if v is None:
                bad += 1
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(
                    f"cell {key!r}: column {col!r} (declared finite) holds {v!r}, not a number"
                )
            elif not math.isfinite(v):
                bad += 1
        if bad:
            problems.append(f"column {col!r} is NaN, infinite or None in {bad} of {len(rows)} rows")
    arrays = arrays or {}
    if arrays_finite is True:
        names = sorted(arrays)
    elif arrays_finite is False:
        names = []
    else:
        names = [str(n) for n in arrays_finite]
        unknown = [n for n in names if n not in arrays]
        if unknown:
            raise ValueError(f"cell {key!r}: arrays_finite names unknown arrays {unknown}")
    for name in names:
        a = np.asarray(arrays[name])
        if a.dtype.kind in "fc":
            n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if n_bad:
                problems.append(f"array {name!r} has {n_bad} non-finite values of {a.size}")
    if problems:
        raise NonFiniteResultError(
            f"cell {key!r} was not stored: its computation gave non-finite results ("
            + "; ".join(problems)
            + "). A rerun computes it again; if it fails again, the inputs or settings of "
            "this cell make the computation diverge."
        )
