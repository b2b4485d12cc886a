"""Several processes (hosts) on one study: who computes what, and how they meet.

A multi-host run is P copies of the same command, one per host, joined by
:func:`initialize` (``jax.distributed``). The work is split by *process*, not by one global
SPMD program, so no host ever waits on another inside a compiled step and a lost host costs
only its own unfinished work:

* **training** (:func:`vaerob_jax.train.train_grid`): process p trains the grid's models
  ``k ≡ p (mod P)`` on its own devices (model k of a grid is the same grid point trained
  alone, so the split changes nothing), checkpointing them in its own folder, and the
  processes then swap their trained stacks through the coordination service's key-value
  store (:func:`all_gather_trees`);
* **cells** (:func:`vaerob_jax.sweeps.run_grid` with ``shard=``): the grid's groups of cells
  are dealt round-robin; each process writes only its own cells to the result store (a
  folder every host sees: NFS, a GCS FUSE mount), and a rerun recomputes only the cells
  that are missing;
* **outputs**: after a :func:`barrier` the coordinator (process 0) reads every cell from the
  store and writes the tables, figures and report; the others wait for it.

Inside a process, its local devices form the ``'grid'`` mesh of
:mod:`vaerob_jax.sweeps.parallel` as in a single-host run.

Why not one global mesh: the model and example axes need no communication at all, so a
global program would buy nothing but coupling — every process would have to run every cell
in lockstep, and one lost host would stop the whole slice mid-step.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "DistributedSettings",
    "all_gather_trees",
    "barrier",
    "initialize",
    "is_coordinator",
    "lock_folder",
    "process_count",
    "process_index",
    "settings_from",
]

#: Environment variables read when the flags are not given.
ENV_COORDINATOR = "VAEROB_COORDINATOR"
ENV_NUM_PROCESSES = "VAEROB_NUM_PROCESSES"
ENV_PROCESS_ID = "VAEROB_PROCESS_ID"

#: How long a process waits for the others at a barrier (seconds); a study's slowest phase
#: (training, a share of the cells, the coordinator's outputs) must fit in it.
DEFAULT_BARRIER_TIMEOUT_S = 24 * 3600

_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_CALLS: dict[str, int] = {}


def _unique(name: str) -> str:
    """``name`` with a per-name call count: every process makes the same calls in the same
    order, so the n-th barrier / exchange of a name meets its n-th on every other process
    (the coordination service refuses to reuse a barrier or key)."""
    n = _CALLS.get(name, 0)
    _CALLS[name] = n + 1
    return f"{name}#{n}"


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """How this process joins a multi-process run (see :func:`settings_from`).

    Attributes:
      coordinator: 'host:port' of process 0's coordination service, or 'auto' (let
        ``jax.distributed`` detect a TPU VM slice, SLURM or Open MPI), or None (one process).
      num_processes: P, or None with 'auto'.
      process_id: this process's index in 0..P-1, or None with 'auto'.
      heartbeat_timeout_s: after how long without a heartbeat a process counts as lost.
    """

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    heartbeat_timeout_s: int = 100

    @property
    def single(self) -> bool:
        """One process: nothing to join."""
        return self.coordinator is None


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an integer, got {value!r}") from err


def settings_from(
    coordinator: str | None = None,
    num_processes: int | str | None = None,
    process_id: int | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    heartbeat_timeout_s: int = 100,
) -> DistributedSettings:
    """Checked settings from arguments, falling back to ``VAEROB_COORDINATOR``,
    ``VAEROB_NUM_PROCESSES`` and ``VAEROB_PROCESS_ID``.

    One process (nothing given, or P = 1) needs no coordinator. ``coordinator='auto'`` leaves
    P and the index to ``jax.distributed``'s cluster detection (TPU VM metadata, SLURM, Open
    MPI). Otherwise all three are needed.

    Raises:
      ValueError: a missing or malformed setting, named, before anything starts.
    """
    env = os.environ if env is None else env
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    num = _int_or_none(
        num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES),
        "num_processes (--num-processes / VAEROB_NUM_PROCESSES)",
    )
    pid = _int_or_none(
        process_id if process_id is not None else env.get(ENV_PROCESS_ID),
        "process_id (--process-id / VAEROB_PROCESS_ID)",
    )
    if heartbeat_timeout_s < 1:
        raise ValueError(f"heartbeat_timeout_s must be >= 1, got {heartbeat_timeout_s}")
    if coordinator == "auto":
        if num is not None or pid is not None:
            raise ValueError(
                "coordinator 'auto' detects the number of processes and this process's index; "
                "do not also give them"
            )
        return DistributedSettings("auto", None, None, heartbeat_timeout_s)
    if coordinator is None:
        if num not in (None, 1) or pid not in (None, 0):
            raise ValueError(
                f"num_processes={num}, process_id={pid} need a coordinator address "
                f"(--coordinator HOST:PORT or {ENV_COORDINATOR}); it is process 0's host"
            )
        return DistributedSettings(None, None, None, heartbeat_timeout_s)
    if not _ADDRESS.match(coordinator):
        raise ValueError(f"coordinator must be 'HOST:PORT' or 'auto', got {coordinator!r}")
    if num is None or pid is None:
        missing = [n for n, v in (("num_processes", num), ("process_id", pid)) if v is None]
        raise ValueError(
            f"a coordinator ({coordinator}) needs {' and '.join(missing)} too "
            f"(--num-processes / --process-id or {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID})"
        )
    if num < 1:
        raise ValueError(f"num_processes must be >= 1, got {num}")
    if not 0 <= pid < num:
        raise ValueError(f"process_id must be in 0..{num - 1} for {num} processes, got {pid}")
    if num == 1:
        return DistributedSettings(None, None, None, heartbeat_timeout_s)
    return DistributedSettings(coordinator, num, pid, heartbeat_timeout_s)


def initialize(settings: DistributedSettings) -> None:
    """Joins the run ``settings`` describe (``jax.distributed.initialize``); one process: no-op.

    Call it before anything touches a JAX device. Idempotent for the same settings.
    """
    if settings.single:
        return
    from jax._src import distributed as _dist

    if _dist.global_state.client is not None:
        return
    if settings.coordinator == "auto":
        jax.distributed.initialize(heartbeat_timeout_seconds=settings.heartbeat_timeout_s)
    else:
        jax.distributed.initialize(
            settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
        )


def process_index() -> int:
    """This process's index (0 without a multi-process run)."""
    return int(jax.process_index())


def process_count() -> int:
    """Number of processes of the run (1 without one)."""
    return int(jax.process_count())


def is_coordinator() -> bool:
    """Whether this process writes the shared outputs (process 0)."""
    return process_index() == 0


def lock_folder(out: Path) -> Path:
    """The folder whose lock this process holds while it runs into ``out``: ``out`` for the
    coordinator (a second run into the folder is refused), ``out/processes/<index>`` for the
    others (so a second copy of one process is refused too)."""
    return out if is_coordinator() else out / "processes" / str(process_index())


def _client() -> Any:
    from jax._src import distributed as _dist

    client = _dist.global_state.client
    if client is None:
        raise RuntimeError(
            "no multi-process run: call vaerob_jax.sweeps.distributed.initialize first"
        )
    return client


def barrier(name: str, timeout_s: float = DEFAULT_BARRIER_TIMEOUT_S) -> None:
    """Waits until every process reaches the barrier ``name`` (no-op for one process).

    Raises:
      RuntimeError: a process did not arrive within ``timeout_s`` (lost, or still busy);
        the message names the barrier.
    """
    if process_count() == 1:
        return
    try:
        _client().wait_at_barrier(_unique(f"vaerob/barrier/{name}"), int(timeout_s * 1000))
    except Exception as err:  # the client raises XlaRuntimeError (deadline, lost task)
        raise RuntimeError(
            f"process {process_index()} of {process_count()}: not every process reached "
            f"{name!r} within {timeout_s:.0f}s ({type(err).__name__}: {str(err)[:300]}); "
            "rerun the same command on every host: finished work is kept"
        ) from err


def _tree_bytes(tree: Any) -> bytes:
    buf = io.BytesIO()
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
    np.savez(buf, *leaves)
    return buf.getvalue()


def _bytes_tree(blob: bytes, like: Any) -> Any:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    expected, treedef = jax.tree.flatten(like)
    if len(expected) != len(leaves):
        raise ValueError(f"a process sent {len(leaves)} leaves, expected {len(expected)}")
    return jax.tree.unflatten(treedef, leaves)


def all_gather_trees(
    name: str, tree: Any, timeout_s: float = DEFAULT_BARRIER_TIMEOUT_S
) -> list[Any]:
    """Every process's ``tree`` (host numpy leaves), in process order.

    Goes through the coordination service's key-value store (no device collective), so it
    works between processes on any backend. The trees must share one structure (their leaves
    may differ in shape, e.g. stacks of different numbers of models). One process: ``[tree]``.
    """
    if process_count() == 1:
        return [jax.tree.map(np.asarray, tree)]
    client = _client()
    me = process_index()
    name = _unique(f"vaerob/gather/{name}")
    client.key_value_set_bytes(f"{name}/{me}", _tree_bytes(tree))
    out = []
    for p in range(process_count()):
        if p == me:
            out.append(jax.tree.map(np.asarray, tree))
            continue
        try:
            blob = client.blocking_key_value_get_bytes(f"{name}/{p}", int(timeout_s * 1000))
        except Exception as err:
            raise RuntimeError(
                f"process {me}: process {p} did not send {name!r} within {timeout_s:.0f}s "
                f"({type(err).__name__}: {str(err)[:300]})"
            ) from err
        out.append(_bytes_tree(blob, tree))
    return out
