"""The benchmark suite runs end to end on tiny shapes and reports sane, self-consistent numbers
(timings themselves are checked by running `make bench`, not by unit tests). One test per
benchmark, so the test workers share them out."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from benchmarks.run_all import BENCHMARKS
from vaerob_jax import runtime


def _check_attacks(attacks: dict) -> None:
    assert attacks["matmul_peak_gflops"] > 0
    for case in attacks["cases"].values():
        for driver in case.values():
            if isinstance(driver, dict) and "image_steps_per_s" in driver:
                assert driver["image_steps_per_s"] > 0
    assert attacks["ynn_flag"]["speedup"] > 0


def _check_strength(strength: dict) -> None:
    steps = [r["steps"] for r in strength["rows"] if r["attack"] == "pgd_sign"]
    assert steps == sorted(steps)
    assert all(r["median_delta_c"] >= 0 for r in strength["rows"])
    reach = strength["steps_to_reach_reference_median"]
    assert reach is None or reach in steps


def _check_train(train: dict) -> None:
    assert all(v > 0 for v in train["examples_models_per_s"].values())


def _check_margins(margins: dict) -> None:
    exact = margins["jac_fro_exact"]
    assert exact["per_example_ms"] > 0 and not math.isnan(exact["per_example_ms"])
    assert math.isclose(
        exact["per_latent_dim_ms"] * margins["latent_dim"], exact["per_example_ms"], rel_tol=1e-6
    )


def _check_fairness(fairness: dict) -> None:
    for case in fairness["cases"].values():
        assert all(v > 0 for v in case["models_steps_per_s"].values())
        assert case["ratio_grid_over_sequential"] > 0
        assert case["grid_equals_sequential"] is True


def _check_dae(dae: dict) -> None:
    train, attack = dae["training"], dae["attack"]
    assert all(v > 0 for v in train["models_steps_per_s"].values())
    assert train["ratio_grid_over_sequential"] > 0
    assert train["grid_equals_sequential"] is True
    assert all(v > 0 for v in attack["image_steps_per_s"].values())
    assert attack["ratio_batched_over_per_image"] > 0
    assert attack["per_image_equals_batched"] is True
    assert attack["equality_check"]["examples_compared"] > 0


def _check_targeted(targeted: dict) -> None:
    assert all(v > 0 for v in targeted["attacks_iterations_per_s"].values())
    assert targeted["ratio_jax_over_scipy"] > 0
    assert targeted["box_respected"] is True
    agreement = targeted["agreement"]
    assert 0 <= agreement["share_jax_at_most_scipy"] <= 1
    assert agreement["median_abs_rel_diff"] < 1e-2  # same objective, both solved


def _check_cpu_runtime(result: dict) -> None:
    for name in ("jax_default", "jax_tuned_lax", "jax_tuned"):
        r = result[name]
        assert r["attack_b64_image_steps_per_s"] > 0  # the quick run times batch 64 only
        assert r["train_b64_ms_per_step"] > 0
    # XLA's own strided convolutions in the first two columns, the polyphase forms last
    assert [result[n]["strided_conv"] for n in ("jax_default", "jax_tuned_lax", "jax_tuned")] == [
        "lax",
        "lax",
        "phases",
    ]
    # tuning is applied only when asked, and the flag only where this jaxlib has it
    default, tuned = result["jax_default"], result["jax_tuned"]
    assert default["applied"] == {"allocator": False, "ynn_off": False}
    assert default["xla_flags"] == ""
    assert tuned["applied"]["allocator"] is True  # glibc on this project's Linux machines
    assert tuned["applied"]["ynn_off"] == runtime.xla_flag_supported(runtime.YNN_OFF_FLAG)
    assert tuned["xla_flags"].split() == (
        [runtime.YNN_OFF_FLAG] if tuned["applied"]["ynn_off"] else []
    )
    assert result["same_attack_result"] is True
    # other kernels (tuned) and the polyphase forms: results equal to float32 rounding
    assert result["delta_max_abs"] > 0.01  # the attack moved
    for label in ("phases_vs_lax", "tuned_vs_default"):
        kernel_diff = result[f"{label}_max_abs_kernel_diff"]
        assert kernel_diff <= 1e-5 * result["kernel_max_abs"] + 1e-6
        assert result[f"{label}_max_rel_objective_diff"] <= 1e-4
        assert result[f"{label}_share_delta_moved"] <= 0.01
    if "torch" in result:  # only where an interpreter with torch was found
        assert result["torch"]["max_abs_code_diff"] < 1e-4


def _check_parallel(result: dict) -> None:
    runs = {r["devices"]: r for r in result["runs"]}
    assert set(runs) | {r["devices"] for r in result["skipped"]} == {1, 4}  # quick: 1 and 4
    assert 1 in runs and runs[1]["attack_vs_one_device"] == 1.0
    for r in runs.values():
        assert r["attack_image_steps_per_s"] > 0 and r["train_example_steps_per_s"] > 0
        assert r["attack_max_abs_delta_diff_vs_one_device"] <= 1e-6  # splitting is exact here
        assert r["attack_gflops_per_s"] > 0 or math.isnan(r["attack_gflops_per_s"])


def _check_precision(result: dict) -> None:
    arms = result["arms"]
    assert set(arms) == {"float32", "float32_other_key", "bfloat16"}
    for arm in arms.values():
        assert arm["image_steps_per_s"] > 0 and arm["failed"] == 0
        assert 0 < arm["max_abs_delta"] <= result["eps"] + 1e-6  # moved, inside its ball
        assert len(arm["median_delta_c"]) == len(result["subgroups"]) == 4
    # same key, float32 vs bfloat16: close but not the same program
    assert 0 < result["max_abs_relative_change_bfloat16"] < 0.5


CHECKS = {
    "bench_attacks": _check_attacks,
    "bench_attack_strength": _check_strength,
    "bench_train": _check_train,
    "bench_margins": _check_margins,
    "bench_fairness": _check_fairness,
    "bench_dae": _check_dae,
    "bench_targeted": _check_targeted,
    "bench_cpu_runtime": _check_cpu_runtime,
    "bench_parallel": _check_parallel,
    "bench_precision": _check_precision,
}


def test_every_benchmark_has_a_check():
    assert set(CHECKS) == set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_benchmark_writes_a_sane_report(name, tmp_path):
    module = importlib.import_module(f"benchmarks.{name}")
    out = tmp_path / f"{name}.json"
    trains = ("bench_attack_strength", "bench_precision")
    extra = ["--workdir", str(tmp_path / "model")] if name in trains else []
    module.main(["--quick", "--out", str(out), *extra])
    CHECKS[name](json.loads(out.read_text()))


def test_run_all_runs_the_chosen_benchmarks(tmp_path, monkeypatch):
    import benchmarks.run_all as run_all

    calls = []
    monkeypatch.setattr(
        run_all.importlib,
        "import_module",
        lambda n: type("M", (), {"main": staticmethod(lambda argv, n=n: calls.append((n, argv)))}),
    )
    assert run_all.main(["--quick", "--out", str(tmp_path), "--only", "bench_train"]) == 0
    assert calls == [
        ("benchmarks.bench_train", ["--quick", "--out", str(tmp_path / "bench_train.json")])
    ]
