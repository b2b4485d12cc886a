"""``vaerob subgroups``: the subgroup robustness study of 000, the project's main job.

Trains (or loads) a β grid, attacks n examples per intersectional subgroup over an ε grid,
and writes ``deviation.csv``, ``summary.csv``, classifier-accuracy and neighbourhood tables,
figures and ``report.md`` into ``--out``. A rerun with the same settings resumes.

With ``--replicates K`` the whole study runs K times, for seeds seed, seed+1, ... (new
models, classifiers, examples and attack keys), into ``--out``/seed=<s>/, and
``replicates.md`` / ``replicate_tests.csv`` test whether the runs rank the subgroups alike
(Friedman, exact; Holm over the cells): one run's disparity tests hold given its trained
model, not over retraining.

Example:
    $ vaerob subgroups --out results/subgroups                 # embedded shapes data
    $ vaerob subgroups --replicates 3 --out results/replicates # the same over 3 training runs
    $ vaerob subgroups --dataset celeb_a --out results/celeba  # the paper's setting, prepared data
"""

from __future__ import annotations

import argparse
import dataclasses
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

__all__ = ["register", "run"]

# Flags that override a field of the preset; None (unset) keeps the preset's value.
_OVERRIDES: dict[str, tuple[Any, str]] = {
    "dataset": (str, "dataset name (default: the preset's)"),
    "image_size": (int, "image side in pixels"),
    "subgroups": (str, "subgroup preset ('age_gender', 'gray_hair', ...) or attributes A,B"),
    "backbone": (str, "encoder/decoder backbone"),
    "latent_dim": (int, "latent size"),
    "betas": (float_list, "β grid, e.g. 1,5,10"),
    "train_steps": (int, "VAE training steps"),
    "batch_size": (int, "training batch size"),
    "learning_rate": (float, "Adam learning rate"),
    "n_train": (
        count_or_all,
        "training images (generated data: made; read: a subset), or 'all'",
    ),
    "n_test": (count_or_all, "images of the held-out split (as --n-train), or 'all'"),
    "eps": (float_list, "attack budgets, e.g. 0.03,0.06,0.1"),
    "norm": (str, "threat model: linf or l2"),
    "attack_steps": (int, "PGD steps"),
    "attack_rule": (str, "step rule: apgd (Auto-PGD, default), sign or adam"),
    "attack_dtype": (str, "attack precision: float32 or bfloat16 (mixed; Δc stays float32)"),
    "attack_step": (float, "(initial) step size as a fraction of ε (default 2 for apgd)"),
    "attack_schedule": (str, "step sizes over the steps: constant (default) or cosine (decayed)"),
    "restarts": (int, "random restarts per example (best kept)"),
    "n_per_subgroup": (int, "attacked examples per subgroup"),
    "sample_split": (str, "split the attacked examples come from: train (000 §4) or test"),
    "deviation_kind": (str, "Δc form: l2 (Eq. 5) or mean_abs (reference notebooks)"),
    "classifier_steps": (int, "attribute-classifier training steps (0: skip)"),
    "knn_k": (int, "latent neighbours per example"),
    "n_perm": (int, "permutations of each disparity test"),
    "disparity_reference": (str, "pairwise disparities against: 'largest' or a subgroup name"),
    "seed": (int, "the run's seed"),
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS

    p = subparsers.add_parser(
        "subgroups",
        help="subgroup robustness study (000): train, attack, evaluate, report",
        description=__doc__.split("\n\n")[0],
        epilog=exit_codes_epilog(),
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (resumed if present)")
    p.add_argument(
        "--preset",
        choices=sorted(SUBGROUP_PRESETS),
        default=None,
        help="named settings (default: the dataset's preset if any, else 'shapes')",
    )
    p.add_argument(
        "--replicates",
        type=int,
        default=1,
        help="run the whole study for this many consecutive seeds and test whether the runs "
        "rank the subgroups alike (default 1: one run)",
    )
    add_study_flags(p, _OVERRIDES)
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> Any:
    """The preset named by --preset (or by --dataset), with the flags that were given applied."""
    from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS

    preset = args.preset or (args.dataset if args.dataset in SUBGROUP_PRESETS else "shapes")
    return apply_flags(SUBGROUP_PRESETS[preset], flag_changes(args, _OVERRIDES))


def run(args: argparse.Namespace) -> int:
    """Runs the study; errors exit with the codes of ``EXIT_CODES`` and one message."""
    from vaerob_jax.studies.subgroups import run_subgroup_study, validate_config
    from vaerob_jax.studies.subgroups.replicates import replicate_seeds, run_replicates

    config = None

    def study() -> dict[str, Path]:
        nonlocal config
        config = build_config(args)
        validate_config(config)
        if args.replicates != 1:
            replicate_seeds(config, args.replicates)  # refuses a bad count before any run
            return run_replicates(
                config, args.out, args.replicates, fresh=args.fresh, progress=not args.quiet
            )
        return run_subgroup_study(config, args.out, fresh=args.fresh, progress=not args.quiet)

    code, paths = run_reporting_errors("subgroups", study)
    if paths is not None and config is not None:
        print(f"report: {paths['report']}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(config).items()))
    return code
