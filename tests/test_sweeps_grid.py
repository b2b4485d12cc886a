"""Grid specs and tidy tables: canonical keys, deterministic order, exact CSV round trips."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vaerob_jax.sweeps import (
    GridSpec,
    cell_key,
    filter_rows,
    format_value,
    join_rows,
    read_csv,
    read_json,
    to_columns,
    write_csv,
    write_json,
)


def test_cell_key_canonicalisation():
    a = GridSpec({"beta": [5], "eps": [0.1]})
    b = GridSpec({"beta": [5.0], "eps": [0.10000000000000001]})
    c = GridSpec({"beta": np.array([5.0]), "eps": np.array([0.1], dtype=np.float32)})
    assert [x.key for x in a] == [x.key for x in b] == [x.key for x in c] == ["beta=5|eps=0.1"]
    assert cell_key({"beta": 1e-5, "eps": 1 / 3}) == "beta=1e-05|eps=0.333333333333"
    assert format_value(True) == "True" and format_value("old-women") == "old-women"
    assert a.fingerprint() == c.fingerprint()


def test_iteration_is_row_major_and_batches_group_cells():
    spec = GridSpec({"beta": [1, 5], "eps": [0.2, 0.1, 0.3], "tau": ["a", "b"]})
    expected = list(itertools.product([1, 5], [0.2, 0.1, 0.3], ["a", "b"]))
    assert [(c["beta"], c["eps"], c["tau"]) for c in spec] == expected
    assert len(spec) == 12 and spec.shape == (2, 3, 2)
    groups = spec.batches(["eps"])
    assert len(groups) == 4
    assert [[c["eps"] for c in g] for g in groups] == [[0.2, 0.1, 0.3]] * 4
    assert [(g[0]["beta"], g[0]["tau"]) for g in groups] == [(1, "a"), (1, "b"), (5, "a"), (5, "b")]
    assert spec.index("beta=5|eps=0.2|tau=b") == 7


@pytest.mark.parametrize(
    "axes, match",
    [
        ({}, "at least one axis"),
        ({"eps": []}, "no values"),
        ({"eps": [0.1, 0.10000000000000001]}, "duplicate"),
        ({"bad name": [1]}, "identifiers"),
        ({"eps": [float("nan")]}, "finite"),
        ({"g": ["a|b"]}, "without"),
        ({"g": [[1, 2]]}, "bool, int, float or str"),
        ({"g": "abc"}, "sequence"),
    ],
)
def test_bad_grid_raises(axes, match):
    with pytest.raises(ValueError, match=match):
        GridSpec(axes)


def test_csv_round_trip_exact(tmp_path):
    rng = np.random.default_rng(1)
    floats = np.concatenate([rng.normal(size=20) * 10.0 ** rng.integers(-30, 30, 20), [0.1]])
    rows = [
        {"beta": 5, "x": float(f), "sg": "old-women", "ok": i % 2 == 0, "f32": np.float32(f)}
        for i, f in enumerate(floats)
    ]
    rows.append({"beta": 1, "x": math.nan, "sg": "young-men", "ok": True, "f32": math.inf})
    path = tmp_path / "sub" / "t.csv"
    write_csv(path, rows, columns=["sg", "beta", "x", "ok", "f32"])
    assert path.read_text().splitlines()[0] == "sg,beta,x,ok,f32"
    back = read_csv(path)
    assert list(back[0]) == ["sg", "beta", "x", "ok", "f32"]
    for r, b in zip(rows[:-1], back[:-1]):
        assert b["x"] == r["x"] and type(b["x"]) is float  # bit-exact
        assert b["f32"] == float(r["f32"])
        assert b["beta"] == 5 and type(b["beta"]) is int
        assert b["ok"] is r["ok"]
        assert b["sg"] == r["sg"]
    assert math.isnan(back[-1]["x"]) and back[-1]["f32"] == math.inf
    # Forced types keep numeric-looking labels as strings.
    write_csv(tmp_path / "l.csv", [{"label": "1"}, {"label": ""}])
    assert read_csv(tmp_path / "l.csv") == [{"label": 1}, {"label": None}]
    assert read_csv(tmp_path / "l.csv", types={"label": str}) == [{"label": "1"}, {"label": None}]


def test_csv_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['x'\]"):
        write_csv(tmp_path / "a.csv", [{"x": 1}, {"y": 2}], columns=["x"])
    with pytest.raises(ValueError, match="no columns"):
        write_csv(tmp_path / "a.csv", [])
    (tmp_path / "b.csv").write_text("a,b\n1\n")
    with pytest.raises(ValueError, match="line 2 has 1 fields"):
        read_csv(tmp_path / "b.csv")


def test_columns_json_join_filter(tmp_path):
    cols = {"beta": np.array([1.0, 5.0]), "id": np.array([0, 1])}
    rows = [{"beta": 1.0, "id": 0}, {"beta": 5.0, "id": 1}]
    from vaerob_jax.sweeps import as_rows

    assert as_rows(cols) == rows
    np.testing.assert_array_equal(to_columns(rows)["beta"], cols["beta"])
    with pytest.raises(ValueError, match="equal length"):
        as_rows({"a": [1, 2], "b": [1]})
    write_json(tmp_path / "o.json", {"a": np.arange(3), "b": np.float32(0.5), "c": math.nan})
    back = read_json(tmp_path / "o.json")
    assert back["a"] == [0, 1, 2] and back["b"] == 0.5 and math.isnan(back["c"])
    right = [{"beta": np.float32(5.0), "id": 1, "m": 2.0}, {"beta": 1.0, "id": 0, "m": 3.0}]
    joined = join_rows(rows, right, on=["beta", "id"])
    assert [r["m"] for r in joined] == [3.0, 2.0]
    assert filter_rows(right, beta=5) == [right[0] | {"beta": np.float32(5.0)}]
    with pytest.raises(ValueError, match="duplicate key"):
        join_rows(rows, right + right, on=["beta", "id"])


def test_same_value_is_the_one_equality_for_grid_and_table_values():

    from vaerob_jax.sweeps.grid import same_value

    # float32 rows and CSV text match the float64 grid value they came from
    assert same_value(np.float32(0.1), 0.1)
    assert same_value("0.1", 0.1) and same_value(0.1, "0.1")
    assert same_value(5, 5.0) and same_value(np.int64(3), 3.0)
    # but a different value, even close, does not
    assert not same_value(0.1, 0.1001)
    assert not same_value(1e-7, 2e-7)
    # text compares as text, and text that is not a number never equals a number
    assert same_value("young-men", "young-men") and not same_value("young-men", "old-men")
    assert not same_value("young-men", 0.1)
    assert not same_value(None, 0.1)
