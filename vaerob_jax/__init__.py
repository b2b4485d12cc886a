"""vaerob_jax: adversarial robustness of autoencoders per intersectional subgroup, in JAX.

Subpackages (each re-exports its public names with ``__all__``):
  data        datasets, intersectional subgroups, seeded samplers
  models      VAEs and classifiers as pure functions over params pytrees
  objectives  batch-level training losses (β-ELBO, Eq. 2 of 000; cross-entropy; inner steps)
  attacks     composable, vmapped maximum-damage attacks (Eq. 4 of 000, Eq. 5 of 001)
  robustness  Δc, summaries, neighbourhoods, r-robustness, Jacobian bounds, margins (001),
              MS-SSIM (003), natural / boundary / robust errors (004)
  fairness    004's Gaussian-mixture theory, theorem checks, sampled mixtures
  train       one grid trainer for every model family, checkpoints, metrics
  sweeps      resumable grid execution, tidy tables
  report      figures and Markdown reports
  studies     end-to-end studies behind ``vaerob subgroups`` and ``vaerob margins``
"""

from vaerob_jax import (
    attacks,
    data,
    fairness,
    models,
    objectives,
    report,
    robustness,
    studies,
    sweeps,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "attacks",
    "data",
    "fairness",
    "models",
    "objectives",
    "report",
    "robustness",
    "studies",
    "sweeps",
    "train",
]
