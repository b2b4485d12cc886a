"""Robust DAE study (003): K coupled DAEs in ONE vmapped program vs K runs, and the latent
attack batched vs a per-image loop.

Two measurements of ``vaerob dae``'s hot paths, each timing both variants side by side in one
run, after compilation (a warm-up call compiles; the timed calls reuse the cached programs):

1. Training (models·steps per second): :func:`vaerob_jax.train.train_grid` with 003's coupled
   loss (:func:`vaerob_jax.objectives.gmm_dae.gmm_dae_objective` ``'coupled'``: λ_REC L_REC
   under latent noise s, two-point KS + coupled covariance at α, FGSM codes at ε = 0.3 inside
   every step) on the MLP DAE 1024-200-200-200-200-10 with the 10-mode GMM prior, digits at
   32x32 (train split, 1,438 images), batch 100, Adam at the study's lr 2e-4, and 003's grid
   α ∈ {0, .5, 1} at s = 1 plus (α .5, s .1) (K = 4):
     * grid: the K models in one call with ``model_axis='vmap'`` (one vmapped program, as the
       study trains its MLPs; set explicitly, since 'auto' runs models one after another on
       CPU);
     * sequential: K single-model calls one after another, each a one-point grid with the same
       values and seed (``model_axis='sequential'``), i.e. what a per-grid-point script does.
   XLA's FLOP count of one grid step gives GFLOP/s of both (they do the same arithmetic).
2. Attack (image·steps per second): the study's latent attack (Eq. 12 of 003,
   :func:`vaerob_jax.attacks.code_distance_objective`: −‖z(x+d) − z(x_t)‖₂ under the L2 ball
   ∩ [0, 1] box, normalised-gradient steps of 10λ/S as the study, random start, best
   iterate) on the K trained DAEs stacked (the grid's params after its timed run), 64
   (source, target) test pairs of different classes
   (:func:`vaerob_jax.studies.dae.attack_pairs`), budgets λ ∈ {1, 3, 5}:
     * batched: ONE ``run_attack(attack, stacked, inputs, budgets, key, models=True)`` call;
     * per-image loop: for each model, budget and image, ``attack.run(params_k, {'x': x[n],
       'target': x_t[n]}, λ, fold_in(key, n))`` jitted once and called from Python (what a
       port of the per-image research code does). To keep time down it runs only the first
       ``per_image_images`` = 16 images (all 8 in ``--quick``) for every model and budget; its
       throughput is the image·steps it did over its time.

Same work. Training: the keys are a function of (run key, seed, step) only, so model k of
the grid and the k-th single run see the same batches, noise, FGSM starts and updates, up to
float rounding of the vmapped vs the unbatched program. Attack: example n uses
``fold_in(key, n)`` in both, so per-image result (k, λ, n) is batched entry [k, e, n] up to
rounding. Both run sign steps (FGSM inside every training step; the attack's rule), so a
rounding-size change can flip a pixel's step and the two trajectories drift apart over long
runs. The checks (params, resp. attack delta and value, allclose at rtol 1e-4 / atol 1e-5)
therefore run every model, resp. every example the loop ran, for ``CHECK_STEPS`` = 2 steps of
both variants (a separate 2-step attack): a wrong batch, key or hyperparameter would differ by
~lr = 2e-4 after one Adam step, a wrong start, budget or pair by far more than 1e-5.
``grid_equals_sequential`` and ``per_image_equals_batched`` are those checks;
``equality_check`` also gives the max |diff| of the timed runs (reported, not asserted).

Measured (full mode, this 2-core CPU, otherwise idle, best of 2 interleaved rounds):
  * training, 100 timed steps, K = 4, batch 100: grid 127.3, sequential 113.1 models·steps/s
    (grid/sequential 1.13x; 84 vs 75 GFLOP/s); params equal after 2 steps (max |diff|
    2.3e-6); after the 100 timed steps they differ by up to 1.7e-2 (the sign-step drift);
  * attack, S = 50 steps, K = 4, 3 budgets: batched 24,474 image·steps/s (64 images),
    per-image loop 11,084 (16 images), batched/loop 2.21x; all 192 per-image results equal
    the batched ones after 2 steps (max |delta diff| 7e-7).
Before :func:`vaerob_jax.attacks.constraints.project_l2_box` bisected on flat vectors, the
batched attack ran 1,633 image·steps/s here (0.13x the loop): XLA's CPU reductions over
vmapped (N, 32, 32, 1) images with their size-1 minor axis were ~20x slower per image than
over (N, 1024) (521 vs 28 µs per image at N = 64 for the 40 halvings). This benchmark found it.

Timed training steps are shrunk from the study's 3,000 to 100 and attack steps from 200 to 50
so that the full mode stays at ~2-3 min on the shared 2-core CPU (throughput per step is steady
after the warm-up; ``--steps`` and ``--attack-steps`` set them). XLA counts a ``fori_loop`` body
once, so the attack's FLOPs per image·step (from one compiled chunk of the batched program)
undercount the 40 bisection iterations; the GFLOP/s figures are lower bounds.
``--quick``: tiny (MLP hidden (32,), K = 2, 10 training and 10 attack steps, 8 images).

Run:
    python -m benchmarks.bench_dae            # both measurements (~2.5 min on the 2-core CPU)
    python -m benchmarks.bench_dae --quick    # tiny
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

from benchmarks.common import compiled_flops, grid_step_flops, matmul_peak_gflops
from vaerob_jax import attacks
from vaerob_jax.attacks.driver import DEFAULT_CHUNK, _chunk_program, _init_program
from vaerob_jax.data import load_digits_dataset
from vaerob_jax.models.dae import make_dae
from vaerob_jax.models.gmm_prior import make_gmm_prior
from vaerob_jax.objectives.gmm_dae import gmm_dae_objective
from vaerob_jax.studies.dae import DAE_PRESETS, attack_pairs
from vaerob_jax.studies.dae.study import study_attack
from vaerob_jax.train import TrainConfig, train_grid

LEARNING_RATE = 2e-4  # the study's (the public code's) Adam step
RTOL, ATOL = 1e-4, 1e-5  # training params; attack deltas and values
CHECK_STEPS = 2  # steps (training and attack) of the all-examples equality checks
BOX = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Case:
    """The DAE, the (α, s) grid and the training and attack shapes of one run size."""

    image_size: int
    latent_dim: int
    num_modes: int
    hidden: tuple[int, ...]
    points: tuple[tuple[float, float], ...]  # (alpha, latent_noise) per model
    batch_size: int
    steps: int
    attack_steps: int
    num_images: int
    budgets: tuple[float, ...]
    per_image_images: int  # images the per-image loop runs (per model and budget)


FULL = Case(
    image_size=32,
    latent_dim=10,
    num_modes=10,
    hidden=(200, 200, 200, 200),
    points=((0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (0.5, 0.1)),
    batch_size=100,
    steps=100,
    attack_steps=50,
    num_images=64,
    budgets=(1.0, 3.0, 5.0),
    per_image_images=16,
)
QUICK = dataclasses.replace(
    FULL,
    hidden=(32,),
    points=((0.0, 1.0), (0.5, 0.1)),
    steps=10,
    attack_steps=10,
    num_images=8,
    per_image_images=8,
)


def _attack_flops_per_image_step(
    attack: Any, params: Any, inputs: dict, budgets: jax.Array, key: jax.Array
) -> float | None:
    """XLA's FLOPs of one unrolled chunk of the batched single-model program, per image·step
    (the program run_attack calls per model on CPU; None if unavailable)."""
    try:
        state = _init_program(attack, "grid", params, inputs, budgets, key)
        length = min(DEFAULT_CHUNK, attack.steps)
        lowered = _chunk_program.lower(attack, "grid", length, params, inputs, budgets, state)
        flops = compiled_flops(lowered.compile())
        n, e = inputs["x"].shape[0], budgets.shape[0]
        return None if np.isnan(flops) else flops / (length * n * e)
    except Exception:  # the estimate is optional
        return None


def _timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = fn()
    jax.block_until_ready(res)
    return time.perf_counter() - t0, res


def _compare(grid_res: Any, singles: list[Any]) -> dict:
    """Model k of the grid vs single run k (params): allclose for all, and the max |diff|."""
    close, worst = True, 0.0
    for i in range(len(singles)):
        g = jax.tree.leaves(jax.tree.map(lambda a, i=i: np.asarray(a[i]), grid_res.params))
        s = jax.tree.leaves(jax.tree.map(lambda a: np.asarray(a[0]), singles[i].params))
        close &= all(np.allclose(a, b, rtol=RTOL, atol=ATOL) for a, b in zip(g, s))
        worst = max([worst, *(float(np.max(np.abs(a - b))) for a, b in zip(g, s))])
    return {"allclose": bool(close), "max_abs_diff": worst}


def _compare_attack(res: Any, loop_res: list[Any], n_loop: int) -> dict:
    """Per-image results (model i, budget j, image n < n_loop, in loop order) vs the batched
    entries [i, j, n]: delta and value allclose, examples that are not, and the max |diff|."""
    d_b, v_b = np.asarray(res.delta), np.asarray(res.value)
    k, e = v_b.shape[:2]
    it = iter(loop_res)
    bad, d_diff, v_diff = 0, 0.0, 0.0
    for i in range(k):
        for j in range(e):
            for n in range(n_loop):
                r = next(it)
                d, v = np.asarray(r.delta), np.asarray(r.value)
                ok = np.allclose(d, d_b[i, j, n], rtol=RTOL, atol=ATOL) and np.allclose(
                    v, v_b[i, j, n], rtol=RTOL, atol=ATOL
                )
                bad += not ok
                d_diff = max(d_diff, float(np.max(np.abs(d - d_b[i, j, n]))))
                v_diff = max(v_diff, float(np.max(np.abs(v - v_b[i, j, n]))))
    return {
        "allclose": bad == 0,
        "not_allclose": bad,
        "max_abs_delta_diff": d_diff,
        "max_abs_value_diff": v_diff,
    }


def run_training(case: Case, steps: int, rounds: int) -> tuple[dict[str, Any], Any]:
    """Measurement 1; also returns the grid's params after its last timed run (stacked)."""
    dae = make_dae("mlp", (case.image_size, case.image_size, 1), case.latent_dim, case.hidden)
    prior = make_gmm_prior(case.latent_dim, case.num_modes)
    loss = gmm_dae_objective(dae, prior, "coupled")
    raw = load_digits_dataset("train", image_size=case.image_size)
    data = {"x": np.asarray(raw.images, np.float32)}
    k = len(case.points)
    grid = {
        "alpha": np.array([a for a, _ in case.points], np.float64),
        "latent_noise": np.array([s for _, s in case.points], np.float64),
        "seed": np.zeros(k, np.int64),
    }
    singles = [{n: v[i : i + 1] for n, v in grid.items()} for i in range(k)]
    key = jax.random.key(0)

    config = TrainConfig(
        steps=steps,
        batch_size=case.batch_size,
        log_every=steps,
        learning_rate=LEARNING_RATE,
        model_axis="vmap",  # as `vaerob dae` trains its MLPs
    )
    seq_config = dataclasses.replace(config, model_axis="sequential")
    warm = dataclasses.replace(config, steps=1, log_every=1)
    warm_seq = dataclasses.replace(seq_config, steps=1, log_every=1)

    def train(g, c):
        return train_grid(dae, loss, data, g, c, key, progress=False)

    t_compile = {
        "grid": _timed(lambda: train(grid, warm).params)[0],
        "single": _timed(lambda: train(singles[0], warm_seq).params)[0],
    }
    # Rounds interleave the two variants and keep each one's fastest time, so a load spike on
    # a shared machine does not land on one variant only.
    times: dict[str, list[float]] = {"grid": [], "sequential": []}
    grid_res: Any = None
    seq_res: list[Any] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        grid_res = train(grid, config)
        jax.block_until_ready(grid_res.params)
        times["grid"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seq_res = []
        for g in singles:
            r = train(g, seq_config)
            jax.block_until_ready(r.params)
            seq_res.append(r)
        times["sequential"].append(time.perf_counter() - t0)
    t_grid, t_seq = min(times["grid"]), min(times["sequential"])

    # Same work: every model after CHECK_STEPS steps, before FGSM's sign steps amplify
    # rounding (module docstring); the timed runs' difference is reported, not asserted.
    n_check = min(CHECK_STEPS, steps)
    check = dataclasses.replace(config, steps=n_check, log_every=n_check)
    check_seq = dataclasses.replace(seq_config, steps=n_check, log_every=n_check)
    short = _compare(train(grid, check), [train(g, check_seq) for g in singles])
    timed_cmp = _compare(grid_res, seq_res)

    tput = {"grid": k * steps / t_grid, "sequential": k * steps / t_seq}
    flops = grid_step_flops(dae, loss, data, config, k)
    out = {
        "model": dae.spec(),
        "prior": prior.spec(),
        "loss": "coupled",
        "num_examples": int(data["x"].shape[0]),
        "alpha": [a for a, _ in case.points],
        "latent_noise": [s for _, s in case.points],
        "num_models": k,
        "batch_size": case.batch_size,
        "timed_steps": steps,
        "seconds": {"grid": t_grid, "sequential": t_seq},
        "first_call_seconds_incl_compile": t_compile,
        "models_steps_per_s": tput,
        "ratio_grid_over_sequential": tput["grid"] / tput["sequential"],
        "grid_equals_sequential": short["allclose"],
        "equality_check": {
            "steps": n_check,
            "all_models_allclose": short["allclose"],
            "max_abs_param_diff": short["max_abs_diff"],
            "timed_runs_allclose": timed_cmp["allclose"],
            "timed_runs_max_abs_param_diff": timed_cmp["max_abs_diff"],
        },
        "flops_per_step_grid": flops,
        "gflops_grid": None if flops is None else flops * steps / t_grid / 1e9,
        "gflops_sequential": None if flops is None else flops * steps / t_seq / 1e9,
        "final_loss_grid": [float(v) for v in grid_res.history["loss"][-1]],
    }
    return out, (dae, grid_res.params)


def run_attack_case(
    case: Case, dae: Any, stacked: Any, attack_steps: int, rounds: int
) -> dict[str, Any]:
    """Measurement 2 on the K stacked params."""
    raw = load_digits_dataset("test", image_size=case.image_size)
    test_x = np.asarray(raw.images, np.float32)
    labels = np.asarray(raw.labels, np.int64)
    # One trial of num_images sources, each with a target of another class (as the study).
    pairs, _ = attack_pairs(labels, len(test_x), 1, case.num_images, 0, "different_class")
    x_np, xt_np = test_x[pairs[:, 0]], test_x[pairs[:, 1]]
    inputs = {"x": jnp.asarray(x_np), "target": jnp.asarray(xt_np)}
    budgets = jnp.asarray(case.budgets, jnp.float32)
    key = jax.random.key(0)
    k = int(jax.tree.leaves(stacked)[0].shape[0])
    e = len(case.budgets)
    n_loop = min(case.per_image_images, case.num_images)

    def make(steps: int) -> Any:
        # The study's attack (DAEStudyConfig defaults: step factor·λ/steps, one start).
        return study_attack(
            attacks.code_distance_objective(dae),
            steps,
            1,
            DAE_PRESETS["default"].attack_step_factor,
        )

    attack = make(attack_steps)
    per_model = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(k)]

    def batched(att: Any = attack) -> Any:
        return attacks.run_attack(att, stacked, inputs, budgets, key, models=True)

    def jit_one(att: Any) -> Any:
        @jax.jit
        def one(params, x, x_t, budget, key_n):
            return att.run(params, {"x": x, "target": x_t}, budget, key_n)

        return one

    one = jit_one(attack)

    def per_image(fn: Any = one) -> list[Any]:
        out = []
        for p in per_model:
            for lam in budgets:
                for n in range(n_loop):
                    out.append(fn(p, x_np[n], xt_np[n], lam, jax.random.fold_in(key, n)))
        return out

    # Warm-up: on CPU run_attack attacks a stack one model at a time with the single-model
    # programs, so attacking one model compiles everything the batched call runs.
    p0, lam0 = per_model[0], budgets[0]
    t_compile = {
        "batched": _timed(lambda: attacks.run_attack(attack, p0, inputs, budgets, key).delta)[0],
        "per_image": _timed(lambda: one(p0, x_np[0], xt_np[0], lam0, key).delta)[0],
    }
    times: dict[str, list[float]] = {"batched": [], "per_image": []}
    res: Any = None
    loop_res: list[Any] = []
    for _ in range(rounds):  # interleaved, best of (as for training)
        t, res = _timed(batched)
        times["batched"].append(t)
        t, loop_res = _timed(per_image)
        times["per_image"].append(t)
    t_b, t_l = min(times["batched"]), min(times["per_image"])

    # Same work: every per-image result after CHECK_STEPS attack steps equals the batched
    # entry (before sign steps amplify rounding, module docstring); the timed runs' difference
    # is reported, not asserted.
    n_check = min(CHECK_STEPS, attack_steps)
    check_attack = make(n_check)
    short = _compare_attack(batched(check_attack), per_image(jit_one(check_attack)), n_loop)
    timed_cmp = _compare_attack(res, loop_res, n_loop)

    work_b = k * e * case.num_images * attack_steps
    work_l = k * e * n_loop * attack_steps
    tput = {"batched": work_b / t_b, "per_image": work_l / t_l}
    flops = _attack_flops_per_image_step(attack, per_model[0], inputs, budgets, key)
    return {
        "objective": "code_distance_objective (Eq. 12)",
        "threat": {"norm": "l2", "box": list(BOX)},
        "rule": "sign",
        "attack_steps": attack_steps,
        "num_models": k,
        "num_images": case.num_images,
        "per_image_images": n_loop,
        "budgets": list(case.budgets),
        "seconds": {"batched": t_b, "per_image": t_l},
        "first_call_seconds_incl_compile": t_compile,
        "image_steps": {"batched": work_b, "per_image": work_l},
        "image_steps_per_s": tput,
        "ratio_batched_over_per_image": tput["batched"] / tput["per_image"],
        "per_image_equals_batched": short["allclose"],
        "equality_check": {
            "steps": n_check,
            "examples_compared": k * e * n_loop,
            "all_examples_allclose": short["allclose"],
            "max_abs_delta_diff": short["max_abs_delta_diff"],
            "max_abs_value_diff": short["max_abs_value_diff"],
            "timed_runs_allclose": timed_cmp["allclose"],
            "timed_runs_examples_not_allclose": timed_cmp["not_allclose"],
            "timed_runs_max_abs_delta_diff": timed_cmp["max_abs_delta_diff"],
            "timed_runs_max_abs_value_diff": timed_cmp["max_abs_value_diff"],
        },
        "flops_per_image_step": flops,
        "gflops_batched": None if flops is None else flops * tput["batched"] / 1e9,
        "gflops_per_image": None if flops is None else flops * tput["per_image"] / 1e9,
        "mean_code_distance": [float(-np.mean(np.asarray(res.value)[:, j])) for j in range(e)],
    }


def run(
    quick: bool, steps: int | None = None, attack_steps: int | None = None, rounds: int = 2
) -> dict[str, Any]:
    case = QUICK if quick else FULL
    steps = case.steps if steps is None else steps
    attack_steps = case.attack_steps if attack_steps is None else attack_steps
    training, (dae, stacked) = run_training(case, steps, rounds)
    attack = run_attack_case(case, dae, stacked, attack_steps, rounds)
    return {
        "device": jax.devices()[0].device_kind,
        "platform": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": quick,
        "rounds": rounds,
        "learning_rate": LEARNING_RATE,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "training": training,
        "attack": attack,
        "matmul_peak_gflops": matmul_peak_gflops(1024),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, well under a minute")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per run")
    parser.add_argument("--attack-steps", type=int, default=None, help="attack steps S")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (min)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    for name in ("steps", "attack_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    res = run(args.quick, args.steps, args.attack_steps, max(1, args.rounds))
    tr, at = res["training"], res["attack"]
    t, a = tr["models_steps_per_s"], at["image_steps_per_s"]
    print(
        f"robust DAE study (003), best of {res['rounds']} ({res['device']}, "
        f"{res['cpu_count']} cores)"
    )
    print(
        f"  train coupled loss  K={tr['num_models']} steps={tr['timed_steps']} "
        f"batch={tr['batch_size']}: grid {t['grid']:.1f}, seq {t['sequential']:.1f} m·s/s "
        f"({tr['ratio_grid_over_sequential']:.2f}x)  grid==seq: {tr['grid_equals_sequential']}"
    )
    print(
        f"  latent attack       K={at['num_models']} S={at['attack_steps']} "
        f"E={len(at['budgets'])}: batched {a['batched']:.0f} ({at['num_images']} images), "
        f"per-image {a['per_image']:.0f} ({at['per_image_images']} images) i·s/s "
        f"({at['ratio_batched_over_per_image']:.2f}x)  "
        f"per-image==batched: {at['per_image_equals_batched']}"
    )
    print("  (m·s/s = models·steps per second; i·s/s = image·steps per second)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
