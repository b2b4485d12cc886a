"""Configuration of the fairness-versus-robustness study of 004 (``vaerob fairness``).

Three parts (spec 004 §6): (a) the theory panel of the 1-D two-Gaussian model (closed forms,
no training beyond gradient-fitted thresholds); (b) a λ × ε* × seed grid of MLPs on the 2-D
mixture (group = label, two groups); (c) the same on the embedded ``digits`` (8×8, group =
label, ten groups) with cross-entropy, plus the ramp loss of §7 (with a cross-entropy warm-up)
at ε* = 0. Presets: 'default' (the README's run) and 'tiny' (tests).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from vaerob_jax.studies.common import config_fingerprint

__all__ = [
    "DATASETS",
    "PREFIX",
    "FAIRNESS_PRESETS",
    "FairnessStudyConfig",
    "validate_fairness_config",
]

#: The study's trained parts, and the prefix of their config fields.
DATASETS = ("gmm2d", "digits", "utkface")
PREFIX = {"gmm2d": "gmm", "digits": "digits", "utkface": "utkface"}
#: The parts of the default run (UTKFace needs a user folder and, for its CNN, an accelerator).
DEFAULT_PARTS = ("gmm2d", "digits")


@dataclasses.dataclass(frozen=True)
class FairnessStudyConfig:
    """``vaerob fairness`` (004, Tran et al.): theory panel and two trained grids.

    Theory: ``theory_k`` the variance ratios K of Fig. 2 (μ = ∓1, balanced), ``theory_eps``
    its robust budget (unstated in 004; 0.1 [choice]), ``theory_lambdas`` the Theorem 3 curve's
    λ, ``theory_n`` points drawn per class for the gradient-fitted thresholds,
    ``theorem_n_eps`` × ``theorem_n_k`` the (ε, K) grid per separation d of the theorem checks;
    Fig. 8: fair thresholds of the 0/1 loss (grid search) and of the ramp, logistic and
    exponential losses (gradient descent) on the 1-D mixture with K = ``losses_k`` at
    ``losses_lambdas``, their robust errors at ``losses_eps`` (spec 004's prototype setting).

    Each grid: ``<part>_lambdas`` × ``<part>_eps_stars`` × ``seeds`` (the ramp adds λ × seeds at
    ε* = 0 on digits when ``digits_ramp``), Adam, in-training PGD with ``pgd_steps`` steps of
    2.5ε*/steps; evaluated at ``<part>_eval_eps`` with R+FGSM (α = ε/2) and PGD-``eval_pgd_steps``
    on the logit margin with ``eval_pgd_restarts`` random starts (``worst`` = the per-point OR
    of the two), and with ``check_factor``× the PGD steps and ``check_restarts`` starts to
    show whether the evaluation attack has converged. Chosen from a strength ladder on the
    default digits models (48 models, ε = 0.1, mean boundary error): CE-PGD-20 0.377,
    margin-PGD-20 0.388, ×3 starts 0.4035, 40 steps ×3 0.4036, 80 steps ×6 0.4105 — restarts,
    not steps, move it, and the margin objective is stronger than the CE (which saturates on
    confident models). Distances: the top-2 softmax gap (004's proxy) and the PGD bisection
    upper bound (``distance_halvings``
    halvings of [0, ``<part>_distance_max``]).
    """

    parts: tuple[str, ...] = DEFAULT_PARTS
    seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    # (a) theory
    theory_k: tuple[float, ...] = (5.0, 10.0)
    theory_eps: float = 0.1
    theory_lambdas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    theory_n: int = 20000
    theorem_n_eps: int = 25
    losses_k: float = 3.0
    losses_lambdas: tuple[float, ...] = (0.0, 0.5)
    losses_eps: float = 0.2
    theorem_n_k: int = 20
    # (b) 2-D Gaussian mixture, MLP 2-64-64-2, unbounded inputs
    gmm_k: float = 2.0
    gmm_n_train: int = 20000
    gmm_n_test: int = 4000
    gmm_hidden: tuple[int, ...] = (64, 64)
    gmm_lambdas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    gmm_eps_stars: tuple[float, ...] = (0.0, 0.1, 0.2)
    gmm_eval_eps: tuple[float, ...] = (0.1, 0.2, 0.4)
    gmm_steps: int = 2000
    gmm_batch_size: int = 256
    gmm_distance_max: float = 4.0
    # (c) digits 8x8, MLP 64-128-128-10, pixels in [0, 1]
    digits_image_size: int = 8
    digits_hidden: tuple[int, ...] = (128, 128)
    digits_lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    digits_eps_stars: tuple[float, ...] = (0.0, 0.05, 0.1)
    digits_ramp: bool = True
    digits_eval_eps: tuple[float, ...] = (0.02, 0.05, 0.1)
    digits_steps: int = 1500
    digits_batch_size: int = 128
    digits_distance_max: float = 0.5
    # (d) UTKFace from a user folder (label = group = race by default), the CNN of 004
    #     (3 conv + FC; SmallAlexNet), pixels in [0, 1]; for accelerators (preset 'utkface')
    utkface_dir: str | None = None
    utkface_label: str = "race"
    utkface_image_size: int = 32
    utkface_channels: tuple[int, ...] = (32, 64, 128)
    utkface_hidden: int = 256
    utkface_n_train: int | None = None
    utkface_lambdas: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0, 2.0)
    utkface_eps_stars: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    utkface_eval_eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    utkface_steps: int = 8000
    utkface_batch_size: int = 128
    utkface_distance_max: float = 0.1
    # shared training / evaluation
    learning_rate: float = 1e-3
    penalty_reduce: str = "sum"
    pgd_steps: int = 5
    ramp_warmup_share: float = 1.0 / 3.0
    eval_pgd_steps: int = 20
    eval_pgd_restarts: int = 3
    distance_halvings: int = 12
    distance_steps: int = 10
    check_factor: int = 2
    check_restarts: int = 6
    n_boot: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        return config_fingerprint(self)

    def of(self, part: str, name: str) -> Any:
        """The part's own setting, e.g. ``of('gmm2d', 'steps')`` is ``gmm_steps``."""
        return getattr(self, f"{PREFIX[part]}_{name}")

    def lambdas(self, part: str) -> tuple[float, ...]:
        return tuple(self.of(part, "lambdas"))

    def eps_stars(self, part: str) -> tuple[float, ...]:
        return tuple(self.of(part, "eps_stars"))

    def eval_eps(self, part: str) -> tuple[float, ...]:
        return tuple(self.of(part, "eval_eps"))


def _nonneg(name: str, values: Any) -> None:
    vals = list(values)
    if not vals:
        raise ValueError(f"{name} must hold at least one value")
    bad = [v for v in vals if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"{name} must be finite and >= 0, got {bad}")
    if len(set(float(v) for v in vals)) != len(vals):
        raise ValueError(f"{name} holds a value twice: {vals}")


def _positive(name: str, values: Any) -> None:
    _nonneg(name, values)
    if any(float(v) == 0 for v in values):
        raise ValueError(f"{name} must be > 0, got {list(values)}")


def validate_fairness_config(c: FairnessStudyConfig) -> None:
    """Raises ValueError naming the field before anything is loaded or trained."""
    from vaerob_jax.objectives.fairness import PENALTY_REDUCES

    if not c.parts or any(p not in DATASETS for p in c.parts) or len(set(c.parts)) != len(c.parts):
        raise ValueError(f"parts must be distinct names of {DATASETS}, got {c.parts}")
    if not c.seeds or any(int(s) < 0 for s in c.seeds) or len(set(c.seeds)) != len(c.seeds):
        raise ValueError(f"seeds must be distinct ints >= 0, got {c.seeds}")
    if int(c.seed) < 0:
        raise ValueError(f"seed must be >= 0, got {c.seed}")
    _positive("theory_k", c.theory_k)
    if any(float(k) < 1 for k in c.theory_k):
        raise ValueError(f"theory_k (variance ratios K) must be >= 1, got {c.theory_k}")
    _nonneg("theory_lambdas", c.theory_lambdas)
    _nonneg("losses_lambdas", c.losses_lambdas)
    if not c.losses_k >= 1 or not 0 < c.losses_eps <= 1.0:
        raise ValueError(
            f"losses_k must be >= 1 and losses_eps in (0, 1], got {c.losses_k}, {c.losses_eps}"
        )
    if not 0 < c.theory_eps <= 1.0:
        raise ValueError(f"theory_eps must lie in (0, d/2] = (0, 1], got {c.theory_eps}")
    if not c.gmm_k >= 1:
        raise ValueError(f"gmm_k must be >= 1, got {c.gmm_k}")
    if "utkface" in c.parts:
        from vaerob_jax.data.utkface import LABEL_FIELDS

        if not c.utkface_dir:
            raise ValueError("utkface_dir: the UTKFace part needs the folder of its images")
        if c.utkface_label not in LABEL_FIELDS:
            raise ValueError(f"utkface_label must be one of {list(LABEL_FIELDS)}")
        if c.utkface_image_size < 8 or any(int(ch) < 1 for ch in c.utkface_channels):
            raise ValueError("utkface_image_size must be >= 8 and utkface_channels positive")
        if c.utkface_n_train is not None and c.utkface_n_train < 1:
            raise ValueError(f"utkface_n_train must be >= 1 or None, got {c.utkface_n_train}")
    for part in DATASETS:
        pre = PREFIX[part]
        _nonneg(f"{pre}_lambdas", c.lambdas(part))
        _nonneg(f"{pre}_eps_stars", c.eps_stars(part))
        _positive(f"{pre}_eval_eps", c.eval_eps(part))
        for f in ("steps", "batch_size"):
            if int(c.of(part, f)) < 1:
                raise ValueError(f"{pre}_{f} must be >= 1, got {c.of(part, f)}")
        if not c.of(part, "distance_max") > 0:
            raise ValueError(f"{pre}_distance_max must be > 0, got {c.of(part, 'distance_max')}")
        hidden = c.of(part, "hidden")
        if any(int(h) < 1 for h in (hidden if isinstance(hidden, tuple) else (hidden,))):
            raise ValueError(f"{pre}_hidden widths must be >= 1, got {c.of(part, 'hidden')}")
    for f in (
        "theory_n",
        "theorem_n_eps",
        "theorem_n_k",
        "gmm_n_train",
        "gmm_n_test",
        "pgd_steps",
        "eval_pgd_steps",
        "eval_pgd_restarts",
        "distance_halvings",
        "distance_steps",
        "check_factor",
        "check_restarts",
        "n_boot",
    ):
        if int(getattr(c, f)) < 1:
            raise ValueError(f"{f} must be >= 1, got {getattr(c, f)}")
    if c.gmm_batch_size > c.gmm_n_train:
        raise ValueError(f"gmm_batch_size {c.gmm_batch_size} exceeds gmm_n_train {c.gmm_n_train}")
    if c.digits_image_size not in (8, 16, 32):
        raise ValueError(f"digits_image_size must be 8, 16 or 32, got {c.digits_image_size}")
    if not c.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {c.learning_rate}")
    if c.penalty_reduce not in PENALTY_REDUCES:
        raise ValueError(f"penalty_reduce must be one of {PENALTY_REDUCES}")
    if not 0 < c.ramp_warmup_share < 1:
        raise ValueError(f"ramp_warmup_share must lie in (0, 1), got {c.ramp_warmup_share}")


FAIRNESS_PRESETS: dict[str, FairnessStudyConfig] = {
    "default": FairnessStudyConfig(),
    # 004 §6 on UTKFace (ethnicity task; the folder defaults to data/UTKFace, --utkface-dir
    # names another): for GPU/TPU machines.
    "utkface": FairnessStudyConfig(parts=("utkface",), utkface_dir="data/UTKFace"),
    "tiny": FairnessStudyConfig(
        seeds=(0, 1),
        theory_k=(5.0,),
        theory_lambdas=(0.0, 0.2, 1.0),
        theory_n=2000,
        theorem_n_eps=5,
        theorem_n_k=4,
        gmm_n_train=1024,
        gmm_n_test=256,
        gmm_hidden=(16,),
        gmm_lambdas=(0.0, 1.0),
        gmm_eps_stars=(0.0, 0.2),
        gmm_eval_eps=(0.2,),
        gmm_steps=60,
        gmm_batch_size=64,
        digits_hidden=(32,),
        digits_lambdas=(0.0, 1.0),
        digits_eps_stars=(0.0, 0.1),
        digits_eval_eps=(0.05,),
        digits_steps=60,
        digits_batch_size=64,
        eval_pgd_steps=5,
        eval_pgd_restarts=1,
        distance_halvings=6,
        distance_steps=4,
        check_factor=2,
        check_restarts=1,
        n_boot=100,
    ),
}
