"""Attack-engine throughput: attacked-sample·steps/s and achieved GFLOP/s vs a matmul peak.

Run from the repository root::

    python -m benchmarks.bench_attacks            # burgess64, 64x64x3, latent 32 (~2-3 min)
    python -m benchmarks.bench_attacks --quick    # tiny MLP on 8x8x1 (seconds)
    python -m benchmarks.bench_attacks --out bench_attacks.json

Measured, for both loop drivers ('python_chunks' and 'scan', see vaerob_jax.attacks.driver):
one example at a time, a batch of 64, and 64 samples × 4 ε × 3 models; plus a straightforward
per-example Python loop (one jitted single-image PGD step called per example and step, the
shape of the reference PyTorch code) and the engine/loop throughput ratio. FLOPs per
image·step come from XLA's ``cost_analysis()`` of ONE jitted step of the batched program
(a fori_loop body would be counted once, so we never read FLOPs off the scan program);
the peak is a float32 2048² matmul timed in the same run. Finally the batch-64 case is re-run
in two subprocesses with and without ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``
(the flag must be set before jax is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_flops, matmul_peak_gflops
from vaerob_jax.attacks import latent_damage, pgd, run_attack
from vaerob_jax.attacks.constraints import projection
from vaerob_jax.attacks.driver import (
    DEFAULT_CHUNK,
    _chunk_program,
    _finalize_program,
    _init_program,
    _scan_program,
)
from vaerob_jax.models import make_vae
from vaerob_jax.runtime import YNN_OFF_FLAG

YNN_FLAG = YNN_OFF_FLAG  # the flag vaerob_jax.runtime.tune_cpu sets


def _block(x: Any) -> Any:
    return jax.block_until_ready(x)


def setup(quick: bool) -> dict[str, Any]:
    """Model, stacked params, images and budgets for the run size."""
    if quick:
        model = make_vae("mlp", (8, 8, 1), latent_dim=4, hidden=(32, 16))
    else:
        model = make_vae("burgess64", (64, 64, 3), latent_dim=32)
    params = [model.init(jax.random.key(k)) for k in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    xs = jax.random.uniform(jax.random.key(9), (64, *model.image_shape), jnp.float32)
    eps = jnp.array([0.01, 0.02, 0.05, 0.1], jnp.float32)
    return dict(model=model, params=params[0], stacked=stacked, xs=xs, eps=eps)


def _model_params(s: dict[str, Any], k: int) -> Any:
    return s["params"] if k == 1 else jax.tree.map(lambda a: a[:k], s["stacked"])


def warm_up(
    attack: Any, s: dict[str, Any], n: int, e: int, k: int, driver: str
) -> dict[str, float]:
    """Compiles (ahead of time, filling jit's cache) the programs a driver will call.

    Returns the compile time and, for the python-chunks driver, XLA's FLOPs of one step of
    the per-model program (chunk FLOPs / chunk length; a chunk is unrolled, so every step
    counts, and the clean-image encoding is shared by the chunk's steps).
    """
    xs, eps, key = {"x": s["xs"][:n]}, s["eps"][:e], jax.random.key(0)
    params = _model_params(s, k)
    t = time.perf_counter()
    out: dict[str, float] = {}
    if driver == "scan":
        _scan_program.lower(attack, "models" if k > 1 else "grid", params, xs, eps, key).compile()
    else:
        p = params if k == 1 else jax.tree.map(lambda a: a[0], params)
        state = _block(_init_program(attack, "grid", p, xs, eps, key))
        full, rest = divmod(attack.steps, DEFAULT_CHUNK)
        for length in [m for m in (DEFAULT_CHUNK if full else 0, rest) if m]:
            compiled = _chunk_program.lower(attack, "grid", length, p, xs, eps, state).compile()
            out["flops_per_image_step"] = compiled_flops(compiled) / (length * n * e)
        _finalize_program.lower(attack, "grid", p, xs, eps, state).compile()
    out["compile_s"] = time.perf_counter() - t
    return out


def time_engine(
    attack: Any, s: dict[str, Any], n: int, e: int, k: int, driver: str
) -> dict[str, float]:
    """Compile, then time the batched attack (best of a few calls when a call is short)."""
    xs, eps = s["xs"][:n], s["eps"][:e]
    params = _model_params(s, k)
    out = warm_up(attack, s, n, e, k, driver)

    def call() -> Any:
        return run_attack(
            attack, params, {"x": xs}, eps, jax.random.key(0), models=k > 1, driver=driver
        ).delta

    run = np.inf
    for _ in range(5):  # best of a few when runs are short (noise of a shared machine)
        t = time.perf_counter()
        _block(call())
        run = min(run, time.perf_counter() - t)
        if run > 0.3:
            break
    out.update(run_s=run, image_steps_per_s=n * e * k * attack.steps / run)
    return out


def per_example_python_loop(s: dict[str, Any], steps: int, n_examples: int) -> float:
    """Baseline: a jitted single-image PGD step called in Python per example and step.

    Returns image·steps/s.
    """
    model, params, xs = s["model"], s["params"], s["xs"]
    obj = latent_damage(model)
    project = projection("linf")
    eps = jnp.float32(0.05)
    alpha = 2.5 * eps / steps

    @jax.jit
    def step(delta: jax.Array, x: jax.Array, key: jax.Array) -> jax.Array:
        g = jax.grad(obj, argnums=2)(params, {"x": x}, delta, key)
        return project(x, delta + alpha * jnp.sign(g), eps)

    def attack_one(i: int) -> jax.Array:
        x = xs[i]
        delta = eps * jax.random.uniform(jax.random.key(i), x.shape, minval=-1.0, maxval=1.0)
        for t in range(steps):
            delta = step(delta, x, jax.random.key(t))
        return _block(delta)

    attack_one(0)  # compile
    t = time.perf_counter()
    for i in range(n_examples):
        attack_one(i)
    return n_examples * steps / (time.perf_counter() - t)


def ynn_child(quick: bool, steps: int) -> dict[str, float]:
    """The batch-64 python-chunks case alone (run in a subprocess with or without the flag)."""
    s = setup(quick)
    attack = pgd(latent_damage(s["model"]), "linf", steps=steps)
    r = time_engine(attack, s, 64, 1, 1, "python_chunks")
    r["gflops"] = r["image_steps_per_s"] * r["flops_per_image_step"] / 1e9
    return r


def run_ynn_comparison(quick: bool, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, flags in (("default", ""), ("ynn_fusion_type_empty", YNN_FLAG)):
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "").replace(YNN_FLAG, "") + " " + flags).strip()
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_attacks",
            "--ynn-child",
            "--steps",
            str(steps),
        ]
        cmd += ["--quick"] if quick else []
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            out[label] = dict(error=res.stderr[-2000:])
            continue
        out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    ok = all("image_steps_per_s" in v for v in out.values())
    if ok:
        out["speedup"] = (
            out["ynn_fusion_type_empty"]["image_steps_per_s"] / out["default"]["image_steps_per_s"]
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny MLP on 8x8x1 images")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ynn-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-ynn", action="store_true", help="skip the XLA_FLAGS subprocess runs")
    args = ap.parse_args(argv)

    if args.ynn_child:
        print(json.dumps(ynn_child(args.quick, args.steps or 8)))
        return {}

    t_start = time.perf_counter()
    s = setup(args.quick)
    peak = matmul_peak_gflops(256 if args.quick else 2048)
    obj = latent_damage(s["model"])
    # (name, N, E, K, steps): steps kept small so the whole run stays within ~3 minutes
    cases = [
        ("one_example", 1, 1, 1, 20),
        ("batch64", 64, 1, 1, 8),
        ("batch64_eps4_models3", 64, 4, 3, 4),
    ]
    results: dict[str, Any] = dict(
        backend=jax.default_backend(),
        model="mlp 8x8x1 latent 4" if args.quick else "burgess64 64x64x3 latent 32",
        matmul_peak_gflops=peak,
        cases={},
    )
    print(f"backend {results['backend']}; model {results['model']}; matmul peak {peak:.1f} GFLOP/s")
    for name, n, e, k, steps in cases:
        attack = pgd(obj, "linf", steps=steps)
        row: dict[str, Any] = dict(n=n, eps=e, models=k, steps=steps)
        for driver in ("python_chunks", "scan"):
            row[driver] = time_engine(attack, s, n, e, k, driver)
        # useful work per image-step: the per-model program's XLA count (the scan driver runs
        # the same math; its model-vmapped grouped convs are counted differently by XLA)
        flops = row["python_chunks"]["flops_per_image_step"]
        row["flops_per_image_step"] = flops
        for driver in ("python_chunks", "scan"):
            r = row[driver]
            r["gflops"] = r["image_steps_per_s"] * flops / 1e9
            r["fraction_of_peak"] = r["gflops"] / peak
            print(
                f"{name:22s} {driver:13s} {r['image_steps_per_s']:9.1f} image-steps/s "
                f"{r['gflops']:7.2f} GFLOP/s ({100 * r['fraction_of_peak']:4.1f}% of peak) "
                f"compile {r['compile_s']:.1f}s  [{flops / 1e6:.2f} MFLOP/image-step]",
                flush=True,
            )
        results["cases"][name] = row

    loop = per_example_python_loop(s, steps=10, n_examples=2)
    results["per_example_python_loop_image_steps_per_s"] = loop
    print(f"per-example python loop       {loop:9.1f} image-steps/s")
    for name, row in results["cases"].items():
        for driver in ("python_chunks", "scan"):
            row[driver]["ratio_to_per_example_loop"] = row[driver]["image_steps_per_s"] / loop
        best = max(row["python_chunks"]["image_steps_per_s"], row["scan"]["image_steps_per_s"])
        print(f"{name:22s} best driver / per-example loop = {best / loop:.2f}x")

    if not args.no_ynn:
        results["ynn_flag"] = run_ynn_comparison(args.quick, steps=8)
        print("XLA_FLAGS ynn comparison (batch64, python_chunks):", json.dumps(results["ynn_flag"]))
    results["total_wall_s"] = time.perf_counter() - t_start
    print(f"total {results['total_wall_s']:.1f}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
