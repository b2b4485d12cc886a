"""bfloat16 mixed precision for the subgroup study's attack: what it does to Δc, and its speed.

The study's default attack (``SUBGROUP_PRESETS['shapes']``: Auto-PGD, Eq. 4 of 000) on a trained
Burgess VAE at 32×32 (the model bench_attack_strength trains, shared through ``--workdir``),
64 training examples per subgroup of the embedded 'shapes' data, ε = 0.1, run three ways from
one model:

* float32, key A (the study's attack);
* float32, key B (another random start: the attack's own randomness, the yardstick);
* bfloat16 mixed precision, key A (``attack_dtype='bfloat16'``; Δc measured in float32).

It reports each subgroup's median Δc, the relative change bfloat16 makes next to the one a new
key makes, and the attacks' image·steps/s (best of 3). On a CPU expect no speed-up: XLA's CPU
convolutions do not run bfloat16 faster; the point of the option is accelerators.

    python -m benchmarks.bench_precision [--quick] [--out FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of, report_json


def run(quick: bool, workdir: Path, eps: float = 0.1) -> dict[str, Any]:
    from vaerob_jax.runtime import tune_cpu

    tune_cpu()  # as the vaerob command does (before the backend exists)
    import jax
    import jax.numpy as jnp

    from benchmarks.bench_attack_strength import _setup
    from vaerob_jax import attacks as atk
    from vaerob_jax.data import load, sample_per_subgroup
    from vaerob_jax.robustness import evaluate_attacks
    from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS
    from vaerob_jax.studies.subgroups.attack_checks import study_attacks

    model, params, _ = _setup(quick, workdir)
    size, per_group = (16, 4) if quick else (32, 64)
    pool = load("shapes", "train", image_size=size, n=256 if quick else 4096)
    sample = sample_per_subgroup(pool, per_group, 1)
    xs = jnp.asarray(sample.images)
    ids = np.asarray(sample.subgroup_ids)
    groups = [str(sample.subgroup_names[g]) for g in np.unique(ids)]
    cfg = SUBGROUP_PRESETS["shapes"]
    if quick:
        cfg = dataclasses.replace(cfg, attack_steps=4, restarts=1)
    budget = jnp.asarray([eps], jnp.float32)
    key_a, key_b = jax.random.key(2), jax.random.key(3)
    arms = {
        "float32": (study_attacks(cfg, model)["default"], key_a),
        "float32_other_key": (study_attacks(cfg, model)["default"], key_b),
        "bfloat16": (
            study_attacks(dataclasses.replace(cfg, attack_dtype="bfloat16"), model)["default"],
            key_a,
        ),
    }
    out: dict[str, Any] = {
        "platform": jax.devices()[0].platform,
        "shape": [int(s) for s in xs.shape],
        "eps": eps,
        "attack": f"{cfg.attack_steps} steps x {cfg.restarts} restarts, step {cfg.attack_step}·ε",
        "subgroups": groups,
        "arms": {},
    }
    for name, (attack, key) in arms.items():

        def once(attack: Any = attack, key: Any = key) -> Any:
            return jax.block_until_ready(atk.run_attack(attack, params, {"x": xs}, budget, key))

        res, best = best_of(once, 1 if quick else 3)
        dc = np.asarray(evaluate_attacks(model, params, xs, res.delta)["delta_c"][0])
        out["arms"][name] = {
            "median_delta_c": [float(np.median(dc[ids == g])) for g in np.unique(ids)],
            "image_steps_per_s": xs.shape[0] * cfg.attack_steps * cfg.restarts / best,
            "max_abs_delta": float(jnp.max(jnp.abs(res.delta))),
            "failed": int(np.sum(~np.asarray(res.improved))),
        }
    base = np.asarray(out["arms"]["float32"]["median_delta_c"])
    for name in ("float32_other_key", "bfloat16"):
        change = np.asarray(out["arms"][name]["median_delta_c"]) / base - 1
        out["arms"][name]["relative_change_vs_float32"] = change.tolist()
        out[f"max_abs_relative_change_{name}"] = float(np.max(np.abs(change)))
    out["bfloat16_speed_vs_float32"] = (
        out["arms"]["bfloat16"]["image_steps_per_s"] / out["arms"]["float32"]["image_steps_per_s"]
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("results/benchmarks/strength_model"))
    args = parser.parse_args(argv)
    res = run(args.quick, args.workdir / ("quick" if args.quick else "full"))
    print(
        f"{'arm':>18s} {'img·steps/s':>12s}  median Δc per subgroup ({', '.join(res['subgroups'])})"
    )
    for name, arm in res["arms"].items():
        change = arm.get("relative_change_vs_float32")
        moved = "" if change is None else "  vs float32: " + " ".join(f"{c:+.1%}" for c in change)
        medians = " ".join(f"{m:.4f}" for m in arm["median_delta_c"])
        print(f"{name:>18s} {arm['image_steps_per_s']:12.0f}  {medians}{moved}")
    report_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
