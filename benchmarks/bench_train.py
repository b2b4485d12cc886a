"""Grid-training throughput: K β values in ONE vmapped program versus K separate runs.

Measures examples·models per second of :func:`vaerob_jax.train.train_grid` after compilation
(a warm-up call compiles; the timed call reuses the cached program):
  * K=1: one model;
  * K=4 grid: four β values vmapped in one program;
  * 4 sequential runs: four K=1 calls one after another (what a per-β script does).
  * K=4 grid with ``model_axis='map'`` (lax.map over the models inside the one program);
Prints the ratio grid / sequential, and XLA's FLOP count per step to report GFLOP/s.

Run:
    python -m benchmarks.bench_train            # burgess64 on 64x64x3, batch 64
    python -m benchmarks.bench_train --quick    # tiny MLP on 8x8x1 (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_flops, matmul_peak_gflops
from vaerob_jax import objectives
from vaerob_jax.models import make_vae
from vaerob_jax.train import TrainConfig, train_grid
from vaerob_jax.train.steps import init_program, step_program, step_settings

BETAS4 = (1.0, 2.0, 5.0, 10.0)


def _setup(
    quick: bool, steps_override: int | None = None
) -> tuple[Any, np.ndarray, TrainConfig, dict[str, Any]]:
    if quick:
        shape, backbone, latent, hidden, batch, n, steps = (8, 8, 1), "mlp", 4, (32, 16), 16, 64, 20
    else:
        shape, backbone, latent, hidden, batch, n, steps = (
            (64, 64, 3),
            "burgess64",
            16,
            None,
            64,
            256,
            8,
        )
    steps = steps if steps_override is None else steps_override
    model = make_vae(backbone, shape, latent, hidden=hidden)
    images = np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32)
    config = TrainConfig(steps=steps, batch_size=batch, log_every=steps, learning_rate=1e-4)
    info = {
        "backbone": backbone,
        "image_shape": list(shape),
        "latent_dim": latent,
        "batch_size": batch,
        "num_images": n,
        "timed_steps": steps,
    }
    return model, images, config, info


def _flops_per_step(model: Any, images: np.ndarray, config: TrainConfig, k: int) -> float | None:
    """XLA's FLOP estimate for one vmapped grid step with K models (None if unavailable)."""
    try:
        key = jax.random.key(0)
        settings = dataclasses.replace(step_settings(config), model_axis="vmap")
        one = jax.eval_shape(init_program(model, settings), key)
        stack = jax.tree.map(lambda a: jax.ShapeDtypeStruct((k, *a.shape), a.dtype), one)
        params, opt_state = stack
        keys = jax.random.split(key, k)
        program = step_program(objectives.beta_elbo(model), settings).run
        lowered = program.lower(  # type: ignore[attr-defined]
            params,
            opt_state,
            {"x": jnp.asarray(images)},
            keys,
            keys,
            {"beta": jnp.ones((k,), jnp.float32), "tau": jnp.zeros((k,), jnp.float32)},
            jnp.full((k,), config.learning_rate, jnp.float32),
            jnp.int32(0),
        )
        flops = compiled_flops(lowered.compile())
        return None if np.isnan(flops) else flops
    except Exception:  # the estimate is optional
        return None


def _timed(fn) -> float:
    t0 = time.perf_counter()
    res = fn()
    jax.block_until_ready(res.params)
    return time.perf_counter() - t0


def run(quick: bool, steps: int | None = None, rounds: int = 2) -> dict[str, Any]:
    model, images, config, info = _setup(quick, steps)
    key = jax.random.key(0)
    steps = config.steps
    warm = TrainConfig(**{**config.to_dict(), "steps": 1, "log_every": 1})

    loss = objectives.beta_elbo(model)

    def grid(betas, c):
        return train_grid(model, loss, images, {"beta": list(betas)}, c, key, progress=False)

    mapped = dataclasses.replace(config, model_axis="map")
    warm_mapped = dataclasses.replace(warm, model_axis="map")
    t_compile = {
        "K1": _timed(lambda: grid(BETAS4[:1], warm)),
        "K4_vmap": _timed(lambda: grid(BETAS4, warm)),
        "K4_map": _timed(lambda: grid(BETAS4, warm_mapped)),
    }
    # Rounds interleave the variants and keep each one's fastest time, so a load spike on a
    # shared machine does not land on one variant only.
    times: dict[str, list[float]] = {"K1": [], "K4": [], "K4_map": [], "seq": []}
    for _ in range(rounds):
        times["K1"].append(_timed(lambda: grid(BETAS4[:1], config)))
        times["K4"].append(_timed(lambda: grid(BETAS4, config)))
        times["K4_map"].append(_timed(lambda: grid(BETAS4, mapped)))
        times["seq"].append(sum(_timed(lambda b=b: grid([b], config)) for b in BETAS4))
    t1, t4, t4_map, t_seq = (min(times[k]) for k in ("K1", "K4", "K4_map", "seq"))
    ex = config.batch_size * steps
    tput = {
        "K1": ex / t1,
        "K4_grid": 4 * ex / t4,
        "K4_grid_map": 4 * ex / t4_map,
        "K4_sequential": 4 * ex / t_seq,
    }
    flops4 = _flops_per_step(model, images, config, 4)
    peak = matmul_peak_gflops(1024)
    result = {
        "device": jax.devices()[0].device_kind,
        "platform": platform.processor() or platform.machine(),
        **info,
        "rounds": rounds,
        "seconds": {"K1": t1, "K4_grid": t4, "K4_grid_map": t4_map, "K4_sequential": t_seq},
        "first_call_seconds_incl_compile": t_compile,
        "examples_models_per_s": tput,
        "ratio_grid_over_sequential": tput["K4_grid"] / tput["K4_sequential"],
        "ratio_grid_map_over_sequential": tput["K4_grid_map"] / tput["K4_sequential"],
        "ratio_grid_over_K1": tput["K4_grid"] / tput["K1"],
        "flops_per_step_K4": flops4,
        "gflops_K4_grid": None if flops4 is None else flops4 * steps / t4 / 1e9,
        "matmul_peak_gflops": peak,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (min)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    res = run(args.quick, args.steps, max(1, args.rounds))
    t = res["examples_models_per_s"]
    print(
        f"grid training, {res['backbone']} on {tuple(res['image_shape'])}, batch "
        f"{res['batch_size']}, {res['timed_steps']} timed steps, best of {res['rounds']} "
        f"({res['device']})"
    )
    print(f"  K=1                  : {t['K1']:10.1f} examples·models/s")
    print(f"  K=4 one program, vmap: {t['K4_grid']:10.1f} examples·models/s")
    print(f"  K=4 one program, map : {t['K4_grid_map']:10.1f} examples·models/s")
    print(f"  K=4 sequential runs  : {t['K4_sequential']:10.1f} examples·models/s")
    print(
        f"  ratio grid/sequential = {res['ratio_grid_over_sequential']:.2f}x (vmap), "
        f"{res['ratio_grid_map_over_sequential']:.2f}x (map)"
    )
    if res["gflops_K4_grid"] is not None:
        print(
            f"  K=4 grid: {res['gflops_K4_grid']:.1f} GFLOP/s "
            f"(matmul peak {res['matmul_peak_gflops']:.0f} GFLOP/s)"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
