"""Datasets as arrays with protected attributes and intersectional subgroups (Eq. 1 of 000).

``load(name, split, image_size=...)`` returns a :class:`Dataset`: float32 NHWC images in
[0, 1], boolean protected attributes by name, int32 subgroup ids with readable names. TFDS
datasets are read with ``tfds.data_source`` (no TensorFlow); ``shapes`` and ``digits`` need no
files. :func:`sample_per_subgroup` draws n examples per subgroup from a key.
"""

from vaerob_jax.data.dataset import Dataset, RawData
from vaerob_jax.data.digits import load_digits_dataset
from vaerob_jax.data.preprocess import centre_crop, resize_images, to_unit_float
from vaerob_jax.data.registry import (
    LABEL_SUBGROUPS,
    DatasetEntry,
    available_datasets,
    load,
    register_dataset,
    size_kwargs,
    subgroup_presets,
)
from vaerob_jax.data.sampler import as_key, sample_per_subgroup
from vaerob_jax.data.shapes import CELEBA_SHARES, SUBGROUP_ORDER, load_shapes, render_faces
from vaerob_jax.data.subgroups import (
    CELEBA_SUBGROUPS,
    Protected,
    SubgroupSpec,
    as_spec,
    make_subgroups,
)
from vaerob_jax.data.tfds_sources import (
    CELEBA_MANUAL_FILES,
    TFDS_DATASETS,
    DatasetNotPreparedError,
    load_tfds,
    open_source,
)
from vaerob_jax.data.utkface import load_utkface
from vaerob_jax.data.validate import check_eps, check_images

__all__ = [
    "CELEBA_MANUAL_FILES",
    "CELEBA_SHARES",
    "CELEBA_SUBGROUPS",
    "LABEL_SUBGROUPS",
    "SUBGROUP_ORDER",
    "TFDS_DATASETS",
    "Dataset",
    "DatasetEntry",
    "DatasetNotPreparedError",
    "Protected",
    "RawData",
    "SubgroupSpec",
    "as_key",
    "as_spec",
    "available_datasets",
    "centre_crop",
    "check_eps",
    "check_images",
    "load",
    "load_digits_dataset",
    "load_shapes",
    "load_tfds",
    "load_utkface",
    "make_subgroups",
    "open_source",
    "register_dataset",
    "render_faces",
    "resize_images",
    "sample_per_subgroup",
    "size_kwargs",
    "subgroup_presets",
    "to_unit_float",
]
