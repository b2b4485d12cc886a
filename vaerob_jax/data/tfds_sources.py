"""TFDS-backed datasets read with ``tfds.data_source`` (array_record; no TensorFlow needed).

Reading needs the dataset *prepared* once in the array_record format, which needs
TensorFlow (``pip install 'vaerob_jax[prepare]'`` then ``python -m vaerob_jax.data.prepare
NAME``). When it is not, :func:`open_source` fails at once with
:class:`DatasetNotPreparedError`, whose message gives those commands (and, for CelebA, the
manual-download route around the Google Drive quota failure).

Records are fetched in bulk (``__getitems__`` over a chunk of indices), stacked into arrays by
a per-dataset converter (plain functions of a list of record dicts, tested on hand-made
records), and cropped/resized chunk by chunk with one vectorised op.

Preprocessing per dataset (documented choices):
  * ``celeb_a``: the aligned 218x178 faces; by default the centred 178x178 square (rows
    20..197, i.e. the whole width, as DCGAN-style "resize 64 + centre crop 64" does) resized
    to 64x64 with antialiased linear interpolation. ``crop=148`` gives the tighter centred
    148x148 face crop used by many VAE codebases, ``crop=None`` squashes the full image.
  * ``mnist``, ``fashion_mnist`` (28x28x1), ``svhn_cropped``, ``cifar10`` (32x32x3): native size
    unless ``image_size`` is given (003 resizes MNIST to 32x32).
  * ``dsprites``: 64x64x1 binary images (stored as 0/1), all five factors kept (class indices as
    ``factors[<name>]``, real values as ``factors['value_<name>']``); TFDS stores the one
    ``train`` split in factor order, so the examples are shuffled with ``seed`` by default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vaerob_jax.data.dataset import RawData
from vaerob_jax.data.preprocess import centre_crop, resize_images, to_unit_float

__all__ = [
    "CELEBA_MANUAL_FILES",
    "TFDS_DATASETS",
    "DatasetNotPreparedError",
    "TfdsSpec",
    "convert_celeba_records",
    "convert_dsprites_records",
    "convert_label_records",
    "load_tfds",
    "not_prepared_message",
    "open_source",
    "select_indices",
]

#: Files TFDS's celeb_a builder looks for in ``<data_dir>/downloads/manual``.
CELEBA_MANUAL_FILES = (
    "img_align_celeba.zip",
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "list_landmarks_align_celeba.txt",
    "identity_CelebA.txt",
)

_CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DIGIT_NAMES = tuple(str(i) for i in range(10))
_DSPRITES_SHAPES = ("square", "ellipse", "heart")
_DSPRITES_FACTORS = ("shape", "scale", "orientation", "x_position", "y_position")


class DatasetNotPreparedError(RuntimeError):
    """A TFDS dataset is not prepared (as array_record) in the data directory."""


def not_prepared_message(name: str, split: str, data_dir: str | None, cause: str = "") -> str:
    """The help text of :class:`DatasetNotPreparedError` for dataset ``name``."""
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    dd = f" --data_dir {data_dir}" if data_dir else ""
    lines = [
        f"TFDS dataset {name!r} (split {split!r}) is not prepared in {where}.",
        "vaerob_jax reads TFDS data with tfds.data_source (no TensorFlow needed), which needs",
        "the dataset prepared once in the array_record format. To prepare it (needs TensorFlow):",
        "    pip install 'vaerob_jax[prepare]'",
        f"    python -m vaerob_jax.data.prepare {name}{dd}",
        f"or, equivalently:  tfds build {name} --file_format=array_record{dd}",
    ]
    if name == "celeb_a":
        manual = os.path.join(where, "downloads", "manual")
        lines += [
            "CelebA: TFDS downloads it from Google Drive, which often fails with a quota error",
            "('Too many users have viewed or downloaded this file recently'). Manual route:",
            "download these files by hand from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
            f"(Google Drive / Baidu links there): {', '.join(CELEBA_MANUAL_FILES)}",
            f"into {manual}/ and run the same build command; TFDS then uses them instead of",
            "downloading (checksums are verified).",
        ]
    if cause:
        lines.append(f"(underlying error: {cause.splitlines()[0][:300]})")
    return "\n".join(lines)


def open_source(name: str, split: str, data_dir: str | None = None) -> Any:
    """``tfds.data_source(name, split=split, download=False)``, failing clearly if unprepared.

    Raises:
      DatasetNotPreparedError: the dataset is not prepared as array_record under ``data_dir``
        (TFDS raises KeyError, NotImplementedError, FileNotFoundError, ... depending on
        what is missing; all are turned into this error, the original chained).
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415 (import cost only when used)

    try:
        return tfds.data_source(name, split=split, download=False, data_dir=data_dir)
    except (KeyError, NotImplementedError, OSError, ValueError, AssertionError) as err:
        raise DatasetNotPreparedError(
            not_prepared_message(name, split, data_dir, f"{type(err).__name__}: {err}")
        ) from err


def _get_many(source: Any, keys: list[int]) -> Sequence[dict[str, Any]]:
    """Fetches records in one batched call.

    ``tfds.testing.mock_data`` (4.9.x) installs ``__getitems__`` on its mock without binding
    ``self``, so the batched call raises TypeError there; fall back to single reads.
    """
    try:
        return source.__getitems__(keys)
    except TypeError:
        return [source[k] for k in keys]


def select_indices(n_total: int, limit: int | None, seed: int, shuffle: bool) -> np.ndarray:
    """Which records of a split to read: all, or a seeded choice of ``limit`` of them.

    Args:
      n_total: the split's size.
      limit: how many to read at most (``None`` = all).
      seed: seeds the choice (and the order when ``shuffle``).
      shuffle: return the indices in a seeded random order instead of ascending.

    Returns:
      int64 indices into the split.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    if limit is None or limit >= n_total:
        idx = np.arange(n_total, dtype=np.int64)
    else:
        idx = np.sort(rng.choice(n_total, size=limit, replace=False)).astype(np.int64)
    if shuffle:
        idx = idx[rng.permutation(len(idx))]
    return idx


def _stack_images(records: Sequence[dict[str, Any]]) -> np.ndarray:
    images = np.stack([np.asarray(r["image"]) for r in records])
    if images.ndim == 3:
        images = images[..., None]
    return images


def convert_label_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """mnist / fashion_mnist / svhn_cropped / cifar10 records -> uint8 images and labels."""
    return {
        "image": _stack_images(records),
        "label": np.asarray([r["label"] for r in records], np.int64),
    }


def convert_celeba_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """celeb_a records -> uint8 (N, 218, 178, 3) images and the 40 boolean attributes."""
    names = sorted(records[0]["attributes"])
    attrs = {a: np.asarray([r["attributes"][a] for r in records], bool) for a in names}
    return {"image": _stack_images(records), "attributes": attrs}


def convert_dsprites_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """dsprites records -> 0/1 images, factor classes (``label_*``) and values (``value_*``)."""
    out: dict[str, Any] = {"image": _stack_images(records)}
    for f in _DSPRITES_FACTORS:
        out[f"label_{f}"] = np.asarray([r[f"label_{f}"] for r in records], np.int64)
        out[f"value_{f}"] = np.asarray([r[f"value_{f}"] for r in records], np.float32)
    return out


def _parity_attributes(labels: np.ndarray) -> dict[str, np.ndarray]:
    return {"even": labels % 2 == 0, "large": labels >= 5}


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How one TFDS dataset becomes arrays.

    Attributes:
      tfds_name: the TFDS builder name.
      splits: the splits the dataset has.
      convert: records -> dict of stacked arrays (see the ``convert_*`` functions).
      native_size: (H, W) of the stored images.
      default_size: output side when ``image_size`` is None (after the crop).
      label_names: a name per class label, or None.
      max_value: the stored value of a fully-on pixel (255, or 1 for dSprites).
      shuffle: shuffle the examples with ``seed`` by default (dSprites: factor order).
      label_attributes: derive binary attributes from labels (digit datasets).
    """

    tfds_name: str
    splits: tuple[str, ...]
    convert: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]
    native_size: tuple[int, int]
    default_size: int | None = None
    label_names: tuple[str, ...] | None = None
    max_value: float = 255.0
    shuffle: bool = False
    label_attributes: bool = False


TFDS_DATASETS: dict[str, TfdsSpec] = {
    "celeb_a": TfdsSpec(
        "celeb_a", ("train", "validation", "test"), convert_celeba_records, (218, 178), 64
    ),
    "mnist": TfdsSpec(
        "mnist", ("train", "test"), convert_label_records, (28, 28), None, _DIGIT_NAMES,
        label_attributes=True,
    ),
    "fashion_mnist": TfdsSpec(
        "fashion_mnist", ("train", "test"), convert_label_records, (28, 28), None, _FASHION_NAMES
    ),
    "svhn_cropped": TfdsSpec(
        "svhn_cropped", ("train", "test", "extra"), convert_label_records, (32, 32), None,
        _DIGIT_NAMES, label_attributes=True,
    ),
    "cifar10": TfdsSpec(
        "cifar10", ("train", "test"), convert_label_records, (32, 32), None, _CIFAR10_NAMES
    ),
    "dsprites": TfdsSpec(
        "dsprites", ("train",), convert_dsprites_records, (64, 64), None, _DSPRITES_SHAPES,
        max_value=1.0, shuffle=True,
    ),
}  # fmt: skip


def _crop_box(crop: int | None, h: int, w: int) -> tuple[int, int] | None:
    if crop is None:
        return None
    side = int(crop)
    if not 1 <= side <= min(h, w):
        raise ValueError(f"crop must be a square side in [1, {min(h, w)}] for {h}x{w} images")
    return side, side


def load_tfds(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    data_dir: str | None = None,
    crop: int | None | str = "default",
    shuffle: bool | None = None,
    chunk_size: int = 512,
) -> RawData:
    """Reads a TFDS dataset into arrays (see the module docstring for the preprocessing).

    Args:
      name: a key of :data:`TFDS_DATASETS`.
      split: a split of that dataset (e.g. ``"train"``; CelebA also ``"validation"``).
      image_size: output side; ``None`` = the dataset default (CelebA 64, others native).
      limit: read a seeded random subset of at most this many records.
      seed: seeds that subset and, with ``shuffle``, the order.
      data_dir: the TFDS data directory (default ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).
      crop: CelebA's centred square crop side before resizing: 178 (default, the full width),
        148 (tight face), or ``None`` (no crop). Ignored (must stay "default" or None) for
        other datasets.
      shuffle: order the examples randomly by ``seed``; default True for dSprites only.
      chunk_size: records fetched and resized per batch (bounds the memory of raw images).

    Raises:
      ValueError: unknown split, bad limit/crop.
      DatasetNotPreparedError: the dataset is not prepared under ``data_dir``.
    """
    spec = TFDS_DATASETS[name]
    base_split = split.split("[")[0]
    if base_split not in spec.splits:
        raise ValueError(f"dataset {name!r} has splits {list(spec.splits)}; got {split!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    h0, w0 = spec.native_size
    if crop == "default":
        crop = 178 if name == "celeb_a" else None
    elif crop is not None and name != "celeb_a":
        raise ValueError(f"crop is only supported for celeb_a, not {name!r}")
    box = _crop_box(crop, h0, w0)  # type: ignore[arg-type]
    size = image_size if image_size is not None else spec.default_size
    if size is not None and size < 1:
        raise ValueError(f"image_size must be positive, got {size}")
    crop_hw = box or (h0, w0)
    out_hw = (size, size) if size is not None else crop_hw

    source = open_source(spec.tfds_name, split, data_dir)
    idx = select_indices(len(source), limit, seed, spec.shuffle if shuffle is None else shuffle)
    read_order = np.argsort(idx, kind="stable")  # read ascending (locality), place back
    images: np.ndarray | None = None
    columns: dict[str, np.ndarray] = {}
    attributes: dict[str, np.ndarray] = {}
    for start in range(0, len(idx), chunk_size):
        pos = read_order[start : start + chunk_size]
        recs = _get_many(source, [int(i) for i in idx[pos]])
        arrays = spec.convert(recs)
        raw = arrays.pop("image")
        if spec.max_value == 1.0:
            batch = (raw > 0).astype(np.float32)  # dSprites pixels are 0/1
        else:
            batch = to_unit_float(raw, spec.max_value)
        if box is not None:
            batch = centre_crop(batch, *box)
        batch = resize_images(batch, out_hw)
        if images is None:
            images = np.empty((len(idx), *out_hw, batch.shape[-1]), np.float32)
        images[pos] = batch
        for key, col in arrays.pop("attributes", {}).items():
            attributes.setdefault(key, np.empty(len(idx), bool))[pos] = col
        for key, col in arrays.items():
            columns.setdefault(key, np.empty(len(idx), col.dtype))[pos] = col
    if images is None:
        raise ValueError(f"no records selected from {name!r} split {split!r} (limit={limit})")

    labels: np.ndarray | None = None
    factors: dict[str, np.ndarray] | None = None
    if name == "dsprites":
        labels = columns["label_shape"]
        factors = {f: columns[f"label_{f}"] for f in _DSPRITES_FACTORS}
        factors.update({f"value_{f}": columns[f"value_{f}"] for f in _DSPRITES_FACTORS})
    elif "label" in columns:
        labels = columns["label"]
    if spec.label_attributes and labels is not None:
        attributes = _parity_attributes(labels)
    return RawData(
        images=images,
        attributes=attributes,
        example_ids=idx,
        labels=labels,
        label_names=spec.label_names,
        factors=factors,
    )
