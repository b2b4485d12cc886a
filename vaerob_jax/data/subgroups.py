"""Intersectional subgroups from binary protected attributes (Eq. 1 of 000).

Eq. 1 of 000 defines the collection of subgroups as every intersection
``sg = s^1 ∩ ... ∩ s^k`` with ``s^j ∈ {g^j, not g^j}``: k binary attributes give 2^k subgroups,
some possibly empty. :func:`make_subgroups` builds the integer id of every example's subgroup
and a readable name per id from any set of boolean attributes; the id is a mixed-radix code
with the first attribute most significant, so the order of names is the order of
``itertools.product`` over each attribute's levels.

Example:
    >>> ids, names = make_subgroups(ds.attributes, CELEBA_SUBGROUPS["age_gender"])
    >>> names
    ('young-women', 'young-men', 'old-women', 'old-men')
    >>> ids, names = make_subgroups(ds.attributes, ["Male", "Young"])   # no labels given
    >>> names
    ('Male=0|Young=0', 'Male=0|Young=1', 'Male=1|Young=0', 'Male=1|Young=1')
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

__all__ = [
    "CELEBA_SUBGROUPS",
    "Protected",
    "SubgroupSpec",
    "as_spec",
    "make_subgroups",
]


@dataclasses.dataclass(frozen=True)
class Protected:
    """One binary protected attribute and how its two groups are named.

    Attributes:
      attribute: key in ``Dataset.attributes`` (e.g. ``"Young"``).
      labels: ``(false_label, true_label)``, e.g. ``("women", "men")`` for ``Male``; ``None``
        names the groups ``"Male=0"``/``"Male=1"``.
      true_first: list the group where the attribute is true first (``young`` before ``old``
        as in 000's figures); it decides the ids, not the membership.
    """

    attribute: str
    labels: tuple[str, str] | None = None
    true_first: bool = False

    def level_names(self) -> tuple[str, str]:
        """Names of the two levels in id order."""
        false_name, true_name = self.labels or (f"{self.attribute}=0", f"{self.attribute}=1")
        return (true_name, false_name) if self.true_first else (false_name, true_name)


@dataclasses.dataclass(frozen=True)
class SubgroupSpec:
    """A subgroup definition: the protected attributes and optional extra conditions.

    Attributes:
      attributes: the attributes whose intersections form the subgroups (Eq. 1 of 000).
      require: per subgroup name, attribute values a member must also have; examples of that
        subgroup failing a condition get id -1 (in no subgroup). The public code of 000 uses
        this for its ``old`` groups, which also need ``Gray_Hair``.
    """

    attributes: tuple[Protected, ...]
    require: tuple[tuple[str, tuple[tuple[str, bool], ...]], ...] = ()

    def names(self) -> tuple[str, ...]:
        """Subgroup names in id order."""
        labelled = all(p.labels is not None for p in self.attributes)
        sep = "-" if labelled else "|"
        levels = [p.level_names() for p in self.attributes]
        return tuple(sep.join(combo) for combo in itertools.product(*levels))


SpecLike: TypeAlias = (
    SubgroupSpec
    | str
    | Protected
    | Sequence[str | Protected | tuple[str, tuple[str, str]]]
    | Mapping[str, tuple[str, str] | None]
)


def as_spec(spec: Any, require: Mapping[str, Mapping[str, bool]] | None = None) -> SubgroupSpec:
    """Normalises the accepted spellings of a subgroup definition into a :class:`SubgroupSpec`.

    Args:
      spec: a :class:`SubgroupSpec`; one attribute name or :class:`Protected` (a
        single-attribute grouping such as age alone); a sequence of names, :class:`Protected`
        or ``(name, (false_label, true_label))`` pairs; or a mapping
        ``name -> (false_label, true_label) | None``.
      require: extra per-subgroup conditions (see :class:`SubgroupSpec`); merged with those
        of ``spec``.

    Raises:
      ValueError: an empty spec, a repeated attribute, or a malformed entry.
    """
    if isinstance(spec, SubgroupSpec):
        base = spec
    else:
        items: list[Protected] = []
        if isinstance(spec, str | Protected):
            spec = [spec]
        if isinstance(spec, Mapping):
            spec = [(k, v) for k, v in spec.items()]
        if not isinstance(spec, Sequence):
            raise ValueError(f"cannot read a subgroup spec from {type(spec).__name__}: {spec!r}")
        for entry in spec:
            if isinstance(entry, Protected):
                items.append(entry)
            elif isinstance(entry, str):
                items.append(Protected(entry))
            elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
                labels = entry[1]
                if labels is not None and (
                    len(labels) != 2 or not all(isinstance(s, str) for s in labels)
                ):
                    raise ValueError(
                        f"labels of {entry[0]!r} must be (false_label, true_label); got {labels!r}"
                    )
                items.append(Protected(entry[0], None if labels is None else tuple(labels)))
            else:
                raise ValueError(f"cannot read subgroup spec entry {entry!r}")
        base = SubgroupSpec(tuple(items))
    if not base.attributes:
        raise ValueError("a subgroup spec needs at least one attribute")
    names = [p.attribute for p in base.attributes]
    dupes = sorted({a for a in names if names.count(a) > 1})
    if dupes:
        raise ValueError(f"attribute(s) {dupes} appear more than once in the subgroup spec")
    if require:
        extra = tuple((g, tuple(dict(c).items())) for g, c in require.items())
        base = dataclasses.replace(base, require=base.require + extra)
    return base


def _as_bool(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"attribute {name!r} must be 1-D (N,); got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    uniq = np.unique(arr)
    if not np.isin(uniq, [0, 1]).all():
        raise ValueError(
            f"attribute {name!r} must be binary (bool or 0/1); found values {uniq[:10].tolist()}"
        )
    return arr.astype(bool)


def _lookup(attributes: Mapping[str, Any], name: str, role: str) -> np.ndarray:
    if name not in attributes:
        raise ValueError(
            f"unknown attribute {name!r} in {role}; available attributes: "
            f"{sorted(attributes) or 'none (this dataset has no binary attributes)'}"
        )
    return _as_bool(name, attributes[name])


def make_subgroups(
    attributes: Mapping[str, Any],
    spec: Any,
    require: Mapping[str, Mapping[str, bool]] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Intersectional subgroup id of every example (Eq. 1 of 000).

    Args:
      attributes: boolean (N,) arrays by attribute name (0/1 integers are accepted).
      spec: which attributes form the subgroups and how they are named; any form accepted by
        :func:`as_spec` (e.g. ``CELEBA_SUBGROUPS["age_gender"]``, ``["Young", "Male"]``,
        ``{"Male": ("women", "men")}``).
      require: extra per-subgroup membership conditions, e.g.
        ``{"old-men": {"Gray_Hair": True}}``; failing examples get id -1.

    Returns:
      ``(ids, names)``: int32 (N,) ids in ``[-1, 2^k)``, and the 2^k subgroup names indexed by
      id (empty subgroups keep their name and id).

    Raises:
      ValueError: an unknown attribute (the message lists the available ones), an unknown
        subgroup name in ``require``, non-binary values or mismatched lengths.
    """
    spec = as_spec(spec, require)
    names = spec.names()
    k = len(spec.attributes)
    cols = [_lookup(attributes, p.attribute, "the subgroup spec") for p in spec.attributes]
    n = len(cols[0])
    for p, c in zip(spec.attributes, cols):
        if len(c) != n:
            raise ValueError(
                f"attribute {p.attribute!r} has {len(c)} entries, "
                f"{spec.attributes[0].attribute!r} has {n}"
            )
    ids = np.zeros(n, np.int32)
    for j, (p, c) in enumerate(zip(spec.attributes, cols)):
        level = ~c if p.true_first else c
        ids += level.astype(np.int32) << (k - 1 - j)
    for group, conditions in spec.require:
        if group not in names:
            raise ValueError(f"unknown subgroup {group!r} in require; subgroups: {list(names)}")
        gid = names.index(group)
        ok = np.ones(n, bool)
        for attr, value in conditions:
            col = _lookup(attributes, attr, f"the condition on {group!r}")
            if len(col) != n:
                raise ValueError(f"attribute {attr!r} has {len(col)} entries, expected {n}")
            ok &= col == bool(value)
        ids[(ids == gid) & ~ok] = -1
    return ids, names


_YOUNG = Protected("Young", ("old", "young"), true_first=True)
_MALE = Protected("Male", ("women", "men"))
_OLD_NEEDS_GRAY = (
    ("old-women", (("Gray_Hair", True),)),
    ("old-men", (("Gray_Hair", True),)),
)

#: Named subgroup definitions for CelebA-like data (``celeb_a`` and ``shapes``).
#: ``age_gender`` is the paper's Young x Male (the default); ``gray_hair`` is the public code
#: of 000, where the two ``old`` groups also need ``Gray_Hair`` (others -> id -1);
#: ``age`` and ``gender`` are the single-attribute groupings of 000's Fig. 3.
CELEBA_SUBGROUPS: dict[str, SubgroupSpec] = {
    "age_gender": SubgroupSpec((_YOUNG, _MALE)),
    "gray_hair": SubgroupSpec((_YOUNG, _MALE), require=_OLD_NEEDS_GRAY),
    "age": SubgroupSpec((_YOUNG,)),
    "gender": SubgroupSpec((_MALE,)),
}
