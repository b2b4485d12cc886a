"""Fair/robust grid training (004): a λ × ε* grid of K MLPs in ONE vmapped program vs K runs.

Measures models·steps per second of :func:`vaerob_jax.train.train_grid` with 004's
fair-and-robust loss (:func:`vaerob_jax.objectives.fairness.fair_robust_loss`: cross-entropy,
Eq. 3's penalty weighted by λ, 5-step Madry PGD at ε*) after compilation (a warm-up call
compiles; the timed calls reuse the cached programs):
  * grid: the K grid points in one call with ``model_axis='vmap'`` (one vmapped program;
    set explicitly, since 'auto' runs models one after another on CPU);
  * sequential: K single-model calls one after another, each a one-point grid with the same
    values and seed (``model_axis='sequential'``: the plain single-model program), i.e. what a
    per-grid-point script does.
One loss object serves all calls (the compiled step is cached per loss). XLA's FLOP count of
one grid step gives GFLOP/s of both (they do the same arithmetic).

Same work: the keys are a function of (run key, seed, step) only, so model k of the grid
and the k-th single run see the same batches, PGD starts and updates, up to float rounding
(~1e-8 per step) of the vmapped vs the unbatched program. Wherever ε* > 0 that rounding is
amplified: PGD steps along the *sign* of an input gradient, so a rounding-size change flips a
coordinate's step and the two trajectories drift apart (measured on digits8: 1e-4 after 3
steps for one model, ~1e-1 after 200 for several; a K = 1 vmapped run drifts likewise). So
``grid_equals_sequential`` (params allclose, rtol 1e-4 / atol 1e-5) checks
  * every model after ``CHECK_STEPS`` = 2 steps of both (a wrong batch, key or
    hyperparameter would differ by ~lr = 1e-3 after one Adam step), and
  * the ε* = 0 models (smooth dynamics, no sign steps) over the whole timed runs;
``equality_check`` in the JSON gives the max |diff| of each, and of all models' timed runs.

Cases (full mode):
  * gmm2d: 004's 2-D Gaussian mixture (:func:`vaerob_jax.fairness.make_gmm2d`, 2,000 points,
    group = label, unbounded inputs: PGD box None), MLP 2-64-64-2,
    λ ∈ {0, .1, .25, .5, 1} × ε* ∈ {0, .1, .2} (K = 15), batch 256;
  * digits8: sklearn's digits at 8x8 (train split, group = label, 10 groups, box [0, 1]),
    MLP 64-128-128-10 on the flattened image, λ ∈ {0, .5, 1, 2} × ε* ∈ {0, .05, .1} (K = 12),
    batch 128.
Timed steps are shrunk from the study's 500 (gmm2d) and 300 (digits8) to 300 and 200 so that
the full mode, two interleaved rounds of both variants, stays under ~3 min on the shared
2-core CPU (throughput per step is steady after the warm-up; ``--steps`` sets both).
``--quick``: both cases tiny (K = 4, 20 steps, one hidden layer of 16; XLA compiles dominate).

Run:
    python -m benchmarks.bench_fairness            # both cases (~2 min on the 2-core CPU)
    python -m benchmarks.bench_fairness --quick    # tiny
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
import numpy as np

from benchmarks.common import grid_step_flops, matmul_peak_gflops
from vaerob_jax.data import load_digits_dataset
from vaerob_jax.fairness import make_gmm2d
from vaerob_jax.models import make_mlp_classifier
from vaerob_jax.objectives.fairness import fair_robust_loss
from vaerob_jax.train import TrainConfig, make_grid, train_grid

PGD_STEPS = 5
LEARNING_RATE = 1e-3
RTOL, ATOL = 1e-4, 1e-5
CHECK_STEPS = 2  # steps of the all-models grid-vs-single equality check


@dataclasses.dataclass(frozen=True)
class Case:
    """One data set with its MLP, λ × ε* grid and training shapes."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    num_groups: int
    hidden: tuple[int, ...]
    lams: tuple[float, ...]
    eps_stars: tuple[float, ...]
    batch_size: int
    steps: int
    box: tuple[float, float] | None
    num_examples: int | None  # gmm2d: points drawn; digits8: a subset of this many (None: all)


FULL = (
    Case(
        "gmm2d",
        input_shape=(2,),
        num_classes=2,
        num_groups=2,
        hidden=(64, 64),
        lams=(0, 0.1, 0.25, 0.5, 1),
        eps_stars=(0, 0.1, 0.2),
        batch_size=256,
        steps=300,
        box=None,
        num_examples=2000,
    ),
    Case(
        "digits8",
        input_shape=(8, 8, 1),
        num_classes=10,
        num_groups=10,
        hidden=(128, 128),
        lams=(0, 0.5, 1, 2),
        eps_stars=(0, 0.05, 0.1),
        batch_size=128,
        steps=200,
        box=(0.0, 1.0),
        num_examples=None,
    ),
)
QUICK = (
    dataclasses.replace(
        FULL[0],
        hidden=(16,),
        lams=(0, 0.5),
        eps_stars=(0, 0.1),
        batch_size=32,
        steps=20,
        num_examples=256,
    ),
    dataclasses.replace(
        FULL[1],
        hidden=(16,),
        lams=(0, 1),
        eps_stars=(0, 0.1),
        batch_size=32,
        steps=20,
        num_examples=256,
    ),
)


def _data(case: Case) -> dict[str, np.ndarray]:
    if case.name == "gmm2d":
        d = make_gmm2d(jax.random.key(1), case.num_examples or 2000)
        x, label, group = (np.asarray(d[k]) for k in ("x", "label", "group"))
    else:
        raw = load_digits_dataset("train", image_size=8, limit=case.num_examples)
        assert raw.labels is not None
        x, label = raw.images, np.asarray(raw.labels)
        group = label
    return {
        "x": np.asarray(x, np.float32),
        "label": np.asarray(label, np.int32),
        "group": np.asarray(group, np.int32),
    }


def _timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = fn()
    jax.block_until_ready(res.params)
    return time.perf_counter() - t0, res


def _compare(grid_res: Any, singles: list[Any], models: list[int] | None = None) -> dict:
    """Model k of the grid vs single run k (params): allclose for all, and the max |diff|."""
    close, worst = True, 0.0
    for i in models if models is not None else range(len(singles)):
        g = jax.tree.leaves(jax.tree.map(lambda a, i=i: np.asarray(a[i]), grid_res.params))
        s = jax.tree.leaves(jax.tree.map(lambda a: np.asarray(a[0]), singles[i].params))
        close &= all(np.allclose(a, b, rtol=RTOL, atol=ATOL) for a, b in zip(g, s))
        worst = max([worst, *(float(np.max(np.abs(a - b))) for a, b in zip(g, s))])
    return {"allclose": bool(close), "max_abs_diff": worst}


def run_case(case: Case, steps: int | None, rounds: int) -> dict[str, Any]:
    steps = case.steps if steps is None else steps
    clf = make_mlp_classifier(case.input_shape, case.num_classes, case.hidden)
    loss = fair_robust_loss(
        clf, num_groups=case.num_groups, loss="ce", pgd_steps=PGD_STEPS, box=case.box
    )
    data = _data(case)
    grid = make_grid({"lam": list(case.lams), "eps_star": list(case.eps_stars), "seed": [0]})
    k = len(grid["lam"])
    singles = [{n: v[i : i + 1] for n, v in grid.items()} for i in range(k)]
    key = jax.random.key(0)

    config = TrainConfig(
        steps=steps,
        batch_size=case.batch_size,
        log_every=steps,
        learning_rate=LEARNING_RATE,
        model_axis="vmap",
        batch_sampling="replacement",  # as `vaerob fairness` trains
    )
    seq_config = dataclasses.replace(config, model_axis="sequential")
    warm = dataclasses.replace(config, steps=1, log_every=1)
    warm_seq = dataclasses.replace(seq_config, steps=1, log_every=1)

    def train(g, c):
        return train_grid(clf, loss, data, g, c, key, progress=False)

    t_compile = {
        "grid": _timed(lambda: train(grid, warm))[0],
        "single": _timed(lambda: train(singles[0], warm_seq))[0],
    }
    # Rounds interleave the two variants and keep each one's fastest time, so a load spike on
    # a shared machine does not land on one variant only.
    times: dict[str, list[float]] = {"grid": [], "sequential": []}
    grid_res: Any = None
    seq_res: list[Any] = []
    for _ in range(rounds):
        t, grid_res = _timed(lambda: train(grid, config))
        times["grid"].append(t)
        timed = [_timed(lambda g=g: train(g, seq_config)) for g in singles]
        times["sequential"].append(sum(t for t, _ in timed))
        seq_res = [r for _, r in timed]
    t_grid, t_seq = min(times["grid"]), min(times["sequential"])

    # Same work: every model after CHECK_STEPS steps (before PGD's sign steps amplify rounding)
    # and the ε* = 0 models over the timed runs equal their single runs (module docstring).
    n_check = min(CHECK_STEPS, steps)
    check = dataclasses.replace(config, steps=n_check, log_every=n_check)
    check_seq = dataclasses.replace(seq_config, steps=n_check, log_every=n_check)
    short = _compare(train(grid, check), [train(g, check_seq) for g in singles])
    timed_cmp = _compare(grid_res, seq_res)
    eps0 = [i for i in range(k) if grid["eps_star"][i] == 0]
    timed_eps0 = _compare(grid_res, seq_res, eps0)

    tput = {"grid": k * steps / t_grid, "sequential": k * steps / t_seq}
    flops = grid_step_flops(clf, loss, data, config, k)
    return {
        "input_shape": list(case.input_shape),
        "hidden": list(case.hidden),
        "num_classes": case.num_classes,
        "num_groups": case.num_groups,
        "num_examples": int(data["x"].shape[0]),
        "lam": list(case.lams),
        "eps_star": list(case.eps_stars),
        "num_models": k,
        "batch_size": case.batch_size,
        "timed_steps": steps,
        "pgd_steps": PGD_STEPS,
        "box": None if case.box is None else list(case.box),
        "seconds": {"grid": t_grid, "sequential": t_seq},
        "first_call_seconds_incl_compile": t_compile,
        "models_steps_per_s": tput,
        "ratio_grid_over_sequential": tput["grid"] / tput["sequential"],
        "grid_equals_sequential": short["allclose"] and timed_eps0["allclose"],
        "equality_check": {
            "steps": n_check,
            "all_models_allclose": short["allclose"],
            "max_abs_param_diff": short["max_abs_diff"],
            "timed_runs_allclose": timed_cmp["allclose"],
            "timed_runs_max_abs_param_diff": timed_cmp["max_abs_diff"],
            "timed_runs_allclose_eps_star_0": timed_eps0["allclose"],
            "timed_runs_max_abs_param_diff_eps_star_0": timed_eps0["max_abs_diff"],
        },
        "flops_per_step_grid": flops,
        "gflops_grid": None if flops is None else flops * steps / t_grid / 1e9,
        "gflops_sequential": None if flops is None else flops * steps / t_seq / 1e9,
        "final_loss_grid": [float(v) for v in grid_res.history["loss"][-1]],
    }


def run(quick: bool, steps: int | None = None, rounds: int = 2) -> dict[str, Any]:
    cases = {c.name: run_case(c, steps, rounds) for c in (QUICK if quick else FULL)}
    return {
        "device": jax.devices()[0].device_kind,
        "platform": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": quick,
        "rounds": rounds,
        "learning_rate": LEARNING_RATE,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "cases": cases,
        "matmul_peak_gflops": matmul_peak_gflops(1024),
    }


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
    print(
        f"fair/robust grid training (CE + λ·penalty + PGD-{PGD_STEPS} at ε*), best of "
        f"{res['rounds']} ({res['device']}, {res['cpu_count']} cores)"
    )
    print(
        f"  {'case':8s} {'K':>3s} {'steps':>5s} {'batch':>5s} {'grid m·s/s':>11s} "
        f"{'seq m·s/s':>10s} {'ratio':>6s}  grid==seq"
    )
    for name, c in res["cases"].items():
        t = c["models_steps_per_s"]
        print(
            f"  {name:8s} {c['num_models']:3d} {c['timed_steps']:5d} {c['batch_size']:5d} "
            f"{t['grid']:11.1f} {t['sequential']:10.1f} "
            f"{c['ratio_grid_over_sequential']:5.2f}x  {c['grid_equals_sequential']}"
        )
    print("  (m·s/s = models·steps per second; grid = one vmapped program, seq = K single runs)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
