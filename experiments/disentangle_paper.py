"""002's full setting for an accelerator: 50 λ, 10 pairs, 64×64, a 1200-1200 MLP, 20,000 steps of
batch 2,048, β-TCVAE at five β and Seatbelt / β-TCDLGM at L ∈ {2, 3, 4} × β ∈ {1, 4, 10}.

Run:
    vaerob disentangle --preset paper --out results/disentangle_paper
    vaerob disentangle --preset paper --dataset dsprites --data-dir ~/tensorflow_datasets \\
        --out results/disentangle_dsprites

Far beyond a 2-core CPU's budget (the default preset is the one measured in the README); every
model × pair × λ attack of a stack is still one batched L-BFGS program per mode.
"""

from __future__ import annotations

from vaerob_jax.studies.disentangle import DISENTANGLE_PRESETS, DisentangleStudyConfig

__all__ = ["get_config"]


def get_config() -> DisentangleStudyConfig:
    """The 'paper' preset of ``vaerob disentangle``."""
    return DISENTANGLE_PRESETS["paper"]
