"""Resumable execution: interrupted sweeps resume exactly, configs never mix, writes are atomic."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from vaerob_jax.sweeps import (
    CellResult,
    FingerprintMismatchError,
    GridSpec,
    ResultStore,
    format_duration,
    run_grid,
)


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0
    steps: int = 10


SPEC = GridSpec({"beta": [1.0, 5.0, 10.0], "eps": [0.05, 0.1]})


def _rows_for(cell):
    """Deterministic rows depending on the cell: two examples per cell."""
    b, e = cell["beta"], cell["eps"]
    return [
        {"example_id": i, "delta_c": b * e + i / 3, "subgroup": f"g{i}", "eps": e} for i in range(2)
    ]


class Counter:
    def __init__(self, fail_after=None):
        self.calls: list[str] = []
        self.fail_after = fail_after

    def __call__(self, cell):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append(cell.key)
        return _rows_for(cell)


def test_interrupted_run_resumes_only_unfinished_cells(tmp_path):
    ref = run_grid(SPEC, Counter(), ResultStore(tmp_path / "ref", Cfg()), progress=False)

    crashing = Counter(fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_grid(SPEC, crashing, ResultStore(tmp_path / "run", Cfg()), progress=False)
    assert len(crashing.calls) == 4

    resumed = Counter()
    store = ResultStore(tmp_path / "run", Cfg())
    assert [c.key for c in store.pending(SPEC)] == [c.key for c in SPEC.cells()[4:]]
    rows = run_grid(SPEC, resumed, store, progress=False)
    assert resumed.calls == [c.key for c in SPEC.cells()[4:]]
    assert rows == ref
    assert len(rows) == 2 * len(SPEC)
    # Axis columns were added and rows come in grid order.
    assert [(r["beta"], r["eps"]) for r in rows[::2]] == [
        (c["beta"], c["eps"]) for c in SPEC.cells()
    ]
    # A third run computes nothing.
    again = Counter()
    assert run_grid(SPEC, again, store, progress=False) == ref and again.calls == []


def test_batched_compute_gets_pending_cells_of_a_group(tmp_path):
    groups_seen = []

    def compute(cells):
        groups_seen.append([c.key for c in cells])
        return {c.key: CellResult(_rows_for(c), {"d": np.full(3, c["eps"])}) for c in cells}

    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    store.save(SPEC.cells()[1], _rows_for(SPEC.cells()[1]))  # beta=1, eps=0.1 already done
    rows = run_grid(SPEC, compute, store, batch_axes=("eps",), progress=False)
    assert groups_seen == [
        ["beta=1|eps=0.05"],
        ["beta=5|eps=0.05", "beta=5|eps=0.1"],
        ["beta=10|eps=0.05", "beta=10|eps=0.1"],
    ]
    assert len(rows) == 12
    loaded = store.load("beta=10|eps=0.1")
    np.testing.assert_array_equal(loaded.arrays["d"], np.full(3, 0.1))
    assert loaded.rows == [dict(r, beta=10.0) for r in _rows_for(SPEC.cells()[5])]


def test_batched_result_must_cover_cells(tmp_path):
    store = ResultStore(tmp_path, Cfg())
    with pytest.raises(ValueError, match="2 results for 1 cells|1 results for 2 cells"):
        run_grid(SPEC, lambda cells: [[]], store, batch_axes=("eps",), progress=False)
    with pytest.raises(ValueError, match="batch_axes"):
        run_grid(SPEC, lambda cells: [], store, batch_axes=("lr",), progress=False)


def test_row_contradicting_its_cell_is_rejected(tmp_path):
    store = ResultStore(tmp_path, Cfg())
    with pytest.raises(ValueError, match="eps=0.2"):
        run_grid(SPEC, lambda c: [{"eps": 0.2}], store, progress=False)
    # float32 spelling of the same eps is accepted (canonical comparison).
    spec = GridSpec({"eps": [0.1]})
    rows = run_grid(spec, lambda c: [{"eps": np.float32(0.1)}], store, progress=False)
    assert len(rows) == 1


def test_fingerprint_mismatch_and_fresh(tmp_path):
    store = ResultStore(tmp_path, Cfg(seed=0), spec=SPEC)
    store.save(SPEC.cells()[0], [{"a": 1}])
    with pytest.raises(FingerprintMismatchError, match=r"seed.*fresh=True"):
        ResultStore(tmp_path, Cfg(seed=1))
    # Same config reopens and sees the cell; fresh=True discards it.
    assert ResultStore(tmp_path, Cfg(seed=0)).done(SPEC.cells()[0])
    fresh = ResultStore(tmp_path, Cfg(seed=1), fresh=True)
    assert not fresh.done(SPEC.cells()[0])
    assert json.loads((tmp_path / "run.json").read_text())["config"] == {"seed": 1, "steps": 10}


def test_partial_writes_are_never_done(tmp_path, monkeypatch):
    store = ResultStore(tmp_path, Cfg())
    cell = SPEC.cells()[0]
    # 1. A stray temp file of a crashed writer is ignored.
    (store.cells_dir / ".beta=1__eps=0.05-x.json.abc.tmp").write_text('{"key": "beta=1|eps')
    assert not store.done(cell)
    # 2. A crash inside the write (after some bytes) leaves no record and no temp file behind.
    import vaerob_jax.sweeps.tables as tables

    real_fsync = os.fsync

    def boom(fd):
        raise OSError("disk died")

    monkeypatch.setattr(tables.os, "fsync", boom)
    with pytest.raises(OSError, match="disk died"):
        store.save(cell, [{"a": 1.5}])
    monkeypatch.setattr(tables.os, "fsync", real_fsync)
    assert not store.done(cell)
    assert sorted(p.name for p in store.cells_dir.iterdir()) == [".beta=1__eps=0.05-x.json.abc.tmp"]
    # 3. A truncated record under the final name (copied by hand) is not done either.
    _, jpath, _ = store._paths(cell)
    jpath.write_text('{"key": "beta=1|eps=0.05", "rows": [{"a"')
    with pytest.warns(UserWarning, match="unreadable"):
        assert not store.done(cell)
    with pytest.raises(KeyError, match="no finished result"), pytest.warns(UserWarning):
        store.load(cell)
    # A complete save then commits it.
    store.save(cell, [{"a": 1.5}])
    assert store.done(cell) and store.load(cell).rows == [{"a": 1.5}]


def test_rows_and_arrays_round_trip_exactly(tmp_path):
    store = ResultStore(tmp_path)
    vals = np.random.default_rng(0).normal(size=5)
    rows = {"x": vals, "k": np.arange(5), "nan": np.full(5, np.nan)}
    store.save("beta=1", rows, arrays={"delta": vals.astype(np.float32).reshape(5, 1)})
    got = store.load("beta=1")
    assert [r["x"] for r in got.rows] == vals.tolist()
    assert [r["k"] for r in got.rows] == list(range(5))
    assert all(np.isnan(r["nan"]) for r in got.rows)
    assert got.arrays["delta"].dtype == np.float32
    np.testing.assert_array_equal(got.arrays["delta"][:, 0], vals.astype(np.float32))
    # Re-saving without arrays drops the stale arrays file.
    store.save("beta=1", [{"x": 1}])
    assert store.load("beta=1").arrays is None
    assert not list(store.cells_dir.glob("*.npz"))


def test_all_rows_strict_and_order(tmp_path):
    store = ResultStore(tmp_path, spec=SPEC)
    for c in reversed(SPEC.cells()[:3]):
        store.save(c, [{"k": c.key}])
    assert [r["k"] for r in store.all_rows()] == [c.key for c in SPEC.cells()[:3]]
    with pytest.raises(ValueError, match="3 cells unfinished"):
        store.all_rows(strict=True)


def test_log_progress_prints_eta(tmp_path, capsys):
    run_grid(SPEC, Counter(), ResultStore(tmp_path), progress="log", log_every_s=0.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 + len(SPEC)
    assert lines[0].startswith("[run_grid] 0/6 cells (0 resumed)") and "ETA ?" in lines[0]
    assert lines[-1].startswith("[run_grid] 6/6 cells") and lines[-1].endswith("ETA 0s")
    assert format_duration(3723) == "1h02m03s" and format_duration(65) == "1m05s"
