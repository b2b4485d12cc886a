"""The written report: Markdown sections with a one-line reading, a figure and a table.

Readings are computed from the numbers (never typed by hand), e.g. by
:func:`reading_highest_median` from the per-subgroup summary table of 000's study.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaerob_jax.sweeps.grid import same_value
from vaerob_jax.sweeps.tables import Table, as_rows, atomic_write_bytes, columns_of, require_columns


@dataclasses.dataclass(frozen=True)
class Section:
    """One report section.

    Attributes:
      heading: section title.
      reading: one line saying what the numbers show (computed by the caller).
      figure: optional image path (absolute or relative to the working directory); written
        as a link relative to the report's folder.
      table: optional tidy rows rendered as a Markdown table.
      columns: table column order (default: the rows' keys in first-seen order).
      digits: significant digits for floats in the table.
    """

    heading: str
    reading: str = ""
    figure: str | os.PathLike | None = None
    table: Table | None = None
    columns: Sequence[str] | None = None
    digits: int = 4


def format_number(v: Any, digits: int = 4) -> str:
    """Table text of a value: ints as is, floats with ``digits`` significant digits
    (``0.03012`` -> ``0.03012``, ``12345.6`` -> ``1.235e+04``), NaN as ``NaN``, None as ``—``."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Table, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """GitHub-flavoured Markdown table; numeric columns right-aligned.

    Raises:
      ValueError: no rows, or a row lacking a column.
    """
    rows_ = as_rows(rows)
    if not rows_:
        raise ValueError("markdown_table: no rows given")
    cols = list(columns) if columns is not None else columns_of(rows_)
    require_columns(rows_, cols, what="markdown_table")

    def numeric(c: str) -> bool:
        return all(
            isinstance(r[c], int | float) and not isinstance(r[c], bool)
            for r in rows_
            if r[c] is not None
        )

    align = ["---:" if numeric(c) else "---" for c in cols]
    lines = [
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for r in rows_:
        lines.append("| " + " | ".join(format_number(r[c], digits) for c in cols) + " |")
    return "\n".join(lines)


def render_report(
    title: str,
    sections: Sequence[Section | Mapping[str, Any]],
    base_dir: str | os.PathLike = ".",
) -> str:
    """Markdown text of a report; figure links are made relative to ``base_dir``."""
    if not title:
        raise ValueError("render_report: empty title")
    out = [f"# {title}", ""]
    for i, sec in enumerate(sections):
        if isinstance(sec, Mapping):
            unknown = set(sec) - {f.name for f in dataclasses.fields(Section)}
            if unknown or "heading" not in sec:
                raise ValueError(f"section {i}: needs 'heading'; unknown keys {sorted(unknown)}")
            sec = Section(**sec)
        if not sec.heading:
            raise ValueError(f"section {i} has an empty heading")
        out += [f"## {sec.heading}", ""]
        if sec.reading:
            out += [sec.reading.strip(), ""]
        if sec.figure is not None:
            # A figure is a filesystem path (a relative one is relative to the working
            # directory, like every other path); the link is relative to the report.
            rel = os.path.relpath(Path(sec.figure).resolve(), Path(base_dir).resolve())
            out += [f"![{sec.heading}]({Path(rel).as_posix()})", ""]
        if sec.table is not None:
            out += [markdown_table(sec.table, sec.columns, sec.digits), ""]
    return "\n".join(out)


def write_report(
    path: str | os.PathLike,
    title: str,
    sections: Sequence[Section | Mapping[str, Any]],
) -> Path:
    """Write the report to ``path`` (atomically); figure paths (absolute, or relative to the
    working directory) become links relative to the report's folder. Sections are
    :class:`Section` objects or dicts of its fields."""
    path = Path(path)
    text = render_report(title, sections, base_dir=path.parent.resolve())
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _fmt_grid(v: Any) -> str:
    return f"{float(v):.6g}" if isinstance(v, int | float) else str(v)


def tied_extremes(
    rows: Sequence[Mapping[str, Any]], key: str, *, highest: bool
) -> list[Mapping[str, Any]]:
    """Every row whose ``key`` equals the highest (or lowest) value, in their order: a reading
    names ties instead of picking the first of equal values."""
    values = [float(r[key]) for r in rows]
    best = max(values) if highest else min(values)
    return [r for r, v in zip(rows, values, strict=True) if v == best]


def reading_highest_median(
    summary_rows: Table,
    beta: float,
    eps: float,
    *,
    baseline: str | None = None,
    p_value: float | None = None,
    p_label: str = "p",
    value: str = "median",
    quantity: str = "median Δc",
) -> str:
    """One-line reading naming the subgroup with the highest median Δc at (β, ε).

    Example output: ``"old-women have the highest median Δc at β=1, ε=0.1: 0.42 [95% CI
    0.35, 0.5] (1.8× young-men, 0.23; p=0.003)"``. The comparison is to ``baseline`` or, by
    default, to the subgroup with the lowest median. A CI is quoted when ``ci_low`` /
    ``ci_high`` are present; ties at the top are named. ``p_label`` names the quoted p-value
    (e.g. ``"omnibus p"`` for a test that accounts for picking the top group from the data).

    Raises:
      ValueError: missing columns, no rows at (β, ε), or an unknown baseline.
    """
    rows_ = as_rows(summary_rows)
    require_columns(rows_, ("beta", "eps", "subgroup", value), what="reading_highest_median")
    sel = [
        r
        for r in rows_
        if same_value(r["beta"], beta)
        and same_value(r["eps"], eps)
        and r[value] is not None
        and not math.isnan(float(r[value]))
    ]
    where = f"β={_fmt_grid(beta)}, ε={_fmt_grid(eps)}"
    if not sel:
        raise ValueError(f"reading_highest_median: no rows with a {value} at {where}")
    ranked = sorted(sel, key=lambda r: float(r[value]), reverse=True)
    top = ranked[0]
    ties = [r["subgroup"] for r in tied_extremes(ranked, value, highest=True)[1:]]
    text = f"{top['subgroup']} have the highest {quantity} at {where}: {float(top[value]):.3g}"
    if "ci_low" in top and "ci_high" in top:
        text += f" [95% CI {float(top['ci_low']):.3g}, {float(top['ci_high']):.3g}]"
    if ties:
        text += f" (tied with {', '.join(ties)})"
    if baseline is None:
        base = ranked[-1]
    else:
        matches = [r for r in sel if r["subgroup"] == baseline]
        if not matches:
            raise ValueError(
                f"baseline {baseline!r} not among {sorted(r['subgroup'] for r in sel)} at {where}"
            )
        base = matches[0]
    if base is not top and not ties:
        b = float(base[value])
        ratio = f"{float(top[value]) / b:.3g}×" if b > 0 else "vs"
        extra = f"; {p_label}={p_value:.2g}" if p_value is not None else ""
        text += f" ({ratio} {base['subgroup']}, {b:.3g}{extra})"
    elif p_value is not None:
        text += f" ({p_label}={p_value:.2g})"
    return text
