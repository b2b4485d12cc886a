"""Content digests of pytrees and files: what ties a stored result to the data behind it.

:func:`params_digest` names a set of model parameters by their content (every leaf's path,
dtype, shape and bytes), so a result computed from one set of models can be recognised, and
refused, when the models change: a retrained grid, a restored checkpoint, or a study whose
settings differ. The digest depends only on the values, never on the process, the device or
the Python objects holding them, so it is stable across runs and machines (for the same bytes).

:func:`leaf_digests` is the per-leaf form checkpoints store to verify their arrays on load, and
:func:`bytes_digest` the plain SHA-256 of a file's bytes used by the result store.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np

__all__ = ["bytes_digest", "leaf_digests", "params_digest", "stack_digests"]


def bytes_digest(data: bytes) -> str:
    """SHA-256 (64 hex digits) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _host_leaf(leaf: Any) -> tuple[str, np.ndarray]:
    """(dtype name, C-ordered host array) of one leaf; typed PRNG keys by their key data."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return f"key<{jax.random.key_impl(leaf)}>", np.asarray(jax.random.key_data(leaf))
    arr = np.asarray(jax.device_get(leaf))
    if arr.dtype == object:
        raise ValueError(f"cannot digest a leaf of object dtype ({type(leaf).__name__})")
    return arr.dtype.str, np.ascontiguousarray(arr)


def _leaf_hash(dtype: str, arr: np.ndarray) -> hashlib._Hash:
    h = hashlib.sha256()
    h.update(f"{dtype}|{list(arr.shape)}|".encode())
    h.update(arr.tobytes())
    return h


def leaf_digests(tree: Any) -> dict[str, str]:
    """SHA-256 of every leaf's dtype, shape and bytes, keyed by its path (``jax.tree_util.keystr``).

    Args:
      tree: a pytree of arrays (jax or numpy, any device), numpy/Python scalars or PRNG keys.

    Returns:
      ``{path: hex digest}`` in flattening order.

    Raises:
      ValueError: a leaf of object dtype.
    """
    out: dict[str, str] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype, arr = _host_leaf(leaf)
        out[jax.tree_util.keystr(path)] = _leaf_hash(dtype, arr).hexdigest()
    return out


def params_digest(params: Any) -> str:
    """One SHA-256 (64 hex digits) of a parameter pytree: leaf paths, dtypes, shapes and bytes.

    Two pytrees have the same digest exactly when they have the same structure (paths) and
    bit-identical leaves of the same dtype and shape, whether they live on a device or the
    host. Stable across processes; cheap next to any training (it hashes each byte once).

    Args:
      params: the model parameters (or any pytree of arrays), e.g. one model of a grid.

    Returns:
      The hex digest.
    """
    h = hashlib.sha256()
    for path, digest in leaf_digests(params).items():
        h.update(f"{path}={digest};".encode())
    return h.hexdigest()


def stack_digests(stacked: Any) -> list[str]:
    """:func:`params_digest` of each model of a stack (leaves with a leading model axis K).

    ``stack_digests(stack)[k] == params_digest(model k alone)``, so a cell computed from model
    k of a trained grid can be tied to exactly that model.

    Raises:
      ValueError: leaves without a common leading axis.
    """
    leaves, treedef = jax.tree.flatten(stacked)
    host = [np.asarray(jax.device_get(x)) for x in leaves]
    sizes = {x.shape[0] if x.ndim else -1 for x in host}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"a stack needs one leading model axis on every leaf, got leading sizes {sizes} "
            "(-1: a scalar leaf)"
        )
    (k,) = sizes
    return [params_digest(jax.tree.unflatten(treedef, [x[i] for x in host])) for i in range(k)]
