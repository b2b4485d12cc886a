"""Result store integrity (issue 9): checksummed cells, cells tied to their models' digest,
non-finite results never committed, damaged files recomputed with a warning naming them."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from vaerob_jax.sweeps import (
    CellRecomputeWarning,
    CellResult,
    GridSpec,
    NonFiniteResultError,
    ResultStore,
    params_digest,
    run_grid,
)


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0


SPEC = GridSpec({"beta": [1.0, 5.0], "eps": [0.05, 0.1]})


class Compute:
    """Rows and arrays that depend on the cell; records which cells were computed."""

    def __init__(self, nan_cells=(), nan_arrays=False):
        self.calls: list[str] = []
        self.nan_cells = set(nan_cells)
        self.nan_arrays = nan_arrays

    def __call__(self, cell):
        self.calls.append(cell.key)
        b, e = cell["beta"], cell["eps"]
        delta = [b * e + i for i in range(3)]
        if cell.key in self.nan_cells:
            delta[1] = float("nan")
        rows = [
            {"example_id": i, "delta_c": delta[i], "bound": float("nan") if i == 0 else 1.0}
            for i in range(3)
        ]
        arr = np.full((3, 4), b * e, np.float32)
        if self.nan_arrays and cell.key in self.nan_cells:
            arr[0, 0] = np.inf
        return CellResult(rows, {"mu_adv": arr, "ids": np.arange(3)})


def _fresh_run(tmp_path, **kw):
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    return store, run_grid(SPEC, Compute(), store, progress=False, **kw)


def _rerun(tmp_path, **kw):
    compute = Compute()
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    rows = run_grid(SPEC, compute, store, progress=False, **kw)
    return store, compute.calls, rows


# -- item 4: damaged or truncated files -------------------------------------------------------


def test_truncated_npz_is_recomputed_with_a_warning_naming_it(tmp_path):
    store, ref = _fresh_run(tmp_path)
    cell = SPEC.cells()[2]
    _, _, npath = store._paths(cell)
    npath.write_bytes(npath.read_bytes()[: npath.stat().st_size // 2])  # a crash mid-copy
    with pytest.warns(CellRecomputeWarning, match=str(npath)):
        store, calls, rows = _rerun(tmp_path)
    assert calls == [cell.key]  # only the damaged cell is recomputed
    assert rows == ref
    np.testing.assert_array_equal(store.load(cell).arrays["mu_adv"], np.full((3, 4), 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and now it is clean
        assert _rerun(tmp_path)[1] == []


def test_flipped_byte_in_npz_is_detected(tmp_path):
    store, ref = _fresh_run(tmp_path)
    cell = SPEC.cells()[1]
    _, _, npath = store._paths(cell)
    raw = bytearray(npath.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # bit rot inside the array data
    npath.write_bytes(bytes(raw))
    # Direct use: load never raises BadZipFile; the damaged cell is simply not done.
    with pytest.warns(CellRecomputeWarning, match="checksum"):
        assert not ResultStore(tmp_path, Cfg()).done(cell)
    with pytest.warns(CellRecomputeWarning), pytest.raises(KeyError, match="no finished"):
        ResultStore(tmp_path, Cfg()).load(cell)
    with pytest.warns(CellRecomputeWarning, match=str(npath)):
        assert _rerun(tmp_path)[1] == [cell.key]


def test_edited_rows_in_a_record_are_detected(tmp_path):
    store, ref = _fresh_run(tmp_path)
    cell = SPEC.cells()[3]
    _, jpath, _ = store._paths(cell)
    rec = json.loads(jpath.read_text())
    rec["rows"][0]["delta_c"] = 123.0  # still valid JSON, wrong numbers
    jpath.write_text(json.dumps(rec))
    with pytest.warns(CellRecomputeWarning, match=str(jpath)):
        store, calls, rows = _rerun(tmp_path)
    assert calls == [cell.key] and rows == ref


def test_missing_npz_and_garbage_record_are_not_done(tmp_path):
    store, _ = _fresh_run(tmp_path)
    c0, c1 = SPEC.cells()[:2]
    store._paths(c0)[2].unlink()
    store._paths(c1)[1].write_bytes(b"\x00\xff garbage")
    with pytest.warns(CellRecomputeWarning) as record:
        assert [c.key for c in ResultStore(tmp_path, Cfg()).pending(SPEC)] == [c0.key, c1.key]
    text = " ".join(str(w.message) for w in record)
    assert str(store._paths(c0)[2]) in text and str(store._paths(c1)[1]) in text


def test_records_of_the_previous_format_stay_readable(tmp_path):
    # Format-1 records (before checksums): accepted when their files open, else recomputed.
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    run_grid(SPEC, Compute(), store, progress=False)
    for cell in SPEC.cells():
        _, jpath, _ = store._paths(cell)
        rec = json.loads(jpath.read_text())
        for k in ("format", "checksums", "params_digest"):
            rec.pop(k, None)
        jpath.write_text(json.dumps(rec))
    bad = SPEC.cells()[0]
    npath = store._paths(bad)[2]
    npath.write_bytes(npath.read_bytes()[:100])
    with pytest.warns(CellRecomputeWarning, match=str(npath)):
        assert _rerun(tmp_path)[1] == [bad.key]


# -- item 2: cells tied to the parameters they were computed from -----------------------------


def test_cells_are_recomputed_when_the_models_change(tmp_path):
    digests = {1.0: params_digest({"w": np.ones(3)}), 5.0: params_digest({"w": np.zeros(3)})}

    def of(cell):
        return digests[cell["beta"]]

    store, ref = _fresh_run(tmp_path, params_digest=of)
    cell = SPEC.cells()[0]
    assert store.done(cell, params_digest=digests[1.0])
    assert not store.done(cell, params_digest=digests[5.0])
    assert store.done(cell)  # no digest asked: not checked
    assert _rerun(tmp_path, params_digest=of)[1] == []
    # Retrain the beta=5 model: only its cells are recomputed, with a warning.
    digests[5.0] = params_digest({"w": np.full(3, 2.0)})
    with pytest.warns(CellRecomputeWarning, match="other model parameters"):
        store, calls, rows = _rerun(tmp_path, params_digest=of)
    assert calls == [c.key for c in SPEC.cells() if c["beta"] == 5.0]
    assert rows == ref
    rec = json.loads(store._paths(SPEC.cells()[3])[1].read_text())
    assert rec["params_digest"] == digests[5.0]
    # One digest for all cells (a string), and a mapping by cell key.
    assert [c.key for c in store.pending(SPEC, params_digest=digests[1.0])] == [
        c.key for c in SPEC.cells() if c["beta"] == 5.0
    ]
    by_key = {c.key: of(c) for c in SPEC.cells()}
    assert store.pending(SPEC, params_digest=by_key) == []
    assert len(store.all_rows(SPEC, params_digest=digests[1.0])) == 6
    with pytest.raises(KeyError, match="other model parameters"):
        store.load(SPEC.cells()[3], params_digest=digests[1.0])


def test_cells_without_a_digest_are_recomputed_when_one_is_asked(tmp_path):
    store, ref = _fresh_run(tmp_path)  # stored without digests (e.g. by an older version)
    d = params_digest({"w": np.ones(2)})
    with pytest.warns(CellRecomputeWarning, match="other model parameters"):
        assert len(_rerun(tmp_path, params_digest=d)[1]) == len(SPEC)
    with pytest.raises(ValueError, match="params_digest"):
        store.save(SPEC.cells()[0], [{"a": 1}], params_digest="")


# -- item 2: non-finite results are never committed --------------------------------------------


def test_non_finite_listed_column_is_refused_naming_cell_column_count(tmp_path):
    bad = SPEC.cells()[1].key
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    compute = Compute(nan_cells=[bad])
    with pytest.raises(NonFiniteResultError) as err:
        run_grid(SPEC, compute, store, progress=False, finite=("delta_c",))
    msg = str(err.value)
    assert bad in msg and "delta_c" in msg and "1 of 3 rows" in msg
    assert not store.done(bad)
    assert store.done(SPEC.cells()[0])  # cells before it were kept
    # The NaN 'bound' (an undefined bound) of every cell is allowed: it is not listed.
    rows = run_grid(SPEC, Compute(), store, progress=False, finite=("delta_c",))
    assert sum(np.isnan(r["bound"]) for r in rows) == len(SPEC)


def test_batched_group_keeps_its_finite_cells(tmp_path):
    bad = "beta=5|eps=0.1"
    compute = Compute(nan_cells=[bad])
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    with pytest.raises(NonFiniteResultError, match=r"beta=5\|eps=0.1"):
        run_grid(
            SPEC,
            lambda cells: [compute(c) for c in cells],
            store,
            batch_axes=("eps",),
            progress=False,
            finite=("delta_c",),
        )
    assert [c.key for c in store.pending(SPEC)] == [bad]


def test_non_finite_float_arrays_are_refused_unless_allowed(tmp_path):
    bad = SPEC.cells()[0]
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    with pytest.raises(NonFiniteResultError, match=r"mu_adv.*1 non-finite"):
        run_grid(SPEC, Compute([bad.key], nan_arrays=True), store, progress=False)
    assert not store.done(bad)
    with pytest.raises(NonFiniteResultError, match="mu_adv"):
        store.save(bad, [{"a": 1.0}], {"mu_adv": np.array([np.nan])})
    store.save(bad, [{"a": 1.0}], {"mu_adv": np.array([np.nan])}, arrays_finite=False)
    assert np.isnan(store.load(bad).arrays["mu_adv"][0])
    # Integer arrays are always finite; a named subset checks only those arrays.
    store.save(bad, [{"a": 1.0}], {"x": np.array([np.nan]), "y": np.ones(2)}, arrays_finite=["y"])


def test_finite_checks_reject_bad_declarations(tmp_path):
    store = ResultStore(tmp_path, Cfg())
    with pytest.raises(ValueError, match="'delta_c'.*missing from 1 of 2 rows"):
        store.save("c", [{"delta_c": 1.0}, {"x": 2.0}], finite=("delta_c",))
    with pytest.raises(ValueError, match="'name'.*not a number"):
        store.save("c", [{"name": "a"}], finite=("name",))
    with pytest.raises(NonFiniteResultError, match="None"):
        store.save("c", [{"delta_c": None}], finite=("delta_c",))
    assert not store.done("c")


def test_stored_non_finite_cells_are_recomputed_when_columns_are_declared(tmp_path):
    # A store written before the finite check (or without it) may hold NaN cells as done.
    bad = SPEC.cells()[2].key
    store = ResultStore(tmp_path, Cfg(), spec=SPEC)
    run_grid(SPEC, Compute(nan_cells=[bad]), store, progress=False)
    assert store.done(bad) and not store.done(bad, finite=("delta_c",))
    assert store.status(bad, finite="delta_c") == "nonfinite"  # one name may be a str
    with pytest.warns(CellRecomputeWarning, match="non-finite"):
        _, calls, rows = _rerun(tmp_path, finite=("delta_c",))
    assert calls == [bad]
    assert all(np.isfinite(r["delta_c"]) for r in rows)
