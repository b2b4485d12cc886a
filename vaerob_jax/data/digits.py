"""``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, no download).

The 1,797 UCI digits (``sklearn.datasets.load_digits``, 16 grey levels) scaled to [0, 1] and
resized with antialiased linear interpolation to ``image_size`` (default 32, which fits the
``conv32`` and 32x32 MLP backbones; 16 or 8 for quicker tests), one channel. A seeded
random split: ``test`` is a fixed 20 % of the examples chosen by ``seed``,
``train`` the rest (``all`` = everything). Labels are kept; default subgroups are the digit
labels ("0".."9"); binary attributes ``even`` and ``large`` (label >= 5) allow Eq.-1
intersections (e.g. even x large).
"""

from __future__ import annotations

import numpy as np

from vaerob_jax.data.dataset import RawData
from vaerob_jax.data.preprocess import resize_images
from vaerob_jax.data.tfds_sources import select_indices

__all__ = ["DIGIT_NAMES", "load_digits_dataset"]

DIGIT_NAMES = tuple(str(i) for i in range(10))
_SPLITS = ("train", "test", "all")


def load_digits_dataset(
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
) -> RawData:
    """The ``digits`` dataset (see the module docstring).

    Args:
      split: ``"train"``, ``"test"`` or ``"all"``.
      image_size: output side (default 32).
      limit: keep a seeded random subset of at most this many examples.
      seed: seeds the train/test partition and the subset.
      test_fraction: share of the examples in ``test``.

    Returns:
      RawData with ``example_ids`` indexing sklearn's 1,797 digits.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 (lazy: sklearn import is slow)

    if split not in _SPLITS:
        raise ValueError(f"digits has splits {list(_SPLITS)}; got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    pixels = np.asarray(bunch.images, np.float32) / 16.0  # 0..16 grey levels
    labels_all = np.asarray(bunch.target, np.int64)
    n_all = len(labels_all)
    perm = np.random.default_rng(np.random.SeedSequence([seed, 11])).permutation(n_all)
    n_test = int(round(test_fraction * n_all))
    pool = {
        "test": np.sort(perm[:n_test]),
        "train": np.sort(perm[n_test:]),
        "all": np.arange(n_all),
    }[split]
    pool = pool[select_indices(len(pool), limit, seed, shuffle=False)]
    size = 32 if image_size is None else int(image_size)
    images = resize_images(pixels[pool, :, :, None], size)
    labels = labels_all[pool]
    return RawData(
        images=images,
        attributes={"even": labels % 2 == 0, "large": labels >= 5},
        example_ids=pool.astype(np.int64),
        labels=labels,
        label_names=DIGIT_NAMES,
    )
