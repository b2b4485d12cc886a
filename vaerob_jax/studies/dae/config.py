"""Configuration of the robust deterministic-autoencoder study of 003 (``vaerob dae``).

Spec 003 §5: the models 003 compares, all on one architecture and one data set (the embedded
``digits`` at 32×32 stands in for MNIST): VAE (β = 1), β-VAE, β-TCVAE (002's objective),
GMM-DAE (Eqs. 4-5), Augmented (Eqs. 7-8) and 003's method ("Ours", Eqs. 9-11) at each
coupling α of ``coupled_alphas``, plus Ours at ``headline_alpha`` with each latent-noise scale
of ``noise_variants`` (the public code's s = 0.1). Attacked with the latent attack (Eq. 12)
and the maximum-damage attack (Eq. 13) under hard L2 bounds λ (``budgets``). Presets:
'default' (the README's run) and 'tiny' (tests).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from vaerob_jax.studies.common import config_fingerprint

__all__ = [
    "DAE_DATASETS",
    "DAE_PRESETS",
    "DAEStudyConfig",
    "MODEL_KINDS",
    "TARGET_RULES",
    "validate_dae_config",
]

#: Model kinds of 003's comparison (Table 1 rows we can train, and Table 2's ablation).
MODEL_KINDS = ("vae", "beta_vae", "beta_tcvae", "gmm_dae", "augmented", "coupled")
#: Datasets the study reads: embedded digits, or a prepared TFDS dataset.
DAE_DATASETS = ("digits", "mnist", "fashion_mnist", "svhn_cropped", "celeb_a")
#: How a target x_t is drawn for a source x: a test image of another class (003), or any
#: other test image (003's CelebA, which has no classes).
TARGET_RULES = ("different_class", "random")


@dataclasses.dataclass(frozen=True)
class DAEStudyConfig:
    """``vaerob dae`` (003, Saseendran et al.): the model grid, its attacks and its metrics.

    Architecture: the MLP 1024-200-200-200-200 of 003 for grey images (``hidden``), the
    ``conv32`` backbone for colour ones; a D = ``latent_dim`` code; the GMM prior has
    K = ``n_modes`` modes at 10·e_k with σ = 1. Training: Adam at ``learning_rate`` (the
    public code's 2e-4), batches of ``batch_size`` (100, the batch the loss weights are
    computed for), FGSM ε = ``eps`` (0.3, MNIST in 003), λ_REC = ``lambda_rec`` (500),
    reconstruction under latent noise s = ``latent_noise`` (1, the paper's text).
    ``headline_alpha`` = 0.5 is our choice: 003 never states the α it used.

    Attacks: ``trials`` × ``images_per_trial`` source images of the test split with seeded
    targets (``targets``), the same for every model; L2-PGD (normalised-gradient steps, exact
    L2 ∩ box projection, random start, best iterate) with ``attack_steps`` steps of
    ``attack_step_factor``·λ/steps at each λ of ``budgets``, ``latent_restarts`` /
    ``damage_restarts`` random starts. Chosen by measurement on the default models (16
    pairs, λ = 3, against scipy L-BFGS-B at 150 iterations): the usual step 2.5λ/steps
    gives a total path of 2.5λ, too short — 200 such steps stopped 2-6 % above L-BFGS-B's
    loss on both attacks (more steps of that size do not travel further); a step of
    10λ/steps reaches L-BFGS-B on the latent attack at 100 steps (restarts add < 0.5 %),
    while maximum damage (a non-concave maximisation) needs restarts: 100 steps × 4 starts
    beat L-BFGS-B by 1-5 % and 8 starts add 0.3-0.8 %, 200 steps nothing. The convergence
    check repeats the first ``check_images`` pairs with ``check_factor``× the steps and
    ``check_restart_factor``× the starts; the L-BFGS-B cross-check (scipy, the public
    code's optimiser and parametrisation) attacks ``lbfgs_images`` images at
    λ = ``lbfgs_budget`` with at most ``lbfgs_maxiter`` iterations.
    Metrics: MS-SSIM (5 levels) and L2 pairs of Table 1; FD-clf (Fréchet distance in the
    penultimate features of an MLP classifier trained here, ``fd_samples`` decoded prior
    samples, two independent draws); Table 3's latent MLP classifier (``latent_clf_hidden``,
    ``latent_clf_steps``) attacked at λ = ``latent_clf_budget``. ``strip_budget`` is Fig. 3's
    λ.
    """

    dataset: str = "digits"
    image_size: int = 32
    n_train: int | None = None
    data_dir: str | None = None
    models: tuple[str, ...] = MODEL_KINDS
    latent_dim: int = 10
    n_modes: int = 10
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    vae_likelihood: str = "bernoulli"
    beta_vae_beta: float = 4.0
    tcvae_beta: float = 4.0
    coupled_alphas: tuple[float, ...] = (0.0, 0.5, 1.0)
    headline_alpha: float = 0.5
    latent_noise: float = 1.0
    noise_variants: tuple[float, ...] = (0.1,)
    eps: float = 0.3
    lambda_rec: float = 500.0
    train_steps: int = 3000
    batch_size: int = 100
    learning_rate: float = 2e-4
    targets: str = "different_class"
    trials: int = 5
    images_per_trial: int = 64
    budgets: tuple[float, ...] = (1.0, 3.0, 5.0)
    attack_steps: int = 100
    attack_step_factor: float = 10.0
    latent_restarts: int = 1
    damage_restarts: int = 4
    check_factor: int = 2
    check_restart_factor: int = 2
    check_images: int = 32
    lbfgs_images: int = 8
    lbfgs_budget: float = 3.0
    lbfgs_maxiter: int = 150
    fd_samples: int = 2000
    feature_hidden: tuple[int, ...] = (128, 64)
    feature_clf_steps: int = 1500
    latent_clf_hidden: tuple[int, ...] = (128, 128)
    latent_clf_steps: int = 1000
    latent_clf_budget: float = 1.0
    strip_budget: float = 5.0
    n_boot: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        return config_fingerprint(self)


def _positive_ints(c: DAEStudyConfig, *names: str) -> None:
    for f in names:
        v = getattr(c, f)
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise ValueError(f"{f} must be an int >= 1, got {v!r}")


def _distinct(name: str, values: Any) -> None:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"{name} must hold at least one value")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} holds a value twice: {list(values)}")


def validate_dae_config(c: DAEStudyConfig) -> None:
    """Raises ValueError naming the field before anything is loaded or trained."""
    from vaerob_jax.models.vae import LIKELIHOODS
    from vaerob_jax.robustness.msssim import msssim_window_sizes

    if c.dataset not in DAE_DATASETS:
        raise ValueError(f"dataset must be one of {DAE_DATASETS}, got {c.dataset!r}")
    if not c.models or any(m not in MODEL_KINDS for m in c.models):
        raise ValueError(f"models must be names of {MODEL_KINDS}, got {c.models}")
    if len(set(c.models)) != len(c.models):
        raise ValueError(f"models holds a name twice: {c.models}")
    _positive_ints(
        c,
        "image_size",
        "latent_dim",
        "n_modes",
        "train_steps",
        "batch_size",
        "trials",
        "images_per_trial",
        "attack_steps",
        "latent_restarts",
        "damage_restarts",
        "check_factor",
        "check_restart_factor",
        "check_images",
        "lbfgs_maxiter",
        "fd_samples",
        "feature_clf_steps",
        "latent_clf_steps",
        "n_boot",
    )
    if c.n_modes > c.latent_dim:
        raise ValueError(
            f"n_modes K = {c.n_modes} > latent_dim D = {c.latent_dim}: the GMM prior puts its "
            "modes at 10·e_k, k = 1..K, so it needs K <= D"
        )
    try:
        msssim_window_sizes(c.image_size, c.image_size)
    except ValueError as err:
        raise ValueError(f"image_size {c.image_size}: {err}") from None
    if c.dataset == "digits" and c.image_size not in (8, 16, 32):
        raise ValueError(f"digits images come at 8, 16 or 32 pixels, got {c.image_size}")
    if c.n_train is not None and int(c.n_train) < c.batch_size:
        raise ValueError(f"n_train {c.n_train} is smaller than batch_size {c.batch_size}")
    if any(int(h) < 1 for h in (*c.hidden, *c.feature_hidden, *c.latent_clf_hidden)):
        raise ValueError("hidden, feature_hidden and latent_clf_hidden widths must be >= 1")
    if not c.feature_hidden:
        raise ValueError("feature_hidden needs at least one layer (FD-clf reads the last one)")
    if c.vae_likelihood not in LIKELIHOODS:
        raise ValueError(f"vae_likelihood must be one of {LIKELIHOODS}, got {c.vae_likelihood!r}")
    for f in ("beta_vae_beta", "tcvae_beta", "lambda_rec", "latent_noise", "eps"):
        v = float(getattr(c, f))
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{f} must be finite and >= 0, got {v}")
    if not 0 < c.eps <= 1:
        raise ValueError(
            f"eps (the FGSM L∞ radius on [0, 1] pixels) must lie in (0, 1], got {c.eps}"
        )
    if not (math.isfinite(c.learning_rate) and c.learning_rate > 0):
        raise ValueError(f"learning_rate must be > 0, got {c.learning_rate}")
    _distinct("coupled_alphas", c.coupled_alphas)
    for a in (*c.coupled_alphas, c.headline_alpha):
        if not (math.isfinite(float(a)) and -1.0 <= float(a) <= 1.0):
            raise ValueError(f"coupling α must lie in [-1, 1] (a correlation, Eq. 10), got {a}")
    if "coupled" in c.models and float(c.headline_alpha) not in [
        float(a) for a in c.coupled_alphas
    ]:
        raise ValueError(
            f"headline_alpha {c.headline_alpha} must be one of coupled_alphas {c.coupled_alphas}"
        )
    if c.noise_variants:
        _distinct("noise_variants", c.noise_variants)
    for s in c.noise_variants:
        if not (math.isfinite(float(s)) and float(s) >= 0) or float(s) == float(c.latent_noise):
            raise ValueError(
                f"noise_variants must be finite, >= 0 and differ from latent_noise "
                f"{c.latent_noise}, got {c.noise_variants}"
            )
    _distinct("budgets", c.budgets)
    for b in (*c.budgets, c.lbfgs_budget, c.latent_clf_budget, c.strip_budget):
        if not (math.isfinite(float(b)) and float(b) >= 0):
            raise ValueError(f"attack budgets λ must be finite and >= 0, got {b}")
    for f in ("latent_clf_budget", "strip_budget", "lbfgs_budget"):
        if float(getattr(c, f)) not in [float(b) for b in c.budgets]:
            raise ValueError(f"{f} {getattr(c, f)} must be one of budgets {c.budgets}")
    if c.targets not in TARGET_RULES:
        raise ValueError(f"targets must be one of {TARGET_RULES}, got {c.targets!r}")
    if c.check_images > c.trials * c.images_per_trial:
        raise ValueError(
            f"check_images {c.check_images} exceeds the {c.trials * c.images_per_trial} "
            "attack pairs (trials × images_per_trial)"
        )
    if not (math.isfinite(c.attack_step_factor) and c.attack_step_factor > 0):
        raise ValueError(f"attack_step_factor must be > 0, got {c.attack_step_factor}")
    if int(c.lbfgs_images) < 0 or c.lbfgs_images > c.images_per_trial:
        raise ValueError(
            f"lbfgs_images must lie in [0, images_per_trial = {c.images_per_trial}], "
            f"got {c.lbfgs_images}"
        )
    if int(c.seed) < 0:
        raise ValueError(f"seed must be >= 0, got {c.seed}")


DAE_PRESETS: dict[str, DAEStudyConfig] = {
    "default": DAEStudyConfig(),
    "tiny": DAEStudyConfig(
        models=("vae", "gmm_dae", "augmented", "coupled"),
        hidden=(32,),
        coupled_alphas=(0.0, 0.5),
        train_steps=40,
        batch_size=50,
        trials=2,
        images_per_trial=8,
        budgets=(1.0, 3.0),
        attack_steps=10,
        damage_restarts=2,
        check_images=8,
        lbfgs_images=2,
        lbfgs_budget=3.0,
        lbfgs_maxiter=20,
        fd_samples=200,
        feature_hidden=(32, 16),
        feature_clf_steps=60,
        latent_clf_hidden=(16,),
        latent_clf_steps=60,
        strip_budget=3.0,
        n_boot=100,
    ),
}
