"""``vaerob disentangle``: disentangled and hierarchical VAEs under targeted attacks (002).

Trains a vanilla VAE, β-TCVAEs, Seatbelt-VAEs and β-TCDLGMs as vmapped β stacks on one
backbone (embedded ``shapes`` by default, with ground-truth factors), attacks every model on
the same seeded input–target pairs with the latent attack (Eqs. 13-15) and the output attack
(Eq. 12) at every λ of a subset of 002's grid 2^−20…2^20 — models × pairs × λ in one batched
L-BFGS program per mode — checks the attack against a stronger one and against scipy's
L-BFGS-B, and writes ``attacks.csv``, ``summary.csv``, ``metrics.csv`` (MIG, TC, β = 1 ELBO,
noise, weight norms), ``convergence.csv``, ``claims.csv``, figures (002 Figs. 1, 3, 5-8) and
``report.md`` into ``--out``. A rerun resumes.

Example:
    $ vaerob disentangle --out results/disentangle
    $ vaerob disentangle --out results/dsprites --dataset dsprites --data-dir ~/tensorflow_datasets
"""

from __future__ import annotations

import argparse
from typing import Any

from vaerob_jax.commands import (
    add_study_parser,
    apply_flags,
    flag_changes,
    float_list,
    int_list,
    run_study_command,
)

__all__ = ["build_config", "register", "run"]


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


# Flags that override a field of the preset; None (unset) keeps the preset's value.
_OVERRIDES: dict[str, tuple[Any, str]] = {
    "dataset": (str, "shapes (embedded, default) or dsprites (a prepared TFDS folder)"),
    "data_dir": (str, "TFDS data folder for a prepared dataset"),
    "image_size": (int, "image side"),
    "n_train": (int, "training images"),
    "n_test": (int, "test images (the attack pairs and the ELBO come from them)"),
    "models": (_names, "models: vae, tcvae_b<β>, seatbelt_L<L>_b<β>, tcdlgm_L<L>_b<β>"),
    "backbone": (str, "mlp (default) or conv32"),
    "hidden": (int_list, "MLP backbone widths"),
    "latent_dim": (int, "latent dims of every layer"),
    "estimator": (str, "minibatch TC estimator: mws (002) or mss"),
    "free_bits": (float, "free bits τ (nats per dim) of the layers below the top"),
    "train_steps": (int, "training steps of every model"),
    "batch_size": (int, "training batch (the TC estimator's B)"),
    "learning_rate": (float, "Adam learning rate"),
    "n_pairs": (int, "input-target pairs (002: 10)"),
    "lambda_stride": (int, "attack every k-th λ of 002's 50-point grid (1: all)"),
    "penalty": (str, "l2 (002, unsquared) or l2_squared (the public codes)"),
    "attack_iterations": (int, "L-BFGS iterations per attack"),
    "attack_memory": (int, "L-BFGS curvature pairs"),
    "output_draws": (int, "fixed noise draws of the output attack's expectation"),
    "layer_dist": (str, "Seatbelt latent attack's layer Gaussians: mean_path or sampled"),
    "check_pairs": (int, "pairs the stronger check attack repeats"),
    "check_factor": (int, "iterations multiplier of the check attack"),
    "scipy_problems": (int, "problems per model solved again by scipy's L-BFGS-B (0: none)"),
    "scipy_maxiter": (int, "iterations of the scipy reference"),
    "noise_scales": (float_list, "Gaussian input-noise scales s (pixels in [0, 1])"),
    "n_boot": (int, "bootstrap resamples of the CIs"),
    "seed": (int, "the run's seed (data, pairs, attacks, bootstrap)"),
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``disentangle`` subcommand to an argparse ``subparsers`` object."""
    from vaerob_jax.studies.disentangle import DISENTANGLE_PRESETS

    return add_study_parser(
        subparsers,
        "disentangle",
        "disentangled / hierarchical VAEs under targeted attacks (002): Δ over a λ grid, MIG",
        __doc__,
        DISENTANGLE_PRESETS,
        "default",
        _OVERRIDES,
        run,
    )


def build_config(args: argparse.Namespace) -> Any:
    """The preset named by --preset with the flags that were given applied."""
    from vaerob_jax.studies.disentangle import DISENTANGLE_PRESETS

    return apply_flags(DISENTANGLE_PRESETS[args.preset], flag_changes(args, _OVERRIDES))


def run(args: argparse.Namespace) -> int:
    """Runs the study; errors exit with the codes of ``EXIT_CODES`` and one message."""
    from vaerob_jax.studies.disentangle import run_disentangle_study, validate_disentangle_config

    return run_study_command(
        "disentangle",
        args,
        build_config,
        validate_disentangle_config,
        run_disentangle_study,
        ("report", "claims"),
    )
