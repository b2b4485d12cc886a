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
interrupted run resumes: finished models and (β, ε) cells are kept.

On a multi-host slice, the same command on every host, with an output folder all hosts see
(NFS, a GCS FUSE mount) and the data prepared on each (or on the shared folder):
    # TPU VM slice (jax.distributed reads the slice's metadata):
    gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
      "cd REPO && TFDS_DATA_DIR=/data/tfds .venv/bin/python \
       -m experiments.subgroups_celeba_devices --out /shared/celeba --coordinator auto"
    # GPU hosts: host 0's address and a free port, and each host's index
    .venv/bin/python -m experiments.subgroups_celeba_devices --out /shared/celeba \
        --coordinator HOST0:8476 --num-processes 2 --process-id I
Process p trains the β grid's models k ≡ p (mod P) and attacks its share of the cells on its
own devices; process 0 writes the tables and the report. A run that lost a host is resumed by
the same command on every host: only the missing models and cells are computed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaerob_jax.commands import add_devices_flag
from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, SubgroupStudyConfig

__all__ = ["get_config", "main"]


def get_config() -> SubgroupStudyConfig:
    """The 'celeb_a' preset of ``vaerob subgroups``."""
    return SUBGROUP_PRESETS["celeb_a"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed)")
    add_devices_flag(parser)  # --devices and the multi-process flags
    args = parser.parse_args(argv)
    from vaerob_jax.runtime import tune_cpu
    from vaerob_jax.sweeps import distributed

    try:  # refused before anything else happens
        settings = distributed.settings_from(args.coordinator, args.num_processes, args.process_id)
    except ValueError as err:
        parser.error(str(err))
    tune_cpu()  # a no-op for accelerators' kernels; before the backend exists
    import jax

    from vaerob_jax.studies.subgroups import run_subgroup_study
    from vaerob_jax.sweeps.parallel import device_mesh, mesh_size, use_devices

    distributed.initialize(settings)  # before the first device is touched
    try:
        mesh = device_mesh(args.devices)
    except ValueError as err:
        parser.error(f"--devices: {err}")
    with use_devices(mesh):
        print(
            f"process {distributed.process_index()} of {distributed.process_count()}: "
            f"{mesh_size(mesh)} {jax.devices()[0].platform} device(s) {mesh.devices.tolist()}"
        )
        paths = run_subgroup_study(get_config(), args.out)
    print(f"report: {paths['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
