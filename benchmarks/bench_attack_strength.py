"""Attack strength per compute: Δc after 10, 30, 100, 300 PGD steps vs a reference-style run.

The reference code of 000 optimises one image per process with Adam (lr 1e-4) for 250,000
steps from δ ~ U[-1, 1], rescaling δ to ‖δ‖∞ = c after every step (no projection, no pixel
clipping). This benchmark runs that recipe (fewer steps; ``--ref-steps``) and our default
projected signed-gradient PGD on the same trained model and examples, and reports the median
Δc (Eq. 5 of 000) reached after each budget of steps and how many of our steps reach the
reference's damage.

Run from the repository root::

    python -m benchmarks.bench_attack_strength            # 32x32 shapes, β=1 (~2-3 min)
    python -m benchmarks.bench_attack_strength --quick    # tiny (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks import latent_damage, pgd, run_attack
from vaerob_jax.data import load, sample_per_subgroup
from vaerob_jax.models import make_vae
from vaerob_jax.objectives import beta_elbo
from vaerob_jax.robustness import evaluate_attacks
from vaerob_jax.train import TrainConfig, train_grid


def _setup(quick: bool, workdir: Path) -> tuple[Any, Any, np.ndarray]:
    size, steps, n_train, per_group = (16, 20, 256, 2) if quick else (32, 600, 4096, 8)
    train = load("shapes", "train", image_size=size, n=n_train)
    model = make_vae("burgess64", train.image_shape, 16)
    cfg = TrainConfig(steps=steps, batch_size=64, learning_rate=1e-3, log_every=steps)
    params = train_grid(
        model,
        beta_elbo(model),
        train.images,
        {"beta": [1.0]},
        cfg,
        jax.random.key(0),
        workdir=workdir,
        progress=False,
    ).params
    params = jax.tree.map(lambda a: a[0], params)
    pool = load("shapes", "test", image_size=size, n=2048)
    sample = sample_per_subgroup(pool, per_group, 0)
    return model, params, sample.images


def _median_dc(model: Any, params: Any, xs: np.ndarray, attack: Any, eps: float) -> tuple:
    t = time.perf_counter()
    deltas = run_attack(attack, params, {"x": xs}, jnp.asarray([eps]), jax.random.key(1)).delta
    dc = np.asarray(evaluate_attacks(model, params, xs, deltas)["delta_c"][0])
    return dc, time.perf_counter() - t


def run(quick: bool, ref_steps: int, eps: float, workdir: Path) -> dict[str, Any]:
    model, params, xs = _setup(quick, workdir)
    budgets = (10, 30) if quick else (10, 30, 100, 300)
    objective = latent_damage(model)
    ours: dict[int, np.ndarray] = {}
    rows = []
    for steps in budgets:
        dc, dt = _median_dc(model, params, xs, pgd(objective, "linf", steps=steps), eps)
        ours[steps] = dc
        rows.append(
            {
                "attack": "pgd_sign",
                "steps": steps,
                "median_delta_c": float(np.median(dc)),
                "seconds": dt,
            }
        )
    reference = pgd(
        objective,
        "linf",
        steps=ref_steps,
        step_size=1e-4,
        rule="adam",
        constraint="rescale",
        box=None,
    )
    ref_dc, ref_dt = _median_dc(model, params, xs, reference, eps)
    ref_median = float(np.median(ref_dc))
    rows.append(
        {
            "attack": "reference_adam_rescale",
            "steps": ref_steps,
            "median_delta_c": ref_median,
            "seconds": ref_dt,
        }
    )
    reach = [s for s in budgets if np.median(ours[s]) >= ref_median]
    result = {
        "shape": list(xs.shape),
        "eps": eps,
        "rows": rows,
        "steps_to_reach_reference_median": reach[0] if reach else None,
        "share_of_examples_at_or_above_reference": {
            str(s): float(np.mean(ours[s] >= ref_dc)) for s in budgets
        },
    }
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--ref-steps", type=int, default=None, help="reference Adam steps")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget")
    parser.add_argument("--workdir", type=Path, default=Path("results/benchmarks/strength_model"))
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    ref_steps = args.ref_steps or (100 if args.quick else 5000)
    workdir = args.workdir / ("quick" if args.quick else "full")
    res = run(args.quick, ref_steps, args.eps, workdir)
    for r in res["rows"]:
        print(
            f"{r['attack']:>24} {r['steps']:>6} steps: median Δc {r['median_delta_c']:.4f} "
            f"({r['seconds']:.1f}s for {res['shape'][0]} examples)"
        )
    print(f"our steps to reach the reference's median Δc: {res['steps_to_reach_reference_median']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
