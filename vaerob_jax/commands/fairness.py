"""``vaerob fairness``: fairness versus adversarial robustness (004).

Runs the theory panel of the two-Gaussian model, then trains a λ × ε* × seed grid of MLPs on
a 2-D Gaussian mixture and on the embedded digits (cross-entropy, and the ramp loss at ε* = 0),
evaluates per-group natural / boundary / robust errors under R+FGSM and PGD, distances to the
boundary and accuracy-parity violations with bootstrap CIs, and writes ``claims.csv``,
``error_summary.csv``, ``distance_summary.csv``, figures (004 Figs. 2, 4-7) and ``report.md``
into ``--out``. A rerun resumes.

Example:
    $ vaerob fairness --out results/fairness
    $ vaerob fairness --out results/fairness_gmm --parts gmm2d --gmm-lambdas 0,0.5,1,2
    $ vaerob fairness --preset utkface --utkface-dir ~/data/UTKFace --out results/utk  # GPU/TPU
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
    "parts": (_names, "trained parts: gmm2d,digits (default), utkface (needs --utkface-dir)"),
    "seeds": (int_list, "model seeds of every grid point, e.g. 0,1,2"),
    "gmm_lambdas": (float_list, "penalty weights λ of the mixture grid"),
    "gmm_eps_stars": (float_list, "adversarial-training budgets ε* of the mixture grid"),
    "gmm_eval_eps": (float_list, "evaluation attack budgets (L∞) on the mixture"),
    "gmm_steps": (int, "training steps of the mixture MLPs"),
    "digits_lambdas": (float_list, "penalty weights λ of the digits grid"),
    "digits_eps_stars": (float_list, "adversarial-training budgets ε* of the digits grid"),
    "digits_eval_eps": (float_list, "evaluation attack budgets (L∞) on digits"),
    "digits_steps": (int, "training steps of the digits MLPs"),
    "utkface_dir": (str, "UTKFace folder (age_gender_race_date.jpg files) for --parts utkface"),
    "utkface_label": (str, "UTKFace label = group: race (default), age_bin or gender"),
    "utkface_image_size": (int, "UTKFace image side (32 on CPU, 64 as in 004)"),
    "utkface_n_train": (count_or_all, "UTKFace training images (a seeded subset), or 'all'"),
    "utkface_lambdas": (float_list, "penalty weights λ of the UTKFace grid"),
    "utkface_eps_stars": (float_list, "adversarial-training budgets ε* of the UTKFace grid"),
    "utkface_steps": (int, "training steps of the UTKFace CNNs"),
    "penalty_reduce": (str, "Eq. 3's penalty over groups: sum (the paper) or mean"),
    "eval_pgd_steps": (int, "steps of the PGD evaluation attack"),
    "eval_pgd_restarts": (int, "random starts of the PGD evaluation attack"),
    "check_factor": (int, "PGD steps multiplier of the attack convergence check"),
    "check_restarts": (int, "random starts of the attack convergence check"),
    "n_boot": (int, "bootstrap resamples of the CIs"),
    "seed": (int, "the run's seed (data, attacks, bootstrap)"),
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``fairness`` subcommand to an argparse ``subparsers`` object."""
    from vaerob_jax.studies.fairness import FAIRNESS_PRESETS

    return add_study_parser(
        subparsers,
        "fairness",
        "fairness vs robustness (004): fair / robust classifiers, per-group errors",
        __doc__,
        FAIRNESS_PRESETS,
        "default",
        _OVERRIDES,
        run,
    )


def build_config(args: argparse.Namespace) -> Any:
    """The preset named by --preset with the flags that were given applied."""
    from vaerob_jax.studies.fairness import FAIRNESS_PRESETS

    return apply_flags(FAIRNESS_PRESETS[args.preset], flag_changes(args, _OVERRIDES))


def run(args: argparse.Namespace) -> int:
    """Runs the study; errors exit with the codes of ``EXIT_CODES`` and one message."""
    from vaerob_jax.studies.fairness import run_fairness_study, validate_fairness_config

    return run_study_command(
        "fairness",
        args,
        build_config,
        validate_fairness_config,
        run_fairness_study,
        ("report", "claims"),
    )
