"""Subcommands of the ``vaerob`` CLI; each module exposes ``register(subparsers)``.

Shared here: comma-separated list parsing for flags, and how a study command reports the
errors a user can fix (exit 2: bad settings or data; exit 1: an output folder trained with
other settings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "add_study_flags",
    "float_list",
    "flag_changes",
    "int_list",
    "run_reporting_errors",
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


def add_study_flags(parser: argparse.ArgumentParser, overrides: dict[str, tuple[Any, str]]) -> None:
    """Adds one flag per overridable config field (unset: None, the preset's value stays)
    plus --fresh and --quiet, the flags every study command has."""
    for name, (kind, text) in overrides.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard what the output folder holds for another config",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


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


def run_reporting_errors(command: str, fn: Callable[[], T]) -> tuple[int, T | None]:
    """Runs ``fn`` and turns the errors a user can act on into a message and an exit code.

    Returns:
      (0, result), or (2, None) for bad settings, unprepared data or an output folder holding
      cells of another config, (1, None) for a folder whose models were trained otherwise,
      or (3, None) for a computation that failed (an attack that never moved, a non-finite
      result): nothing of it was stored as finished.
    """
    from vaerob_jax.attacks import AttackFailedError
    from vaerob_jax.data import DatasetNotPreparedError
    from vaerob_jax.sweeps import FingerprintMismatchError, NonFiniteResultError
    from vaerob_jax.train import CheckpointError

    try:
        return 0, fn()
    except CheckpointError as err:
        print(
            f"vaerob {command}: error: {err}\n(the output folder was trained with other "
            "settings: use another --out, or --fresh to discard what it holds)",
            file=sys.stderr,
        )
        return 1, None
    except (AttackFailedError, NonFiniteResultError) as err:
        print(f"vaerob {command}: computation failed: {err}", file=sys.stderr)
        return 3, None
    except (ValueError, DatasetNotPreparedError, FingerprintMismatchError) as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 2, None
