"""002's targeted latent attack: the batched fixed-iteration JAX L-BFGS (one vmapped program
over λ × pairs × models) vs scipy's L-BFGS-B one problem at a time.

Problem: 002's Δ(d) = KL(q(z|x+d) ‖ q(z|x_t)) + λ‖d‖₂ on −x ≤ d ≤ 1 − x
(:func:`vaerob_jax.attacks.latent_objective`, exact norm), start U(±1e−8), on K = 2 copies
of ``make_vae('mlp', (32, 32, 1), 10, hidden=(512, 256))`` trained for ``--train-steps`` (300)
Adam steps (lr 1e-3, batch 64, β = 1, seeds 0 and 1, :func:`vaerob_jax.train.train_grid`) on
the embedded ``shapes`` train split at 32×32 made grey (channel mean; 1,024 images), P = 5
seeded test input–target pairs, the 13 λ of ``lambda_grid(50)[::4]`` (2^−20 … 2^20): 130
problems, 100 iterations each. Both variants are timed in one run:

* jax: :func:`vaerob_jax.attacks.targeted_attack` (``memory`` 10, ``max_linesearch`` 20)
  vmapped over λ, pairs and models and jitted: ONE program for all 130 problems; its compile
  time is reported separately (``lower().compile()``), the timed call reuses it;
* scipy: :func:`vaerob_jax.attacks.targeted_attack_scipy` per problem (002's driver: scipy
  L-BFGS-B in float64 on the host, m = 25, factr = 10, maxiter 100, calling one jitted float32
  value-and-grad compiled once by a warm-up problem).

Throughput is attacks·iterations/s = problems × ``iterations`` / wall s for both (scipy often
stops before 100 iterations, so its iterations actually taken are reported too, and
attacks/s is the like-for-like figure: the wall time to solve all the problems). Agreement:
the relative difference (Δ_jax − Δ_scipy)/|Δ_scipy| of the final objectives, each evaluated
by the same float32 program at the returned d, as median and max |·|, and the share of
problems where Δ_jax ≤ Δ_scipy·(1 + 1e−3) (JAX at least as good, to 1e−3).

Measured (full mode, this 2-core CPU, load ~1.5; params trained, 16 s): jax 4.75 s for the
130 problems (2,734 attacks·iterations/s; 39 iterations and 80 evaluations per problem on
average, 94 % converged, no non-finite evaluation; compile 6.4 s once), scipy 9.17 s (1,418;
34.5 iterations, 66 evaluations): jax/scipy 1.93x. Final Δ: median |relative difference| 1e−5;
JAX ≤ scipy·(1 + 1e−3) on 92 % of problems (97 % with 1e−5 nats of slack), JAX lower by
more than 1e−3 on 22 %; the misses are float32 stalls at small λ (Δ ≤ 2e−3, where the
remaining decrease hides in f's rounding) and one problem at λ = 69.7 that stays at the kink
d ≈ 0 (Δ 80.16 vs 78.17; there ‖∇KL(0)‖ = 80.9 > λ, so d = 0 is not optimal). An earlier
run with a multi-threaded BLAS inside scipy took 67 s for scipy (3 ms per ``setulb`` call),
hence ``lbfgsb_scipy`` pins BLAS to one thread. Numbers move with the shared machine's load;
the JSON records them with the in-run matmul yardstick.

``--quick``: tiny (hidden (32,), 20 training steps, 2 pairs × 3 λ × 1 model, 20 iterations).

Run:
    python -m benchmarks.bench_targeted            # ~1-2 min on the 2-core CPU
    python -m benchmarks.bench_targeted --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import matmul_peak_gflops
from vaerob_jax import attacks, objectives
from vaerob_jax.data import load_shapes
from vaerob_jax.models import make_vae
from vaerob_jax.train import TrainConfig, train_grid

REL_TOL = 1e-3  # 002: drivers agree on final objectives to 1e-3 (relative)


@dataclasses.dataclass(frozen=True)
class Case:
    image_size: int
    latent_dim: int
    hidden: tuple[int, ...]
    train_steps: int
    train_images: int
    num_models: int
    num_pairs: int
    lambda_stride: int  # λ = lambda_grid(50)[::stride]
    lambda_limit: int | None  # keep the first this many (None: all)
    iterations: int
    memory: int
    max_linesearch: int


FULL = Case(
    image_size=32,
    latent_dim=10,
    hidden=(512, 256),
    train_steps=300,
    train_images=1024,
    num_models=2,
    num_pairs=5,
    lambda_stride=4,
    lambda_limit=None,
    iterations=100,
    memory=25,
    max_linesearch=20,
)
QUICK = dataclasses.replace(
    FULL,
    hidden=(32,),
    train_steps=20,
    train_images=128,
    num_models=1,
    num_pairs=2,
    lambda_stride=24,
    lambda_limit=3,
    iterations=20,
)


def _grey(images: Any) -> np.ndarray:
    return np.asarray(images, np.float32).mean(axis=-1, keepdims=True)


def _timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = fn()
    jax.block_until_ready(res)
    return time.perf_counter() - t0, res


def _train(case: Case, model: Any) -> Any:
    data = {"x": _grey(load_shapes("train", case.image_size, limit=case.train_images).images)}
    k = case.num_models
    config = TrainConfig(
        steps=case.train_steps,
        batch_size=64,
        learning_rate=1e-3,
        log_every=case.train_steps,
        model_axis="vmap",
    )
    grid = {"seed": np.arange(k, dtype=np.int64), "beta": np.ones(k)}
    res = train_grid(
        model, objectives.beta_elbo(model), data, grid, config, jax.random.key(0), progress=False
    )
    return res.params, [float(v) for v in res.history["loss"][-1]]


def run(case: Case, quick: bool) -> dict[str, Any]:
    shape = (case.image_size, case.image_size, 1)
    model = make_vae("mlp", shape, case.latent_dim, hidden=case.hidden)
    t_train, (stacked, final_loss) = _timed(lambda: _train(case, model))
    test = _grey(load_shapes("test", case.image_size, limit=256).images)
    pairs = attacks.sample_pairs(len(test), case.num_pairs, 0)
    x, x_t = jnp.asarray(test[pairs[:, 0]]), jnp.asarray(test[pairs[:, 1]])
    lams_np = attacks.lambda_grid(50)[:: case.lambda_stride][: case.lambda_limit]
    lams = jnp.asarray(lams_np, jnp.float32)
    key = jax.random.key(0)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(case.num_pairs))
    k, p, e = case.num_models, case.num_pairs, len(lams_np)
    n_problems = k * p * e

    objective = attacks.latent_objective(model)
    attack = attacks.targeted_attack(
        objective,
        iterations=case.iterations,
        memory=case.memory,
        max_linesearch=case.max_linesearch,
    )
    # models × pairs × λ, one program
    over_lam = jax.vmap(attack, in_axes=(None, None, 0, None))
    over_pairs = jax.vmap(over_lam, in_axes=(None, 0, None, 0))
    over_models = jax.jit(jax.vmap(over_pairs, in_axes=(0, None, None, None)))
    inputs = {"x": x, "target": x_t}
    t_compile, compiled = _timed(
        lambda: over_models.lower(stacked, inputs, lams, keys).compile()  # type: ignore[attr-defined]
    )
    t_jax, out = _timed(lambda: compiled(stacked, inputs, lams, keys))
    out = jax.tree.map(np.asarray, out)

    per_model = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(k)]

    def scipy_one(i: int, j: int, lam: float) -> dict:
        return attacks.targeted_attack_scipy(
            objective,
            per_model[i],
            {"x": x[j], "target": x_t[j]},
            lam,
            keys[j],
            maxiter=case.iterations,
        )

    t_warm, _ = _timed(lambda: scipy_one(0, 0, float(lams_np[0])))  # compiles value-and-grad
    t0 = time.perf_counter()
    sc = [[[scipy_one(i, j, float(lam)) for lam in lams_np] for j in range(p)] for i in range(k)]
    t_scipy = time.perf_counter() - t0

    v_jax = out["value"].astype(np.float64)  # (k, p, e)
    v_sc = np.array([[[r["value"] for r in row] for row in mdl] for mdl in sc], np.float64)
    it_sc = np.array([[[r["iterations"] for r in row] for row in mdl] for mdl in sc])
    ev_sc = np.array([[[r["evaluations"] for r in row] for row in mdl] for mdl in sc])
    rel = (v_jax - v_sc) / np.maximum(np.abs(v_sc), 1e-30)
    ok = v_jax <= v_sc + REL_TOL * np.abs(v_sc)
    x_adv = np.asarray(x)[None, :, None] + out["delta"]
    work = n_problems * case.iterations
    tput = {"jax": work / t_jax, "scipy": work / t_scipy}
    return {
        "device": jax.devices()[0].device_kind,
        "platform": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": quick,
        "model": model.spec(),
        "params": f"trained: {case.train_steps} Adam steps (lr 1e-3, batch 64, beta 1) on "
        f"shapes train grey {case.image_size}x{case.image_size}, {case.train_images} images",
        "train_seconds": t_train,
        "final_train_loss": final_loss,
        "num_models": k,
        "num_pairs": p,
        "lambdas": [float(v) for v in lams_np],
        "num_problems": n_problems,
        "iterations": case.iterations,
        "jax_memory": case.memory,
        "jax_max_linesearch": case.max_linesearch,
        "scipy_memory": 25,
        "share_pixels_at_bound": float(np.mean((np.asarray(x) == 0) | (np.asarray(x) == 1))),
        "seconds": {"jax": t_jax, "scipy": t_scipy},
        "jax_compile_seconds": t_compile,
        "scipy_warmup_seconds_incl_compile": t_warm,
        "attacks_iterations_per_s": tput,
        "attacks_per_s": {"jax": n_problems / t_jax, "scipy": n_problems / t_scipy},
        "ratio_jax_over_scipy": t_scipy / t_jax,
        "jax_iterations": out["iterations"].tolist(),
        "jax_evaluations": out["evaluations"].tolist(),
        "scipy_iterations": it_sc.tolist(),
        "iterations_taken": {
            "jax_mean": float(np.mean(out["iterations"])),
            "scipy_mean": float(np.mean(it_sc)),
        },
        "evaluations": {
            "jax_mean": float(np.mean(out["evaluations"])),
            "scipy_mean": float(np.mean(ev_sc)),
        },
        "jax_converged_share": float(np.mean(out["converged"])),
        "jax_nonfinite_total": int(np.sum(out["nonfinite"])),
        "agreement": {
            "rel_tol": REL_TOL,
            "median_abs_rel_diff": float(np.median(np.abs(rel))),
            "max_abs_rel_diff": float(np.max(np.abs(rel))),
            "share_jax_at_most_scipy": float(np.mean(ok)),
            "share_within_tol": float(np.mean(np.abs(rel) <= REL_TOL)),
            "worst_lambda": float(lams_np[np.unravel_index(np.argmax(np.abs(rel)), rel.shape)[2]]),
        },
        "box_respected": bool(np.all((x_adv >= 0) & (x_adv <= 1))),
        "delta_values": {  # [model][pair][lambda]
            "jax": v_jax.tolist(),
            "scipy": v_sc.tolist(),
        },
        "d_norms": {
            "jax": np.sqrt(np.sum(np.square(out["delta"]), axis=(-3, -2, -1))).tolist(),
            "scipy": [
                [[float(np.linalg.norm(r["delta"])) for r in row] for row in mdl] for mdl in sc
            ],
        },
        "mean_delta_by_lambda": {
            "jax": [float(v) for v in v_jax.mean(axis=(0, 1))],
            "scipy": [float(v) for v in v_sc.mean(axis=(0, 1))],
        },
        "matmul_peak_gflops": matmul_peak_gflops(1024),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--iterations", type=int, default=None, help="attack iterations")
    parser.add_argument("--memory", type=int, default=None, help="JAX solver history m")
    parser.add_argument("--train-steps", type=int, default=None, help="Adam steps per model")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    case = QUICK if args.quick else FULL
    for name in ("iterations", "memory", "train_steps"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "train_steps" else 1):
                parser.error(f"--{name.replace('_', '-')} out of range: {value}")
            case = dataclasses.replace(case, **{name: value})
    res = run(case, args.quick)
    t, a, g = res["seconds"], res["attacks_iterations_per_s"], res["agreement"]
    print(
        f"targeted latent attack (002), {res['num_problems']} problems = {res['num_models']} "
        f"models x {res['num_pairs']} pairs x {len(res['lambdas'])} lambdas, "
        f"{res['iterations']} iterations ({res['device']}, {res['cpu_count']} cores)"
    )
    print(f"  {'driver':<8}{'wall s':>9}{'att*it/s':>11}{'iters':>8}{'evals':>8}")
    for name in ("jax", "scipy"):
        print(
            f"  {name:<8}{t[name]:>9.2f}{a[name]:>11.0f}"
            f"{res['iterations_taken'][name + '_mean']:>8.1f}"
            f"{res['evaluations'][name + '_mean']:>8.1f}"
        )
    print(
        f"  jax/scipy {res['ratio_jax_over_scipy']:.2f}x (jax compile "
        f"{res['jax_compile_seconds']:.1f} s); final Delta rel diff median "
        f"{g['median_abs_rel_diff']:.1e}, max {g['max_abs_rel_diff']:.1e}; "
        f"jax <= scipy*(1+{g['rel_tol']:g}) on {100 * g['share_jax_at_most_scipy']:.0f}%"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
