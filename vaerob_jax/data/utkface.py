"""``utkface``: a user-supplied UTKFace folder (Zhang et al. 2017; the faces of 004 §6).

UTKFace is not in TFDS and cannot be downloaded here, so the loader reads a folder the user
obtained. Labels come from the file names ``[age]_[gender]_[race]_[date&time].jpg`` (the
aligned-and-cropped release appends ``.chip.jpg``):

* age: an integer 0–116 years; binned [choice of spec 004 §6] into nine bins
  [0,10), [10,20), …, [70,80), 80+ (:data:`AGE_BIN_NAMES`);
* gender: 0 = male, 1 = female (:data:`GENDER_NAMES`);
* race: 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others (:data:`RACE_NAMES`; the dataset's
  codes, not the order 004 lists them in).

Some released files lack a field (e.g. ``61_1_20170109142408075.jpg`` has no race). Every file
of the folder whose name does not parse is reported — a :class:`UserWarning` with the count and
the first few names, and :attr:`UTKFaceIndex.malformed` — never silently dropped; a folder with
no parseable file raises ValueError. Images are decoded with Pillow, converted to RGB and
resized (bilinear, antialiased) to ``image_size`` (default 64; spec 004 uses 32 on CPU).

The label is one field (``label='race'`` by default: 004's ethnicity task, where label = group;
``'age_bin'`` for the age task, ``'gender'``); all fields are kept in ``RawData.factors``
(``age``, ``age_bin``, ``gender``, ``race``) so a group different from the label (Fig. 1: age
prediction, race groups) is one array away, and as binary attributes (``male``, and one
``race_<name>`` flag per race) for :func:`vaerob_jax.data.make_subgroups`.

Example:
    >>> ds = load("utkface", "train", image_size=32, data_dir="~/data/UTKFace")
    >>> ds.subgroup_names     # label subgroups: ('White', 'Black', 'Asian', 'Indian', 'Others')
    >>> ds.factors["age_bin"]
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vaerob_jax.data.dataset import RawData
from vaerob_jax.data.tfds_sources import select_indices

__all__ = [
    "AGE_BIN_EDGES",
    "AGE_BIN_NAMES",
    "GENDER_NAMES",
    "LABEL_FIELDS",
    "RACE_NAMES",
    "UTKFaceIndex",
    "age_bin",
    "load_utkface",
    "parse_utkface_name",
    "scan_utkface",
]

#: Race codes of UTKFace file names, by code.
RACE_NAMES = ("White", "Black", "Asian", "Indian", "Others")
#: Gender codes of UTKFace file names, by code.
GENDER_NAMES = ("male", "female")
#: Lower edges of the nine age bins (the last bin is 80+).
AGE_BIN_EDGES = (0, 10, 20, 30, 40, 50, 60, 70, 80)
#: Names of the nine age bins.
AGE_BIN_NAMES = tuple(f"{a}-{a + 9}" for a in AGE_BIN_EDGES[:-1]) + ("80+",)
#: Fields that can be the label.
LABEL_FIELDS = {"race": RACE_NAMES, "age_bin": AGE_BIN_NAMES, "gender": GENDER_NAMES}

_SPLITS = ("train", "test", "all")
_NAME = re.compile(
    r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<date>\d+)"
    r"\.(?:jpg|jpeg|png)(?:\.chip\.jpg)?$",
    re.IGNORECASE,
)
_SHOWN = 5  # malformed names quoted in the warning


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) of a UTKFace file name, or None when it does not parse."""
    m = _NAME.match(name)
    if m is None or int(m["age"]) > 130:
        return None
    return int(m["age"]), int(m["gender"]), int(m["race"])


def age_bin(age: Any) -> np.ndarray:
    """Nine-bin index of ages (years): [0,10) -> 0, …, [70,80) -> 7, 80+ -> 8."""
    a = np.asarray(age)
    if np.any(a < 0):
        raise ValueError("ages must be >= 0")
    return (np.searchsorted(np.asarray(AGE_BIN_EDGES), a, side="right") - 1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class UTKFaceIndex:
    """The parseable files of a UTKFace folder (sorted by relative path) and the rest.

    Attributes:
      root: the folder.
      files: relative paths of the parseable image files.
      age, gender, race: int64 fields parsed from the names, one per file.
      malformed: relative paths of every other file found (reported, not read).
    """

    root: Path
    files: tuple[str, ...]
    age: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    malformed: tuple[str, ...]


def scan_utkface(data_dir: str | os.PathLike[str], *, recursive: bool = False) -> UTKFaceIndex:
    """Parses every file name of a UTKFace folder (no image is decoded).

    Raises:
      ValueError: the folder does not exist, or holds no parseable file.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"utkface data_dir {str(root)!r} is not a folder")
    paths = root.rglob("*") if recursive else root.iterdir()
    names = sorted(str(p.relative_to(root)) for p in paths if p.is_file())
    parsed, malformed = [], []
    for rel in names:
        fields = parse_utkface_name(Path(rel).name)
        if fields is None:
            malformed.append(rel)
        else:
            parsed.append((rel, *fields))
    if malformed:
        warnings.warn(
            f"utkface: {len(malformed)} file(s) in {str(root)!r} do not match "
            f"age_gender_race_date.jpg[.chip.jpg] and are not read, e.g. {malformed[:_SHOWN]}",
            UserWarning,
            stacklevel=2,
        )
    if not parsed:
        raise ValueError(
            f"utkface: no file in {str(root)!r} has a parseable name "
            f"(age_gender_race_date.jpg[.chip.jpg]); found {len(names)} file(s)"
            + (f", e.g. {names[:_SHOWN]}" if names else "")
            + ("" if recursive else "; pass recursive=True for nested part1/part2/... folders")
        )
    cols = list(zip(*parsed))
    return UTKFaceIndex(
        root=root,
        files=tuple(cols[0]),
        age=np.asarray(cols[1], np.int64),
        gender=np.asarray(cols[2], np.int64),
        race=np.asarray(cols[3], np.int64),
        malformed=tuple(malformed),
    )


def _read_images(root: Path, files: tuple[str, ...], size: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 (Pillow comes with matplotlib; imported on use)

    out = np.empty((len(files), size, size, 3), np.float32)
    for i, rel in enumerate(files):  # file decoding is inherently one file at a time
        try:
            with Image.open(root / rel) as im:
                rgb = im.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb, np.float32) / 255.0
        except OSError as err:
            raise ValueError(f"utkface: cannot decode image {str(root / rel)!r}: {err}") from err
    return out


def load_utkface(
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    label: str = "race",
    test_fraction: float = 0.2,
    recursive: bool = False,
) -> RawData:
    """The ``utkface`` dataset from a local folder (see the module docstring).

    Args:
      split: ``"train"``, ``"test"`` or ``"all"`` (a seeded ``test_fraction`` split: UTKFace
        has no official one).
      image_size: output side (default 64).
      limit: read at most this many images (a seeded subset, chosen before decoding).
      seed: seeds the split and the subset.
      data_dir: the folder of UTKFace images (required).
      label: the label field: ``'race'`` (default), ``'age_bin'`` or ``'gender'``.
      test_fraction: share of the files in ``test``.
      recursive: also read sub-folders (the in-the-wild release's part1/part2/part3).

    Returns:
      RawData with ``example_ids`` indexing the sorted parseable files of the folder.
    """
    if data_dir is None:
        raise ValueError("utkface needs data_dir= the folder of age_gender_race_date.jpg files")
    if split not in _SPLITS:
        raise ValueError(f"utkface has splits {list(_SPLITS)}; got {split!r}")
    if label not in LABEL_FIELDS:
        raise ValueError(f"utkface label must be one of {list(LABEL_FIELDS)}, got {label!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    size = 64 if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    index = scan_utkface(data_dir, recursive=recursive)
    n_all = len(index.files)
    perm = np.random.default_rng(np.random.SeedSequence([seed, 13])).permutation(n_all)
    n_test = int(round(test_fraction * n_all))
    pool = {
        "test": np.sort(perm[:n_test]),
        "train": np.sort(perm[n_test:]),
        "all": np.arange(n_all),
    }[split]
    pool = pool[select_indices(len(pool), limit, seed, shuffle=False)]
    fields = {
        "age": index.age[pool],
        "age_bin": age_bin(index.age[pool]),
        "gender": index.gender[pool],
        "race": index.race[pool],
    }
    attributes = {"male": fields["gender"] == 0}
    attributes.update({f"race_{name}": fields["race"] == r for r, name in enumerate(RACE_NAMES)})
    images = _read_images(index.root, tuple(index.files[i] for i in pool), size)
    return RawData(
        images=images,
        attributes=attributes,
        example_ids=pool.astype(np.int64),
        labels=fields[label],
        label_names=LABEL_FIELDS[label],
        factors=fields,
    )
