"""CPU runtime settings (vaerob_jax.runtime) and PyTorch, side by side in one run.

The 64x64x3 Burgess encoder (latent 32), the library's 40-step L-inf sign-PGD on Eq. 4 of
000 (step eps/4) at batch 1 and batch 64, and one training step of the Burgess VAE at batch
64, each in a fresh subprocess: plain JAX (``VAEROB_CPU_TUNING=0`` and XLA's own strided
and transposed convolutions, ``VAEROB_STRIDED_CONV=lax``), JAX with
:func:`vaerob_jax.runtime.tune_cpu` but XLA's convolutions, and the library's default (tuned,
the stride-2 convolutions in the polyphase forms of :mod:`vaerob_jax.models.backbones`); then
``benchmarks/torch_reference.py`` with the same encoder weights (checked) under an
interpreter that has torch — ``--torch-python``, ``$VAEROB_TORCH_PYTHON``, or this one —
skipped with a message where none has.

    python -m benchmarks.bench_cpu_runtime [--quick] [--torch-python PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import report_json

STEPS, EPS, LATENT = 40, 0.1, 32
# result name -> worker variant, in the order they run (interleaved over two rounds)
VARIANT_COLUMNS = (
    ("jax_default", "default"),
    ("jax_tuned_lax", "tuned_lax"),
    ("jax_tuned", "tuned"),
)


# worker variant -> (tune_cpu applied, strided-convolution impl)
VARIANTS = {"default": (False, "lax"), "tuned_lax": (True, "lax"), "tuned": (True, "phases")}


def _worker(npz: str, tuned: bool, quick: bool) -> dict[str, Any]:
    from vaerob_jax.runtime import tune_cpu

    applied = tune_cpu() if tuned else {"allocator": False, "ynn_off": False}
    import jax
    import jax.numpy as jnp

    from vaerob_jax import objectives
    from vaerob_jax.attacks import latent_damage, pgd, run_attack
    from vaerob_jax.models import make_vae
    from vaerob_jax.train import TrainConfig, train_grid

    side = 16 if quick else 64  # quick: plumbing check only, not speed
    model = make_vae("burgess64", (side, side, 3), latent_dim=LATENT)
    params = model.init(jax.random.key(0))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (64, side, side, 3)))
    steps = 4 if quick else STEPS
    attack = pgd(latent_damage(model), "linf", steps=steps, step_size=lambda e: e / 4)
    eps = jnp.array([EPS], jnp.float32)
    from vaerob_jax.models.backbones import strided_conv_impl

    out: dict[str, Any] = {
        "applied": applied,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "strided_conv": strided_conv_impl(),
    }
    deltas = {}
    for b in (64,) if quick else (1, 64):  # quick: the batched path only (one compile less)
        n_calls = 1 if b > 1 else 8

        def call(b: int = b, n_calls: int = n_calls) -> Any:
            return [
                jax.block_until_ready(
                    run_attack(
                        attack, params, {"x": x[i * b : (i + 1) * b]}, eps, jax.random.key(0)
                    )
                )
                for i in range(n_calls)
            ]

        call()
        best = np.inf
        for _ in range(1 if quick else 3):
            t = time.perf_counter()
            res = call()
            best = min(best, time.perf_counter() - t)
        deltas[b] = np.asarray(res[0].delta)
        out[f"attack_b{b}_image_steps_per_s"] = b * n_calls * steps / best
    out["attack_b64_delta_l1"] = float(np.abs(deltas[64]).sum())
    # a slice of the results, for the main process to check that tuning changes speed only
    out["attack_b64_delta_head"] = deltas[64][:2].ravel().tolist()
    out["attack_b64_value"] = np.asarray(res[0].value).ravel().tolist()
    loss = objectives.beta_elbo(model)
    images = np.asarray(jax.random.uniform(jax.random.key(2), (256, side, side, 3)))

    trained: list[Any] = []

    def train(n: int) -> float:
        config = TrainConfig(steps=n, batch_size=64, log_every=n, learning_rate=1e-4)
        t = time.perf_counter()
        res = train_grid(
            model, loss, images, {"beta": [1.0]}, config, jax.random.key(3), progress=False
        )
        jax.block_until_ready(res.params)
        trained[:] = [res.params]
        return time.perf_counter() - t

    short, long, repeats = (1, 2, 1) if quick else (2, 12, 2)
    train(short)
    t_short = min(train(short) for _ in range(repeats))
    t_long = min(train(long) for _ in range(repeats))
    per_step = (t_long - t_short) / (long - short)
    if per_step <= 0:  # timing noise on the quick run: the whole call per step instead
        per_step = t_long / long
    out["train_b64_ms_per_step"] = per_step * 1e3
    kernel = np.asarray(trained[0]["encoder"]["Conv_0"]["kernel"])
    out["train_conv0_kernel"] = kernel.ravel().tolist()
    if npz:
        enc = params["encoder"]
        w = {f"conv{i}_kernel": enc[f"Conv_{i}"]["kernel"] for i in range(4)}
        w |= {f"conv{i}_bias": enc[f"Conv_{i}"]["bias"] for i in range(4)}
        for i in range(2):
            w[f"d{i}_kernel"], w[f"d{i}_bias"] = (enc[f"Dense_{i}"][k] for k in ("kernel", "bias"))
        for h in ("mu", "logvar"):
            w[f"{h}_kernel"], w[f"{h}_bias"] = (
                enc["GaussianHead_0"][h][k] for k in ("kernel", "bias")
            )
        np.savez(
            npz,
            x=x,
            mu=np.asarray(model.embed(params, x)),
            latent=LATENT,
            steps=steps,
            eps=EPS,
            **{k: np.asarray(v) for k, v in w.items()},
        )
    return out


def _run_worker(variant: str, quick: bool, npz: str) -> dict[str, Any]:
    tuned, impl = VARIANTS[variant]
    env = {
        **os.environ,
        "VAEROB_CPU_TUNING": "1" if tuned else "0",
        "VAEROB_STRIDED_CONV": impl,
    }
    env.pop("XLA_FLAGS", None)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_cpu_runtime",
        "--worker",
        variant,
        "--npz",
        npz,
    ] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_python(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("VAEROB_TORCH_PYTHON"), sys.executable):
        if (
            cand
            and subprocess.run([cand, "-c", "import torch"], capture_output=True).returncode == 0
        ):
            return cand
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--worker", choices=tuple(VARIANTS), default=None)
    parser.add_argument("--npz", default="")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.npz, VARIANTS[args.worker][0], args.quick)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        npz = str(Path(tmp) / "encoder.npz")
        result: dict[str, Any] = {}
        # two interleaved rounds; each variant keeps its best
        for _ in range(1 if args.quick else 2):
            for name, variant in VARIANT_COLUMNS:
                r = _run_worker(variant, args.quick, npz if variant == "tuned" else "")
                prev = result.get(name)
                if prev is None:
                    result[name] = r
                else:
                    for k, v in r.items():
                        if k.endswith("_per_s"):
                            prev[k] = max(prev[k], v)
                        elif k.endswith("_ms_per_step"):
                            prev[k] = min(prev[k], v)
        torch_py = _torch_python(args.torch_python)
        if torch_py is None:
            print(
                "torch not found (pass --torch-python or set VAEROB_TORCH_PYTHON to an "
                "interpreter with `pip install torch==2.13.0`): PyTorch column skipped"
            )
        else:
            ref = Path(__file__).with_name("torch_reference.py")
            proc = subprocess.run(
                [torch_py, str(ref), npz], capture_output=True, text=True, check=True
            )
            result["torch"] = json.loads(proc.stdout.strip().splitlines()[-1])
    d, t, tl = result["jax_default"], result["jax_tuned"], result["jax_tuned_lax"]
    rows = [
        ("attack_b1_image_steps_per_s", "attack, batch 1 (image·steps/s)"),
        ("attack_b64_image_steps_per_s", "attack, batch 64 (image·steps/s)"),
        ("train_b64_ms_per_step", "training step, batch 64 (ms)"),
    ]
    print(f"{'':36s} {'jax default':>12s} {'tuned, lax':>11s} {'jax tuned':>10s} {'torch':>10s}")
    for k, label in rows:
        tv = result.get("torch", {}).get(k, float("nan"))
        # no batch 1 when quick
        dv, lv, jv = (r.get(k, float("nan")) for r in (d, tl, t))
        print(f"{label:36s} {dv:12.0f} {lv:11.0f} {jv:10.0f} {tv:10.0f}")
    result["same_attack_result"] = abs(d["attack_b64_delta_l1"] - t["attack_b64_delta_l1"]) <= (
        1e-3 * abs(d["attack_b64_delta_l1"])
    )
    # Other kernels (tuning) or the polyphase forms compute the same sums in another order:
    # trained kernels and attack objectives agree to float32 rounding; a sign step on an
    # entry whose gradient is ~0 may go either way, so δ is compared by the share that moved.
    pairs = {
        "phases_vs_lax": ("jax_tuned", "jax_tuned_lax"),
        "tuned_vs_default": ("jax_tuned", "jax_default"),
    }
    for label, (n1, n2) in pairs.items():
        r1, r2 = result[n1], result[n2]
        k1, k2 = (np.asarray(r["train_conv0_kernel"]) for r in (r1, r2))
        v1, v2 = (np.asarray(r["attack_b64_value"]) for r in (r1, r2))
        d1, d2 = (np.asarray(r["attack_b64_delta_head"]) for r in (r1, r2))
        result[f"{label}_max_abs_kernel_diff"] = float(np.max(np.abs(k1 - k2)))
        result[f"{label}_max_rel_objective_diff"] = float(np.max(np.abs(v1 - v2) / np.abs(v2)))
        result[f"{label}_share_delta_moved"] = float(np.mean(np.abs(d1 - d2) > 1e-5))
    result["kernel_max_abs"] = float(np.max(np.abs(result["jax_tuned"]["train_conv0_kernel"])))
    result["delta_max_abs"] = float(np.max(np.abs(result["jax_tuned"]["attack_b64_delta_head"])))
    for name, _ in VARIANT_COLUMNS:
        for key in ("attack_b64_delta_head", "train_conv0_kernel", "attack_b64_value"):
            result[name].pop(key)
    report_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
