"""Grid axes on a device mesh: the sample axis of an attack, the model axis of a training grid.

One 1-D mesh, axis ``'grid'``, over the devices a run is given. Each compiled program is a
``vmap`` over independent problems (examples, models), so laying that axis over the mesh with
a :class:`~jax.sharding.NamedSharding` and letting ``jit``'s partitioner split the program
needs no collective at all: every device runs the same program on its slice. That is why
this layer shards arguments (``NamedSharding`` with ``Auto`` axes) instead of writing
per-device code with ``shard_map``: the single-device programs stay the programs, and
``jit`` keeps the one-compile-per-shape promise.

* :func:`device_mesh` builds the mesh (all local devices, the first n, or given devices);
* :func:`use_devices` makes a mesh the active one for a block (the ``vaerob`` commands wrap a
  study in it from ``--devices``); :func:`active_mesh` / :func:`resolve_mesh` read it. A
  mesh of one device means the single-device path, unchanged;
* :func:`pad_axis` pads an axis to a multiple of the device count with copies of its last
  entry (a padded example or model computes a duplicate that is dropped; it cannot change a
  real entry, whose key is derived from its own index), :func:`shard_axis` and
  :func:`replicate` place a pytree, :func:`take_axis` drops the padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "AXIS",
    "active_mesh",
    "call_split",
    "device_mesh",
    "mesh_size",
    "pad_axis",
    "replicate",
    "resolve_mesh",
    "shard_axis",
    "take_axis",
    "use_devices",
]

AXIS = "grid"
_ACTIVE: list[Mesh] = []


def device_mesh(devices: int | Sequence[Any] | Mesh | None = None) -> Mesh:
    """A 1-D ``'grid'`` mesh.

    Args:
      devices: None (every local device), a count n (the first n local devices), a sequence
        of devices, or a mesh (returned as is).

    Raises:
      ValueError: a count outside 1..(local devices), an empty or repeated device list.
    """
    if isinstance(devices, Mesh):
        if devices.axis_names != (AXIS,):
            raise ValueError(f"a grid mesh has the one axis {AXIS!r}, got {devices.axis_names}")
        return devices
    local = jax.local_devices()
    if devices is None:
        chosen = list(local)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(local):
            raise ValueError(
                f"devices={int(devices)}: this process has {len(local)} local "
                f"{local[0].platform} device(s); ask for 1..{len(local)}"
            )
        chosen = list(local[: int(devices)])
    elif isinstance(devices, bool):
        raise TypeError("devices is a count, a device list, a mesh or None, not a bool")
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices is an empty list")
        if len({d.id for d in chosen}) != len(chosen):
            raise ValueError(f"devices lists a device twice: {[d.id for d in chosen]}")
    return jax.make_mesh((len(chosen),), (AXIS,), axis_types=(AxisType.Auto,), devices=chosen)


def mesh_size(mesh: Mesh | None) -> int:
    """Number of devices of ``mesh`` (1 for None)."""
    return 1 if mesh is None else int(mesh.devices.size)


def active_mesh() -> Mesh | None:
    """The mesh of the innermost :func:`use_devices` block, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def resolve_mesh(mesh: int | Sequence[Any] | Mesh | None = None) -> Mesh | None:
    """The mesh a computation shards over: ``mesh``, else the active one; None when that has
    one device (the single-device programs then run unchanged)."""
    mesh = active_mesh() if mesh is None else device_mesh(mesh)
    return mesh if mesh_size(mesh) > 1 else None


@contextlib.contextmanager
def use_devices(devices: int | Sequence[Any] | Mesh | None = None) -> Iterator[Mesh]:
    """Makes a :func:`device_mesh` the active mesh inside the block (nested blocks stack)."""
    mesh = device_mesh(devices)
    _ACTIVE.append(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.pop()


def _padded(leaf: Any, axis: int, size: int) -> Any:
    n = leaf.shape[axis]
    if n == size:
        return leaf
    idx = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
    return leaf[(slice(None),) * axis + (idx,)]  # a gather: works for PRNG key arrays too


def pad_axis(tree: Any, axis: int, multiple: int) -> tuple[Any, int]:
    """Pads ``axis`` of every leaf to a multiple of ``multiple`` with copies of the last entry.

    Returns:
      (padded tree, the original length). Leaves must agree on the axis's length.
    """
    sizes = {int(np.shape(leaf)[axis]) for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"leaves disagree on the length of axis {axis}: {sorted(sizes)}")
    n = sizes.pop()
    if n < 1:
        raise ValueError(f"axis {axis} is empty")
    size = -(-n // multiple) * multiple
    return jax.tree.map(lambda a: _padded(a, axis, size), tree), n


def _spec(axis: int) -> PartitionSpec:
    return PartitionSpec(*([None] * axis), AXIS)


def shard_axis(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
    """Places every leaf on ``mesh`` split along ``axis`` (whose length the mesh divides)."""
    for leaf in jax.tree.leaves(tree):
        if np.shape(leaf)[axis] % mesh_size(mesh):
            raise ValueError(
                f"axis {axis} of length {np.shape(leaf)[axis]} does not divide over "
                f"{mesh_size(mesh)} devices; pad it first (pad_axis)"
            )
    return jax.device_put(tree, NamedSharding(mesh, _spec(axis)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a full copy of every leaf on each device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def take_axis(tree: Any, axis: int, n: int) -> Any:
    """The first ``n`` entries of ``axis`` of every leaf (drops :func:`pad_axis`'s padding)."""

    def take(a: Any) -> Any:
        if a.shape[axis] == n:
            return a
        return a[(slice(None),) * axis + (slice(0, n),)]

    return jax.tree.map(take, tree)


def call_split(
    fn: Any,
    *args: Any,
    split: Sequence[int],
    out_axis: int = 0,
    mesh: Mesh | int | None = None,
) -> Any:
    """``fn(*args)`` with the arguments ``split`` divided over the devices along their leading
    axis (padded with copies of the last entry) and the others copied to each device; the
    padding is dropped from axis ``out_axis`` of every output leaf.

    For a jitted program vmapped over independent problems (models, pairs, examples). With no
    mesh of several devices (argument or active) it is just ``fn(*args)``.
    """
    grid_mesh = resolve_mesh(mesh)
    if grid_mesh is None:
        return fn(*args)
    parts, n = pad_axis(tuple(args[i] for i in split), 0, mesh_size(grid_mesh))
    placed = list(replicate(tuple(args), grid_mesh))
    for i, part in zip(split, shard_axis(parts, grid_mesh), strict=True):
        placed[i] = part
    return take_axis(fn(*placed), out_axis, n)
