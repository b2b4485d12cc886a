"""The dataset registry: ``load(name, split, ...)`` -> :class:`Dataset` (docs/CONTRACTS.md).

Every registered loader returns images and attributes (:class:`RawData`); :func:`load` then
attaches the subgroups (Eq. 1 of 000): a named preset of that dataset (``subgroups="age"``),
any spec :func:`make_subgroups` accepts, or the dataset's default, and checks the images.

Example:
    >>> ds = load("shapes", "train", image_size=32, limit=512, seed=0)
    >>> ds.counts()
    {'young-women': ..., 'young-men': ..., 'old-women': ..., 'old-men': ...}
    >>> mnist = load("mnist", "test", image_size=32, data_dir="/data/tfds")
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vaerob_jax.data.dataset import Dataset, RawData
from vaerob_jax.data.digits import load_digits_dataset
from vaerob_jax.data.shapes import load_shapes
from vaerob_jax.data.subgroups import CELEBA_SUBGROUPS, make_subgroups
from vaerob_jax.data.tfds_sources import TFDS_DATASETS, load_tfds
from vaerob_jax.data.utkface import load_utkface
from vaerob_jax.data.validate import check_images

__all__ = [
    "LABEL_SUBGROUPS",
    "DatasetEntry",
    "available_datasets",
    "load",
    "register_dataset",
    "subgroup_presets",
]

#: Preset value meaning "one subgroup per class label".
LABEL_SUBGROUPS = "label"


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
      loader: ``loader(split=, image_size=, limit=, seed=, **kw) -> RawData``.
      presets: named subgroup definitions: a spec for :func:`make_subgroups` or
        :data:`LABEL_SUBGROUPS`.
      default_subgroups: the preset used when ``load(..., subgroups=None)``.
      description: one line for :func:`available_datasets` users.
    """

    loader: Callable[..., RawData]
    presets: Mapping[str, Any]
    default_subgroups: str
    description: str = ""


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    loader: Callable[..., RawData],
    presets: Mapping[str, Any],
    default_subgroups: str,
    description: str = "",
    *,
    overwrite: bool = False,
) -> None:
    """Adds a dataset to the registry (e.g. a user-folder loader).

    Raises:
      ValueError: the name is taken (without ``overwrite``) or the default is not a preset.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered")
    if default_subgroups not in presets:
        raise ValueError(f"default_subgroups {default_subgroups!r} is not in {list(presets)}")
    _REGISTRY[name] = DatasetEntry(loader, dict(presets), default_subgroups, description)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load`, sorted."""
    return tuple(sorted(_REGISTRY))


def _entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r}; available datasets: {list(available_datasets())}"
        )
    return _REGISTRY[name]


def subgroup_presets(name: str) -> tuple[str, ...]:
    """The named subgroup definitions of dataset ``name`` (default first)."""
    entry = _entry(name)
    rest = [p for p in entry.presets if p != entry.default_subgroups]
    return (entry.default_subgroups, *rest)


def size_kwargs(name: str, n: int | None) -> dict[str, int]:
    """The :func:`load` keyword that gives a split of dataset ``name`` ``n`` examples.

    Generated datasets (shapes, digits) take ``n=`` (how many are made); read datasets (TFDS,
    folders) take ``limit=`` (a seeded random subset of that many). ``None``: the whole split
    (no keyword). So one study setting such as ``n_test`` means the same for every dataset.
    """
    if n is None:
        return {}
    params = inspect.signature(_entry(name).loader).parameters
    return {"n": int(n)} if "n" in params else {"limit": int(n)}


def _label_subgroups(raw: RawData, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if raw.labels is None:
        raise ValueError(f"dataset {name!r} has no labels to form subgroups from")
    labels = np.asarray(raw.labels)
    names = raw.label_names or tuple(str(i) for i in range(int(labels.max(initial=-1)) + 1))
    return labels.astype(np.int32), tuple(names)


def _check_kwargs(name: str, loader: Callable[..., RawData], kw: Mapping[str, Any]) -> None:
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(f"dataset {name!r} does not accept {unknown}; its options: {allowed}")


def load(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    subgroups: Any = None,
    limit: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> Dataset:
    """Loads a registered dataset as float32 NHWC images in [0, 1] with subgroup ids.

    Args:
      name: one of :func:`available_datasets` (``shapes``, ``digits``, ``celeb_a``,
        ``mnist``, ``fashion_mnist``, ``svhn_cropped``, ``cifar10``, ``dsprites``).
      split: the split (``train``/``test``; CelebA also ``validation``).
      image_size: output side; ``None`` = the dataset default (CelebA/shapes 64, digits 32,
        others native).
      subgroups: ``None`` (the dataset default, e.g. Young x Male for CelebA), a preset name
        (:func:`subgroup_presets`, e.g. ``"gray_hair"``, ``"age"``, ``"label"``), or any spec
        accepted by :func:`make_subgroups`.
      limit: read at most this many examples (a seeded random subset).
      seed: seeds the subset, the order where shuffled, and generated data.
      **kw: dataset options, e.g. ``data_dir=``/``crop=`` (TFDS), ``n=``/``shares=``
        (shapes).

    Raises:
      ValueError: unknown dataset, option, split, preset or attribute; bad images.
      DatasetNotPreparedError: a TFDS dataset is not prepared (the message says how).
    """
    entry = _entry(name)
    _check_kwargs(name, entry.loader, kw)
    if isinstance(subgroups, str) and subgroups not in entry.presets:
        raise ValueError(
            f"unknown subgroup preset {subgroups!r} for {name!r}; presets: "
            f"{list(subgroup_presets(name))} (or pass a spec such as ['Young', 'Male'])"
        )
    raw = entry.loader(split=split, image_size=image_size, limit=limit, seed=seed, **kw)
    spec = (
        entry.presets[entry.default_subgroups if subgroups is None else subgroups]
        if (subgroups is None or isinstance(subgroups, str))
        else subgroups
    )
    if isinstance(spec, str) and spec == LABEL_SUBGROUPS:
        ids, names = _label_subgroups(raw, name)
    else:
        ids, names = make_subgroups(raw.attributes, spec)
    check_images(raw.images, name=f"{name}/{split} images", batched=True)
    return Dataset(
        name=name,
        split=split,
        images=raw.images,
        attributes=raw.attributes,
        subgroup_ids=ids,
        subgroup_names=names,
        example_ids=np.asarray(raw.example_ids, np.int64),
        labels=raw.labels,
        factors=raw.factors,
    )


_DIGIT_PRESETS = {
    LABEL_SUBGROUPS: LABEL_SUBGROUPS,
    "even": {"even": ("odd", "even")},
    "large": {"large": ("small", "large")},
    "even_large": {"even": ("odd", "even"), "large": ("small", "large")},
}

for _name, _spec in TFDS_DATASETS.items():
    if _name == "celeb_a":
        _presets: Mapping[str, Any] = CELEBA_SUBGROUPS
        _default = "age_gender"
    elif _spec.label_attributes:
        _presets, _default = _DIGIT_PRESETS, LABEL_SUBGROUPS
    else:
        _presets, _default = {LABEL_SUBGROUPS: LABEL_SUBGROUPS}, LABEL_SUBGROUPS
    register_dataset(
        _name,
        functools.partial(load_tfds, _name),
        _presets,
        _default,
        f"TFDS {_spec.tfds_name} via tfds.data_source (prepare once; no TensorFlow to read)",
    )
register_dataset(
    "shapes",
    load_shapes,
    CELEBA_SUBGROUPS,
    "age_gender",
    "procedural faces; Male/Young visibly encoded; CelebA Young x Male shares",
)
register_dataset(
    "digits",
    load_digits_dataset,
    _DIGIT_PRESETS,
    LABEL_SUBGROUPS,
    "scikit-learn 8x8 digits resized (default 32x32x1)",
)
register_dataset(
    "utkface",
    load_utkface,
    {LABEL_SUBGROUPS: LABEL_SUBGROUPS, "gender": {"male": ("women", "men")}},
    LABEL_SUBGROUPS,
    "UTKFace from a local folder (data_dir=); labels parsed from age_gender_race_date.jpg names",
)
