"""The in-memory dataset every loader returns (docs/CONTRACTS.md, "Data")."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Dataset", "RawData"]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images with protected attributes and intersectional subgroup ids (Eq. 1 of 000).

    Attributes:
      name: registry name (``"celeb_a"``, ``"shapes"``, ...).
      split: the split it was read from (``"train"``, ``"test"``, ...).
      images: float32 (N, H, W, C), pixels in [0, 1].
      attributes: protected (binary) attributes, bool (N,) arrays by name.
      subgroup_ids: int32 (N,); ``subgroup_names[i]`` names id ``i``; ``-1`` = the example
        belongs to no subgroup (e.g. an old person without grey hair under the reference
        code's ``gray_hair`` definition).
      subgroup_names: readable name of every subgroup, indexed by id.
      example_ids: int64 (N,), the index of each example in its split (stable across
        ``limit``/``seed`` choices, so results can be traced back to the source record).
      labels: int class labels where the dataset has them, else ``None``.
      factors: ground-truth generative factors by name (``shapes``, ``dsprites``), else
        ``None``.
    """

    name: str
    split: str
    images: np.ndarray
    attributes: dict[str, np.ndarray]
    subgroup_ids: np.ndarray
    subgroup_names: tuple[str, ...]
    example_ids: np.ndarray
    labels: np.ndarray | None = None
    factors: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4:
            raise ValueError(f"Dataset images must be (N, H, W, C); got {self.images.shape}")
        columns: dict[str, Any] = {
            "subgroup_ids": self.subgroup_ids,
            "example_ids": self.example_ids,
            "labels": self.labels,
            **{f"attributes[{k!r}]": v for k, v in self.attributes.items()},
            **{f"factors[{k!r}]": v for k, v in (self.factors or {}).items()},
        }
        for key, col in columns.items():
            if col is not None and len(col) != n:
                raise ValueError(f"Dataset {key} has length {len(col)}, images have {n}")
        ids = self.subgroup_ids
        if n and (ids.min() < -1 or ids.max() >= len(self.subgroup_names)):
            raise ValueError(
                f"subgroup_ids must lie in [-1, {len(self.subgroup_names) - 1}]; "
                f"found [{ids.min()}, {ids.max()}]"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.images.shape[1:]
        return (int(h), int(w), int(c))

    def counts(self) -> dict[str, int]:
        """Cardinality of every subgroup by name, in id order, zero-count subgroups included.

        Examples with id -1 (in no subgroup) are not counted.
        """
        k = len(self.subgroup_names)
        valid = self.subgroup_ids[self.subgroup_ids >= 0]
        counts = np.bincount(valid, minlength=k)
        return {name: int(c) for name, c in zip(self.subgroup_names, counts)}

    def take(self, idx: Any) -> Dataset:
        """The examples at ``idx`` (int indices, a boolean mask or a slice), same metadata."""
        if isinstance(idx, slice):
            sel: Any = idx
        else:
            sel = np.asarray(idx)
            if sel.dtype == bool:
                if sel.shape != (len(self),):
                    raise ValueError(f"boolean mask has shape {sel.shape}, expected ({len(self)},)")
            elif not np.issubdtype(sel.dtype, np.integer):
                if sel.size:
                    raise ValueError(f"take() needs integer indices or a mask, got {sel.dtype}")
                sel = sel.astype(np.int64)

        def pick(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
            return None if d is None else {k: v[sel] for k, v in d.items()}

        return dataclasses.replace(
            self,
            images=self.images[sel],
            attributes=pick(self.attributes) or {},
            subgroup_ids=self.subgroup_ids[sel],
            example_ids=self.example_ids[sel],
            labels=None if self.labels is None else self.labels[sel],
            factors=pick(self.factors),
        )

    def with_subgroups(self, ids: np.ndarray, names: tuple[str, ...]) -> Dataset:
        """A copy with another subgroup definition (e.g. from :func:`make_subgroups`)."""
        return dataclasses.replace(
            self, subgroup_ids=np.asarray(ids, np.int32), subgroup_names=tuple(names)
        )


@dataclasses.dataclass(frozen=True)
class RawData:
    """What a registered loader returns; :func:`vaerob_jax.data.load` adds the subgroups.

    Attributes:
      images: float32 (N, H, W, C) in [0, 1].
      attributes: bool (N,) arrays by name (may be empty).
      example_ids: int64 (N,) indices into the split.
      labels: int class labels or ``None``.
      label_names: a name per label value (enables label-defined subgroups).
      factors: ground-truth generative factors or ``None``.
    """

    images: np.ndarray
    attributes: dict[str, np.ndarray]
    example_ids: np.ndarray
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    factors: dict[str, np.ndarray] | None = None
