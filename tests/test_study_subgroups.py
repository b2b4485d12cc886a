"""The subgroup study end to end on the 'tiny' preset: tables, consistency, resume, bad configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.helpers_study import study_once
from vaerob_jax.cli import main
from vaerob_jax.studies.common import canonical_grid, study_key
from vaerob_jax.studies.subgroups import (
    SUBGROUP_PRESETS,
    SubgroupStudyConfig,
    run_subgroup_study,
    validate_config,
)
from vaerob_jax.sweeps import read_csv

TINY = SUBGROUP_PRESETS["tiny"]
# Grid values that are not short decimals (β = 1/3, ε = 8/255) must survive the result store's
# canonical keys all the way to the report.
CFG = dataclasses.replace(TINY, betas=(1 / 3, 5.0), eps=(8 / 255, 0.1))
CANON = canonical_grid(CFG, ("betas", "eps"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return study_once(
        tmp_path_factory,
        "subgroups",
        lambda d: run_subgroup_study(CFG, d, progress=False, log=lambda _: None),
    )


@pytest.mark.slow
def test_tables_have_the_promised_shape(study):
    out, paths = study
    dev = read_csv(paths["deviation"])
    assert list(dev[0]) == [
        "beta", "eps", "subgroup", "example_id", "delta_c", "recon_loss", "latent_shift",
        "attack_value", "attack_start_value", "attack_nonfinite_steps", "attack_failed",
        "model_digest",
    ]  # fmt: skip
    # One model digest per β (the VAE attacked), different models, different digests.
    digests = {}
    for r in dev:
        digests.setdefault(r["beta"], set()).add(str(r["model_digest"]))
    assert all(len(d) == 1 for d in digests.values())
    assert len({next(iter(d)) for d in digests.values()}) == len(TINY.betas)
    # The attack's own record: best value never below its start, failures flagged per example
    # (on a trained tiny model PGD gains over its random start almost everywhere).
    assert all(r["attack_value"] >= r["attack_start_value"] for r in dev)
    assert all(r["attack_failed"] == int(r["attack_value"] <= r["attack_start_value"]) for r in dev)
    assert sum(r["attack_failed"] for r in dev) <= len(dev) // 10
    assert all(r["attack_nonfinite_steps"] == 0 for r in dev)
    n_cells = len(CANON.betas) * len(CANON.eps)
    assert len(dev) == n_cells * 4 * CANON.n_per_subgroup
    assert {r["subgroup"] for r in dev} == {"young-women", "young-men", "old-women", "old-men"}
    assert all(r["delta_c"] >= 0 and r["latent_shift"] >= 0 for r in dev)
    # Each (beta, eps) cell attacks the same examples.
    ids = {(r["beta"], r["eps"]): set() for r in dev}
    for r in dev:
        ids[(r["beta"], r["eps"])].add(r["example_id"])
    assert len({frozenset(v) for v in ids.values()}) == 1
    # The summary's medians are those of the per-example table.
    summary = read_csv(paths["summary"])
    assert len(summary) == n_cells * 4
    for s in summary:
        vals = [
            r["delta_c"]
            for r in dev
            if (r["beta"], r["eps"], r["subgroup"]) == (s["beta"], s["eps"], s["subgroup"])
        ]
        assert s["n"] == len(vals) == CANON.n_per_subgroup
        np.testing.assert_allclose(s["median"], np.median(vals), rtol=1e-12)
        assert s["ci_low"] <= s["median"] <= s["ci_high"]
    # A larger budget does more damage on average over the attacked examples.
    for beta in CANON.betas:
        mean_dc = {
            eps: np.mean([r["delta_c"] for r in dev if (r["beta"], r["eps"]) == (beta, eps)])
            for eps in CANON.eps
        }
        assert mean_dc[max(CANON.eps)] > mean_dc[min(CANON.eps)]
    # Disparities against the reference fixed in advance, Holm-adjusted within each cell,
    # and the omnibus test whose statistic is recomputed here from deviation.csv.
    from vaerob_jax.robustness import holm

    disp = read_csv(paths["disparity"])
    assert {r["reference"] for r in disp} == {"young-women"}  # all equal size: first in order
    omni = read_csv(paths["disparity_omnibus"])
    assert len(omni) == n_cells
    for o in omni:
        cell = [r for r in dev if (r["beta"], r["eps"]) == (o["beta"], o["eps"])]
        meds = {
            g: np.median([r["delta_c"] for r in cell if r["subgroup"] == g])
            for g in {r["subgroup"] for r in cell}
        }
        np.testing.assert_allclose(o["statistic"], max(meds.values()) - min(meds.values()))
        assert o["highest"] == max(meds, key=meds.get) and 0 < o["p_value"] <= 1
        pair = [d for d in disp if (d["beta"], d["eps"]) == (o["beta"], o["eps"])]
        raw = [d["p_value"] for d in pair if d["subgroup"] != d["reference"]]
        adj = [d["p_holm"] for d in pair if d["subgroup"] != d["reference"]]
        np.testing.assert_allclose(adj, holm(raw))
    # Convergence evidence at the largest ε: the default medians are deviation.csv's, the
    # relative changes and the verdict follow from the medians.
    conv = read_csv(paths["attack_convergence"])
    assert len(conv) == len(CANON.betas) * 4
    eps_max = max(CANON.eps)
    from vaerob_jax.studies.subgroups.study import SubgroupStudy
    from vaerob_jax.sweeps import GridSpec, ResultStore, same_value

    store = ResultStore(out / "cells", SubgroupStudy().store_config(CANON))

    def cell_rows(c):
        return [r for r in dev if (r["beta"], r["eps"]) == (c["beta"], eps_max)]

    for c in conv:
        vals = [
            r["delta_c"]
            for r in dev
            if (r["beta"], r["eps"], r["subgroup"]) == (c["beta"], eps_max, c["subgroup"])
        ]
        np.testing.assert_allclose(c["median_default"], np.median(vals), rtol=1e-12)
        np.testing.assert_allclose(
            c["change_doubled"], c["median_doubled"] / c["median_default"] - 1, rtol=1e-9
        )
        assert c["converged_steps"] == int(abs(c["change_doubled"]) < 0.02)
        assert c["converged"] == int(c["converged_steps"] and abs(c["change_strong"]) < 0.02)
        assert c["seed_median_min"] <= c["median_default"] <= c["seed_median_max"]
        assert c["strong_steps"] == CANON.convergence_factor * CANON.attack_steps
        objective = [
            r["attack_value"]
            for r in dev
            if (r["beta"], r["eps"], r["subgroup"]) == (c["beta"], eps_max, c["subgroup"])
        ]
        np.testing.assert_allclose(c["objective_default"], np.median(objective), rtol=1e-12)
        # the stronger arms' objectives are the cell's stored obj_* arrays
        cell = next(
            k for k in GridSpec({"beta": list(CANON.betas), "eps": list(CANON.eps)})
            if same_value(k["beta"], c["beta"]) and same_value(k["eps"], eps_max)
        )  # fmt: skip
        arrays = store.load(cell).arrays
        mine = np.asarray([r["subgroup"] == c["subgroup"] for r in cell_rows(c)])
        for arm in ("doubled", "strong"):
            np.testing.assert_allclose(
                c[f"objective_change_{arm}"],
                np.median(arrays[f"obj_{arm}"][mine]) / np.median(objective) - 1,
                rtol=1e-9,
                atol=1e-12,
            )
    acc = read_csv(paths["classifier_accuracy"])
    assert {r["input"] for r in acc} == {"clean", "recon", "adv_recon"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in acc)
    nb = read_csv(paths["neighbours"])
    assert all(0.0 <= r["other_share_clean"] <= 1.0 for r in nb)
    report = paths["report"].read_text()
    assert "omnibus p=" in report and "Holm" in report and "Has the attack converged?" in report
    for name in ("deviation_distributions_by_subgroup.png", "median_deviation_vs_eps.png"):
        assert name in report and (out / "figures" / name).stat().st_size > 1000


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(study, monkeypatch):
    out, paths = study
    before = paths["deviation"].read_text()
    import vaerob_jax.attacks as atk

    def boom(*args, **kwargs):
        raise AssertionError("a finished cell was attacked again")

    monkeypatch.setattr(atk, "run_attack", boom)
    again = run_subgroup_study(CFG, out, progress=False, log=lambda _: None)
    assert again["deviation"].read_text() == before


@pytest.mark.slow
def test_new_eps_value_only_computes_new_cells(study, tmp_path, monkeypatch):
    out, _ = study
    import shutil

    import vaerob_jax.attacks as atk

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    calls = []
    real = atk.run_attack

    def counting(attack, params, xs, eps_grid, key, **kw):
        calls.append(np.asarray(eps_grid).tolist())
        return real(attack, params, xs, eps_grid, key, **kw)

    monkeypatch.setattr(atk, "run_attack", counting)
    bigger = dataclasses.replace(CFG, eps=(*CFG.eps, 0.2))
    paths = run_subgroup_study(bigger, copy, progress=False, log=lambda _: None)
    # per β: the new cell's attack, and, as 0.2 is the new largest ε, the convergence check's
    # doubled and strong attacks and attack_seeds - 1 default attacks from other starts
    per_beta = 1 + 2 + (CANON.attack_seeds - 1)
    assert all(np.allclose(c, [0.2]) for c in calls) and len(calls) == len(CANON.betas) * per_beta
    assert len(read_csv(paths["deviation"])) == len(CANON.betas) * 3 * 4 * CANON.n_per_subgroup


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eps": (-0.1, 0.1)}, "eps"),
        ({"betas": (1.0, -2.0)}, "betas"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"norm": "l1"}, "norm"),
        ({"n_per_subgroup": 0}, "n_per_subgroup"),
        ({"sample_split": "validation"}, "sample_split"),
    ],
)
def test_bad_config_is_rejected_before_anything_runs(change, message):
    with pytest.raises(ValueError, match=message):
        validate_config(dataclasses.replace(TINY, **change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_per_subgroup": 100}, "old-women"),
        ({"subgroups": ("Young", "Bald")}, "Bald"),
        ({"eps": (float("nan"),)}, "eps"),
        ({"disparity_reference": "old_women"}, "disparity_reference 'old_women'"),
        ({"knn_k": 65}, "knn_k=65 exceeds n_reference=64"),
        ({"n_reference": 10_000, "knn_k": 1000}, "knn_k=1000 exceeds the"),
    ],
)
def test_bad_config_fails_before_training(change, message, tmp_path, monkeypatch):
    import vaerob_jax.studies.subgroups.study as study_mod

    def no_training(*a, **k):
        raise AssertionError("training started before the config was validated")

    monkeypatch.setattr(study_mod, "train_grid", no_training)
    with pytest.raises(ValueError, match=message):
        run_subgroup_study(dataclasses.replace(TINY, **change), tmp_path, progress=False)


def test_cli_reports_bad_config_with_exit_code_2(tmp_path, capsys):
    code = main(["subgroups", "--preset", "tiny", "--eps", "-1", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "eps" in capsys.readouterr().err


def test_cli_flags_override_the_preset():
    from vaerob_jax.cli import build_parser
    from vaerob_jax.commands.subgroups import build_config

    args = build_parser().parse_args(
        [
            "subgroups",
            "--preset",
            "tiny",
            "--betas",
            "2,3",
            "--subgroups",
            "Young,Male",
            "--out",
            "x",
        ]
    )
    cfg = build_config(args)
    assert cfg.betas == (2.0, 3.0) and cfg.subgroups == ("Young", "Male")
    assert cfg.attack_steps == TINY.attack_steps
    assert isinstance(cfg, SubgroupStudyConfig)
    args = build_parser().parse_args(["subgroups", "--dataset", "celeb_a", "--out", "x"])
    assert build_config(args) == SUBGROUP_PRESETS["celeb_a"]


def test_grid_values_are_canonicalised_once():
    assert CANON.betas == (0.333333333333, 5.0) and CANON.eps[0] == 0.0313725490196
    assert canonical_grid(CANON, ("betas", "eps")) == CANON


def test_study_keys_are_distinct_per_purpose_and_stable():
    import jax

    keys = [study_key(0, p) for p in ("sample", "attack", "classifier/Male", "margins")]
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    assert len(data) == 4
    assert np.array_equal(
        jax.random.key_data(study_key(0, "attack")), jax.random.key_data(study_key(0, "attack"))
    )


def test_a_cell_whose_attack_never_moved_raises_and_partial_failures_are_logged():
    from vaerob_jax.attacks import AttackFailedError
    from vaerob_jax.studies.subgroups.attack_checks import check_attack_cells

    cells = [{"beta": 1.0, "eps": 0.05}, {"beta": 1.0, "eps": 0.1}]
    diag = {
        "attack_failed": np.array([[0, 1, 0, 0], [0, 0, 0, 0]]),
        "attack_nonfinite_steps": np.array([[0, 3, 0, 0], [0, 0, 0, 0]]),
    }
    logged: list[str] = []
    check_attack_cells(cells, diag, logged.append)
    assert len(logged) == 1 and "ε=0.05, 1 of 4 examples" in logged[0]
    diag["attack_failed"] = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    with pytest.raises(AttackFailedError, match=r"all 4 examples at β=1, ε=0.1"):
        check_attack_cells(cells, diag, logged.append)


def _conv_row(beta, subgroup, default, doubled, strong, seeds=(0.0, 0.0), objective=None):
    extra = {} if objective is None else {
        "objective_change_doubled": objective[0], "objective_change_strong": objective[1],
    }  # fmt: skip
    return extra | {
        "beta": beta, "eps": 0.1, "subgroup": subgroup, "steps": 40, "restarts": 3,
        "median_default": default, "median_doubled": doubled, "strong_steps": 160,
        "strong_restarts": 3, "median_strong": strong,
        "change_doubled": doubled / default - 1, "change_strong": strong / default - 1,
        "seeds": 3, "seed_spread": seeds[1] - seeds[0],
        "converged_steps": int(abs(doubled / default - 1) < 0.02),
        "converged": int(abs(doubled / default - 1) < 0.02 and abs(strong / default - 1) < 0.02),
    }  # fmt: skip


def test_readings_follow_the_convergence_table():
    from vaerob_jax.studies.subgroups.readings import convergence_reading, ordering_change

    stable = [
        _conv_row(1.0, "young-men", 8.0, 8.05, 8.12, (-0.01, 0.01)),
        _conv_row(1.0, "old-women", 10.0, 10.1, 10.15),
    ]
    assert ordering_change(stable, 1.0) is None
    text = convergence_reading(stable)
    assert "at most 1.0 %" in text and "has converged at every β" in text and "25 %" in text
    # Steps converged, restarts not: what the default main job measured.
    restarts = [
        _conv_row(1.0, "young-men", 8.0, 8.05, 8.9),
        _conv_row(1.0, "old-women", 10.0, 10.1, 10.2),
    ]
    text = convergence_reading(restarts)
    assert "more random starts do" in text and "raise restarts" in text
    lowered = [dict(r) for r in restarts]
    lowered[0].update(median_strong=7.2, change_strong=-0.1)  # restarts lower Δc instead
    lowered[1].update(median_strong=10.1, change_strong=0.01)
    text = convergence_reading(lowered)
    assert "lower Δc rather than raise it" in text and "raise restarts" not in text
    assert "own objective" not in text  # a table without the objective columns
    # The objective converged while Δc moved: what the main job measures.
    restarts = [
        _conv_row(1.0, "young-men", 8.0, 8.05, 8.9, objective=(0.0003, 0.004)),
        _conv_row(1.0, "old-women", 10.0, 10.1, 10.2, objective=(0.0001, 0.013)),
    ]
    text = convergence_reading(restarts)
    assert "at most 0.03 % when the steps double and 1.30 % under the strong" in text
    assert "its steps have converged in what it maximises" in text
    assert "larger moves" not in text and "still find larger shifts" not in text
    # ... and Δc's moves (up to 11.3 %) within its spread over random starts (12 %).
    within = [dict(r) for r in restarts]
    within[0]["seed_spread"] = within[1]["seed_spread"] = 0.12
    text = convergence_reading(within)
    assert "no larger than its own spread over independent random starts (up to 12.0 %)" in text
    assert "raise restarts" not in text
    # row by row: young-men's 11.3 % move against old-women's 12 % spread is not "within"
    within[0]["seed_spread"] = 0.02
    text = convergence_reading(within)
    assert "no larger than its own spread" not in text
    assert "for some subgroup more than its own spread" in text
    within[0]["seed_spread"] = within[1]["seed_spread"] = (
        0.11  # a move beyond the spread: Δc unresolved, not "restarts"
    )
    text = convergence_reading(within)
    assert "Δc has not converged at β ∈ {1}, although the attack has" in text
    assert "differs by up to 11.3 %, for some subgroup more than its own spread" in text
    assert "(up to 11.0 %)" in text and "raise restarts" not in text
    restarts[0]["objective_change_strong"] = 0.05  # restarts still gain 5 % in the objective
    text = convergence_reading(restarts)
    assert "more random starts still find larger shifts (up to 5.0 %)" in text
    restarts[0]["objective_change_strong"] = -0.05  # a fall is not "larger shifts"
    assert "still find larger shifts" not in convergence_reading(restarts)
    restarts[0]["objective_change_strong"] = 0.05
    restarts[0]["median_doubled"] = 8.4  # Δc moves 5 % at 2x steps, the objective does not
    restarts[0]["change_doubled"] = 0.05
    assert "larger moves at 2× the steps (up to 5.0 %)" in convergence_reading(restarts)
    restarts[1]["objective_change_doubled"] = 0.03
    assert "not converged even in the objective" in convergence_reading(restarts)
    # The re-attack of the brief: young-men's median rises 17 % and overtakes old-women.
    flipped = [
        _conv_row(1.0, "young-men", 8.05, 8.6, 9.46),
        _conv_row(1.0, "old-women", 9.0, 9.05, 9.1),
    ]
    sentence = ordering_change(flipped, 1.0)
    assert sentence is not None and sentence.startswith("No least-robust subgroup is claimed")
    assert "old-women have the highest" in sentence and "but young-men under" in sentence
    assert "raise attack_steps" in convergence_reading(flipped)  # doubling moved 6.8 %
    # Δc moves at 2x steps while the objective does not: not "raise attack_steps"
    steady = [
        dict(r, objective_change_doubled=0.005, objective_change_strong=0.03) for r in flipped
    ]
    text = convergence_reading(steady)
    assert "raise attack_steps" not in text and "other near-optimal δ" in text


# -- issue 9: a folder's results are never lost or poisoned -----------------------------------


def _tree_digests(folder):
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".vaerob.lock"
    }


@pytest.mark.slow
def test_other_train_steps_is_refused_before_training_and_keeps_the_folder(
    study, tmp_path, monkeypatch
):
    """9.1: another --train-steps used to train over the folder's models; now the stored
    config refuses it first and nothing in the folder changes."""
    import shutil

    import vaerob_jax.studies.subgroups.study as study_mod
    from vaerob_jax.sweeps import FingerprintMismatchError

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _tree_digests(copy)

    def no_training(*a, **k):
        raise AssertionError("training started in a folder of other settings")

    monkeypatch.setattr(study_mod, "train_grid", no_training)
    longer = dataclasses.replace(CFG, train_steps=CFG.train_steps + 10)
    with pytest.raises(FingerprintMismatchError, match="train_steps"):
        run_subgroup_study(longer, copy, progress=False, log=lambda _: None)
    assert _tree_digests(copy) == before  # config.json included


@pytest.mark.slow
def test_cells_of_other_models_are_recomputed(study, tmp_path, monkeypatch):
    """9.2: cells are tied to the parameters they came from: a changed β = 5 model (as after
    a retrain or a restored-but-different checkpoint) recomputes exactly its cells."""
    import shutil

    import jax

    import vaerob_jax.attacks as atk
    from vaerob_jax.studies.subgroups.study import SubgroupStudy
    from vaerob_jax.sweeps import CellRecomputeWarning

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    real_train = SubgroupStudy.train

    def changed_train(self, config, inputs, run):
        trained = real_train(self, config, inputs, run)
        last = len(config.betas) - 1
        params = jax.tree.map(lambda a: a.at[last].add(1e-3), trained.params)
        return dataclasses.replace(trained, params=params)

    class Stop(Exception):
        pass

    calls = []

    def record(attack, params, xs, eps_grid, key, **kw):
        calls.append(np.asarray(eps_grid).tolist())
        raise Stop

    monkeypatch.setattr(SubgroupStudy, "train", changed_train)
    monkeypatch.setattr(atk, "run_attack", record)
    with (
        pytest.warns(CellRecomputeWarning, match="2 stored cells .* other model parameters"),
        pytest.raises(Stop),
    ):
        run_subgroup_study(CFG, copy, progress=False, log=lambda _: None)
    # β = 1/3 (unchanged) was not attacked; the first attack is β = 5's pending ε values.
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], CANON.eps, rtol=1e-6)


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_the_cli_exits_130(study, tmp_path, monkeypatch, capsys):
    import shutil

    import vaerob_jax.attacks as atk
    from vaerob_jax.commands import run_reporting_errors
    from vaerob_jax.studies import RunInterrupted

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(atk, "run_attack", ctrl_c)
    bigger = dataclasses.replace(CFG, eps=(*CFG.eps, 0.2))
    with pytest.raises(RunInterrupted) as exc:
        run_subgroup_study(bigger, copy, progress=False, log=lambda _: None)
    text = str(exc.value)
    n_done, n_all = len(CANON.betas) * len(CANON.eps), len(CANON.betas) * (len(CANON.eps) + 1)
    assert f"keeps {n_done} of {n_all} finished cells" in text
    assert f"checkpoints up to step {CANON.train_steps}" in text and "resume" in text

    def interrupted():
        raise exc.value

    assert run_reporting_errors("subgroups", interrupted) == (130, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vaerob subgroups: interrupted:")


def test_cli_refuses_a_held_or_unusable_out_with_exit_4(tmp_path, capsys):
    from vaerob_jax.sweeps import lock_output

    busy = tmp_path / "busy"
    with lock_output(busy, command="the first run"):
        assert main(["subgroups", "--preset", "tiny", "--out", str(busy)]) == 4
    err = capsys.readouterr().err
    assert "in use by another vaerob run" in err and "the first run" in err
    assert not (busy / "config.json").exists() and not (busy / "cells").exists()
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert main(["subgroups", "--preset", "tiny", "--out", str(a_file / "x")]) == 4
    assert "lies under" in capsys.readouterr().err


def test_count_flags_take_all_and_tfds_sizes_are_subsets():
    from vaerob_jax.commands.subgroups import build_config
    from vaerob_jax.data import size_kwargs

    args = build_parser_args(["--preset", "tiny", "--n-train", "all", "--n-test", "50"])
    cfg = build_config(args)
    assert cfg.n_train is None and cfg.n_test == 50 and cfg.backbone == TINY.backbone
    assert size_kwargs("shapes", 10) == {"n": 10}  # generated: how many are made
    assert size_kwargs("celeb_a", 10) == {"limit": 10}  # read: a seeded subset
    assert size_kwargs("mnist", None) == {}


def build_parser_args(argv):
    from vaerob_jax.cli import build_parser

    return build_parser().parse_args(["subgroups", "--out", "unused", *argv])


@pytest.mark.slow
def test_tfds_study_from_the_cli_on_mock_data(tmp_path, capsys):
    """9.8: the TFDS path of the study works from the CLI (the tiny preset's n_train becomes a
    subset of CelebA, not a generator option), end to end on TFDS's mock data."""
    import tensorflow_datasets as tfds

    out = tmp_path / "celeba"
    argv = ["subgroups", "--preset", "tiny", "--dataset", "celeb_a", "--betas", "1"]
    argv += ["--eps", "0.1", "--classifier-steps", "0", "--quiet", "--out", str(out)]
    with tfds.testing.mock_data(num_examples=96):
        assert main(argv) == 0, capsys.readouterr().err
    dev = read_csv(out / "deviation.csv", types={"subgroup": str})
    assert len(dev) == 4 * TINY.n_per_subgroup
    assert {r["subgroup"] for r in dev} == {"young-women", "young-men", "old-women", "old-men"}
    assert all(np.isfinite(r["delta_c"]) and r["delta_c"] >= 0 for r in dev)
    assert '"dataset": "celeb_a"' in (out / "config.json").read_text()


@pytest.mark.slow
def test_stored_perturbations_reproduce_the_tables(study):
    """Issue 8.7: Δc and the latent shift in deviation.csv follow from the stored δ by an
    independent computation (Eq. 5: ‖g(μ(x+δ)) − g(μ(x))‖₂ with the models loaded from the
    checkpoints), and every stored δ lies in its L∞ ball and keeps x + δ in the pixel box."""
    import jax
    import jax.numpy as jnp

    from vaerob_jax.studies.runner import StudyRun
    from vaerob_jax.studies.subgroups.study import SubgroupStudy, example_indices
    from vaerob_jax.sweeps import ResultStore, cell_key

    out, paths = study
    pieces = SubgroupStudy()
    run = StudyRun(out, progress=False, log=lambda _: None)
    inputs = pieces.prepare(CANON, run)
    trained = pieces.train(CANON, inputs, run)  # loads the finished checkpoints
    store = ResultStore(out / "cells", pieces.store_config(CANON))
    dev = read_csv(paths["deviation"])
    show = example_indices(inputs.sample)
    model, xs = inputs.model, inputs.sample.images[show].astype(np.float64)
    checked = 0
    for k, beta in enumerate(CANON.betas):
        params = jax.tree.map(lambda a, k=k: np.asarray(a[k]), trained.params)
        for eps in CANON.eps:
            deltas = store.load(cell_key({"beta": beta, "eps": eps})).arrays["example_deltas"]
            assert np.abs(deltas).max() <= eps * (1 + 1e-6)
            adv = xs + deltas
            assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
            rec = np.asarray(model.reconstruct(params, jnp.asarray(xs, jnp.float32)))
            rec_adv = np.asarray(model.reconstruct(params, jnp.asarray(adv, jnp.float32)))
            mu = np.asarray(model.embed(params, jnp.asarray(xs, jnp.float32)))
            mu_adv = np.asarray(model.embed(params, jnp.asarray(adv, jnp.float32)))
            for i, idx in enumerate(show):
                eid = int(inputs.sample.example_ids[idx])
                (row,) = [
                    r for r in dev
                    if (r["beta"], r["eps"], r["example_id"]) == (beta, eps, eid)
                ]  # fmt: skip
                dc = np.sqrt(np.sum((rec_adv[i].astype(np.float64) - rec[i]) ** 2))
                shift = np.sqrt(np.sum((mu_adv[i].astype(np.float64) - mu[i]) ** 2))
                np.testing.assert_allclose(row["delta_c"], dc, rtol=2e-4)
                np.testing.assert_allclose(row["latent_shift"], shift, rtol=2e-4, atol=1e-6)
                checked += 1
    assert checked == len(CANON.betas) * len(CANON.eps) * len(show)


# Runs the fixture's config on 4 fake CPU devices (a subprocess: the device count is fixed
# when a process creates its backend) from a folder holding only the fixture's trained models.
_TWO_PROCESSES = r"""
import dataclasses, os, sys
from pathlib import Path
import jax
from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, run_subgroup_study
from vaerob_jax.sweeps import ResultStore, distributed, parallel
distributed.initialize(distributed.settings_from())
assert len(jax.local_devices()) == 2 and len(jax.devices()) == 4
if sys.argv[2] == "die" and distributed.process_index() == 1:
    ResultStore.save = lambda *a, **k: os._exit(3)  # the host is lost before its first cell
cfg = dataclasses.replace(SUBGROUP_PRESETS["tiny"], betas=(1 / 3, 5.0), eps=(8 / 255, 0.1))
with parallel.use_devices():
    run_subgroup_study(cfg, Path(sys.argv[1]), progress=False, log=print)
"""


@pytest.mark.slow
def test_two_processes_resume_a_lost_host_to_the_one_process_tables(study, tmp_path):
    """Issue 14: two processes (jax.distributed, local coordinator, 2 emulated devices each)
    deal the cells between them; the second is lost before its first cell, the first keeps
    its cells; the rerun computes only the lost host's cells, and the coordinator's tables
    equal one process's bit for bit, for the same models. (Retraining differs by Adam-amplified
    rounding, ~1e-3 in a conv weight, so the trained models are copied in; train_grid's split
    is compared on an MLP in tests/test_distributed.py, to 1e-5.)"""
    import shutil
    import time

    from tests.test_distributed import _finish, _free_port, _launch, _output

    out, paths = study
    expected = dataclasses.replace(TINY, betas=(1 / 3, 5.0), eps=(8 / 255, 0.1))
    assert expected == CFG  # the program above runs the fixture's config
    copy = tmp_path / "two"
    copy.mkdir()
    for part in ("train", "classifiers"):
        shutil.copytree(out / part, copy / part)
    procs = _launch(_TWO_PROCESSES, str(copy), "die", port=_free_port())
    assert procs[1].wait(timeout=600) == 3, _output(procs[1])[-3000:]
    cells = copy / "cells" / "cells"
    mine = 2  # process 0's share: the β = 1/3 group of two ε cells
    deadline = time.monotonic() + 600
    while len(list(cells.glob("*.json"))) < mine and procs[0].poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    procs[0].kill()  # waiting at the barrier for the lost host
    procs[0].wait()
    kept = {p.name: p.stat().st_mtime_ns for p in cells.glob("*")}
    assert len([n for n in kept if n.endswith(".json")]) == mine
    assert not (copy / "report.md").exists()

    results = _finish(_launch(_TWO_PROCESSES, str(copy), "run", port=_free_port()))
    for rc, text in results:
        assert rc == 0, text[-3000:]
    now = {p.name: p.stat().st_mtime_ns for p in cells.glob("*")}
    assert {n: now[n] for n in kept} == kept  # the kept cells were not recomputed
    assert len([n for n in now if n.endswith(".json")]) == 2 * mine
    for name in ("deviation", "summary", "attack_convergence", "disparity"):
        assert (copy / paths[name].name).read_text() == paths[name].read_text(), name
    assert (copy / "report.md").read_text() == paths["report"].read_text()


def test_neighbour_and_budget_sentences_follow_the_tables():
    from vaerob_jax.studies.subgroups.readings import eps_trend_reading, neighbour_reading

    def nb(group, pull):
        return {"subgroup": group, "beta": 1.0, "pull": pull, "other_before": 0.5,
                "other_after": 0.5 + pull, "other_base_rate": 0.7}  # fmt: skip

    text = neighbour_reading([nb("old-women", 0.1), nb("young-men", 0.02)], 10, 0.1)
    assert text.startswith("The attack pulls old-women at β=1 furthest") and "+10 points" in text
    text = neighbour_reading([nb("old-women", -0.01), nb("young-men", -0.05)], 10, 0.1)
    assert "pulls no subgroup" in text and "old-women at β=1's" in text
    text = neighbour_reading([nb("old-women", 0.1), nb("young-men", 0.1)], 10, 0.1)
    assert "(tied with young-men at β=1)" in text

    def summary(gaps):  # per ε the highest median is 1 + gap, the lowest 1
        return [
            {"beta": 1.0, "eps": e, "subgroup": g, "median": m}
            for e, gap in gaps.items()
            for g, m in (("a", 1.0), ("b", 1.0 + gap))
        ]

    assert "β=1: 5 %, 10 %, 20 % (grows)" in eps_trend_reading(
        summary({0.03: 0.05, 0.06: 0.1, 0.1: 0.2})
    )
    assert "(shrinks)" in eps_trend_reading(summary({0.03: 0.2, 0.1: 0.05}))
    assert "not change monotonically" in eps_trend_reading(
        summary({0.03: 0.1, 0.06: 0.2, 0.1: 0.05})
    )


def test_headline_names_a_least_robust_subgroup_only_where_the_omnibus_test_rejects():
    from vaerob_jax.studies.subgroups.readings import headline_reading

    summary = [
        {"beta": 1.0, "eps": 0.1, "subgroup": g, "median": m, "ci_low": m - 1, "ci_high": m + 1}
        for g, m in (("young-men", 11.6), ("old-women", 10.7))
    ]
    rejected = headline_reading(summary, 1.0, 0.1, 0.01, 0.05)
    assert rejected.startswith("young-men have the highest median") and "p=0.01" in rejected
    kept = headline_reading(summary, 1.0, 0.1, 0.065, 0.05)
    assert kept.startswith("No subgroup is least robust at β=1, ε=0.1 by the omnibus test")
    assert "descriptively, young-men have the highest median" in kept


def test_lowest_accuracy_sentence_names_ties():
    from vaerob_jax.studies.subgroups.readings import accuracy_reading

    def r(clf, group, acc, inp="adv_recon"):
        return {"input": inp, "eps": 0.1, "classifier": clf, "subgroup": group, "beta": 1.0,
                "accuracy": acc}  # fmt: skip

    rows = [r("age", "old-women", 0.5), r("gender", "young-men", 0.7), r("age", "x", 0.1, "clean")]
    one = accuracy_reading(rows, 0.1)
    assert one == (
        "Lowest accuracy on adversarial reconstructions at ε=0.1 (0.50): the age classifier "
        "on old-women at β=1."
    )
    rows[1]["accuracy"] = 0.5
    assert "young-men at β=1 (2 tied)" in accuracy_reading(rows, 0.1)
