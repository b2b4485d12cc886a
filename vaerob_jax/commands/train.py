"""``vaerob train``: train a β grid of VAEs on one dataset in one compiled program.

Writes to ``--out``: ``config.json`` (everything needed to rerun), ``checkpoints/`` (orbax,
resumed on a rerun with the same arguments), ``metrics.csv`` (tidy: step, model, beta,
[tau,] seed, loss, recon, kl, elapsed_s), ``grid.json`` and ``loss_curves.png``.
Flags use the names of the study configs: ``--taus`` (the τ grid of 001 Fig. 7),
``--train-steps``, ``--learning-rate``.

Example:
    $ vaerob train --dataset shapes --betas 1,5,10 --train-steps 500 --batch-size 64 \
        --backbone burgess64 --latent-dim 16 --out runs/beta_grid
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaerob_jax.commands import add_devices_flag, exit_codes_epilog, float_list, int_list

__all__ = ["DEFAULTS", "register", "run"]

# Defaults of the command (experiments/train_beta_grid.py mirrors them; a test checks).
DEFAULTS: dict[str, Any] = {
    "dataset": "shapes",
    "split": "train",
    "image_size": None,
    "limit": None,
    "betas": "1,5,10",
    "taus": None,
    "model_seeds": None,
    "train_steps": 500,
    "batch_size": 64,
    "learning_rate": 1e-4,
    "backbone": "burgess64",
    "latent_dim": 16,
    "hidden": None,
    "likelihood": "bernoulli",
    "kl_reduction": "sum",
    "seed": 0,
    "checkpoint_every": 100,
    "log_every": 10,
    "max_to_keep": 2,
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``train`` subcommand to ``subparsers``."""
    from vaerob_jax.models import BACKBONES, LIKELIHOODS
    from vaerob_jax.objectives import KL_REDUCTIONS

    p = subparsers.add_parser(
        "train",
        help="train a grid of β-VAEs (one compiled program) with checkpoints and metrics",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=exit_codes_epilog(),
    )
    d = DEFAULTS
    p.add_argument("--dataset", default=d["dataset"], help="dataset name (vaerob_jax.data)")
    p.add_argument("--split", default=d["split"])
    p.add_argument("--image-size", type=int, default=d["image_size"], help="side in pixels")
    p.add_argument("--limit", type=int, default=d["limit"], help="use at most this many images")
    p.add_argument("--betas", type=float_list, default=float_list(d["betas"]), help="e.g. 1,5,10")
    p.add_argument(
        "--taus", type=float_list, default=d["taus"], help="τ grid (001 Fig. 7), e.g. 0,0.5"
    )
    p.add_argument("--model-seeds", type=int_list, default=d["model_seeds"], help="e.g. 0,1,2")
    p.add_argument("--train-steps", type=int, default=d["train_steps"], help="updates per model")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"])
    p.add_argument("--backbone", choices=BACKBONES, default=d["backbone"])
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"])
    p.add_argument("--hidden", type=int_list, default=d["hidden"], help="MLP widths, e.g. 256,128")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default=d["likelihood"])
    p.add_argument("--kl-reduction", choices=KL_REDUCTIONS, default=d["kl_reduction"])
    p.add_argument("--seed", type=int, default=d["seed"], help="run key: jax.random.key(seed)")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"])
    p.add_argument("--log-every", type=int, default=d["log_every"])
    p.add_argument("--max-to-keep", type=int, default=d["max_to_keep"])
    p.add_argument("--out", required=True, type=Path, help="output folder (resumed if present)")
    p.add_argument(
        "--extend",
        action="store_true",
        help="continue the run stored in --out to the new --train-steps (without it a folder "
        "holding a run of another length is refused, untouched)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_devices_flag(p)
    p.set_defaults(func=run, parser=p)
    return p


@contextlib.contextmanager
def _interrupt_line(out: Path) -> Iterator[None]:
    """Turns Ctrl-C into a KeyboardInterrupt whose message says what ``out`` kept."""
    try:
        yield
    except KeyboardInterrupt:
        from vaerob_jax.train import checkpoint_steps

        steps = checkpoint_steps(out / "checkpoints")
        kept = f"checkpoints up to step {steps[-1]}" if steps else "no checkpoint yet"
        raise KeyboardInterrupt(
            f"interrupted: {out} keeps {kept}; rerun the same command to resume from there"
        ) from None


def _config_record(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"func", "parser", "out", "quiet", "command", "extend"}
    rec = {k: v for k, v in vars(args).items() if k not in skip}
    rec["out"] = str(Path(args.out).absolute())
    return rec


def run(args: argparse.Namespace) -> int:
    """Validates everything, loads the data, trains the grid, writes the figure and a summary."""
    import jax

    from vaerob_jax import data, objectives
    from vaerob_jax.models import make_vae
    from vaerob_jax.train import (
        TrainConfig,
        make_grid,
        plot_loss_curves,
        train_grid,
    )

    parser: argparse.ArgumentParser = args.parser
    # -- validation, before any data loading or training ------------------------------------
    if args.train_steps < 1:
        parser.error(f"--train-steps must be >= 1, got {args.train_steps}")
    try:
        axes: dict[str, Any] = {"beta": args.betas}
        if args.taus is not None:
            axes["tau"] = args.taus
        if args.model_seeds is not None:
            axes["seed"] = args.model_seeds
        grid = make_grid(axes)
        for name in ("beta", "tau"):
            if name in grid and (grid[name] < 0).any():
                raise ValueError(f"{name} values must be >= 0, got {axes[name]}")
        config = TrainConfig(
            steps=args.train_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            max_to_keep=args.max_to_keep,
        )
    except ValueError as err:
        parser.error(str(err))
    if args.latent_dim < 1:
        parser.error(f"--latent-dim must be >= 1, got {args.latent_dim}")
    if args.image_size is not None and args.image_size < 1:
        parser.error(f"--image-size must be >= 1, got {args.image_size}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if not math.isfinite(args.learning_rate):
        parser.error("--learning-rate must be finite")
    names = data.available_datasets()
    if args.dataset not in names:
        parser.error(f"unknown dataset {args.dataset!r}; available: {', '.join(names)}")

    try:
        ds = data.load(args.dataset, args.split, image_size=args.image_size, limit=args.limit)
    except (ValueError, KeyError, data.DatasetNotPreparedError) as err:
        parser.error(f"cannot load dataset {args.dataset!r} ({args.split}): {err}")
    images = ds.images
    image_shape = tuple(int(s) for s in images.shape[1:])
    if config.batch_size > images.shape[0]:
        parser.error(
            f"--batch-size {config.batch_size} exceeds the {images.shape[0]} images of "
            f"{args.dataset}/{args.split}"
        )
    try:
        model = make_vae(
            args.backbone,
            image_shape,
            args.latent_dim,
            likelihood=args.likelihood,
            hidden=args.hidden,
        )
        jax.eval_shape(model.init, jax.random.key(0))  # shape mismatches surface here, cheaply
    except (ValueError, TypeError) as err:
        parser.error(f"backbone {args.backbone!r} cannot take {image_shape} images: {err}")

    from vaerob_jax.commands import run_reporting_errors
    from vaerob_jax.sweeps import check_output_dir, distributed, lock_output, write_json

    coordinator = distributed.is_coordinator()  # several processes: process 0 writes the files

    record = {
        "command": "train",
        "args": _config_record(args),
        "train_config": config.to_dict(),
        "model": {
            "backbone": args.backbone,
            "image_shape": list(image_shape),
            "latent_dim": args.latent_dim,
            "likelihood": args.likelihood,
            "hidden": args.hidden,
        },
        "dataset": {
            "name": ds.name,
            "split": ds.split,
            "num_images": int(images.shape[0]),
            "image_shape": list(image_shape),
        },
        "loss": {"name": "beta_elbo", "kl_reduction": args.kl_reduction},
        "grid": [
            {"model": k, **{n: v[k].item() for n, v in grid.items()}}
            for k in range(len(grid["beta"]))
        ],
    }

    def train() -> Any:
        out = check_output_dir(args.out)
        with (
            lock_output(distributed.lock_folder(out), command="vaerob train"),
            _interrupt_line(out),
        ):
            result = train_grid(
                model,
                objectives.beta_elbo(model, args.kl_reduction),
                images,
                grid,
                config,
                jax.random.key(args.seed),
                workdir=out,
                progress=not args.quiet,
                extend=args.extend,
            )
            # Written once the folder's checkpoints were accepted: never describes a run the
            # folder does not hold.
            if coordinator:
                write_json(out / "config.json", record)
        return out, result

    code, done = run_reporting_errors("train", train)
    if done is None:
        return code
    out, result = done
    if not coordinator:
        print(f"process {distributed.process_index()}: trained its share; process 0 writes {out}")
        return 0
    figure = plot_loss_curves(out / "metrics.csv", out / "loss_curves.png")

    print(f"trained {result.num_models} models for {result.step} steps in {result.elapsed_s:.1f}s")
    if result.resumed_from is not None:
        print(f"  resumed from the checkpoint at step {result.resumed_from}")
    if result.history["step"].size:
        last = result.history
        for row in result.rows():
            k = row.pop("model")
            values = " ".join(f"{n}={v:g}" for n, v in row.items())
            print(
                f"  model {k}: {values}  loss={last['loss'][-1, k]:.4g} "
                f"recon={last['recon'][-1, k]:.4g} kl={last['kl'][-1, k]:.4g}"
            )
    print(f"  checkpoints:  {out / 'checkpoints'}")
    print(f"  metrics:      {out / 'metrics.csv'}")
    print(f"  config:       {out / 'config.json'}")
    print(f"  loss curves:  {figure}")
    return 0
