"""Orbax checkpoints for training grids, with a run fingerprint that refuses silent resumes.

Every checkpoint step holds two items (orbax ``Composite``):
  * ``state``: ``{'params', 'opt_state', 'step'}`` of the whole stack of K models (a pytree with
    a leading axis K), saved with ``StandardSave`` and restored exactly with ``StandardRestore``
    against the abstract state of the current run;
  * ``meta``: a JSON fingerprint of everything that fixes the training trajectory (model
    architecture, β/τ/seed grid, run key, optimiser settings, data shape and checksum).

Resuming compares the stored fingerprint with the current run's first and raises
:class:`CheckpointError` naming the directory and the differing fields; unreadable or truncated
files also raise :class:`CheckpointError` rather than an obscure tensorstore message.

:func:`save_params` / :func:`load_params` store a trained stack of params (no optimiser state)
for packages that "train or load" models.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "GridCheckpointer", "load_params", "save_params"]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable/corrupted, or written by a different run."""


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable list of fields where two (nested) fingerprints differ."""
    a, b = _flatten(saved), _flatten(current)
    lines = []
    for name in sorted(set(a) | set(b)):
        if a.get(name, "<missing>") != b.get(name, "<missing>"):
            lines.append(
                f"{name}: checkpoint has {_short(a.get(name, '<missing>'))}, "
                f"this run has {_short(b.get(name, '<missing>'))}"
            )
    return lines


def _normalise(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    # JSON round trip so tuples/lists and numpy scalars compare like the stored copy.
    return json.loads(json.dumps(fingerprint))


class GridCheckpointer:
    """Saves and restores the training state of a grid under one directory.

    Args:
      directory: where the step folders go (created if missing).
      fingerprint: JSON-serialisable description of the run; a checkpoint whose stored
        fingerprint differs is refused.
      max_to_keep: number of checkpoints orbax keeps.
    """

    def __init__(self, directory: str | Path, fingerprint: Mapping[str, Any], max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self.fingerprint = _normalise(fingerprint)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest committed checkpoint step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save of ``state`` (call :meth:`wait` before reading it)."""
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.fingerprint)
            ),
            force=True,
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def read_fingerprint(self, step: int) -> dict[str, Any]:
        """The fingerprint stored with checkpoint ``step``."""
        where = self.directory / str(step)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {where} is unreadable (its run metadata could not be loaded: "
                f"{type(err).__name__}: {err}). Delete this step folder to resume from an older "
                "checkpoint, or use a fresh workdir."
            ) from err
        meta = restored["meta"]
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"checkpoint {where} holds malformed run metadata: {meta!r}")
        return dict(meta)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        """Restores checkpoint ``step`` (default: the latest) after checking its fingerprint.

        Args:
          abstract_state: the state pytree of the current run (arrays or ShapeDtypeStructs).
          step: which checkpoint; None for the latest.

        Returns:
          (step, state) with the state's arrays restored bit-exactly.

        Raises:
          CheckpointError: no checkpoint, a fingerprint mismatch, or unreadable files.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        where = self.directory / str(step)
        saved = self.read_fingerprint(step)
        diffs = fingerprint_differences(saved, self.fingerprint)
        if diffs:
            raise CheckpointError(
                f"checkpoint {where} was written by a different run, refusing to resume it:\n  "
                + "\n  ".join(diffs)
                + "\nUse another workdir (or delete this one) to train from scratch."
            )
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {where} is corrupted or incomplete: its arrays could not be read "
                f"({type(err).__name__}: {str(err)[:300]}). Delete this step folder to resume "
                "from an older checkpoint, or use a fresh workdir."
            ) from err
        return step, restored["state"]


_PARAMS_DIR = "params"
_META_FILE = "params_metadata.json"


def save_params(
    directory: str | Path,
    params: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Saves a (stacked) params pytree and JSON metadata under ``directory``.

    Args:
      directory: target folder; ``directory/params`` holds the arrays (orbax) and
        ``directory/params_metadata.json`` the metadata.
      params: pytree of arrays, e.g. a stack of K trained models.
      metadata: JSON-serialisable description (β grid, model spec, steps, ...).
      overwrite: replace an existing save instead of raising.

    Returns:
      The absolute directory.
    """
    path = Path(directory).absolute()
    if (path / _PARAMS_DIR).exists():
        if not overwrite:
            raise CheckpointError(f"{path / _PARAMS_DIR} exists; pass overwrite=True to replace")
        shutil.rmtree(path / _PARAMS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(metadata or {}), indent=2, sort_keys=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / _PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    checkpointer.close()
    (path / _META_FILE).write_text(text)
    return path


def load_params(directory: str | Path, like: Any = None) -> tuple[Any, dict[str, Any]]:
    """Loads what :func:`save_params` wrote.

    Args:
      directory: the folder given to :func:`save_params`.
      like: optional pytree (arrays or ShapeDtypeStructs) the params must match; restoring
        against it checks structure, shapes and dtypes.

    Returns:
      (params, metadata).

    Raises:
      CheckpointError: missing, unreadable or mismatching files (the message names the folder).
    """
    path = Path(directory).absolute()
    if not (path / _PARAMS_DIR).is_dir() or not (path / _META_FILE).is_file():
        raise CheckpointError(
            f"no saved params in {path} (expected {_PARAMS_DIR}/ and {_META_FILE})"
        )
    try:
        metadata = json.loads((path / _META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / _META_FILE} is unreadable: {err}") from err
    target = None if like is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    checkpointer = ocp.StandardCheckpointer()
    try:
        params = checkpointer.restore(path / _PARAMS_DIR, target)
    except Exception as err:
        raise CheckpointError(
            f"params in {path / _PARAMS_DIR} could not be restored "
            f"({type(err).__name__}: {str(err)[:300]})"
        ) from err
    finally:
        checkpointer.close()
    return params, metadata
