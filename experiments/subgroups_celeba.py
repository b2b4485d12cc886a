"""The paper's setting of 000 on CelebA (prepared TFDS data; for a GPU/TPU machine).

Prepare once (needs TensorFlow, see the README's Data section):
    pip install -e '.[prepare]' && python -m vaerob_jax.data.prepare celeb_a
Run:
    vaerob subgroups --preset celeb_a --out results/celeba

Settings that differ from the default study (REFERENCE_NOTES 000): 64×64 images, the reference
architecture ``ref64`` with latent 256, Adam 1e-4 for 50,000 steps, ε ∈ {0.05, 0.094, 0.15}
(0.094 is the reference code's c), 100-step PGD, 60 examples per subgroup, classifiers trained
for 5,000 steps. Expected: the same tables and figures as the main job, on CelebA's
young-women / young-men / old-women / old-men subgroups. Not run on this project's CPU.
"""

from __future__ import annotations

from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS, SubgroupStudyConfig

__all__ = ["get_config"]


def get_config() -> SubgroupStudyConfig:
    """The 'celeb_a' preset of ``vaerob subgroups``."""
    return SUBGROUP_PRESETS["celeb_a"]
