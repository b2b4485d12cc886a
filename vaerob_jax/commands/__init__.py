"""Subcommands of the ``vaerob`` CLI; each module exposes ``register(subparsers)``.

Shared here: comma-separated list parsing for flags, and how a command reports the errors a
user can fix, each with its own exit code (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ALL",
    "EXIT_CODES",
    "add_devices_flag",
    "add_study_flags",
    "add_study_parser",
    "apply_flags",
    "count_or_all",
    "exit_codes_epilog",
    "float_list",
    "flag_changes",
    "int_list",
    "run_reporting_errors",
    "run_study_command",
]

T = TypeVar("T")


def float_list(text: str) -> list[float]:
    """argparse type for '1,5,10'."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """argparse type for '0,1,2'."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one int, got {text!r}")
    return values


class _All:
    """The value of a count flag given as 'all': the config field becomes None (no limit)."""

    def __repr__(self) -> str:
        return "all"


#: What :func:`count_or_all` returns for 'all' / 'none'.
ALL = _All()


def count_or_all(text: str) -> int | _All:
    """argparse type for a count that may be 'all' (or 'none'): the whole split, no limit."""
    if text.strip().lower() in ("all", "none"):
        return ALL
    try:
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from err


def apply_flags(preset: Any, changes: dict[str, Any]) -> Any:
    """``preset`` with the flags' changes: None (flag not given) keeps the preset's value,
    :data:`ALL` sets the field to None (e.g. ``--n-test all``: the whole split)."""
    from vaerob_jax.studies.common import override

    config = override(preset, **{k: v for k, v in changes.items() if v is not ALL})
    unset = {k: None for k, v in changes.items() if v is ALL}
    return dataclasses.replace(config, **unset) if unset else config


def add_study_flags(parser: argparse.ArgumentParser, overrides: dict[str, tuple[Any, str]]) -> None:
    """Adds one flag per overridable config field (unset: None, the preset's value stays)
    plus --fresh, --quiet and --devices, the flags every study command has."""
    for name, (kind, text) in overrides.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard what the output folder holds for another config",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_devices_flag(parser)


def add_devices_flag(parser: argparse.ArgumentParser) -> None:
    """--devices N (``vaerob_jax.cli`` runs the command inside ``use_devices(N)``) and the
    multi-process flags (joined by :func:`vaerob_jax.sweeps.distributed.initialize` first)."""
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="split the models and examples over the first N local devices "
        "(default: all of them; one device runs the single-device programs)",
    )
    group = parser.add_argument_group(
        "several processes (hosts)",
        "run the same command on every host of a slice, each with its --process-id, and an "
        "output folder every host sees; the models and the cells are split between the "
        "processes and process 0 writes the tables and report (also read from "
        "VAEROB_COORDINATOR, VAEROB_NUM_PROCESSES, VAEROB_PROCESS_ID)",
    )
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port, or 'auto' on a TPU VM slice / SLURM "
        "(jax.distributed detects the rest)",
    )
    group.add_argument("--num-processes", type=int, default=None, metavar="P")
    group.add_argument("--process-id", type=int, default=None, metavar="I")


def flag_changes(args: argparse.Namespace, names: Any) -> dict[str, Any]:
    """The config changes the given flags ask for: lists become tuples (config fields are
    tuples) and a 'subgroups' value 'A,B' becomes the attribute tuple ('A', 'B')."""
    changes = {name: getattr(args, name) for name in names}
    for name, value in changes.items():
        if isinstance(value, list):
            changes[name] = tuple(value)
    subgroups = changes.get("subgroups")
    if isinstance(subgroups, str) and "," in subgroups:
        changes["subgroups"] = tuple(a.strip() for a in subgroups.split(","))
    return changes


#: Exit codes of every command (the README and ``--help`` epilogs quote them).
EXIT_CODES = {
    0: "success",
    1: "the output folder holds models trained with other settings",
    2: "bad settings or data, or an output folder holding results of another config",
    3: "a computation failed (an attack that never moved, a non-finite result); not stored",
    4: "the output folder cannot be used (a file, not writable) or another run holds it",
    5: "a checkpoint in the output folder is damaged (the message names the folder to remove)",
    130: "interrupted (Ctrl-C); what was finished is kept and the same command resumes",
}


def exit_codes_epilog() -> str:
    """The exit codes, as a ``--help`` epilog."""
    return "exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())


def run_reporting_errors(command: str, fn: Callable[[], T]) -> tuple[int, T | None]:
    """Runs ``fn`` and turns the errors a user can act on into one message and an exit code.

    Returns:
      (0, result), or (code, None) with the codes of :data:`EXIT_CODES`: 1 for a folder whose
      models were trained otherwise, 2 for bad settings, unprepared data or cells of another
      config, 3 for a computation that failed (nothing of it was stored as finished), 4 for
      an unusable or busy output folder, 5 for a damaged checkpoint, 130 for Ctrl-C (one line
      saying what was kept, no traceback).
    """
    from vaerob_jax.attacks import AttackFailedError
    from vaerob_jax.data import DatasetNotPreparedError
    from vaerob_jax.sweeps import (
        FingerprintMismatchError,
        NonFiniteResultError,
        OutputDirError,
        OutputLockedError,
    )
    from vaerob_jax.train import CheckpointCorruptError, CheckpointError

    try:
        return 0, fn()
    except KeyboardInterrupt as err:
        text = str(err) or "interrupted; finished work is kept and the same command resumes"
        print(f"vaerob {command}: {text}", file=sys.stderr)
        return 130, None
    except CheckpointCorruptError as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 5, None
    except CheckpointError as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 1, None
    except (AttackFailedError, NonFiniteResultError) as err:
        print(f"vaerob {command}: computation failed: {err}", file=sys.stderr)
        return 3, None
    except (OutputDirError, OutputLockedError) as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 4, None
    except (ValueError, DatasetNotPreparedError, FingerprintMismatchError) as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 2, None


def add_study_parser(
    subparsers: Any,
    name: str,
    help_text: str,
    doc: str,
    presets: Mapping[str, Any],
    default_preset: str,
    overrides: dict[str, tuple[Any, str]],
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A study subcommand: ``--out``, ``--preset`` (one of ``presets``), one flag per
    overridable config field, ``--fresh`` and ``--quiet``; the module docstring's first
    paragraph is its description."""
    p = subparsers.add_parser(
        name, help=help_text, description=doc.split("\n\n")[0], epilog=exit_codes_epilog()
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (resumed if present)")
    p.add_argument("--preset", choices=sorted(presets), default=default_preset)
    add_study_flags(p, overrides)
    p.set_defaults(func=func)
    return p


def run_study_command(
    name: str,
    args: argparse.Namespace,
    build_config: Callable[[argparse.Namespace], Any],
    validate: Callable[[Any], None],
    run_fn: Callable[..., dict[str, Path]],
    shown: Sequence[str] = ("report",),
) -> int:
    """Builds and validates the config, runs the study into ``args.out`` and prints the
    artefacts named in ``shown``; errors exit with the codes of :data:`EXIT_CODES`."""

    def study() -> dict[str, Path]:
        config = build_config(args)
        validate(config)
        return run_fn(config, args.out, fresh=args.fresh, progress=not args.quiet)

    code, paths = run_reporting_errors(name, study)
    if paths is not None:
        for key in shown:
            print(f"{key}: {paths[key]}")
    return code
