"""Orbax checkpoints for training grids, with a run fingerprint and per-array checksums.

Every checkpoint step holds three items (orbax ``Composite``):
  * ``state``: ``{'params', 'opt_state', 'step'}`` of the whole stack of K models (a pytree with
    a leading axis K), saved with ``StandardSave`` and restored exactly with ``StandardRestore``
    against the abstract state of the current run;
  * ``meta``: a JSON fingerprint of everything that fixes the training trajectory (model
    architecture, β/τ/seed grid, run key, optimiser settings, data shape and checksum);
  * ``checksums``: SHA-256 of every state leaf's dtype, shape and bytes
    (:func:`vaerob_jax.sweeps.leaf_digests`), computed from host copies of the arrays when the
    save starts (saves are asynchronous; the arrays are immutable, so the digests describe
    exactly what orbax writes).

Resuming compares the stored fingerprint with the current run's first and raises
:class:`CheckpointError` naming the directory and the differing fields. After the arrays are
read, their checksums are recomputed and compared: tensorstore's compressed chunks decode
silently when a bit flips inside them, so without this a damaged checkpoint resumed as a
changed (or NaN) model. A mismatch, like unreadable or truncated files, raises
:class:`CheckpointError` that names the step folder and the narrow fix (delete that folder to
resume from the previous checkpoint); it never blames the run's settings. Checkpoints written
before checksums existed load with a warning, unverified.

:func:`save_params` / :func:`load_params` store a trained stack of params (no optimiser state)
for packages that "train or load" models, with the same checksums (``params_checksums.json``).
"""

from __future__ import annotations

import collections
import json
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vaerob_jax.sweeps.digest import leaf_digests

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "GridCheckpointer",
    "checkpoint_steps",
    "checksum_mismatches",
    "load_params",
    "save_params",
]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable/corrupted, or written by a different run."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a run with other settings (its fingerprint differs)."""


class CheckpointCorruptError(CheckpointError):
    """The checkpoint's files are damaged: unreadable, incomplete, or failing their checksums.

    Not a settings problem: the fix is to delete the named step folder (see the message).
    """


_CHECKSUMS_ITEM = "checksums"
_CHECKSUMS_FORMAT = 1


def _checksum_record(state: Any) -> dict[str, Any]:
    return {
        "format": _CHECKSUMS_FORMAT,
        "algorithm": "sha256 of dtype, shape and C-order bytes per leaf",
        "leaves": leaf_digests(state),
    }


def checksum_mismatches(expected: Mapping[str, str], state: Any) -> list[str]:
    """Leaf paths whose recomputed checksum differs from ``expected`` (missing/extra included).

    A tree restored without a target can come back with other containers (orbax returns
    dicts for named tuples), so when the paths differ but the leaf count does not, the
    checksums are compared as a multiset: a changed byte still changes one of them.
    """
    actual = leaf_digests(state)
    if set(actual) != set(expected) and len(actual) == len(expected):
        unmatched = collections.Counter(expected.values())
        unmatched.subtract(actual.values())
        n_bad = sum(v for v in unmatched.values() if v > 0)
        return [f"<{n_bad} leaves>"] if n_bad else []
    names = sorted(set(expected) | set(actual))
    return [n for n in names if expected.get(n) != actual.get(n)]


def _damage_fix(where: Path, older: list[int]) -> str:
    """The narrow fix for one damaged step folder, for a CLI user."""
    if older:
        return (
            f"Delete the folder {where} to resume from the previous checkpoint "
            f"(step {older[-1]}); the other checkpoints are not affected."
        )
    return (
        f"Delete the folder {where}: it is the only checkpoint, so training restarts from "
        "step 0 (finished results elsewhere in the output folder are not affected)."
    )


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


def checkpoint_steps(directory: str | Path) -> list[int]:
    """The step folders present under a checkpoint ``directory`` (sorted; [] when none), read
    from the folder names alone (no orbax manager, nothing created or verified)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


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
        self.directory.mkdir(parents=True, exist_ok=True)  # orbax's create=True syncs processes
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False, multiprocessing_options=_this_process_only()
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest committed checkpoint step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save of ``state`` (call :meth:`wait` before reading it).

        The per-leaf checksums are computed here, synchronously, from host copies of the
        arrays, before orbax's background write starts.
        """
        checksums = _checksum_record(state)
        state = _host_local(state)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(self.fingerprint),
                **{_CHECKSUMS_ITEM: ocp.args.JsonSave(checksums)},
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
            raise CheckpointCorruptError(
                f"checkpoint {where} is damaged: its run metadata is unreadable "
                f"({type(err).__name__}: {str(err)[:200]}). " + self._fix(step)
            ) from err
        meta = restored["meta"]
        if not isinstance(meta, Mapping):
            raise CheckpointCorruptError(
                f"checkpoint {where} is damaged: its run metadata is malformed "
                f"({_short(meta)}). " + self._fix(step)
            )
        return dict(meta)

    def _fix(self, step: int) -> str:
        return _damage_fix(self.directory / str(step), [s for s in self.all_steps() if s < step])

    def _read_checksums(self, step: int) -> dict[str, str] | None:
        """The stored per-leaf checksums of ``step``; None for a checkpoint without them."""
        where = self.directory / str(step)
        if not (where / _CHECKSUMS_ITEM).exists():
            return None
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_CHECKSUMS_ITEM: ocp.args.JsonRestore()})
            )
            leaves = restored[_CHECKSUMS_ITEM]["leaves"]
            if not isinstance(leaves, Mapping) or not all(
                isinstance(v, str) for v in leaves.values()
            ):
                raise ValueError("'leaves' is not a mapping of path to digest")
        except Exception as err:
            raise CheckpointCorruptError(
                f"checkpoint {where} is damaged: its checksums are unreadable "
                f"({type(err).__name__}: {str(err)[:200]}). " + self._fix(step)
            ) from err
        return dict(leaves)

    def restore(
        self, abstract_state: Any, step: int | None = None, *, ignore: tuple[str, ...] = ()
    ) -> tuple[int, Any]:
        """Restores checkpoint ``step`` (default: the latest) after checking its fingerprint.

        Args:
          abstract_state: the state pytree of the current run (arrays or ShapeDtypeStructs).
          step: which checkpoint; None for the latest.
          ignore: top-level fingerprint fields not compared (the caller has decided about
            them, e.g. ``steps`` when a run is explicitly extended).

        Returns:
          (step, state) with the state's arrays restored bit-exactly, verified against the
          checksums stored at save time.

        Raises:
          CheckpointMismatchError: the checkpoint was written with other settings (the
            message lists the differing fields).
          CheckpointCorruptError: unreadable or incomplete files, or arrays whose bytes differ
            from their checksums (the message names the step folder to delete).
          CheckpointError: no checkpoint at all.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        where = self.directory / str(step)
        saved = self.read_fingerprint(step)
        diffs = fingerprint_differences(
            {k: v for k, v in saved.items() if k not in ignore},
            {k: v for k, v in self.fingerprint.items() if k not in ignore},
        )
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {where} was written by a different run, refusing to resume it:\n  "
                + "\n  ".join(diffs)
                + "\nUse another workdir (or delete this one) to train from scratch."
            )
        expected = self._read_checksums(step)
        target = _restore_target(abstract_state)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
        except Exception as err:
            raise CheckpointCorruptError(
                f"checkpoint {where} is corrupted or incomplete: its arrays could not be read "
                f"({type(err).__name__}: {str(err)[:300]}). " + self._fix(step)
            ) from err
        state = restored["state"]
        if expected is None:
            warnings.warn(
                f"checkpoint {where} has no checksums (written before they were added); "
                "its arrays are loaded unverified",
                stacklevel=2,
            )
        else:
            bad = checksum_mismatches(expected, state)
            if bad:
                raise CheckpointCorruptError(
                    f"checkpoint {where} is damaged: {len(bad)} of {len(expected)} arrays do not "
                    f"match the checksums recorded when it was saved ({', '.join(bad[:3])}"
                    f"{', ...' if len(bad) > 3 else ''}), e.g. after a disk error or a partial "
                    "copy. " + self._fix(step)
                )
        return step, state


_PARAMS_DIR = "params"
_META_FILE = "params_metadata.json"
_CHECKSUMS_FILE = "params_checksums.json"


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for a checkpoint that this process reads or writes alone.

    In a multi-process run (:mod:`vaerob_jax.sweeps.distributed`) every process keeps its own
    checkpoints (its share of a grid) or reads anyone's, and the coordinator writes the shared
    ones, so no save or restore waits on the other processes; one process: orbax's default.
    """
    if jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions()
    me = jax.process_index()
    _own_signal_keys(me)
    return ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process{me}"
    )


def _own_signal_keys(me: int) -> str | None:
    """Gives this process's orbax saves their own keys in the coordination service.

    Orbax's asynchronous save signals "step folder created" through keys named
    ``awaitable_signals_contract_<operation id>/...`` in the run's key-value store, shared by
    all processes, and a finished save deletes its operation's whole key folder. The
    operation id counts saves per process, so two processes saving their own checkpoints
    at once use the same keys: one process's cleanup could delete the key the other was still
    waiting for, which then hung until the coordination timeout (seen in CI: a two-process
    grid training hung past its test's 10-minute limit). Orbax appends the process index itself
    when it creates folders per process (``enable_per_process_directory_creation``); this does
    the same once per process, for every checkpointer, and returns the prefix in use (None for
    an orbax without these keys, whose saves do not signal through the store).
    """
    try:
        from orbax.checkpoint._src.futures import future as ocp_future  # private module
    except ImportError:
        return None
    contract = getattr(ocp_future, "AwaitableSignalsContract", None)
    if contract is None:
        return None
    suffix = f"_vaerob_process{me}"
    if not contract.awaitable_signals_contract_prefix.endswith(suffix):
        contract.awaitable_signals_contract_prefix += suffix
    return contract.awaitable_signals_contract_prefix


def _host_local(tree: Any) -> Any:
    """What this process saves: in a multi-process run orbax writes only global arrays, so a
    process's own arrays go to it as numpy arrays (the same bytes)."""
    return tree if jax.process_count() == 1 else jax.tree.map(np.asarray, tree)


def _restore_target(abstract: Any) -> Any:
    """Orbax's restore target for ``abstract``: shape/dtype structs, or in a multi-process run
    numpy arrays (restored on the host; orbax would want a global sharding otherwise)."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract)
    if jax.process_count() == 1:
        return target
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)


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
      The absolute directory (``params_checksums.json`` holds the per-leaf checksums that
      :func:`load_params` verifies). In a multi-process run only the coordinator (process
      0) writes: every process holds the same params there.
    """
    path = Path(directory).absolute()
    if jax.process_index() != 0:
        return path
    if (path / _PARAMS_DIR).exists():
        if not overwrite:
            raise CheckpointError(f"{path / _PARAMS_DIR} exists; pass overwrite=True to replace")
        shutil.rmtree(path / _PARAMS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(metadata or {}), indent=2, sort_keys=True)
    checksums = json.dumps(_checksum_record(params), indent=1, sort_keys=True)
    (path / _CHECKSUMS_FILE).unlink(missing_ok=True)
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
    checkpointer.save(path / _PARAMS_DIR, _host_local(params))
    checkpointer.wait_until_finished()
    checkpointer.close()
    (path / _CHECKSUMS_FILE).write_text(checksums)
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
      CheckpointError: missing, unreadable or mismatching files, or arrays whose bytes differ
        from the checksums written with them (the message names the folder).
    """
    path = Path(directory).absolute()
    if not (path / _PARAMS_DIR).is_dir() or not (path / _META_FILE).is_file():
        raise CheckpointError(
            f"no saved params in {path} (expected {_PARAMS_DIR}/ and {_META_FILE})"
        )
    try:
        metadata = json.loads((path / _META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointCorruptError(
            f"{path / _META_FILE} is unreadable: {err}; save the params again "
            "(save_params(..., overwrite=True))"
        ) from err
    target = None if like is None else _restore_target(like)
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
    try:
        params = checkpointer.restore(path / _PARAMS_DIR, target)
    except Exception as err:
        raise CheckpointError(
            f"params in {path / _PARAMS_DIR} could not be restored "
            f"({type(err).__name__}: {str(err)[:300]})"
        ) from err
    finally:
        checkpointer.close()
    checksums_path = path / _CHECKSUMS_FILE
    if not checksums_path.is_file():
        warnings.warn(
            f"{path} has no {_CHECKSUMS_FILE} (saved before checksums were added); its params "
            "are loaded unverified",
            stacklevel=2,
        )
        return params, metadata
    try:
        expected = json.loads(checksums_path.read_text())["leaves"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointCorruptError(
            f"{checksums_path} is unreadable ({err}); save the params again "
            "(save_params(..., overwrite=True))"
        ) from err
    bad = checksum_mismatches(expected, params)
    if bad:
        raise CheckpointCorruptError(
            f"params in {path / _PARAMS_DIR} are damaged: {len(bad)} of {len(expected)} arrays "
            f"do not match the checksums recorded when they were saved ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); save or train them again"
        )
    return params, metadata
