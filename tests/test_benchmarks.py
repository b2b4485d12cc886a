"""The benchmark suite runs end to end on tiny shapes and reports sane, self-consistent numbers
(timings themselves are checked by running `make bench`, not by unit tests)."""

from __future__ import annotations

import json
import math

import pytest


@pytest.mark.slow
def test_run_all_quick_writes_every_report(tmp_path):
    from benchmarks.run_all import BENCHMARKS, main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    reports = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in BENCHMARKS}

    attacks = reports["bench_attacks"]
    assert attacks["matmul_peak_gflops"] > 0
    for case in attacks["cases"].values():
        for driver in case.values():
            if isinstance(driver, dict) and "image_steps_per_s" in driver:
                assert driver["image_steps_per_s"] > 0
    assert attacks["ynn_flag"]["speedup"] > 0

    strength = reports["bench_attack_strength"]
    steps = [r["steps"] for r in strength["rows"] if r["attack"] == "pgd_sign"]
    assert steps == sorted(steps)
    assert all(r["median_delta_c"] >= 0 for r in strength["rows"])
    reach = strength["steps_to_reach_reference_median"]
    assert reach is None or reach in steps

    train = reports["bench_train"]
    assert all(v > 0 for v in train["examples_models_per_s"].values())

    margins = reports["bench_margins"]
    exact = margins["jac_fro_exact"]
    assert exact["per_example_ms"] > 0 and not math.isnan(exact["per_example_ms"])
    assert math.isclose(
        exact["per_latent_dim_ms"] * margins["latent_dim"], exact["per_example_ms"], rel_tol=1e-6
    )
