"""Configuration of the margin study of 001 (``vaerob margins``).

Model and training defaults equal those of the subgroup study, so its trained β grid can be
reused (``subgroup_study_dir``). Presets: 'shapes' (the default run), 'tiny' (tests).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from vaerob_jax import attacks as atk
from vaerob_jax import objectives
from vaerob_jax.data import available_datasets
from vaerob_jax.robustness import APPLY_TO, MARGIN_METHODS
from vaerob_jax.studies.common import config_fingerprint
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig
from vaerob_jax.train import make_grid

__all__ = [
    "MARGIN_COLUMNS",
    "MARGIN_PRESETS",
    "MARGIN_SUMMARY_COLUMNS",
    "MarginStudyConfig",
    "validate_margin_config",
]

BOXES: dict[str, tuple[float, float] | None] = {"pixel": (0.0, 1.0), "none": None}

MARGIN_COLUMNS = (
    "beta",
    "tau",
    "subgroup",
    "example_id",
    "sigma_min",
    "jac_fro",
    "p_r",
    "bound",
    "margin_estimate",
    "margin_bracket",
    "margin_bracket_rel",
)
EXTRA_COLUMNS = (
    "p_r_se",
    "bound_conservative",
    "bound_defined",
    "margin_low",
    "margin_high",
    "p_clean",
    "censored",
    "jac_fro_probe",
    "jac_fro_probe_se",
    "attacks",
    "attack_failed",
    "attack_nonfinite_steps",
    "model_digest",
)
MARGIN_SUMMARY_COLUMNS = (
    "beta",
    "tau",
    "subgroup",
    "n",
    "margin_median",
    "margin_iqr",
    "margin_mean",
    "bound_median",
    "bound_iqr",
    "bound_mean",
    "share_bound_defined",
    "share_bound_le_margin",
    "n_censored",
    "share_zero_margin",
)

# Settings that must agree with a subgroup study's config for its trained β grid to be reused.
TRAIN_FIELDS = (
    "dataset",
    "image_size",
    "backbone",
    "latent_dim",
    "likelihood",
    "betas",
    "kl_reduction",
    "train_steps",
    "batch_size",
    "learning_rate",
    "n_train",
    "seed",
)


_SG = SubgroupStudyConfig()


@dataclasses.dataclass(frozen=True)
class MarginStudyConfig:
    """The margin study of 001 (Theorem 1, Eq. 3-5, Figs. 6, 7, 9) on a β × τ grid.

    Model and training defaults equal those of the subgroup study (``SubgroupStudyConfig``) so
    its trained β grid can be reused (``subgroup_study_dir``), and the examples are drawn with
    the same key, so they are a subset of the subgroup study's attacked examples when
    ``max_per_subgroup`` is at most its ``n_per_subgroup`` (the join with its ``deviation.csv``
    then covers every margin row at τ = 0).

    ``r`` is the OUTPUT radius of 001 Eq. 2-3: ‖g(μ(x) + ησ(x)) − g(μ(x))‖₂ ≤ r over the
    decoder mean. 001 used r = 4 (Fig. 7) and 8 on 28×28 MNIST. On the default 32×32×3 shapes
    models the per-example median of ‖Δ(x)‖ is about 1.8 / 2.4 / 2.8 and its 90th percentile
    3.4 / 3.7 / 4.5 for β = 1 / 5 / 10 (measured on 32 test examples, 64 draws each), so the
    default r = 3 gives p_r of roughly 0.9 / 0.75 / 0.6: the bound is defined for most
    examples and Φ⁻¹(p_r) is rarely at its clipping cap (r = 6 gave p_r = 1 almost everywhere).
    ``r_max`` caps the input radius (the reference scanned up to 10).
    """

    dataset: str = "shapes"
    image_size: int = _SG.image_size
    subgroups: str | tuple[str, ...] = "age_gender"
    backbone: str = _SG.backbone
    latent_dim: int = _SG.latent_dim
    likelihood: str = "bernoulli"
    betas: tuple[float, ...] = _SG.betas
    # τ grid (001 Fig. 7 uses 0, 0.1, 0.5, 1); models are trained with σ + τ.
    taus: tuple[float, ...] = (0.0,)
    kl_reduction: str = "sum"
    train_steps: int = _SG.train_steps
    batch_size: int = _SG.batch_size
    learning_rate: float = _SG.learning_rate
    n_train: int | None = None
    # Size of the embedded data's evaluated split: the subgroup study's, so both draw the same
    # examples (TFDS data: keep None).
    n_test: int | None = _SG.n_test
    # Margin and bound (001 Eq. 2-4).
    r: float = 3.0
    m: float = 0.5
    n_samples: int = 32
    # The attack's constraint: 'pixel' keeps x + δ in [0, 1] (images stay images); 'none' is
    # Eq. 3 of 001 as written (the whole L2 ball), a margin at most as large.
    box: str = "pixel"
    # Confidence of the conservative bound (Clopper–Pearson lower limit of p_r).
    bound_level: float = 0.95
    # Margin search: 'logbisect' halves [r_max / log_range, r_max] in log radius, so the
    # bracket is the same relative width at every scale (1000^(1/2^8) - 1 = 2.7 % with 8
    # halvings; 'bisect' with 6 halvings of [0, 10] left ±0.078, ±20 % of a 0.4 margin).
    n_iter: int = 8
    r_max: float = 10.0
    method: str = "logbisect"
    log_range: float = 1e3
    apply_to: str = "mean"
    attack_steps: int = 10
    attack_rule: str = "sign"
    restarts: int = 1
    n_starts: int = 1
    # Convergence of the margin's attack (margin_attack_check.csv): on check_examples
    # examples per model, spread over the sample, the same search again with check_factor x
    # the attack steps and check_restarts restarts (same noise draws); 0 turns it off.
    check_examples: int = 16
    check_factor: int = 4
    check_restarts: int = 2
    n_probes: int = 4
    # Examples: None = every example of the chosen subgroups in the split.
    max_per_subgroup: int | None = 64  # the subgroup study's n_per_subgroup: Δc joins all
    # The subgroup study's split (000 §4: the training data), so its Δc joins these rows.
    split: str = _SG.sample_split
    chunk_size: int = 8  # examples per call of the compiled per-example program
    seed: int = 0
    subgroup_study_dir: str | None = None

    def fingerprint(self) -> str:
        return config_fingerprint(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MARGIN_PRESETS: dict[str, MarginStudyConfig] = {
    "shapes": MarginStudyConfig(),
    "tiny": MarginStudyConfig(
        image_size=32,
        backbone="mlp",  # compiles in half the time of conv32; the tests need no convs
        latent_dim=4,
        betas=(1.0, 5.0),
        n_train=256,
        n_test=None,
        train_steps=20,
        batch_size=32,
        r=2.0,
        n_samples=16,
        n_iter=3,
        r_max=3.0,
        attack_steps=2,
        n_probes=2,
        max_per_subgroup=2,
        chunk_size=3,
    ),
}


def validate_margin_config(config: MarginStudyConfig) -> None:
    """Cheap checks of a config, raising ValueError that names the offending field."""
    if config.box not in BOXES:
        raise ValueError(f"unknown box {config.box!r}; choose one of {tuple(BOXES)}")
    if not 0.0 < float(config.bound_level) < 1.0:
        raise ValueError(f"bound_level must be in (0, 1), got {config.bound_level}")
    if config.dataset not in available_datasets():
        raise ValueError(
            f"unknown dataset {config.dataset!r}; available: {', '.join(available_datasets())}"
        )
    if len(set(config.betas)) != len(config.betas) or len(set(config.taus)) != len(config.taus):
        raise ValueError(f"betas and taus must not repeat values: {config.betas}, {config.taus}")
    if len(config.betas) == 0 or len(config.taus) == 0:
        raise ValueError(f"betas and taus must be non-empty, got {config.betas}, {config.taus}")
    make_grid({"beta": config.betas, "tau": config.taus})  # finite numbers
    for name in ("betas", "taus"):
        if any(float(v) < 0 for v in getattr(config, name)):
            raise ValueError(f"{name} must be >= 0, got {list(getattr(config, name))}")
    if config.kl_reduction not in objectives.KL_REDUCTIONS:
        raise ValueError(
            f"unknown kl_reduction {config.kl_reduction!r}; choose one of "
            f"{objectives.KL_REDUCTIONS}"
        )
    for name in ("r", "r_max"):
        v = float(getattr(config, name))
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not 0.0 < float(config.m) < 1.0:
        raise ValueError(f"m must lie in the open interval (0, 1), got {config.m}")
    for name in (
        "n_samples",
        "n_iter",
        "attack_steps",
        "restarts",
        "n_starts",
        "n_probes",
        "chunk_size",
        "train_steps",
        "batch_size",
    ):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    mps = config.max_per_subgroup
    if mps is not None and (isinstance(mps, bool) or not isinstance(mps, int) or mps < 1):
        raise ValueError(f"max_per_subgroup must be None or an integer >= 1, got {mps!r}")
    if isinstance(config.check_examples, bool) or config.check_examples < 0:
        raise ValueError(f"check_examples must be >= 0, got {config.check_examples!r}")
    if config.check_examples and (config.check_factor < 1 or config.check_restarts < 1):
        raise ValueError(
            "check_factor and check_restarts must be >= 1, got "
            f"{config.check_factor} and {config.check_restarts}"
        )
    if not (math.isfinite(config.log_range) and config.log_range > 1):
        raise ValueError(f"log_range (r_max / r_min) must be > 1, got {config.log_range}")
    if config.method not in MARGIN_METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose one of {MARGIN_METHODS}")
    if config.apply_to not in APPLY_TO:
        raise ValueError(f"unknown apply_to {config.apply_to!r}; choose one of {APPLY_TO}")
    if config.attack_rule not in atk.PGD_RULES:
        raise ValueError(
            f"unknown attack_rule {config.attack_rule!r}; choose one of {atk.PGD_RULES}"
        )
    if config.subgroup_study_dir is not None and not Path(config.subgroup_study_dir).is_dir():
        raise ValueError(f"subgroup_study_dir {config.subgroup_study_dir!r} is not a folder")
