"""``vaerob margins``: the margin study of 001 (Theorem 1 against the estimated margin).

Trains (or loads, or reuses a subgroup study's) β × τ grid, then for every evaluated example
computes σ_min, ‖J_μ‖_F, p(‖Δ(x)‖₂ ≤ r), Theorem 1's bound and the margin R^r_X(x) estimated
by bisection with the maximum-damage attack; writes ``margins.csv``, ``margin_summary.csv``,
figures (001 Figs. 6, 7, 9) and ``report.md`` into ``--out``. A rerun resumes.

Example:
    $ vaerob margins --out results/margins                            # embedded shapes data
    $ vaerob margins --out results/margins --subgroup-study results/subgroups
    $ vaerob margins --out results/margins_tau --taus 0,0.1,0.5,1     # 001 Fig. 7
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vaerob_jax.commands import (
    add_study_flags,
    apply_flags,
    count_or_all,
    exit_codes_epilog,
    flag_changes,
    float_list,
    run_reporting_errors,
)

__all__ = ["build_config", "register", "run"]


# Flags that override a field of the preset; None (unset) keeps the preset's value.
_OVERRIDES: dict[str, tuple[Any, str]] = {
    "dataset": (str, "dataset name"),
    "image_size": (int, "image side in pixels"),
    "subgroups": (str, "subgroup preset ('age_gender', 'gray_hair', ...) or attributes A,B"),
    "backbone": (str, "encoder/decoder backbone"),
    "latent_dim": (int, "latent size"),
    "betas": (float_list, "β grid, e.g. 1,5,10"),
    "taus": (float_list, "encoder-std offsets τ, e.g. 0,0.1,0.5,1 (001 Fig. 7)"),
    "train_steps": (int, "VAE training steps"),
    "batch_size": (int, "training batch size"),
    "learning_rate": (float, "Adam learning rate"),
    "n_train": (
        count_or_all,
        "training images (generated data: made; read: a subset), or 'all'",
    ),
    "n_test": (count_or_all, "images of the evaluated split (as --n-train), or 'all'"),
    "r": (float, "output radius r of p(‖Δ(x)‖₂ ≤ r) (001 Eq. 2)"),
    "m": (float, "probability level of r-robustness (0.5 in 001)"),
    "n_samples": (int, "Monte-Carlo η draws per probability"),
    "bound_level": (float, "confidence of the Clopper–Pearson bound_conservative"),
    "box": (str, "attack constraint: pixel ([0, 1] box) or none (Eq. 3 of 001 as written)"),
    "n_iter": (int, "bisection iterations on the input radius"),
    "r_max": (float, "largest input L2 radius searched"),
    "method": (str, "margin search: logbisect (default), bisect or scan"),
    "log_range": (float, "r_max / r_min of the logbisect search"),
    "apply_to": (str, "encoder output perturbed when p is measured: mean, sigma, both"),
    "attack_steps": (int, "PGD steps of the maximum-damage attack (001 Eq. 5)"),
    "attack_rule": (str, "PGD step rule: sign, adam or apgd (Auto-PGD step control)"),
    "restarts": (int, "random restarts inside each attack (best kept)"),
    "n_starts": (int, "attack starts per radius; robust only if robust after each"),
    "n_probes": (int, "random probes for the ‖J‖_F probe estimate"),
    "max_per_subgroup": (count_or_all, "examples per subgroup, or 'all'"),
    "split": (str, "split the examples come from"),
    "chunk_size": (int, "examples per call of the compiled program"),
    "seed": (int, "the run's seed"),
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``margins`` subcommand to an argparse ``subparsers`` object."""
    from vaerob_jax.studies.margins import MARGIN_PRESETS

    p = subparsers.add_parser(
        "margins",
        help="margin study (001): Theorem-1 bound vs estimated margin per subgroup",
        description=__doc__.split("\n\n")[0],
        epilog=exit_codes_epilog(),
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (resumed if present)")
    p.add_argument("--preset", choices=sorted(MARGIN_PRESETS), default="shapes")
    p.add_argument(
        "--subgroup-study",
        type=str,
        default=None,
        help="a `vaerob subgroups` output folder: reuse its β grid, join its deviation.csv",
    )
    add_study_flags(p, _OVERRIDES)
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> Any:
    """The preset named by --preset with the flags that were given applied."""
    from vaerob_jax.studies.margins import MARGIN_PRESETS

    changes = flag_changes(args, _OVERRIDES)
    changes["subgroup_study_dir"] = args.subgroup_study
    return apply_flags(MARGIN_PRESETS[args.preset], changes)


def run(args: argparse.Namespace) -> int:
    """Runs the study; errors exit with the codes of ``EXIT_CODES`` and one message."""
    from vaerob_jax.studies.margins import run_margin_study, validate_margin_config

    def study() -> dict[str, Path]:
        config = build_config(args)
        validate_margin_config(config)
        return run_margin_study(config, args.out, fresh=args.fresh, progress=not args.quiet)

    code, paths = run_reporting_errors("margins", study)
    if paths is not None:
        print(f"report: {paths['report']}")
        print(f"margins: {paths['margins']}")
    return code
