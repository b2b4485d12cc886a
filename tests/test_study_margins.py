"""The margin study of 001 on the 'tiny' preset: table shape, Theorem-1 consistency, summary,
resume, the subgroup-study join and reuse, bad configs, and the compiled per-example program."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
from statistics import NormalDist

import jax
import numpy as np
import pytest

import vaerob_jax.studies.margins.study as study_mod
from tests.helpers_study import study_once
from vaerob_jax.robustness.certificates import make_margin_program, run_in_chunks
from vaerob_jax.studies.margins import (
    MARGIN_COLUMNS,
    MARGIN_PRESETS,
    MarginStudyConfig,
    run_margin_study,
    validate_margin_config,
)
from vaerob_jax.studies.margins.config import TRAIN_FIELDS
from vaerob_jax.sweeps import read_csv, write_csv, write_json

TINY = MARGIN_PRESETS["tiny"]
N_EXAMPLES = 4 * TINY.max_per_subgroup  # four Young x Male subgroups
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out, paths = study_once(
        tmp_path_factory, "margins", lambda d: run_margin_study(TINY, d, **QUIET)
    )
    return out, paths, read_csv(paths["margins"], types={"subgroup": str})


@pytest.mark.slow
def test_table_has_promised_columns_and_one_row_per_model_and_example(study):
    _, _, rows = study
    assert list(rows[0])[: len(MARGIN_COLUMNS)] == list(MARGIN_COLUMNS)
    n_models = len(TINY.betas) * len(TINY.taus)
    assert len(rows) == n_models * N_EXAMPLES
    keys = {(r["beta"], r["tau"], r["example_id"]) for r in rows}
    assert len(keys) == len(rows)
    ids = {}
    for r in rows:
        ids.setdefault((r["beta"], r["tau"]), set()).add(r["example_id"])
    assert len({frozenset(v) for v in ids.values()}) == 1  # every model sees the same examples
    assert {r["subgroup"] for r in rows} == {"young-women", "young-men", "old-women", "old-men"}


@pytest.mark.slow
def test_bound_is_theorem1_and_nan_exactly_where_p_r_at_most_half(study):
    _, _, rows = study
    n = TINY.n_samples
    probit = NormalDist().inv_cdf
    undefined = 0
    for r in rows:
        # p_r is a Monte-Carlo share of n draws, the same draws as the margin's clean p.
        assert r["p_r"] * n == pytest.approx(round(r["p_r"] * n), abs=1e-4)
        assert r["p_r"] == r["p_clean"]
        assert r["sigma_min"] > 0 and r["jac_fro"] > 0
        if r["p_r"] <= 0.5:
            assert math.isnan(r["bound"]) and not r["bound_defined"]
            undefined += 1
        else:
            p = min(r["p_r"], 1.0 - 0.5 / n)
            expected = r["sigma_min"] * probit(p) / r["jac_fro"]
            assert r["bound"] >= 0
            assert r["bound"] == pytest.approx(expected, rel=1e-4)
    # The tiny preset's r sits near the median deviation norm: both cases occur.
    assert 0 < undefined < len(rows)


@pytest.mark.slow
def test_margin_bracket_and_estimate_are_consistent(study):
    _, _, rows = study
    assert TINY.method == "logbisect"
    ratio = TINY.log_range ** (1 / 2**TINY.n_iter)  # high / low after n_iter log-halvings
    r_min = TINY.r_max / TINY.log_range
    for r in rows:
        assert 0.0 <= r["margin_estimate"] <= TINY.r_max
        assert r["margin_bracket"] >= 0
        if r["p_clean"] <= TINY.m:  # not r-robust even unperturbed: margin 0
            assert r["margin_estimate"] == 0 and r["margin_bracket"] == 0
        elif r["censored"]:
            assert r["margin_estimate"] == TINY.r_max and math.isinf(r["margin_bracket"])
        elif r["margin_low"] == 0:  # not robust at r_min: the bracket [0, r_min]
            assert r["margin_high"] == pytest.approx(r_min, rel=1e-5)
        else:
            lo, hi = r["margin_low"], r["margin_high"]
            assert hi / lo == pytest.approx(ratio, rel=1e-4)
            assert r["margin_estimate"] == pytest.approx(np.sqrt(lo * hi), rel=1e-5)
            assert r["margin_bracket_rel"] == pytest.approx((hi - lo) / np.sqrt(lo * hi), 1e-4)
        # The probe estimate of ||J||_F is near the exact one (2 probes: loose).
        assert 0.2 * r["jac_fro"] < r["jac_fro_probe"] < 3.0 * r["jac_fro"]


@pytest.mark.slow
def test_summary_matches_the_per_example_table(study):
    _, paths, rows = study
    summary = read_csv(paths["margin_summary"], types={"subgroup": str})
    assert len(summary) == len(TINY.betas) * len(TINY.taus) * 5  # 4 subgroups + 'all'
    for s in summary:
        sel = [
            r
            for r in rows
            if (r["beta"], r["tau"]) == (s["beta"], s["tau"])
            and s["subgroup"] in ("all", r["subgroup"])
        ]
        est = np.array([r["margin_estimate"] for r in sel])
        bnd = np.array([r["bound"] for r in sel])
        ok = ~np.isnan(bnd)
        assert s["n"] == len(sel)
        np.testing.assert_allclose(s["margin_median"], np.median(est), rtol=1e-12)
        np.testing.assert_allclose(s["margin_mean"], np.mean(est), rtol=1e-12)
        q75, q25 = np.percentile(est, [75, 25])
        np.testing.assert_allclose(s["margin_iqr"], q75 - q25, rtol=1e-12, atol=1e-15)
        assert s["share_bound_defined"] == pytest.approx(ok.mean())
        if ok.any():
            np.testing.assert_allclose(s["bound_median"], np.median(bnd[ok]), rtol=1e-12)
        else:
            assert s["bound_median"] is None or math.isnan(s["bound_median"])
        cmp = ok & ~np.array([r["censored"] for r in sel])
        if cmp.any():
            assert s["share_bound_le_margin"] == pytest.approx(np.mean(bnd[cmp] <= est[cmp]))
        assert s["n_censored"] == sum(r["censored"] for r in sel)
        # margin 0 exactly where the clean input already fails Eq. 2 (p_clean <= m)
        clean_fails = np.array([r["p_clean"] <= TINY.m for r in sel])
        assert s["share_zero_margin"] == pytest.approx(clean_fails.mean())


@pytest.mark.slow
def test_report_and_figures_exist(study):
    out, paths, _ = study
    text = paths["report"].read_text()
    assert "smallest median margin" in text and "bound_vs_margin.png" in text
    for name in ("fig_bound_vs_margin", "fig_vs_beta", "fig_margin_distributions"):
        assert paths[name].stat().st_size > 1000
    assert set(read_json_keys(paths["timings"])) >= {
        "train_s",
        "cells_s",
        "total_s",
        "per_model_example_s",
    }


def read_json_keys(path):
    import json

    return json.loads(path.read_text())


@pytest.mark.slow
def test_rerun_recomputes_no_finished_cell(study, monkeypatch):
    out, paths, _ = study
    before = paths["margins"].read_text()

    def boom(*a, **k):
        raise AssertionError("a finished cell was computed again")

    monkeypatch.setattr(study_mod, "run_in_chunks", boom)
    again = run_margin_study(TINY, out, **QUIET)
    assert again["margins"].read_text() == before


def _synthetic_deviation(rows, path):
    """A subgroup-study deviation.csv for the same examples at two ε, Δc a known function."""
    dev = []
    for r in rows:
        for eps in (0.05, 0.1):
            dc = 100 * eps + r["example_id"] + r["beta"] / 10
            dev.append(
                {
                    "beta": r["beta"],
                    "eps": eps,
                    "subgroup": r["subgroup"],
                    "example_id": r["example_id"],
                    "delta_c": dc,
                    "recon_loss": 1.0,
                    "latent_shift": 0.5,
                    "model_digest": r["model_digest"],  # the same models (a copied grid)
                }
            )
    # An example the margin study did not evaluate must simply not join.
    dev.append({**dev[0], "example_id": 10**6})
    write_csv(path, dev)


@pytest.mark.slow
def test_join_with_deviation_and_reuse_of_the_subgroup_grid(study, tmp_path, monkeypatch):
    out, _, rows = study
    sub = tmp_path / "subgroups"
    sub.mkdir()
    _synthetic_deviation(rows, sub / "deviation.csv")
    write_json(sub / "config.json", {f: TINY.to_dict()[f] for f in TRAIN_FIELDS})
    shutil.copytree(out / "train", sub / "train")
    resumed = []
    real = study_mod.train_grid

    def recording(*a, **k):
        res = real(*a, **k)
        resumed.append(res.resumed_from)
        return res

    monkeypatch.setattr(study_mod, "train_grid", recording)
    # Resume the finished cells (the join source is not part of the cells' fingerprint).
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("train"))
    cfg = dataclasses.replace(TINY, subgroup_study_dir=str(sub))
    paths = run_margin_study(cfg, copy, **QUIET)
    assert resumed == [TINY.train_steps]  # the copied grid was loaded, not retrained
    joined = read_csv(paths["margins_with_deviation"], types={"subgroup": str})
    assert len(joined) == len(rows)  # τ = 0 only; the extra deviation row does not join
    for j in joined:
        assert j["eps"] == 0.1
        assert j["delta_c"] == pytest.approx(10 + j["example_id"] + j["beta"] / 10)
    assert paths["fig_margin_vs_deviation"].stat().st_size > 1000
    assert "Spearman" in paths["report"].read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"r": 0.0}, "r must"),
        ({"r": -1.0}, "r must"),
        ({"m": 1.5}, "m must"),
        ({"taus": (0.0, -0.1)}, "taus must be >= 0"),
        ({"betas": (1.0, 1.0)}, "betas"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"method": "grid"}, "method"),
        ({"box": "clip"}, "unknown box"),
        ({"bound_level": 1.0}, "bound_level"),
        ({"max_per_subgroup": 0}, "max_per_subgroup"),
        ({"subgroups": ("Young", "Bald")}, "Bald"),
    ],
)
def test_bad_config_raises_before_training(change, message, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("training started before the config was validated")

    monkeypatch.setattr(study_mod, "train_grid", no_training)
    with pytest.raises(ValueError, match=message):
        run_margin_study(dataclasses.replace(TINY, **change), tmp_path, **QUIET)
    assert not (tmp_path / "train").exists()


def _parser():
    from vaerob_jax.commands.margins import register

    parser = argparse.ArgumentParser(prog="vaerob")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_bad_config_exits_with_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study_mod, "train_grid", lambda *a, **k: 1 / 0)
    args = _parser().parse_args(
        ["margins", "--preset", "tiny", "--m", "1.5", "--out", str(tmp_path / "x")]
    )
    assert args.func(args) == 2
    assert "m must" in capsys.readouterr().err


def test_cli_flags_override_the_preset():
    from vaerob_jax.commands.margins import build_config

    args = _parser().parse_args(
        ["margins", "--preset", "tiny", "--taus", "0,0.1,0.5,1", "--r", "3", "--out", "x"]
    )
    cfg = build_config(args)
    assert isinstance(cfg, MarginStudyConfig)
    assert cfg.taus == (0.0, 0.1, 0.5, 1.0) and cfg.r == 3.0
    assert cfg.n_iter == TINY.n_iter and cfg.subgroup_study_dir is None
    args = _parser().parse_args(["margins", "--max-per-subgroup", "all", "--out", "x"])
    assert build_config(args).max_per_subgroup is None
    args = _parser().parse_args(["margins", "--subgroup-study", "s", "--out", "x"])
    assert build_config(args) == dataclasses.replace(
        MARGIN_PRESETS["shapes"], subgroup_study_dir="s"
    )


def test_validate_accepts_the_presets():
    for cfg in MARGIN_PRESETS.values():
        validate_margin_config(cfg)


def test_one_compiled_program_and_order_does_not_change_results(
    tiny_model, tiny_params, tiny_images
):
    program = make_margin_program(tiny_model, n_samples=8, n_iter=2, attack_steps=1, n_probes=2)
    images = np.asarray(tiny_images[:5])
    ids = np.arange(5) * 7
    key = jax.random.key(3)
    scalars = tuple(np.float32(v) for v in (1.0, 0.5, 2.0, 0.0))
    other = jax.tree.map(lambda a: a * 1.01, tiny_params)
    by3 = run_in_chunks(program, tiny_params, images, ids, key, scalars, 3)
    run_in_chunks(program, other, images, ids, key, scalars, 3)  # another model
    assert program._cache_size() == 1  # padded last chunk, new params: no recompile
    # Randomness follows example ids, not positions: a reordered batch gives the same values.
    rev = run_in_chunks(program, tiny_params, images[::-1], ids[::-1], key, scalars, 3)
    assert program._cache_size() == 1
    for name in ("p_r", "bound", "estimate", "jac_fro", "jac_fro_probe"):
        assert by3[name].shape == (5,)
        np.testing.assert_allclose(by3[name], rev[name][::-1], rtol=1e-5)


def test_theorem1_sentence_follows_the_measured_share():
    from vaerob_jax.studies.margins.readings import theorem1_reading

    assert theorem1_reading(0, 40).startswith("Every compared bound lies at or below")
    text = theorem1_reading(1, 571)  # 99.8 % at or below must not read as "every"
    assert text.startswith("1 of the 571 compared bounds (0.2 %) exceed") and "Every" not in text
    assert "nothing to compare" in theorem1_reading(0, 0)


def test_margins_table_has_the_conservative_bound(study):
    _, _, rows = study
    for r in rows:
        cons, point = r["bound_conservative"], r["bound"]
        if not math.isnan(cons):
            assert not math.isnan(point) and cons <= point + 1e-9


def test_join_only_rows_of_the_same_models():
    """9.3: Δc joins margins only where both studies used the same model (equal digests);
    other βs are skipped with a line, and a table without digests is not joined at all."""
    from vaerob_jax.studies.margins.tables import join_same_models

    def margin(beta, digest, i):
        return {"beta": beta, "model_digest": digest, "subgroup": "a", "example_id": i, "m": i}

    def dev(beta, digest, i):
        return {"beta": beta, "model_digest": digest, "subgroup": "a", "example_id": i, "d": -i}

    margins = [margin(1.0, "aa", i) for i in range(3)] + [margin(5.0, "bb", i) for i in range(3)]
    devs = [dev(1.0, "aa", i) for i in range(3)] + [dev(5.0, "cc", i) for i in range(3)]
    lines: list[str] = []
    joined = join_same_models(margins, devs, lines.append)
    got = [(j["beta"], j["example_id"], j["d"]) for j in joined]
    assert got == [(1.0, i, -i) for i in range(3)]
    assert len(lines) == 1 and "β [5.0]" in lines[0] and "digests differ" in lines[0]
    assert join_same_models(margins[3:], devs[3:], lines.append) == []  # no β in common
    old = [{k: v for k, v in d.items() if k != "model_digest"} for d in devs]
    lines.clear()
    assert join_same_models(margins, old, lines.append) == []
    assert "names no model digests" in lines[0]


@pytest.mark.slow
def test_margin_rows_carry_the_attack_record_and_a_failed_cell_raises(study):
    """Issue 8.3 in margins.csv: attack runs per example, failures and non-finite steps; a
    cell in which no attack gained raises before it is stored, partial failures are logged."""
    from vaerob_jax.attacks import AttackFailedError
    from vaerob_jax.studies.margins.study import check_margin_attacks

    _, _, rows = study
    runs = (TINY.n_iter + 2) * TINY.n_starts  # log bisection: r_max, r_min, n_iter radii
    assert all(r["attacks"] == runs and 0 <= r["attack_failed"] <= runs for r in rows)
    assert sum(r["attack_failed"] for r in rows) <= 0.1 * runs * len(rows)
    assert all(r["attack_nonfinite_steps"] == 0 for r in rows)
    logged: list[str] = []
    res = {
        "attacks": np.array([runs, runs]),
        "attack_failed": np.array([0, 2]),
        "attack_nonfinite_steps": np.array([0, 1]),
    }
    check_margin_attacks(1.0, 0.0, res, logged.append)
    assert len(logged) == 1 and "2 of" in logged[0] and "(on 1 example)" in logged[0]
    res["attack_failed"] = res["attacks"]
    with pytest.raises(AttackFailedError, match="none of the"):
        check_margin_attacks(1.0, 0.0, res, logged.append)


@pytest.mark.slow
def test_attack_check_compares_the_same_examples_under_a_stronger_attack(study, tmp_path):
    """Issue 8.5: margin_attack_check.csv holds, per model, examples spread over every
    subgroup with their estimate under the study's attack (= margins.csv) and a stronger one;
    `moved` follows from the relative change and the bracket; the reading is computed from
    it. With a 'stronger' attack equal to the study's, the search repeats itself exactly
    (same noise draws and starts): every change is 0."""
    out, paths, rows = study
    check = read_csv(paths["margin_attack_check"], types={"subgroup": str})
    per_model = min(TINY.check_examples, N_EXAMPLES)
    assert len(check) == len(TINY.betas) * len(TINY.taus) * per_model
    assert {c["subgroup"] for c in check} == {r["subgroup"] for r in rows}
    by_key = {(r["beta"], r["tau"], r["example_id"]): r for r in rows}
    for c in check:
        r = by_key[(c["beta"], c["tau"], c["example_id"])]
        assert c["margin_estimate"] == r["margin_estimate"]
        if r["margin_estimate"] > 0:
            change = c["margin_estimate_strong"] / r["margin_estimate"] - 1
            assert c["change"] == pytest.approx(change, rel=1e-9, abs=1e-12)
            tol = r["margin_bracket_rel"] if math.isfinite(r["margin_bracket_rel"]) else math.inf
            assert c["moved"] == (0 if abs(change) <= tol else int(np.sign(change)))
    assert "Has the margin's attack converged?" in paths["report"].read_text()

    same = dataclasses.replace(TINY, check_factor=1, check_restarts=TINY.restarts)
    copy = tmp_path / "same"
    copy.mkdir()
    shutil.copytree(out / "train", copy / "train")  # the models: load, do not retrain
    again = run_margin_study(same, copy, **QUIET)
    check_same = read_csv(again["margin_attack_check"], types={"subgroup": str})
    assert all(c["change"] == 0 or c["margin_estimate"] == 0 for c in check_same)
    assert all(c["margin_estimate_strong"] == c["margin_estimate"] for c in check_same)


def test_attack_check_reading_follows_the_table():
    from vaerob_jax.studies.margins.readings import attack_check_reading

    def row(sub, strong, moved):
        return dict(beta=1.0, tau=0.0, subgroup=sub, margin_estimate=1.0,
                    margin_estimate_strong=strong, change=strong - 1.0, moved=moved)  # fmt: skip

    fell = attack_check_reading([row("a", 0.5, -1), row("b", 1.0, 0)], TINY)
    assert "1 estimates fell and 0 rose" in fell and "still lowers" in fell
    assert "not monotone" not in fell and "largest fall 50 %, a" in fell
    both = attack_check_reading([row("a", 0.5, -1), row("b", 2.0, 1)], TINY)
    assert "1 estimates fell and 1 rose" in both and "not monotone" in both
    still = attack_check_reading([row("a", 1.0, 0), row("b", 1.0, 0)], TINY)
    assert "No estimate fell" in still and "not monotone" not in still
    rose = attack_check_reading([row("a", 2.0, 1), row("b", 1.5, 1)], TINY)
    assert "(no estimate fell)" in rose and "largest fall" not in rose


def test_margin_vs_deviation_sentence_follows_the_data():
    from vaerob_jax.studies.margins.readings import margin_deviation_reading

    rng = np.random.default_rng(0)
    margins = rng.uniform(0.1, 1.0, 40)

    def rows(sign_by_beta):
        return [
            {"beta": b, "margin_estimate": m, "delta_c": s * m}
            for b, s in sign_by_beta.items()
            for m in margins
        ]

    falling = margin_deviation_reading(rows({1.0: -1.0, 5.0: -1.0}), 0.1)
    assert "smaller margins are damaged more" in falling
    assert "β=1: -1.00" in falling and "differs" not in falling
    rising = margin_deviation_reading(rows({1.0: 1.0}), 0.1)
    assert "larger margins are damaged more" in rising and "within each β" not in rising
    mixed = margin_deviation_reading(rows({1.0: 1.0, 5.0: -1.0}), 0.1)
    assert "the direction differs between β" in mixed
    # a weak association among 40 examples (critical |rho| 0.31) claims no direction
    weak = [{"beta": 1.0, "margin_estimate": m, "delta_c": -m + rng.normal(0, 2)} for m in margins]
    text = margin_deviation_reading(weak, 0.1)
    assert "no monotone association at 0.05: |ρ| < 0.31" in text, text
    flat = [{"beta": 1.0, "margin_estimate": m, "delta_c": 1.0} for m in margins]
    assert "undefined" in margin_deviation_reading(flat, 0.1)


def test_smallest_margin_sentence_names_ties_and_zero_margins():
    from vaerob_jax.studies.margins.readings import smallest_margin_reading

    def g(name, med):
        return {"subgroup": name, "margin_median": med}

    overall = {"beta": 10.0, "tau": 0.0, "margin_median": 0.0, "bound_median": 0.08}
    tie = smallest_margin_reading(
        {**overall, "share_zero_margin": 0.72}, [g("a", 0.0), g("b", 0.0), g("c", 0.05)]
    )
    assert "72 % of examples are not r-robust even unperturbed" in tie
    assert "shared by a, b" in tie and "smallest median margin: " not in tie
    one = smallest_margin_reading({**overall, "share_zero_margin": 0.0}, [g("a", 0.3), g("b", 0.2)])
    assert one.endswith("smallest median margin: b (0.2).") and "unperturbed" not in one
    every = smallest_margin_reading(overall, [g("a", 0.0), g("b", 0.0)])
    assert "none is smallest" in every


def test_beta_trend_sentence_needs_two_betas_and_follows_the_means():
    from vaerob_jax.studies.margins.readings import beta_trend_readings

    def row(beta, sigma, jac, margin):
        return dict(tau=0.0, beta=beta, sigma_min=sigma, jac_fro=jac, margin_estimate=margin)

    assert "one β only" in beta_trend_readings([row(1.0, 0.1, 2.0, 0.5)])[0]
    rising = beta_trend_readings([row(1.0, 0.1, 2.0, 0.5), row(5.0, 0.2, 1.0, 0.7)])[0]
    assert "σ_min grows" in rising and "‖J‖_F shrinks" in rising and "margin grows" in rising
    mixed = beta_trend_readings([row(1.0, 0.1, 2.0, 0.5), row(5.0, 0.05, 3.0, 0.4)])[0]
    assert "σ_min does not grow" in mixed and "does not shrink" in mixed


def test_tau_trend_sentence_follows_the_means():
    from vaerob_jax.studies.margins.readings import tau_trend_reading

    def rows(margins):
        return [dict(beta=1.0, tau=t, margin_estimate=m) for t, m in zip((0.0, 0.5, 1.0), margins)]

    assert "β=1: 0.1, 0.2, 0.3 (grows monotonically)" in tau_trend_reading(rows((0.1, 0.2, 0.3)))
    assert "(does not grow monotonically)" in tau_trend_reading(rows((0.1, 0.3, 0.2)))
    assert "one τ only" in tau_trend_reading(rows((0.1,)))
