"""The ``vaerob`` console script: argparse subcommands built from a registry of modules.

Each module named in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
subparser and sets ``func(args) -> int`` as a default; the command turns its arguments into a
config and makes one library call (thin entry points, STYLE.md 7).

Example:
    $ vaerob train --dataset shapes --betas 1,5,10 --steps 500 --out runs/beta_grid
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "vaerob_jax.commands.train",
    "vaerob_jax.commands.subgroups",
    "vaerob_jax.commands.margins",
    "vaerob_jax.commands.fairness",
    "vaerob_jax.commands.dae",
    "vaerob_jax.commands.disentangle",
)


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per registered command module."""
    parser = argparse.ArgumentParser(
        prog="vaerob",
        description="Adversarial robustness of VAEs per subgroup, in compiled JAX programs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default ``sys.argv[1:]``), runs the command, returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    from vaerob_jax.runtime import tune_cpu
    from vaerob_jax.sweeps import distributed

    settings = None
    if hasattr(args, "devices"):
        try:  # refused before anything else happens
            settings = distributed.settings_from(
                args.coordinator, args.num_processes, args.process_id
            )
        except ValueError as err:
            parser.error(str(err))
    tune_cpu()  # before the command's first JAX computation (the XLA flag needs that)
    if settings is None:
        return int(args.func(args) or 0)
    from vaerob_jax.sweeps.parallel import device_mesh, use_devices

    distributed.initialize(settings)  # joins a multi-process run before any device is touched
    try:
        mesh = device_mesh(args.devices)
    except ValueError as err:
        parser.error(f"--devices: {err}")
    with use_devices(mesh):  # every study's training grid and attacks split over it
        return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
