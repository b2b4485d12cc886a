"""Throughput of the certified-margin library (001): exact ||J_mu||_F, Theorem-1 bound, margin.

Usage:
    python -m benchmarks.bench_margins [--quick] [--batch N] [--out FILE.json]

Default shapes: burgess64 encoder on 64x64x3 images, latent 32 (the DESIGN target). ``--quick``
uses an MLP on 8x8x1 with latent 4 and a tiny batch (a smoke run of a few seconds).

Reports, per example of a vmapped batch: wall time, time per latent dimension for the exact
norm (the first prototype measured ~33 ms per 64x64x3 image with 32 VJPs, ~1 ms per latent
dim; aim <= ~1 ms per latent dim), XLA's FLOP count (``compile().cost_analysis()['flops']``)
and achieved GFLOP/s as a fraction of a float32 matmul peak measured in the same run. The
margin estimate's loops (bisection x PGD steps) are ``fori_loop``s, whose bodies XLA counts
once, so only its wall time is reported.

Measured on the shared 2-core CPU, one example per call ran the exact norm ~2x faster per
example than a vmapped batch of 8 (the batch's d x B cotangent activations fall out of
cache); both are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_flops, matmul_peak_gflops
from vaerob_jax.models import make_vae
from vaerob_jax.robustness.jacobian import (
    encoder_jacobian_fro,
    encoder_jacobian_fro_probe,
    theorem1_bound,
)
from vaerob_jax.robustness.margin import make_margin_estimator, pgd_attack_fn


def _time(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(first-call seconds incl. compile, best-of-reps seconds)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


def _flops(jitted: Any, *args: Any) -> float:
    try:
        return compiled_flops(jitted.lower(*args).compile())
    except Exception:  # lowering is best effort for the estimate
        return float("nan")


def run(quick: bool, batch: int | None, reps: int) -> dict[str, Any]:
    if quick:
        backbone, shape, latent = "mlp", (8, 8, 1), 4  # checks the plumbing, not the speed
        batch = batch or 2
        n_samples, n_iter, steps, peak_n = 16, 3, 3, 512
    else:
        backbone, shape, latent = "burgess64", (64, 64, 3), 32
        batch = batch or 8
        n_samples, n_iter, steps, peak_n = 64, 6, 10, 2048
    model = make_vae(backbone, shape, latent_dim=latent)
    params = model.init(jax.random.key(0))
    xs = jax.random.uniform(jax.random.key(1), (batch, *shape), jnp.float32)
    key = jax.random.key(2)
    peak = matmul_peak_gflops(peak_n, reps=3)
    out: dict[str, Any] = {
        "device": str(jax.devices()[0]),
        "backbone": backbone,
        "image_shape": list(shape),
        "latent_dim": latent,
        "batch": batch,
        "matmul_peak_gflops": peak,
    }

    def record(name: str, jitted: Any, args: tuple, n_examples: int | None = None) -> None:
        first, best = _time(lambda: jitted(*args), reps)
        fl = _flops(jitted, *args)
        per_ex = best / (n_examples or batch)
        gflops = fl / best / 1e9
        out[name] = {
            "compile_plus_first_s": first,
            "per_example_ms": 1e3 * per_ex,
            "flops_per_call": fl,
            "achieved_gflops": gflops,
            "fraction_of_matmul_peak": gflops / peak,
        }
        print(
            f"{name:28s} {1e3 * per_ex:9.2f} ms/example  {gflops:7.1f} GFLOP/s "
            f"({100 * gflops / peak:5.1f}% of matmul peak {peak:.0f})  first call {first:.1f} s"
        )

    # exact Frobenius norm: latent_dim VJPs per example, vmapped over the batch
    fro = jax.jit(jax.vmap(lambda x: encoder_jacobian_fro(model, params, x)))
    record("jac_fro_exact", fro, (xs,))
    out["jac_fro_exact"]["per_latent_dim_ms"] = out["jac_fro_exact"]["per_example_ms"] / latent
    fro1 = jax.jit(lambda x: encoder_jacobian_fro(model, params, x))
    record("jac_fro_exact_batch1", fro1, (xs[0],), n_examples=1)
    out["jac_fro_exact_batch1"]["per_latent_dim_ms"] = (
        out["jac_fro_exact_batch1"]["per_example_ms"] / latent
    )
    probe = jax.jit(jax.vmap(lambda x: encoder_jacobian_fro_probe(model, params, x, key, 4)[0]))
    record("jac_fro_sq_probe4", probe, (xs,))
    # Theorem 1 bound: exact norm + n_samples decoder passes for p(||Delta|| <= r)
    bound = jax.jit(
        jax.vmap(lambda x: theorem1_bound(model, params, x, 8.0, key, n_samples)["bound"])
    )
    record(f"theorem1_bound_n{n_samples}", bound, (xs,))
    # margin estimate: bisection (n_iter) x PGD (steps) x MC p (n_samples)
    try:
        attack = pgd_attack_fn(model, steps=steps)
        attack_name = f"pgd_l2_{steps}steps"
    except ImportError:  # attacks package missing: fall back to a fixed direction
        direction = jnp.ones(shape) / np.sqrt(np.prod(shape))

        def attack(p: Any, x: jax.Array, radius: jax.Array, k: jax.Array) -> jax.Array:
            return radius * direction

        attack_name = "fixed_direction"
    est = make_margin_estimator(model, attack, n_samples=n_samples, n_iter=n_iter)
    first, best = _time(lambda: est(params, xs, 8.0, key, r_max=10.0)["estimate"], reps=1)
    out["margin_bisect"] = {
        "attack": attack_name,
        "n_iter": n_iter,
        "n_samples": n_samples,
        "compile_plus_first_s": first,
        "per_example_ms": 1e3 * best / batch,
        "per_example_per_radius_ms": 1e3 * best / batch / (n_iter + 1),
    }
    print(
        f"{'margin_bisect':28s} {1e3 * best / batch:9.2f} ms/example  ({n_iter}+1 radii, "
        f"{attack_name}, {n_samples} MC draws)  first call {first:.1f} s"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--batch", type=int, default=None, help="examples per vmapped batch")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (best is kept)")
    parser.add_argument("--out", type=str, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.quick, args.batch, args.reps)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
