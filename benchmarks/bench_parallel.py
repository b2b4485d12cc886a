"""Throughput against device count: the attack's sample axis and the training grid's model
axis split over 1, 2 and 4 devices (:mod:`vaerob_jax.sweeps.parallel`).

Each device count runs in its own process. On a CPU the devices are XLA's emulated host
devices (``--xla_force_host_platform_device_count``), which share the same cores: expect no
speed-up here, only the overhead of splitting (and the check that the numbers stay the
same). On a machine with accelerators the counts are its real devices (those it has), and
the attack's achieved FLOP/s is reported against float32 and bfloat16 matmul peaks measured
in the same process.

Workloads (the main job's shapes): a 40-step L∞ sign-PGD on Eq. 4 of 000, Burgess encoder at
32×32×3, latent 16, 256 examples; training a 3-model β grid of the Burgess VAE, batch 64
(``--quick``: an MLP VAE on 8×8×1, 4 steps, to check the plumbing only).

    python -m benchmarks.bench_parallel [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of, report_json

COUNTS = (1, 2, 4)


def _matmul_peak(dtype: Any, n: int) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
    f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a))
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _worker(devices: int, quick: bool) -> dict[str, Any]:
    from vaerob_jax.runtime import tune_cpu

    tune_cpu()  # as the vaerob command does (before the backend exists)
    import jax
    import jax.numpy as jnp

    from benchmarks.common import compiled_flops
    from vaerob_jax import objectives
    from vaerob_jax.attacks import latent_damage, pgd, run_attack
    from vaerob_jax.models import make_vae
    from vaerob_jax.train import TrainConfig, train_grid

    if len(jax.local_devices()) < devices:  # an accelerator machine with fewer devices
        return {"devices": devices, "skipped": f"{len(jax.local_devices())} local devices"}
    if quick:  # plumbing only: a small MLP VAE
        shape, steps, n = (8, 8, 1), 4, 32
        model = make_vae("mlp", shape, latent_dim=4, hidden=(32,))
    else:
        shape, steps, n = (32, 32, 3), 40, 256
        model = make_vae("burgess64", shape, latent_dim=16)
    params = model.init(jax.random.key(0))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (n, *shape)))
    attack = pgd(latent_damage(model), "linf", steps=steps, step_size=lambda e: e / 4)
    eps = jnp.array([0.1], jnp.float32)

    def attack_once() -> Any:
        return jax.block_until_ready(
            run_attack(attack, params, {"x": x}, eps, jax.random.key(2), mesh=devices)
        )

    res, best = best_of(attack_once, 1 if quick else 3)
    out: dict[str, Any] = {
        "devices": devices,
        "platform": jax.devices()[0].platform,
        "attack_image_steps_per_s": n * steps / best,
        "attack_delta_head": np.asarray(res.delta)[0, :2].ravel().tolist(),
    }
    # one attack step's FLOPs per image (the objective's gradient), from XLA's cost analysis
    objective = latent_damage(model)
    grad = jax.jit(
        jax.vmap(jax.grad(lambda d, xi: objective(params, {"x": xi}, d, jax.random.key(0))))
    )
    xs = jnp.asarray(x[:8])
    flops = compiled_flops(grad.lower(jnp.zeros_like(xs), xs).compile()) / 8
    out["attack_gflops_per_s"] = flops * out["attack_image_steps_per_s"] / 1e9
    loss = objectives.beta_elbo(model)
    images = np.asarray(jax.random.uniform(jax.random.key(3), (256, *shape)))
    grid = {"beta": [1.0, 5.0, 10.0]}

    def train(k: int) -> float:
        config = TrainConfig(steps=k, batch_size=64, log_every=k, learning_rate=1e-4)
        t = time.perf_counter()
        r = train_grid(model, loss, images, grid, config, jax.random.key(4), progress=False,
                       mesh=devices)  # fmt: skip
        jax.block_until_ready(r.params)
        return time.perf_counter() - t

    short, long = (1, 2) if quick else (2, 10)
    train(short)
    t_short = min(train(short) for _ in range(1 if quick else 2))
    t_long = min(train(long) for _ in range(1 if quick else 2))
    per_step = (t_long - t_short) / (long - short)
    if per_step <= 0:  # timing noise on a tiny run: the whole call per step instead
        per_step = t_long / long
    out["train_example_steps_per_s"] = 3 * 64 / per_step
    if devices == 1 and jax.devices()[0].platform != "cpu":
        size = 8192
        out["peak_f32_gflops"] = _matmul_peak(jnp.float32, size)
        out["peak_bf16_gflops"] = _matmul_peak(jnp.bfloat16, size)
    return out


def _run_worker(devices: int, quick: bool) -> dict[str, Any]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    cmd = [sys.executable, "-m", "benchmarks.bench_parallel", "--worker", str(devices)]
    proc = subprocess.run(
        cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {devices} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", type=int, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.quick)))
        return 0
    counts = (1, 4) if args.quick else COUNTS  # quick: the plumbing, one split and none
    runs = [_run_worker(d, args.quick) for d in counts]
    skipped = [r for r in runs if "skipped" in r]
    runs = [r for r in runs if "skipped" not in r]
    base = runs[0]
    heads = [np.asarray(r.pop("attack_delta_head")) for r in runs]
    print(f"{'devices':>8s} {'attack img·steps/s':>19s} {'train ex·steps/s':>17s} {'vs 1':>6s}")
    for r, head in zip(runs, heads, strict=True):
        r["attack_vs_one_device"] = r["attack_image_steps_per_s"] / base["attack_image_steps_per_s"]
        r["train_vs_one_device"] = (
            r["train_example_steps_per_s"] / base["train_example_steps_per_s"]
        )
        r["attack_max_abs_delta_diff_vs_one_device"] = float(np.max(np.abs(head - heads[0])))
        print(
            f"{r['devices']:8d} {r['attack_image_steps_per_s']:19.0f} "
            f"{r['train_example_steps_per_s']:17.0f} "
            f"{r['attack_vs_one_device']:5.2f}x/{r['train_vs_one_device']:.2f}x"
        )
    result = {"platform": base["platform"], "runs": runs, "skipped": skipped}
    for name in ("peak_f32_gflops", "peak_bf16_gflops"):
        if name in base:
            result[f"attack_share_of_{name}"] = base["attack_gflops_per_s"] / base[name]
    report_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
