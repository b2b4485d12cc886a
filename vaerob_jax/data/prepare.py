"""One-time preparation of a TFDS dataset in the array_record format (needs TensorFlow).

Reading with ``tfds.data_source`` needs no TensorFlow, but building a dataset does. Run::

    pip install 'vaerob_jax[prepare]'
    python -m vaerob_jax.data.prepare celeb_a --data_dir /data/tfds

which is the same as ``tfds build celeb_a --file_format=array_record --data_dir /data/tfds``.
CelebA is downloaded from Google Drive, which often refuses with a quota error; then
download the files listed in :data:`CELEBA_MANUAL_FILES` by hand into
``<data_dir>/downloads/manual/`` (or pass ``--manual_dir``) and run the command again.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from vaerob_jax.data.tfds_sources import CELEBA_MANUAL_FILES, TFDS_DATASETS

__all__ = ["main", "prepare"]


class TensorFlowMissingError(RuntimeError):
    """Preparing a TFDS dataset needs TensorFlow, which is not installed."""


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> str:
    """Downloads and prepares ``name`` as array_record; returns the dataset directory.

    Raises:
      ValueError: ``name`` is not one of the TFDS datasets of vaerob_jax.
      TensorFlowMissingError: TensorFlow is not installed (says how to install it).
    """
    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown TFDS dataset {name!r}; choose one of {sorted(TFDS_DATASETS)}")
    if importlib.util.find_spec("tensorflow") is None:
        raise TensorFlowMissingError(
            "preparing a TFDS dataset needs TensorFlow (reading it later does not). Install it "
            "with:  pip install 'vaerob_jax[prepare]'  (or pip install tensorflow-cpu), then "
            f"run:  python -m vaerob_jax.data.prepare {name}"
        )
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = tfds.builder(
        TFDS_DATASETS[name].tfds_name, data_dir=data_dir, file_format="array_record"
    )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as err:
        if name == "celeb_a":
            raise RuntimeError(
                f"preparing CelebA failed ({type(err).__name__}: {str(err)[:300]}). The Google "
                "Drive download often hits its quota. Download these files by hand from "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: "
                f"{', '.join(CELEBA_MANUAL_FILES)} into <data_dir>/downloads/manual/ (or "
                "pass --manual_dir) and run this command again."
            ) from err
        raise
    return str(builder.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m vaerob_jax.data.prepare NAME [--data_dir D] [--manual_dir M]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(TFDS_DATASETS))
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--manual_dir", default=None, help="folder of hand-downloaded files")
    args = parser.parse_args(argv)
    try:
        path = prepare(args.name, args.data_dir, args.manual_dir)
    except (TensorFlowMissingError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"prepared {args.name} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
