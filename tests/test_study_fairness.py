"""The fairness study of 004 on the 'tiny' preset: tables against an independent computation
(fairlearn), the stored flags against the tables, claims and report computed from the tables,
resume, and bad configs refused before training."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame

from tests.helpers_study import study_once
from vaerob_jax.cli import main
from vaerob_jax.studies.fairness import (
    CLAIM_COLUMNS,
    FAIRNESS_PRESETS,
    FairnessStudy,
    claim_rows,
    prepare_parts,
    run_fairness_study,
    validate_fairness_config,
)
from vaerob_jax.studies.fairness.readings import _count_sentence
from vaerob_jax.studies.fairness.tables import FairnessResults, pick
from vaerob_jax.sweeps import ResultStore, read_csv

TINY = FAIRNESS_PRESETS["tiny"]
QUIET = {"progress": False, "log": lambda _: None}
TYPES = {"group": str, "loss": str, "part": str, "model_id": str, "attack": str}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out, paths = study_once(
        tmp_path_factory, "fairness", lambda d: run_fairness_study(TINY, d, **QUIET)
    )
    errors = read_csv(paths["errors"], types=TYPES)
    return out, paths, errors


def _arrays(out, model_id):
    store = ResultStore(out / "cells", FairnessStudy().store_config(TINY))
    return store.load(f"model={model_id}").arrays


@pytest.mark.slow
def test_outputs_exist_and_errors_add_up(study):
    out, paths, errors = study
    for name in (
        "report",
        "claims",
        "error_summary",
        "distance_summary",
        "attack_check",
        "theorem_checks",
        "theory_classifiers",
        "theory_lambda",
        "theory_losses",
        "fig_fig4",
        "fig_theory",
    ):
        assert paths[name].exists(), name
    parts = prepare_parts(TINY)
    n_models = sum(len(p.models) for p in parts.values())
    eps = {p: len(TINY.eval_eps(p)) for p in parts}
    groups = {p: len(parts[p].group_names) + 1 for p in parts}
    expected = sum(len(parts[p].models) * 4 * eps[p] * groups[p] for p in parts)
    assert len(errors) == expected and len({r["model_id"] for r in errors}) == n_models
    for r in errors:  # Eq. 5: robust = natural + boundary, exactly in counts
        assert r["robust"] == pytest.approx(r["natural"] + r["boundary"], abs=1e-12)
        assert 0 <= r["boundary"] <= 1 - r["natural"] + 1e-12


@pytest.mark.slow
def test_group_errors_agree_with_fairlearn(study):
    out, _, errors = study
    parts = prepare_parts(TINY)
    for part in parts.values():
        for k in (0, len(part.models) - 1):
            mid = part.cell_id(k)
            arr = _arrays(out, mid)
            wrong = (~arr["correct"]).astype(float)
            names = np.asarray(part.group_names)[part.test["group"]]
            frame = MetricFrame(
                metrics=lambda yt, yp: float(np.mean(yp)),  # noqa: ARG005
                y_true=np.zeros_like(wrong),
                y_pred=wrong,
                sensitive_features=names,
            )
            rows = pick(errors, model_id=mid, attack="worst", eps=TINY.eval_eps(part.name)[0])
            by = {r["group"]: r for r in rows}
            assert by["all"]["natural"] == pytest.approx(frame.overall, abs=1e-12)
            for g, v in frame.by_group.items():
                assert by[g]["natural"] == pytest.approx(v, abs=1e-12)
            # the boundary error: correct and flipped by either attack
            flipped = arr["flipped_rfgsm"][0] | arr["flipped_pgd"][0]
            assert by["all"]["boundary"] == pytest.approx(
                np.mean(arr["correct"] & flipped), abs=1e-12
            )


@pytest.mark.slow
def test_summary_parity_matches_fairlearn_difference(study):
    out, paths, _ = study
    summary = read_csv(paths["error_summary"], types=TYPES)
    part = prepare_parts(TINY)["gmm2d"]
    ks = [m["model"] for m in part.models if m["lam"] == 0.0 and m["eps_star"] == 0.0]
    values = []
    for k in ks:  # the point estimate averages the per-seed violation
        wrong = ~_arrays(out, part.cell_id(k))["correct"]
        frame = MetricFrame(
            metrics=lambda yt, yp: float(np.mean(yp)),  # noqa: ARG005
            y_true=np.zeros(wrong.size),
            y_pred=wrong.astype(float),
            sensitive_features=part.test["group"],
        )
        values.append(frame.difference(method="to_overall"))
    (row,) = pick(
        summary,
        part="gmm2d",
        lam=0.0,
        eps_star=0.0,
        loss="ce",
        eps=TINY.gmm_eval_eps[0],
        error="natural",
        statistic="to_overall",
    )
    assert row["value"] == pytest.approx(np.mean(values), abs=1e-12)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]


@pytest.mark.slow
def test_attack_check_is_never_weaker_and_worst_is_the_or(study):
    out, paths, errors = study
    check = read_csv(paths["attack_check"], types=TYPES)
    assert check and all(r["boundary_strong"] >= r["boundary_default"] for r in check)
    for mid in {r["model_id"] for r in errors}:
        rows = pick(errors, model_id=mid, group="all")
        for e in {r["eps"] for r in rows}:
            by = {r["attack"]: r["boundary"] for r in rows if r["eps"] == e}
            assert by["worst"] >= max(by["rfgsm"], by["pgd"]) - 1e-12
            assert by["worst"] <= by["rfgsm"] + by["pgd"] + 1e-12
            assert by["worst_check"] >= by["worst"] - 1e-12


@pytest.mark.slow
def test_claims_and_report_are_computed_from_the_tables(study):
    out, paths, _ = study
    claims = read_csv(
        paths["claims"],
        types={c: str for c in ("claim", "part", "comparison", "before_ci", "after_ci")},
    )
    summary = read_csv(paths["error_summary"], types=TYPES)
    assert claims
    # every "before" is a value of the summary tables; 'held' follows from the numbers
    dist = read_csv(paths["distance_summary"], types={**TYPES, "metric": str})
    values = {round(r["value"], 12) for r in summary + dist}
    losses = read_csv(paths["theory_losses"], types={"loss": str})
    values |= {round(abs(r["gap_to_zero_one"]), 12) for r in losses}
    values |= {round(r["robust"], 12) for r in losses}
    for c in claims:
        assert round(c["before"], 12) in values and round(c["after"], 12) in values
        rises = "rises" in c["claim"] or "costs" in c["claim"]
        assert bool(c["held"]) == ((c["after"] > c["before"]) == rises)
    text = paths["report"].read_text()
    kept = [c for c in claims if not c["degenerate"]]
    held = sum(bool(c["held"]) for c in kept)
    assert f"{held} of {len(kept)} claim checks" in text
    assert all(c["attack_gap"] >= 0 for c in claims)


@pytest.mark.slow
def test_zero_one_fair_threshold_matches_theorem3(study):
    from vaerob_jax.fairness import lambda_critical, natural_error, theta_fair_lambda

    _, paths, _ = study
    rows = read_csv(paths["theory_losses"], types={"loss": str})
    assert {r["loss"] for r in rows} == {"zero_one", "ramp", "logistic", "exp"}
    for r in rows:
        if r["loss"] == "zero_one":  # grid search of the exact empirical Eq. 3 (0/1 loss)
            closed = float(theta_fair_lambda(r["lam"], r["K"], reduce=TINY.penalty_reduce))
            if r["lam"] >= float(lambda_critical(r["K"], reduce=TINY.penalty_reduce)):
                # past λ_c the minimiser is the kink θ_f: sharp, so the sample finds it
                assert abs(r["theta"] - closed) < 0.05, (r, closed)
            else:  # a flat minimum: the sampled minimiser's error is near the optimum's
                assert r["natural"] - float(natural_error(closed, r["K"])) < 0.01
        assert r["robust"] >= r["natural"] - 1e-12


def test_count_sentence_changes_with_the_data():
    base = {
        "claim": "Fig. 4: x falls",
        "part": "p",
        "comparison": "",
        "before_ci": "",
        "after_ci": "",
    }
    up = {
        **base,
        "before": 1.0,
        "after": 2.0,
        "held": False,
        "cis_disjoint": True,
        "attack_gap": 0.0,
        "degenerate": False,
    }
    down = {
        **base,
        "before": 2.0,
        "after": 1.0,
        "held": True,
        "cis_disjoint": False,
        "attack_gap": 0.0,
        "degenerate": False,
    }
    assert _count_sentence([up]).startswith("0 of 1") and "beyond attack_gap): Fig. 4" in (
        _count_sentence([up])
    )
    # "the other way" needs the same margin over the attack's own movement as "firm"
    assert "0 went clearly the other way" in _count_sentence([{**up, "attack_gap": 1.5}])
    assert _count_sentence([down]).startswith("1 of 1") and "0 went clearly" in _count_sentence(
        [down]
    )
    # a firm change needs disjoint CIs AND a change beyond what the stronger attack moved
    firm = {**down, "cis_disjoint": True}
    assert "1 of them" in _count_sentence([firm])
    assert "0 of them" in _count_sentence([{**firm, "attack_gap": 1.5}])
    # a claim about a collapsed model is set aside, not counted either way
    text = _count_sentence([up, {**down, "degenerate": True}])
    assert text.startswith("1 check involving a model no better than chance") and "0 of 1" in text


def test_claim_rows_read_the_summary_direction():
    cfg = dataclasses.replace(TINY, parts=("gmm2d",), gmm_eps_stars=(0.0,))

    def row(lam, error, stat, value, group="all"):
        return {
            "part": "gmm2d",
            "lam": lam,
            "eps_star": 0.0,
            "loss": "ce",
            "eps": cfg.gmm_eval_eps[0],
            "error": error,
            "statistic": stat,
            "group": group,
            "value": value,
            "ci_low": value - 0.01,
            "ci_high": value + 0.01,
        }

    summary = [
        row(0.0, "natural", "rate", 0.1),
        row(1.0, "natural", "rate", 0.3),
        row(0.0, "natural", "to_overall", 0.2),
        row(1.0, "natural", "to_overall", 0.25),
        row(0.0, "boundary", "rate", 0.05),
        row(1.0, "boundary", "rate", 0.07),
    ]
    res = FairnessResults([], [], [], [], [], summary, [], [], [], {})
    claims = {c["claim"]: c for c in claim_rows(cfg, res)}
    assert claims["Fig. 4: natural error rises with λ"]["held"]
    assert claims["Fig. 4: natural error rises with λ"]["cis_disjoint"]
    assert not claims["Fig. 4: accuracy-parity violation falls with λ"]["held"]
    assert set(CLAIM_COLUMNS) <= set(next(iter(claims.values())))
    # §5 follows the group of lowest error at λ = min; with every group tied there is none
    groups = [row(0.0, "natural", "rate", v, group=g) for g, v in (("0", 0.05), ("1", 0.2))]
    dists = [
        dict(part="gmm2d", lam=lam, eps_star=0.0, loss="ce", metric="distance", group=g,
             value=v, ci_low=v - 0.01, ci_high=v + 0.01)
        for lam in (0.0, 1.0) for g, v in (("0", 0.5 - 0.1 * lam), ("1", 0.5 + 0.1 * lam))
    ]  # fmt: skip
    res = FairnessResults([], [], [], [], [], summary + groups, [], dists, [], {})
    names = [c["claim"] for c in claim_rows(cfg, res)]
    assert any("advantaged group's distance falls with λ (group 0" in n for n in names)
    tied = [dict(r, value=0.1) for r in groups]
    res = FairnessResults([], [], [], [], [], summary + tied, [], dists, [], {})
    assert not any(c["claim"].startswith("§5") for c in claim_rows(cfg, res))


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(study):
    out, paths, errors = study
    cells = sorted((out / "cells" / "cells").glob("*.json"))
    assert len(cells) == sum(len(p.models) for p in prepare_parts(TINY).values())
    stamps = [p.stat().st_mtime_ns for p in cells]
    paths2 = run_fairness_study(TINY, out, **QUIET)
    assert [p.stat().st_mtime_ns for p in cells] == stamps
    assert read_csv(paths2["errors"], types=TYPES) == errors


@pytest.mark.parametrize(
    "change, field",
    [
        ({"gmm_lambdas": (0.0, -1.0)}, "gmm_lambdas"),
        ({"digits_eps_stars": (-0.1,)}, "digits_eps_stars"),
        ({"gmm_eval_eps": (0.0,)}, "gmm_eval_eps"),
        ({"parts": ("gmm2d", "cifar")}, "parts"),
        ({"seeds": (0, 0)}, "seeds"),
        ({"penalty_reduce": "max"}, "penalty_reduce"),
        ({"gmm_batch_size": 10**6}, "gmm_batch_size"),
        ({"theory_k": (0.5,)}, "theory_k"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, change, field):
    cfg = dataclasses.replace(TINY, **change)
    with pytest.raises(ValueError, match=field):
        validate_fairness_config(cfg)
    with pytest.raises(ValueError, match=field):
        run_fairness_study(cfg, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out" / "train").exists()


def test_cli_reports_a_negative_lambda_with_exit_code_2(tmp_path, capsys):
    code = main(
        [
            "fairness",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "o"),
            "--gmm-lambdas",
            "0,-0.5",
            "--quiet",
        ]
    )
    assert code == 2
    assert "gmm_lambdas" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train").exists()


def test_parts_hold_the_grid_and_checked_data():
    parts = prepare_parts(TINY)
    digits = parts["digits"]
    n_ce = len(TINY.digits_lambdas) * len(TINY.digits_eps_stars) * len(TINY.seeds)
    assert len(digits.models) == n_ce + len(TINY.digits_lambdas) * len(TINY.seeds)
    ramp = [m for m in digits.models if m["loss"] == "ramp"]
    assert ramp and all(m["eps_star"] == 0.0 for m in ramp)
    assert np.array_equal(digits.grid["loss_id"], [int(m["loss"] == "ramp") for m in digits.models])
    # group = label, every group present in both splits; the group is no model input
    for p in parts.values():
        for d in (p.train, p.test):
            assert np.array_equal(d["group"], d["label"])
            assert set(np.unique(d["group"])) == set(range(len(p.group_names)))
        assert p.clf.image_shape == p.train["x"].shape[1:]
    assert math.isclose(parts["gmm2d"].eval_settings.distance_max, TINY.gmm_distance_max)


def _take(tree, k):
    import jax

    return jax.tree.map(lambda a: np.asarray(a[k]), tree)


def _close(a, b, rtol=1e-5, atol=1e-6):
    import jax

    return all(
        np.allclose(x, y, rtol=rtol, atol=atol)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_training_split_grid_alone_and_no_recompile():
    """The study trains ε* = 0 models with the PGD-free loss: the same models as the PGD loss
    at ε* = 0 (its robust term has weight 0); model k of a grid equals it trained alone; a new
    λ × ε* grid of the same size reuses the compiled step."""
    import chex
    import jax

    from vaerob_jax.train import train_grid

    cfg = dataclasses.replace(TINY, parts=("gmm2d",), gmm_steps=4, gmm_batch_size=32)
    part = prepare_parts(cfg)["gmm2d"]
    key = jax.random.key(3)
    tc = part.train_config
    clean_grid = {"lam": np.array([0.0, 1.0]), "seed": np.array([0, 1])}
    adv_grid = {**clean_grid, "eps_star": np.zeros(2)}
    clean = train_grid(
        part.clf, part.losses["clean"], part.train, clean_grid, tc, key, progress=False
    )
    adv = train_grid(
        part.clf, part.losses["adversarial"], part.train, adv_grid, tc, key, progress=False
    )
    assert _close(clean.params, adv.params)
    grid = {
        "lam": np.array([0.0, 0.5, 1.0]),
        "eps_star": np.array([0.2, 0.1, 0.2]),
        "seed": np.array([0, 1, 2]),
    }
    loss = part.losses["adversarial"]
    chex.clear_trace_counter()
    counted = dataclasses.replace(loss, fn=chex.assert_max_traces(loss.fn, n=1))
    res = train_grid(part.clf, counted, part.train, grid, tc, key, progress=False)
    for k in range(3):
        alone = train_grid(
            part.clf,
            loss,
            part.train,
            {n: v[k : k + 1] for n, v in grid.items()},
            tc,
            key,
            progress=False,
        )
        assert _close(_take(res.params, k), _take(alone.params, 0), rtol=1e-4, atol=1e-5)
    other = {**grid, "lam": np.array([2.0, 3.0, 0.25]), "eps_star": np.array([0.3, 0.0, 0.05])}
    train_grid(part.clf, counted, part.train, other, tc, key, progress=False)  # no new trace


@pytest.mark.slow
def test_gmm_boundary_errors_match_a_brute_force_search_of_the_eps_square(study):
    """On 2-D inputs the boundary error can be brute-forced: a point counts when any of a
    dense grid of offsets in its L∞ square flips the prediction. The attacks' flags must be
    at most a few points weaker than that search (and are never weaker on default models:
    0.00125 at most over 135 (model, ε) pairs of the default run)."""
    import jax
    import jax.numpy as jnp

    from vaerob_jax.studies.fairness.study import train_part

    out, _, _ = study
    part = prepare_parts(TINY)["gmm2d"]
    g = np.linspace(-1.0, 1.0, 31)
    offsets = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
    x = jnp.asarray(part.test["x"])
    stack, results = train_part(TINY, part, out / "train", progress=False)
    assert all(r.resumed_from == TINY.gmm_steps for r in results.values())  # loaded, not retrained
    for k in range(len(part.models)):
        p = jax.tree.map(lambda a, k=k: a[k], stack)
        pred = jnp.argmax(part.clf.logits(p, x), -1)
        arr = _arrays(out, part.cell_id(int(k)))
        for i, e in enumerate(TINY.gmm_eval_eps):
            moved = jax.vmap(lambda o, p=p, e=e: part.clf.logits(p, x + e * o))(offsets)
            brute = np.asarray(jnp.any(jnp.argmax(moved, -1) != pred, axis=0))
            attack = (arr["flipped_rfgsm"][i] | arr["flipped_pgd"][i]) & arr["correct"]
            assert np.mean(brute & arr["correct"]) - np.mean(attack) <= 0.02


def _utk_folder(root, n=48, size=12):
    """A fake UTKFace folder: colour codes the race, so a CNN can learn it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        race, gender, age = i % 3, (i // 3) % 2, 20 + i
        colour = tuple(
            int(v)
            for v in np.clip(
                [80 * race + 20, 100 * gender + 40, 128] + rng.normal(0, 10, 3), 0, 255
            )
        )
        Image.new("RGB", (size, size), colour).save(root / f"{age}_{gender}_{race}_2017{i:04d}.jpg")
    return root


@pytest.mark.slow
def test_utkface_part_trains_the_cnn_and_writes_the_tables(tmp_path):
    from vaerob_jax.data.utkface import RACE_NAMES

    folder = _utk_folder(tmp_path / "utk")
    cfg = dataclasses.replace(
        TINY,
        parts=("utkface",),
        utkface_dir=str(folder),
        utkface_image_size=8,
        utkface_channels=(4, 8),
        utkface_hidden=8,
        utkface_lambdas=(0.0, 1.0),
        utkface_eps_stars=(0.0,),
        utkface_eval_eps=(4 / 255,),
        utkface_steps=5,
        utkface_batch_size=8,
        seeds=(0,),
    )
    with pytest.raises(ValueError, match=r"utkface train: group\(s\) \[3, 4\] have no examples"):
        prepare_parts(cfg)  # races 'Indian' and 'Others' are absent: refused before training
    for i, race in enumerate((3, 4) * 12):
        j = i % 48
        src = folder / f"{20 + j}_{(j // 3) % 2}_{j % 3}_2017{j:04d}.jpg"
        (folder / f"{60 + i}_0_{race}_2018{i:04d}.jpg").write_bytes(src.read_bytes())
    parts = prepare_parts(cfg)
    assert parts["utkface"].group_names == RACE_NAMES
    assert parts["utkface"].clf.spec()["arch"] == "SmallAlexNet"
    paths = run_fairness_study(cfg, tmp_path / "out", **QUIET)
    errors = read_csv(paths["errors"], types=TYPES)
    assert {r["group"] for r in errors} == {"all", *RACE_NAMES}
    assert len({r["model_id"] for r in errors}) == 2


def test_utkface_needs_a_folder_with_parseable_files(tmp_path):
    cfg = dataclasses.replace(TINY, parts=("utkface",))
    with pytest.raises(ValueError, match="utkface_dir"):
        validate_fairness_config(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no faces here")
    with pytest.raises(ValueError, match="has a parseable name"), pytest.warns(UserWarning):
        run_fairness_study(
            dataclasses.replace(cfg, utkface_dir=str(empty)), tmp_path / "o", **QUIET
        )
    assert not (tmp_path / "o" / "train").exists()


def test_attack_check_sentence_reads_the_sign_of_the_changes():
    from types import SimpleNamespace

    from vaerob_jax.studies.fairness.readings import attack_sentence

    config = SimpleNamespace(check_factor=4, check_restarts=2)

    def res(*changes):
        rows = [dict(change=c, model_id=f"m{i}", eps=0.1) for i, c in enumerate(changes)]
        return SimpleNamespace(attack_check=rows)

    rose = attack_sentence(res(0.004, 0.0), config)
    assert "rose by at most 0.0040 (m0" in rose and rose.endswith("converged to 0.01.")
    fell = attack_sentence(res(-0.03, -0.001), config)
    assert "did not rise" in fell and "rose" not in fell.replace("did not rise", "")
    assert "NOT converged to 0.01" in fell  # a 0.03 move either way is not converged
    both = attack_sentence(res(0.002, -0.02), config)
    assert "changed by at most 0.0200 (m1" in both
