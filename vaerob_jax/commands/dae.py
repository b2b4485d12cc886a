"""``vaerob dae``: robust GMM-regularised deterministic autoencoders (003).

Trains VAE, β-VAE, β-TCVAE, GMM-DAE, Augmented and 003's coupled method (α grid, and the
public code's latent noise) on one architecture, attacks every model on the same seeded
(source, target) pairs with the latent attack (Eq. 12) and the maximum-damage attack
(Eq. 13) under hard L2 bounds λ, checks the attack against a stronger one and against
L-BFGS-B, and writes Tables 1-3, ``quality.csv`` (FD-clf), ``claims.csv``, figures (003
Figs. 2-3) and ``report.md`` into ``--out``. A rerun resumes.

Example:
    $ vaerob dae --out results/dae
    $ vaerob dae --out results/dae_mnist --dataset mnist --data-dir ~/tensorflow_datasets
"""

from __future__ import annotations

import argparse
from typing import Any

from vaerob_jax.commands import (
    add_study_parser,
    apply_flags,
    count_or_all,
    flag_changes,
    float_list,
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
    "dataset": (str, "digits (embedded, default), mnist, fashion_mnist, svhn_cropped, celeb_a"),
    "data_dir": (str, "TFDS data folder for a prepared dataset"),
    "image_size": (int, "image side (32; MS-SSIM's 5 levels need >= 16)"),
    "n_train": (count_or_all, "training images (a seeded subset), or 'all'"),
    "models": (_names, "models: vae,beta_vae,beta_tcvae,gmm_dae,augmented,coupled"),
    "coupled_alphas": (float_list, "coupling α values of 003's method (Eq. 10), in [-1, 1]"),
    "headline_alpha": (float, "the α the claims read (one of --coupled-alphas)"),
    "noise_variants": (float_list, "extra latent-noise scales s of Ours at the headline α"),
    "train_steps": (int, "training steps of every model"),
    "learning_rate": (float, "Adam learning rate"),
    "eps": (float, "FGSM L∞ radius inside training (Eq. 6)"),
    "targets": (str, "attack targets: different_class (003) or random"),
    "trials": (int, "attack trials (each a fresh draw of source images)"),
    "images_per_trial": (int, "source images per trial"),
    "budgets": (float_list, "L2 bounds λ of both attacks"),
    "attack_steps": (int, "L2-PGD steps"),
    "check_factor": (int, "steps multiplier of the convergence-check attack"),
    "attack_step_factor": (float, "PGD step = factor·λ/steps"),
    "latent_restarts": (int, "random starts of the latent attack"),
    "damage_restarts": (int, "random starts of the maximum-damage attack"),
    "check_restart_factor": (int, "starts multiplier of the convergence-check attack"),
    "check_images": (int, "pairs the convergence check re-attacks"),
    "lbfgs_images": (int, "images of the L-BFGS-B cross-check (0: none)"),
    "fd_samples": (int, "decoded prior samples per FD-clf draw"),
    "n_boot": (int, "bootstrap resamples of the CIs"),
    "seed": (int, "the run's seed (data subset, pairs, attacks, bootstrap)"),
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``dae`` subcommand to an argparse ``subparsers`` object."""
    from vaerob_jax.studies.dae import DAE_PRESETS

    return add_study_parser(
        subparsers,
        "dae",
        "robust GMM-regularised autoencoders (003): latent / max-damage attacks, MS-SSIM",
        __doc__,
        DAE_PRESETS,
        "default",
        _OVERRIDES,
        run,
    )


def build_config(args: argparse.Namespace) -> Any:
    """The preset named by --preset with the flags that were given applied."""
    from vaerob_jax.studies.dae import DAE_PRESETS

    return apply_flags(DAE_PRESETS[args.preset], flag_changes(args, _OVERRIDES))


def run(args: argparse.Namespace) -> int:
    """Runs the study; errors exit with the codes of ``EXIT_CODES`` and one message."""
    from vaerob_jax.studies.dae import run_dae_study, validate_dae_config

    return run_study_command(
        "dae", args, build_config, validate_dae_config, run_dae_study, ("report", "claims")
    )
