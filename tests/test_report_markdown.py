"""Markdown report: exact table rendering, relative figure links, readings from numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vaerob_jax.report import (
    Section,
    format_number,
    markdown_table,
    reading_highest_median,
    render_report,
    write_report,
)


def test_markdown_table_exact():
    rows = [
        {"subgroup": "old-women", "n": 60, "median": 0.030123456, "ci": math.nan},
        {"subgroup": "young|men", "n": 7, "median": 12345.678, "ci": None},
    ]
    assert markdown_table(rows, columns=["subgroup", "n", "median", "ci"]) == (
        "| subgroup | n | median | ci |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| old-women | 60 | 0.03012 | NaN |\n"
        "| young\\|men | 7 | 1.235e+04 | — |"
    )
    assert format_number(1.0) == "1" and format_number(True) == "True"
    assert format_number(-math.inf) == "−∞" and format_number(0.123456, digits=2) == "0.12"
    with pytest.raises(ValueError, match="no rows"):
        markdown_table([])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['x'\]"):
        markdown_table(rows, columns=["x"])


def test_figure_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    # `vaerob subgroups --out results/x` hands the report paths like results/x/figures/a.png.
    monkeypatch.chdir(tmp_path)
    path = write_report(
        Path("results/x/report.md"), "t", [Section("h", figure=Path("results/x/figures/a.png"))]
    )
    assert "![h](figures/a.png)" in path.read_text()


def test_write_report_relative_links(tmp_path):
    fig = tmp_path / "figures" / "dev.png"
    path = write_report(
        tmp_path / "report.md",
        "Subgroup robustness",
        [
            Section("Deviation", "old-women are hit hardest.", figure=fig, table=[{"a": 1.5}]),
            {"heading": "Notes", "reading": "nothing else"},
        ],
    )
    assert path.read_text() == (
        "# Subgroup robustness\n\n"
        "## Deviation\n\nold-women are hit hardest.\n\n![Deviation](figures/dev.png)\n\n"
        "| a |\n| ---: |\n| 1.5 |\n\n"
        "## Notes\n\nnothing else\n"
    )
    with pytest.raises(ValueError, match="unknown keys \\['figur'\\]"):
        render_report("t", [{"heading": "h", "figur": "x.png"}])
    with pytest.raises(ValueError, match="empty heading"):
        render_report("t", [Section("")])


SUMMARY = [
    dict(beta=1.0, eps=0.1, subgroup="young-women", median=0.20, ci_low=0.15, ci_high=0.26),
    dict(beta=1.0, eps=0.1, subgroup="young-men", median=0.25, ci_low=0.2, ci_high=0.3),
    dict(beta=1.0, eps=0.1, subgroup="old-women", median=0.45, ci_low=0.35, ci_high=0.5),
    dict(beta=1.0, eps=0.1, subgroup="old-men", median=0.30, ci_low=0.25, ci_high=0.41),
    # Other cells whose maxima are other subgroups, to catch a reading ignoring the filter.
    dict(beta=5.0, eps=0.1, subgroup="young-men", median=0.90, ci_low=0.8, ci_high=1.0),
    dict(beta=1.0, eps=0.05, subgroup="old-men", median=0.99, ci_low=0.9, ci_high=1.1),
]


def test_reading_highest_median_picks_the_right_subgroup():
    text = reading_highest_median(SUMMARY, beta=1, eps=0.1, p_value=0.003)
    assert text == (
        "old-women have the highest median Δc at β=1, ε=0.1: 0.45 [95% CI 0.35, 0.5] "
        "(2.25× young-women, 0.2; p=0.003)"
    )
    text = reading_highest_median(SUMMARY, beta=1.0, eps=0.1, baseline="young-men")
    assert text.endswith("(1.8× young-men, 0.25)")
    close = [
        dict(r, median=0.30 * 1.046) if r["subgroup"] == "old-women" else r for r in SUMMARY[:4]
    ]
    text = reading_highest_median(close, beta=1, eps=0.1, baseline="old-men")
    assert "(1.05× old-men" in text  # three figures: a 1.046 ratio must not read as "1×"
    assert reading_highest_median(SUMMARY, beta=5, eps=0.1).startswith("young-men have")
    tied = SUMMARY[:4] + [dict(SUMMARY[3], subgroup="old-x", median=0.45)]
    assert "(tied with old-x)" in reading_highest_median(tied, beta=1, eps=0.1)


def test_reading_bad_input():
    with pytest.raises(ValueError, match="no rows with a median at β=10, ε=0.1"):
        reading_highest_median(SUMMARY, beta=10, eps=0.1)
    with pytest.raises(ValueError, match="baseline 'kids'"):
        reading_highest_median(SUMMARY, beta=1, eps=0.1, baseline="kids")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['median'\]"):
        reading_highest_median([dict(beta=1, eps=0.1, subgroup="a")], beta=1, eps=0.1)
    with pytest.raises(ValueError, match="no rows given"):
        reading_highest_median([], beta=1, eps=0.1)


def test_public_names_import():
    import vaerob_jax.report as report
    import vaerob_jax.sweeps as sweeps

    for mod in (report, sweeps):
        assert mod.__all__ == sorted(mod.__all__)
        for name in mod.__all__:
            assert getattr(mod, name) is not None, name
