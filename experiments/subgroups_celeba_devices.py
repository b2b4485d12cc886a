"""The paper's 000 setting on CelebA over every device of one GPU machine or TPU VM.

The 'celeb_a' preset (64×64, the reference architecture ``ref64`` with latent 256, the paper's
β grid, ε ∈ {0.05, 0.094, 0.15}, 100-step PGD, 60 examples per subgroup), with the β grid's
models and the attacked examples split over the devices (``vaerob_jax.sweeps.parallel``).

Set up, once per machine (TFDS's CelebA needs TensorFlow to prepare, not to read):
    python3 -m venv .venv && .venv/bin/pip install -e '.[prepare]'
    .venv/bin/pip install -U 'jax[cuda12]'      # GPU machine; on a TPU VM: 'jax[tpu]'
    .venv/bin/python -m vaerob_jax.data.prepare celeb_a --data_dir /data/tfds
Run:
    TFDS_DATA_DIR=/data/tfds .venv/bin/python -m experiments.subgroups_celeba_devices \\
        --out results/celeba [--devices N]

(the same as ``vaerob subgroups --preset celeb_a --devices N --out results/celeba``). An
interrupted run resumes: finished models and (β, ε) cells are kept. One host only: a
multi-host slice (``jax.distributed``) is refused with a message, not run half-way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, SubgroupStudyConfig

__all__ = ["get_config", "main"]


def get_config() -> SubgroupStudyConfig:
    """The 'celeb_a' preset of ``vaerob subgroups``."""
    return SUBGROUP_PRESETS["celeb_a"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed)")
    parser.add_argument("--devices", type=int, default=None, help="default: all local ones")
    args = parser.parse_args(argv)
    from vaerob_jax.runtime import tune_cpu

    tune_cpu()  # a no-op for accelerators' kernels; before the backend exists
    import jax

    from vaerob_jax.studies.subgroups import run_subgroup_study
    from vaerob_jax.sweeps.parallel import device_mesh, mesh_size, use_devices

    if jax.process_count() > 1:
        raise SystemExit(
            f"{jax.process_count()} processes: several hosts are not supported yet; "
            "run on one host (all its local devices are used)"
        )
    try:
        mesh = device_mesh(args.devices)
    except ValueError as err:
        parser.error(f"--devices: {err}")
    with use_devices(mesh):
        print(f"{mesh_size(mesh)} {jax.devices()[0].platform} device(s): {mesh.devices.tolist()}")
        paths = run_subgroup_study(get_config(), args.out)
    print(f"report: {paths['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
