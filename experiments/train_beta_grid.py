"""β grid of 000 (β ∈ {1, 5, 10}) on the embedded ``shapes`` faces, scaled to a 2-core CPU.

All three β models train through the one grid trainer with the paper's Eq. 2 objective
(``objectives.beta_elbo``: KL summed over latent dims; ``--kl-reduction reference_mean`` gives
000's public-code form).

Run:
    vaerob train --dataset shapes --betas 1,5,10 --train-steps 500 --batch-size 64 \
        --backbone burgess64 --latent-dim 16 --out runs/beta_grid

Expected result: ``runs/beta_grid/`` holds ``config.json``, ``metrics.csv``, ``grid.json``,
``checkpoints/`` (steps 400 and 500) and ``loss_curves.png``. At initialisation the decoder
outputs ≈ 0.5, so every model's loss is ≈ 12288·ln 2 ≈ 8517 nats per 64x64x3 image; at lr 1e-4
it falls slowly (measured: 8517 -> 8512 over the first 30 steps), and the KL is ordered
β=1 > β=5 > β=10 from the first logged step on (measured at steps 10, 20, 30 on a 512-image
subset: 0.0045 > 0.0015 > 0.0012 nats at step 30). Rerunning the command loads the finished
checkpoint instead of training again. Grid training ran at ≈ 90 examples·models/s on the shared
2-core CPU (``python -m benchmarks.bench_train``), so the 500 steps x 3 models x 64 images take
≈ 18 minutes there; the full 500-step numbers have not been measured.

``get_config()`` returns the command's defaults; :func:`to_argv` turns a config into the
command line, e.g. ``vaerob_jax.cli.main(to_argv(get_config(), out="runs/beta_grid"))``.
"""

from __future__ import annotations

from typing import Any

from vaerob_jax.commands.train import DEFAULTS

__all__ = ["get_config", "to_argv"]


def get_config() -> dict[str, Any]:
    """The defaults of ``vaerob train`` for the β-grid experiment (a fresh dict each call)."""
    return dict(DEFAULTS)


def to_argv(config: dict[str, Any], out: str) -> list[str]:
    """``vaerob train`` arguments for ``config`` (None entries are left to the defaults)."""
    argv = ["train", "--out", str(out)]
    for name, value in config.items():
        if value is None:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        argv += [f"--{name.replace('_', '-')}", text]
    return argv
