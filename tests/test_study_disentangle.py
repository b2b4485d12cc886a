"""The disentanglement study of 002: its pieces against known answers (model names, the λ
subset, Fig. 1's example rule, the sign-flip test's exact values and calibration under the
null, claims from paired differences), bad configs refused before training, and a small run
end to end (tables recomputed from the per-attack rows, attack invariants, report sentences
that follow the tables, resume)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vaerob_jax.cli import main
from vaerob_jax.studies.disentangle import (
    DISENTANGLE_PRESETS,
    DisentangleStudy,
    parse_model,
    run_disentangle_study,
    validate_disentangle_config,
)
from vaerob_jax.studies.disentangle.readings import claim_rows, sign_flip_p
from vaerob_jax.studies.disentangle.study import example_lambda, scipy_problem_indices
from vaerob_jax.studies.disentangle.tables import DisentangleResults, pair_means
from vaerob_jax.sweeps import ResultStore, read_csv

TINY = DISENTANGLE_PRESETS["tiny"]
QUIET = {"progress": False, "log": lambda _: None}
TYPES = {"model_id": str, "model": str, "family": str, "mode": str, "converged": str}


# ------------------------------------------------------------------------------ known answers


def test_model_names_parse_to_family_layers_and_beta():
    assert parse_model("vae") == parse_model("vae")
    v = parse_model("vae")
    assert (v.family, v.layers, v.beta, v.label, v.stack) == ("tcvae", 1, 1.0, "VAE", "seatbelt_L1")
    t = parse_model("tcvae_b4")
    assert (t.family, t.layers, t.beta, t.stack) == ("tcvae", 1, 4.0, "seatbelt_L1")
    s = parse_model("seatbelt_L3_b10")
    assert (s.family, s.layers, s.beta, s.kind, s.stack) == (
        "seatbelt",
        3,
        10.0,
        "seatbelt",
        "seatbelt_L3",
    )
    d = parse_model("tcdlgm_L2_b0.5")
    assert (d.family, d.layers, d.beta, d.kind, d.stack) == ("tcdlgm", 2, 0.5, "dlgm", "dlgm_L2")
    # An L = 1 Seatbelt-VAE is a β-TCVAE (same loss, same attack): it joins their stack.
    one = parse_model("seatbelt_L1_b4")
    assert (one.family, one.stack) == ("tcvae", "seatbelt_L1")


@pytest.mark.parametrize(
    "name, match",
    [
        ("seatbelt_L0_b1", "L must be >= 1"),
        ("tcdlgm_L1_b10", "needs L >= 2"),
        ("tcvae_b-1", "β must be finite and >= 0"),
        ("tcvae_b1.2.3", "not a number"),
        ("beta_vae", "unknown model"),
    ],
)
def test_bad_model_names_are_refused_naming_the_problem(name, match):
    with pytest.raises(ValueError, match=match):
        parse_model(name)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"dataset": "digits"}, "ground-truth factors for MIG"),
        ({"models": ("vae", "tcvae_b1")}, "same model twice"),
        ({"models": ("seatbelt_L0_b1",)}, "L must be >= 1"),
        ({"models": ("tcvae_b-2",)}, "β must be"),
        ({"n_pairs": 40}, "distinct images"),
        ({"lambda_count": 0}, "lambda_count"),
        ({"lambda_stride": 9}, "lambda_stride"),
        ({"penalty": "l1"}, "penalty"),
        ({"layer_dist": "exact"}, "layer_dist"),
        ({"estimator": "exact"}, "estimator"),
        ({"latent_dim": 1}, "latent_dim"),
        ({"check_pairs": 9}, "check_pairs"),
        ({"noise_scales": (0.1, -1.0)}, "noise_scales"),
        ({"batch_size": 1000}, "batch_size"),
        ({"backbone": "resnet"}, "backbone"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        validate_disentangle_config(dataclasses.replace(TINY, **changes))


def test_cli_refuses_a_bad_model_before_anything_is_written(tmp_path, capsys):
    code = main(
        [
            "disentangle",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "o"),
            "--models",
            "vae,seatbelt_L0_b2",
        ]
    )
    assert code == 2
    assert "L must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train").exists()


def test_lambda_subset_keeps_both_ends_of_the_papers_grid():
    c = DISENTANGLE_PRESETS["default"]
    idx = c.lambda_indices()
    assert idx[0] == 0 and idx[-1] == c.lambda_count - 1
    strided = list(range(0, c.lambda_count, c.lambda_stride))
    assert list(idx) == sorted(set(strided) | {c.lambda_count - 1})
    assert DISENTANGLE_PRESETS["paper"].lambda_indices() == tuple(range(50))


def test_example_rule_is_the_largest_delta_not_above_the_mean():
    # mean 4.0: candidates 1, 3, 2 (<= 4) -> the largest is 3 at index 1
    assert example_lambda(np.array([1.0, 3.0, 11.0, 2.0, 3.0 + 1e-9 * 0])) in (1, 4)
    assert example_lambda(np.array([1.0, 3.5, 11.0, 2.0])) == 1
    assert example_lambda(np.array([5.0, 5.0])) == 0


def test_scipy_problems_alternate_modes_and_span_the_grid():
    probs = scipy_problem_indices(14, 4)
    assert [m for m, _ in probs] == [0, 1, 0, 1]
    assert sorted(e for m, e in probs if m == 0) == [0, 13]
    assert scipy_problem_indices(14, 1) == [(0, 0)]


def test_sign_flip_p_exact_values():
    # all five differences positive: only the identity pattern is as extreme -> 1/32
    assert sign_flip_p(np.array([1.0, 2.0, 0.5, 3.0, 1.5])) == pytest.approx(1 / 32)
    assert sign_flip_p(np.array([1.0, 2.0, 0.5, 3.0, 1.5]), greater=False) == pytest.approx(1.0)
    # brute force on a mixed vector
    d = np.array([1.0, -0.4, 2.0, 0.3])
    import itertools

    stats = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=4)]
    assert sign_flip_p(d) == pytest.approx(np.mean(np.array(stats) >= d.mean() - 1e-12))
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p(np.array([1.0, np.nan]))


def test_sign_flip_p_is_calibrated_under_the_null_and_powerful_under_a_shift():
    rng = np.random.default_rng(0)
    trials = 400
    null = [sign_flip_p(rng.standard_normal(10)) < 0.05 for _ in range(trials)]
    # binomial 99 % interval of 0.05 at n = 400: about [0.026, 0.081]
    assert 0.02 <= np.mean(null) <= 0.085
    shifted = [sign_flip_p(rng.standard_normal(10) + 1.5) < 0.05 for _ in range(100)]
    assert np.mean(shifted) > 0.9
    big = [sign_flip_p(rng.standard_normal(20), n_mc=2000, seed=t) < 0.05 for t in range(200)]
    assert 0.01 <= np.mean(big) <= 0.1


def _synthetic_results(shift: float, gap: float, n_pairs: int = 8):
    """Attack rows for vae and tcvae_b10 where tcvae's log10 Δ is vae's + shift (per pair,
    with pair noise common to both), and a convergence table with the given check gap."""
    rng = np.random.default_rng(1)
    c = dataclasses.replace(TINY, models=("vae", "tcvae_b10"), n_pairs=n_pairs)
    base = rng.normal(0, 1, size=(n_pairs, 3))
    rows = []
    for name, add in (("vae", 0.0), ("tcvae_b10", shift)):
        for p in range(n_pairs):
            for e in range(3):
                for mode in ("latent", "output"):
                    noise = rng.normal(0, 0.01)
                    rows.append(
                        {
                            "model_id": name,
                            "mode": mode,
                            "pair": p,
                            "lambda": float(2.0**e),
                            "delta_value": 10 ** (base[p, e] + add + noise),
                            "target_nll": 100 + base[p, e] + add,
                        }
                    )
    conv = [
        {"model_id": n, "mode": m, "check_gap_decades": gap}
        for n in ("vae", "tcvae_b10")
        for m in ("latent", "output")
    ]
    res = DisentangleResults(rows, [], [], conv, [], {})

    class Inputs:
        specs = c.model_specs()

        def spec(self, name):
            return next(s for s in self.specs if s.name == name)

    return c, Inputs(), res


def test_claims_follow_paired_differences_and_respect_the_attack_gap():
    c, inputs, res = _synthetic_results(shift=0.5, gap=0.01)
    rows = claim_rows(c, inputs, res)
    delta_rows = [r for r in rows if r["metric"] == "log10_delta"]
    assert len(delta_rows) == 2  # two modes
    for r in delta_rows:
        assert r["difference"] == pytest.approx(0.5, abs=0.02)
        assert r["held"] and r["firm"] and r["ci_low"] > 0
        assert r["p_sign_flip"] == pytest.approx(1 / 2**8)
        va = pair_means(res.attacks, "tcvae_b10", r["mode"], "delta_value", True)
        assert r["value_a"] == pytest.approx(va.mean())
    # the same difference inside the attack's own uncertainty is not firm
    _, _, res_gap = _synthetic_results(shift=0.5, gap=0.4)
    assert not any(
        r["firm"] for r in claim_rows(c, inputs, res_gap) if r["metric"] == "log10_delta"
    )
    # the opposite direction is not held
    _, _, res_neg = _synthetic_results(shift=-0.5, gap=0.01)
    assert not any(r["held"] for r in claim_rows(c, inputs, res_neg))


# ----------------------------------------------------------------------------------- end to end

# The check attack on every pair: it then shares the default attack's compiled program.
SMALL = dataclasses.replace(
    TINY, models=("vae", "tcvae_b10", "seatbelt_L2_b10"), check_pairs=TINY.n_pairs
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("disentangle")
    paths = run_disentangle_study(SMALL, out, **QUIET)
    attacks = read_csv(paths["attacks"], types=TYPES)
    return out, paths, attacks


def _arrays(out, name):
    store = ResultStore(out / "cells", DisentangleStudy().store_config(SMALL))
    return store.load(f"model_id={name}").arrays


def _check_outputs_exist_and_rows_cover_the_grid(study):
    out, paths, attacks = study
    for name in (
        "report",
        "claims",
        "summary",
        "metrics",
        "convergence",
        "fig_delta_vs_beta",
        "fig_delta_vs_lambda",
        "fig_solver_agreement",
        "fig_examples_latent",
    ):
        assert paths[name].exists(), name
    n_lam = len(SMALL.lambda_indices())
    assert len(attacks) == len(SMALL.models) * 2 * SMALL.n_pairs * n_lam
    for r in attacks:
        # Δ is divergence + λ‖d‖₂ at the returned d, and the attack never made Δ worse
        assert r["delta_value"] == pytest.approx(
            r["divergence"] + r["lambda"] * r["d_norm"], rel=1e-4, abs=1e-5
        )
        assert r["delta_value"] <= r["start_value"] * (1 + 1e-5) + 1e-6
        assert r["nonfinite"] == 0
        assert np.isfinite(r["grad_norm_d0"]) and r["grad_norm_d0"] >= 0
    # the largest λ leaves the input alone: Δ is the clean divergence there
    for r in attacks:
        if r["lambda_index"] == SMALL.lambda_count - 1:
            assert r["d_norm"] < 1e-4
            assert r["delta_value"] == pytest.approx(r["divergence_d0"], rel=1e-3, abs=1e-4)


def _check_adversarial_examples_stay_in_the_pixel_box(study):
    out, _, _ = study
    for name in SMALL.models:
        for mode in ("latent", "output"):
            strip = _arrays(out, name)[f"strip_{mode}"]
            adv = strip[2]
            assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
            np.testing.assert_allclose(adv, strip[0] + strip[3], atol=1e-6)


def _check_summary_recomputes_from_the_rows(study):
    out, paths, attacks = study
    summary = read_csv(paths["summary"], types=TYPES)
    assert len(summary) == len(SMALL.models) * 2
    for s in summary:
        sel = [r for r in attacks if r["model_id"] == s["model_id"] and r["mode"] == s["mode"]]
        per_pair = [
            np.mean([np.log10(r["delta_value"]) for r in sel if r["pair"] == p])
            for p in range(SMALL.n_pairs)
        ]
        assert s["mean_log10_delta"] == pytest.approx(np.mean(per_pair), rel=1e-9)
        assert s["ci_lo"] <= s["mean_log10_delta"] <= s["ci_hi"]
        nll = np.mean([r["target_nll"] for r in sel])
        assert s["mean_target_nll"] == pytest.approx(nll, rel=1e-9)


def _check_metrics_and_report_sentences_follow_the_tables(study):
    out, paths, _ = study
    metrics = read_csv(paths["metrics"], types={**TYPES, "weight_reference": str})
    conv = read_csv(paths["convergence"], types=TYPES)
    report = paths["report"].read_text()
    n_conv = sum(r["converged"] == "True" for r in conv)
    assert f"{n_conv} of {len(conv)} model × mode cells converged" in report
    for m in metrics:
        a = _arrays(out, m["model_id"])
        assert m["elbo"] == pytest.approx(a["elbo_elbo"].mean(), rel=1e-9)
        assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]), rel=1e-6)
        assert 0.0 <= m["mig"] <= 1.0
        assert f"{m['model']} {m['mig']:.3f}" in report
    ref = {m["model_id"]: m["weight_reference"] for m in metrics}
    assert ref["tcvae_b10"] == "vae" and ref["vae"] in ("", None)
    claims = read_csv(
        paths["claims"],
        types={
            "claim": str,
            "mode": str,
            "comparison": str,
            "metric": str,
            "better": str,
            "held": str,
            "firm": str,
        },
    )
    held = sum(r["held"] == "True" for r in claims)
    assert f"held in {held} of {len(claims)} comparisons" in report


def _check_a_rerun_resumes_without_recomputing(study, tmp_path):
    out, paths, attacks = study
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells" / "cells").glob("*.json")}
    paths2 = run_disentangle_study(SMALL, out, **QUIET)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells" / "cells").glob("*.json")}
    assert before == after and before
    assert read_csv(paths2["attacks"], types=TYPES) == attacks
    timings = json.loads((out / "timings.json").read_text())
    assert timings["train_s"] < 30 and timings["cells_s"] < 5


def test_dsprites_on_tfds_mock_data_splits_one_split_and_leaves_shape_out_of_mig():
    """`--dataset dsprites` on TFDS's mock data: its one split is cut into train and test,
    and MIG reads the class factors except shape (Chen et al.), never the value_ copies."""
    import tensorflow_datasets as tfds

    from vaerob_jax.studies.disentangle.study import prepare_disentangle_inputs

    c = dataclasses.replace(
        TINY, dataset="dsprites", image_size=32, n_train=40, n_test=16, batch_size=16
    )
    with tfds.testing.mock_data(num_examples=64):
        inputs = prepare_disentangle_inputs(c)
    assert inputs.train_x.shape == (40, 32, 32, 1) and inputs.test_x.shape == (16, 32, 32, 1)
    assert inputs.test_x.min() >= 0.0 and inputs.test_x.max() <= 1.0
    used = set(inputs.train_factors) - set(inputs.mig_exclude)
    assert used == {"orientation", "scale", "x_position", "y_position"}
    assert all(len(v) == 40 for v in inputs.train_factors.values())
    with tfds.testing.mock_data(num_examples=30), pytest.raises(ValueError, match="fewer than"):
        prepare_disentangle_inputs(c)


@pytest.mark.slow
def test_end_to_end(study, tmp_path):
    """The checks above on one run (one test, so one xdist worker builds the run; the
    rerun check goes last: it reruns the study in the same folder)."""
    _check_outputs_exist_and_rows_cover_the_grid(study)
    _check_adversarial_examples_stay_in_the_pixel_box(study)
    _check_summary_recomputes_from_the_rows(study)
    _check_metrics_and_report_sentences_follow_the_tables(study)
    _check_a_rerun_resumes_without_recomputing(study, tmp_path)


def test_lambda_ends_sentence_follows_the_attack_rows():
    from vaerob_jax.studies.disentangle.readings import lambda_ends_reading

    first = [{"d_norm": 2.0, "ratio": 0.4}]
    still = lambda_ends_reading([{"d_norm": 1e-4, "ratio": 0.999}], first, 2.0**20, 2.0**-10)
    assert "left the input almost where it was" in still and "Δ/Δ(d = 0) averaged 0.999" in still
    moved = lambda_ends_reading([{"d_norm": 0.3, "ratio": 0.8}], first, 2.0**20, 2.0**-10)
    assert "lowered Δ by 20 %" in moved and "almost where it was" not in moved


def test_most_robust_model_is_named_only_where_its_ci_clears_the_runner_up():
    from vaerob_jax.studies.disentangle.readings import top_model_sentence

    def r(model, mean, half):
        return {
            "model": model,
            "mean_log10_delta": mean,
            "ci_lo": mean - half,
            "ci_hi": mean + half,
        }

    clear = top_model_sentence([r("VAE", 0.0, 0.1), r("Seatbelt", 1.0, 0.1)], 0.0, "p")
    assert clear == "The most robust, Seatbelt, sits +1.00 decades from the VAE (p)."
    overlap = top_model_sentence([r("VAE", 0.0, 0.6), r("Seatbelt", 1.0, 0.6)], 0.0, "p")
    assert "CI overlaps VAE's" in overlap and "most robust," not in overlap
