"""The subgroup study over training seeds: per-run tables read back, the across-run Friedman
test per cell, readings that follow the data, refusal of mismatched runs, the CLI, and one
end-to-end run on the 'tiny' preset (slow)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from vaerob_jax.cli import main
from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS
from vaerob_jax.studies.subgroups.replicates import (
    replicate_readings,
    replicate_tables,
    run_replicates,
    write_replicate_outputs,
)
from vaerob_jax.sweeps import read_csv, write_csv

GROUPS = ["young-women", "young-men", "old-women", "old-men"]


def _fake_run(folder, medians: dict[tuple[float, float], list[float]], p_values=None):
    """A finished study folder holding only what the comparison reads."""
    summary, omnibus = [], []
    for (beta, eps), meds in medians.items():
        for g, m in zip(GROUPS, meds, strict=True):
            summary.append({"beta": beta, "eps": eps, "subgroup": g, "n": 64, "median": m})
        p = (p_values or {}).get((beta, eps), 0.5)
        omnibus.append({"beta": beta, "eps": eps, "p_value": p, "highest": "x", "lowest": "y"})
    write_csv(folder / "summary.csv", summary)
    write_csv(folder / "disparity_omnibus.csv", omnibus)
    return folder


def _runs(tmp_path, seed_medians, p_values=None):
    return {
        s: _fake_run(tmp_path / f"seed={s}", meds, (p_values or {}).get(s))
        for s, meds in seed_medians.items()
    }


def _brute_force_p(table):
    """Exact Friedman p by enumerating all (4!)^K orderings (no ties)."""
    ranks = np.argsort(np.argsort(table, axis=1), axis=1).astype(float)

    def ss(r):
        return float(np.sum(r.sum(axis=0) ** 2))

    obs = ss(ranks)
    perms = [list(p) for p in itertools.permutations(range(table.shape[1]))]
    vals = [
        ss(np.stack([ranks[i][p] for i, p in enumerate(arr)]))
        for arr in itertools.product(perms, repeat=len(table))
    ]
    return float(np.mean(np.asarray(vals) >= obs - 1e-9))


def test_consistent_cell_rejects_and_the_readings_follow_the_tables(tmp_path):
    rng = np.random.default_rng(0)
    consistent, noisy = (1.0, 0.1), (1.0, 0.03)
    seed_medians = {}
    for s in (3, 4, 5):
        scale = rng.uniform(1, 3)
        seed_medians[s] = {
            consistent: list(scale * np.array([1.0, 1.1, 1.3, 1.2])),  # old-women highest
            noisy: list(rng.permutation([1.0, 1.1, 1.2, 1.3])),
        }
    p_values = {3: {consistent: 0.01}, 4: {consistent: 0.2, noisy: 0.001}}
    medians, tests = replicate_tables(_runs(tmp_path, seed_medians, p_values))
    assert len(medians) == 3 * 2 * 4 and len(tests) == 2
    by_cell = {(t["beta"], t["eps"]): t for t in tests}
    c, n = by_cell[consistent], by_cell[noisy]
    assert c["p_value"] == pytest.approx(1 / 576) and c["min_p"] == pytest.approx(1 / 576)
    assert c["p_holm"] == pytest.approx(2 / 576)  # Holm over the two cells
    assert (c["highest"], c["times_highest"], c["lowest"]) == ("old-women", 3, "young-women")
    assert c["kendall_w"] == pytest.approx(1.0)
    assert c["highest_each_run"] == "old-women;old-women;old-women"
    assert c["runs_rejecting"] == 1 and n["runs_rejecting"] == 1
    assert c["seeds"] == "3;4;5" and c["runs"] == 3
    table = np.array([seed_medians[s][noisy] for s in (3, 4, 5)])
    assert n["p_value"] == pytest.approx(_brute_force_p(table), abs=1e-12)
    # per-run columns: the run's medians, ranks and deviation from the run's mean
    for s in (3, 4, 5):
        rows = [r for r in medians if r["seed"] == s and (r["beta"], r["eps"]) == noisy]
        meds = np.array([r["median"] for r in rows])
        np.testing.assert_allclose(meds, seed_medians[s][noisy])
        assert [r["rank"] for r in rows] == list(np.argsort(np.argsort(meds)) + 1)
        rel = np.array([r["relative_to_run_mean"] for r in rows])
        np.testing.assert_allclose(rel, meds / meds.mean() - 1)
    readings = replicate_readings(tests)
    assert readings[0].startswith("Over 3 training runs (seeds 3, 4, 5)")
    assert "in 1 of 2 (β, ε) cells (β=1, ε=0.1)" in readings[0]
    assert len(readings) == 2  # the overall sentence, then β = 1 at the largest ε
    assert "the same subgroup (old-women) has the highest median in all 3 runs" in readings[1]
    assert "The ordering repeats across training runs: old-women" in readings[1]
    # the same cell with runs that disagree: the sentence changes with the data
    flipped = dict(c)
    flipped.update(highest_each_run="young-men;old-women;old-men", p_value=0.9, p_holm=1.0)
    sentence = replicate_readings([flipped])[1]
    assert "young-men in 1, old-women in 1, old-men in 1 of the 3 runs" in sentence
    assert "not reproduced by retraining" in sentence
    flipped.update(runs_rejecting=0)
    assert "Neither the runs nor their comparison" in replicate_readings([flipped])[1]


def test_outputs_are_written_and_two_runs_cannot_reach_a_holm_rejection(tmp_path):
    rng = np.random.default_rng(1)
    cells = [(b, e) for b in (1.0, 5.0) for e in (0.05, 0.1)]
    seed_medians = {s: {c: list(rng.uniform(1, 2, 4)) for c in cells} for s in (0, 1)}
    runs = _runs(tmp_path, seed_medians)
    paths = write_replicate_outputs(runs, tmp_path)
    tests = read_csv(paths["replicate_tests"], {"highest": str, "lowest": str})
    assert len(tests) == 4 and all(t["min_p"] == pytest.approx(1 / 24) for t in tests)
    assert paths["figure"].stat().st_size > 1000
    report = paths["report"].read_text()
    assert "more runs are needed before any cell can reject" in report  # 1/24 > 0.05/4
    # and no cell's sentence reads that lack of power as a failure to reproduce
    assert "cannot reject after Holm's adjustment over 4 cells" in report
    assert "not reproduced by retraining" not in report
    assert "[seed=0/report.md](seed=0/report.md)" in report
    assert len(read_csv(paths["replicate_medians"])) == 2 * 4 * 4


def test_tied_highest_medians_are_named_as_ties(tmp_path):
    cell = (1.0, 0.1)
    seed_medians = {
        0: {cell: [1.0, 1.3, 1.1, 1.3]},  # young-men and old-men tie for the highest
        1: {cell: [1.0, 1.3, 1.1, 1.2]},
        2: {cell: [1.0, 1.2, 1.1, 1.3]},
    }
    _, tests = replicate_tables(_runs(tmp_path, seed_medians))
    assert tests[0]["highest_each_run"] == "young-men=old-men;young-men;old-men"
    sentence = replicate_readings(tests)[1]
    assert "young-men and old-men tied in 1, young-men in 1, old-men in 1 of the 3" in sentence


def test_runs_of_other_configs_or_unfinished_runs_are_refused(tmp_path):
    a = _fake_run(tmp_path / "a", {(1.0, 0.1): [1, 2, 3, 4]})
    b = _fake_run(tmp_path / "b", {(5.0, 0.1): [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="run seed=1"):
        replicate_tables({0: a, 1: b})
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="not a finished subgroup study"):
        replicate_tables({0: a, 1: tmp_path / "c"})
    with pytest.raises(ValueError, match="at least 2 runs"):
        replicate_tables({0: a})


def test_cli_refuses_a_bad_replicate_count_before_running(tmp_path, capsys, monkeypatch):
    import vaerob_jax.studies.subgroups as sg

    def boom(*args, **kwargs):
        raise AssertionError("a study ran")

    monkeypatch.setattr(sg, "run_subgroup_study", boom)
    code = main(["subgroups", "--preset", "tiny", "--replicates", "0", "--out", str(tmp_path)])
    assert code == 2 and "replicates must be >= 2" in capsys.readouterr().err


@pytest.mark.slow
def test_replicates_end_to_end_on_the_tiny_preset_and_resume(tmp_path, monkeypatch):
    cfg = dataclasses.replace(
        SUBGROUP_PRESETS["tiny"], betas=(1.0,), classifier_steps=0, convergence_factor=0, seed=2
    )
    lines: list[str] = []
    paths = run_replicates(cfg, tmp_path, 2, progress=False, log=lines.append)
    assert any("ETA" in line for line in lines)  # progress between runs
    medians = read_csv(paths["replicate_medians"], {"subgroup": str})
    for seed in (2, 3):
        run = read_csv(tmp_path / f"seed={seed}" / "summary.csv", {"subgroup": str})
        ours = sorted((r["beta"], r["eps"], r["subgroup"], r["median"]) for r in run)
        theirs = sorted(
            (r["beta"], r["eps"], r["subgroup"], r["median"]) for r in medians if r["seed"] == seed
        )
        assert ours == theirs and len(ours) == 1 * 2 * 4
        assert (tmp_path / f"seed={seed}" / "report.md").is_file()
    # the two runs are different trainings: their medians differ
    a = [r["median"] for r in medians if r["seed"] == 2]
    b = [r["median"] for r in medians if r["seed"] == 3]
    assert not np.allclose(a, b)
    before = paths["replicate_tests"].read_text()
    import vaerob_jax.attacks as atk

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was attacked again")

    monkeypatch.setattr(atk, "run_attack", boom)
    again = run_replicates(cfg, tmp_path, 2, progress=False, log=lambda _: None)
    assert again["replicate_tests"].read_text() == before
