"""Subcommands of the ``vaerob`` CLI; each module exposes ``register(subparsers)``.

Shared here: comma-separated list parsing for flags, and how a study command reports the
errors a user can fix (exit 2: bad settings or data; exit 1: an output folder trained with
other settings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["float_list", "int_list", "run_reporting_errors"]

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


def run_reporting_errors(command: str, fn: Callable[[], T]) -> tuple[int, T | None]:
    """Runs ``fn`` and turns the errors a user can act on into a message and an exit code.

    Returns:
      (0, result), or (2, None) for bad settings, unprepared data or an output folder holding
      cells of another config, or (1, None) for a folder whose models were trained otherwise.
    """
    from vaerob_jax.data import DatasetNotPreparedError
    from vaerob_jax.sweeps import FingerprintMismatchError
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
    except (ValueError, DatasetNotPreparedError, FingerprintMismatchError) as err:
        print(f"vaerob {command}: error: {err}", file=sys.stderr)
        return 2, None
