"""Configuration of the disentanglement-and-robustness study of 002 (``vaerob disentangle``).

Spec 002 §5: the model grid (vanilla VAE, β-TCVAE at two β, Seatbelt-VAE at L = 2 and 3,
β-TCDLGM) on one backbone and one data set with ground-truth factors (the embedded
``shapes`` at 32×32 stands in for 002's Chairs / 3D Faces / CelebA; ``dsprites`` through a
prepared TFDS folder), attacked with the latent (Eqs. 13-15) and output (Eq. 12) attacks at
every λ of a subset of 002's grid 2^−20…2^20, on seeded input–target pairs shared by every
model. Presets: 'default' (the README's run), 'tiny' (tests) and 'paper' (002's full grid,
for accelerators).

Models are named ``vae``, ``tcvae_b<β>``, ``seatbelt_L<L>_b<β>`` and ``tcdlgm_L<L>_b<β>``
(e.g. ``seatbelt_L3_b10``). Every model is a :class:`~vaerob_jax.models.hierarchical.
HierarchicalVAE`: an L = 1 Seatbelt-VAE *is* a β-TCVAE (its loss is bit-for-bit
:func:`~vaerob_jax.objectives.tc.beta_tcvae_loss`, tested) and the vanilla VAE is the
β-TCVAE at β = 1 (its loss telescopes to the negative ELBO), so one code path trains and
attacks them all, and Eq. 15 at L = 1 is Eq. 13.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from vaerob_jax.studies.common import config_fingerprint

__all__ = [
    "DISENTANGLE_DATASETS",
    "DISENTANGLE_PRESETS",
    "ModelSpec",
    "DisentangleStudyConfig",
    "parse_model",
    "validate_disentangle_config",
]

#: Data sets with ground-truth factors (MIG needs them): embedded shapes, prepared dSprites.
DISENTANGLE_DATASETS = ("shapes", "dsprites")
MODES = ("latent", "output")
_NAME = re.compile(r"^(?:(vae)|tcvae_b([0-9.e+-]+)|(seatbelt|tcdlgm)_L([0-9]+)_b([0-9.e+-]+))$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the grid: its family, layer count and β (parsed from its name)."""

    name: str
    family: str  # 'tcvae' (L = 1 Seatbelt, incl. the VAE) | 'seatbelt' | 'tcdlgm'
    layers: int
    beta: float

    @property
    def kind(self) -> str:
        """The HierarchicalVAE kind: 'dlgm' for β-TCDLGM, else 'seatbelt'."""
        return "dlgm" if self.family == "tcdlgm" else "seatbelt"

    @property
    def stack(self) -> str:
        """Models trained (and attacked) as one vmapped stack: same kind and layer count."""
        return f"{self.kind}_L{self.layers}"

    @property
    def label(self) -> str:
        b = f"{self.beta:g}"
        if self.family == "tcvae":
            return "VAE" if self.beta == 1.0 and self.name == "vae" else f"β-TCVAE β={b}"
        name = "Seatbelt" if self.family == "seatbelt" else "β-TCDLGM"
        return f"{name} L={self.layers} β={b}"


def parse_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name; ValueError naming the accepted forms."""
    m = _NAME.match(str(name))
    if m is None:
        raise ValueError(
            f"unknown model {name!r}: use vae, tcvae_b<beta>, seatbelt_L<layers>_b<beta> or "
            "tcdlgm_L<layers>_b<beta> (e.g. seatbelt_L2_b10)"
        )
    if m.group(1):
        return ModelSpec(name, "tcvae", 1, 1.0)
    if m.group(2) is not None:
        return ModelSpec(name, "tcvae", 1, _beta(name, m.group(2)))
    layers = int(m.group(4))
    beta = _beta(name, m.group(5))
    family = m.group(3)
    if layers < 1:
        raise ValueError(f"model {name!r}: the number of layers L must be >= 1, got {layers}")
    if family == "tcdlgm" and layers < 2:
        raise ValueError(f"model {name!r}: β-TCDLGM needs L >= 2 (at L = 1 it is a β-TCVAE)")
    if family == "seatbelt" and layers == 1:
        return ModelSpec(name, "tcvae", 1, beta)
    return ModelSpec(name, family, layers, beta)


def _beta(name: str, text: str) -> float:
    try:
        beta = float(text)
    except ValueError:
        raise ValueError(f"model {name!r}: β {text!r} is not a number") from None
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"model {name!r}: β must be finite and >= 0, got {beta}")
    return beta


@dataclasses.dataclass(frozen=True)
class DisentangleStudyConfig:
    """``vaerob disentangle`` (002, Willetts, Camuto et al.): models, attacks, metrics.

    Data: ``n_train`` / ``n_test`` images of ``dataset`` at ``image_size`` (dSprites has one
    split: its first ``n_train`` shuffled images train, the next ``n_test`` test).
    Architecture: the ``backbone`` ('mlp' with ``hidden`` widths by default; 'conv32' by
    flag) maps to z^1 of ``latent_dim`` dims; every further layer has ``latent_dim`` dims
    too (002 does not state its layer sizes) and Gaussian MLPs of ``layer_hidden`` widths
    between layers; Bernoulli likelihood (Chen et al.'s choice). Training: Adam at
    ``learning_rate``, ``batch_size`` (the TC estimator's B), ``train_steps`` steps, the
    minibatch estimator ``estimator`` ('mws' as 002 trains), free bits τ = ``free_bits``
    nats per dim on the layers below the top.

    Attacks: ``n_pairs`` seeded input–target pairs of distinct test images (the same for
    every model), at every ``lambda_stride``-th λ of 002's ``lambda_count``-point grid
    2^−20…2^20 (default 8 of 50, both ends kept), both modes; Δ = divergence + λ‖d‖₂
    (unsquared: ``penalty``) minimised over d in the box [−x, 1 − x] by the batched
    bound-constrained L-BFGS of :mod:`vaerob_jax.attacks.lbfgsb` with ``attack_iterations``
    iterations and ``attack_memory`` curvature pairs, from d ~ U(±1e−8). The output attack
    averages ``output_draws`` fixed noise draws; the Seatbelt latent attack sums the layer
    KLs with layer i's Gaussian given its parent's mean (``layer_dist='mean_path'``, 002
    does not say how q(z^i|x) is computed) or averaged over ``output_draws`` sampled chains
    with common noise (``'sampled'``). Convergence evidence: the first ``check_pairs`` pairs are
    attacked again with ``check_factor``× the iterations, and ``scipy_problems`` problems
    per model (pair 0, alternating modes, λ spread over the grid) by scipy's L-BFGS-B in float64
    (``scipy_maxiter`` iterations, m = 25, factr = 10, 002's settings).

    Metrics: MIG on the training split (``mig_samples`` samples, factors binned in
    ``mig_bins``), full-data TC, the β = 1 ELBO on the test split (``elbo_draws`` draws),
    log p(x|z*) under Gaussian input noise of ``noise_scales`` (pixel units of [0, 1], i.e.
    002's s / 2), and the relative weight-norm change against the β = 1 model of the same
    kind and L (Table 1). ``n_boot`` bootstrap resamples of the pairs for every CI.
    """

    dataset: str = "shapes"
    data_dir: str | None = None
    image_size: int = 32
    n_train: int = 4096
    n_test: int = 1024
    models: tuple[str, ...] = (
        "vae",
        "tcvae_b4",
        "tcvae_b10",
        "seatbelt_L2_b1",
        "seatbelt_L2_b10",
        "seatbelt_L3_b10",
        "tcdlgm_L2_b10",
    )
    backbone: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 10
    layer_hidden: tuple[int, ...] = (256, 256)
    estimator: str = "mws"
    free_bits: float = 0.125
    train_steps: int = 800
    batch_size: int = 128
    learning_rate: float = 1e-3
    n_pairs: int = 5
    lambda_count: int = 50
    lambda_stride: int = 7
    penalty: str = "l2"
    attack_iterations: int = 100
    attack_memory: int = 25
    output_draws: int = 4
    layer_dist: str = "mean_path"
    check_pairs: int = 2
    check_factor: int = 2
    scipy_problems: int = 6
    scipy_maxiter: int = 300
    mig_samples: int = 10_000
    mig_bins: int = 10
    elbo_draws: int = 16
    noise_scales: tuple[float, ...] = (0.05, 0.1, 0.2)
    n_boot: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        return config_fingerprint(self)

    def model_specs(self) -> tuple[ModelSpec, ...]:
        return tuple(parse_model(m) for m in self.models)

    def lambda_indices(self) -> tuple[int, ...]:
        """Indices into 002's grid of the λ attacked: every stride-th point and the last."""
        idx = list(range(0, self.lambda_count, self.lambda_stride))
        if idx[-1] != self.lambda_count - 1:
            idx.append(self.lambda_count - 1)
        return tuple(idx)


def _positive_ints(c: DisentangleStudyConfig, *names: str) -> None:
    for f in names:
        v = getattr(c, f)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{f} must be an int >= 1, got {v!r}")


def validate_disentangle_config(c: DisentangleStudyConfig) -> None:
    """Raises ValueError naming the field before anything is loaded or trained."""
    from vaerob_jax.attacks.targeted import LAYER_DISTS, PENALTIES
    from vaerob_jax.models.backbones import BACKBONES
    from vaerob_jax.objectives.tc import ESTIMATORS

    if c.dataset not in DISENTANGLE_DATASETS:
        raise ValueError(
            f"dataset must be one with ground-truth factors for MIG, one of "
            f"{DISENTANGLE_DATASETS}; got {c.dataset!r}"
        )
    if not c.models:
        raise ValueError("models must name at least one model")
    if len(set(c.models)) != len(c.models):
        raise ValueError(f"models holds a name twice: {c.models}")
    specs = [parse_model(m) for m in c.models]
    keys = [(s.family, s.layers, s.beta) for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"models name the same model twice (vae = tcvae_b1): {c.models}")
    _positive_ints(
        c,
        "image_size",
        "n_train",
        "n_test",
        "latent_dim",
        "train_steps",
        "batch_size",
        "n_pairs",
        "lambda_count",
        "lambda_stride",
        "attack_iterations",
        "attack_memory",
        "output_draws",
        "check_factor",
        "scipy_maxiter",
        "mig_samples",
        "mig_bins",
        "elbo_draws",
        "n_boot",
    )
    if c.latent_dim < 2:
        raise ValueError(f"latent_dim must be >= 2 (MIG compares two dims), got {c.latent_dim}")
    if c.backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {c.backbone!r}")
    if c.backbone == "conv32" and c.image_size != 32:
        raise ValueError(f"the conv32 backbone needs image_size 32, got {c.image_size}")
    if any(int(h) < 1 for h in (*c.hidden, *c.layer_hidden)):
        raise ValueError("hidden and layer_hidden widths must be >= 1")
    if c.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {c.estimator!r}")
    if c.batch_size > c.n_train:
        raise ValueError(f"batch_size {c.batch_size} exceeds n_train {c.n_train}")
    if c.estimator == "mss" and c.batch_size < 2:
        raise ValueError("the MSS estimator needs batch_size >= 2")
    if not (math.isfinite(c.free_bits) and c.free_bits >= 0):
        raise ValueError(f"free_bits must be finite and >= 0, got {c.free_bits}")
    if not (math.isfinite(c.learning_rate) and c.learning_rate > 0):
        raise ValueError(f"learning_rate must be > 0, got {c.learning_rate}")
    if 2 * c.n_pairs > c.n_test:
        raise ValueError(
            f"{c.n_pairs} input-target pairs of distinct images need >= {2 * c.n_pairs} test "
            f"images, got n_test = {c.n_test}"
        )
    if c.layer_dist not in LAYER_DISTS:
        raise ValueError(f"layer_dist must be one of {LAYER_DISTS}, got {c.layer_dist!r}")
    if c.penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {c.penalty!r}")
    if c.lambda_stride > c.lambda_count:
        raise ValueError(f"lambda_stride {c.lambda_stride} exceeds lambda_count {c.lambda_count}")
    if not 0 <= c.check_pairs <= c.n_pairs:
        raise ValueError(f"check_pairs must lie in [0, n_pairs = {c.n_pairs}], got {c.check_pairs}")
    if c.scipy_problems < 0:
        raise ValueError(f"scipy_problems must be >= 0, got {c.scipy_problems}")
    if not c.noise_scales or any(
        not (math.isfinite(float(s)) and float(s) > 0) for s in c.noise_scales
    ):
        raise ValueError(f"noise_scales must be finite values > 0, got {c.noise_scales}")
    if c.seed < 0:
        raise ValueError(f"seed must be >= 0, got {c.seed}")


DISENTANGLE_PRESETS: dict[str, DisentangleStudyConfig] = {
    "default": DisentangleStudyConfig(),
    "tiny": DisentangleStudyConfig(
        n_train=256,
        n_test=64,
        models=("vae", "tcvae_b10", "seatbelt_L2_b10", "tcdlgm_L2_b10"),
        hidden=(32,),
        latent_dim=4,
        layer_hidden=(16,),
        train_steps=30,
        batch_size=32,
        n_pairs=3,
        lambda_count=5,
        lambda_stride=2,
        attack_iterations=15,
        attack_memory=5,
        output_draws=2,
        check_pairs=2,
        check_factor=2,
        scipy_problems=3,
        scipy_maxiter=40,
        mig_samples=256,
        elbo_draws=2,
        noise_scales=(0.1,),
        n_boot=100,
    ),
    # 002's full setting (spec 002 §1.4, §2): 50 λ, 10 pairs, 64×64, more training, a
    # deeper grid; meant for an accelerator.
    "paper": DisentangleStudyConfig(
        image_size=64,
        n_train=32768,
        n_test=4096,
        models=(
            "vae",
            "tcvae_b2",
            "tcvae_b4",
            "tcvae_b6",
            "tcvae_b8",
            "tcvae_b10",
            *(f"seatbelt_L{L}_b{b}" for L in (2, 3, 4) for b in (1, 4, 10)),
            *(f"tcdlgm_L{L}_b{b}" for L in (2, 3, 4) for b in (1, 4, 10)),
        ),
        hidden=(1200, 1200),
        train_steps=20_000,
        batch_size=2048,
        n_pairs=10,
        lambda_stride=1,
        attack_iterations=1000,
        attack_memory=25,
        check_pairs=3,
        scipy_problems=50,
        scipy_maxiter=2000,
    ),
}
