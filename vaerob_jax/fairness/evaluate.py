"""Evaluation of 004's classifiers: attacks that flip predictions, distances, per-example flags.

Everything here is per example and batched; the reductions over examples (errors per group,
parity, CIs) come last in :mod:`vaerob_jax.robustness.boundary`.

* :func:`rfgsm`: R+FGSM (Tramèr et al. 2018, 004's default evaluation attack):
  δ₀ = α·sign(N(0, I)), then one signed step of the loss gradient, clipped to the box.
  ``variant='tramer'`` (default, Tramèr's notation: the step is ε − α, so ‖δ‖∞ <= ε without
  projection); ``variant='torchattacks'`` (the current torchattacks code: the step is α, then
  projection onto the ε-ball). α = ``alpha``·ε with ``alpha`` = ½ [choice, spec 004 §2].
* :func:`pgd_flips`: L∞ PGD (uniform start, ``steps`` signed steps of 2.5ε/steps, projection
  onto ball ∩ box) on the logit margin max_{j≠ŷ} z_j − z_ŷ of the model's own prediction ŷ
  (default; the cross-entropy as an option: it saturates on confident models, where
  softmax(z)_ŷ rounds to 1 in float32 and its gradient to noise); a point counts as
  flipped when ANY iterate changes argmax f — each iterate lies in the ball, so this is a valid
  witness and never weaker than the last iterate.
* :func:`distance_upper_bound`: an attack-based upper bound of the distance to the decision
  boundary Δ(x, f) (§3 of 004): bisection of ε on "PGD flips", a fixed number of halvings,
  batched over examples; a point PGD cannot flip at ``max_eps`` is censored there.
* :func:`evaluate_classifiers`: all of it for a stack of models (vmapped over the model axis,
  chunked over examples): ``correct``, ``flipped`` per attack and ε (and their OR, the
  per-point worst case), softmax / logit margins, the distance bound.

Attacks target the prediction ŷ, not the label: where a boundary error counts, ŷ = y (Eq. 7
of 004), so no label is needed and a wrongly classified point is never "flipped back" into
the count. Randomness comes from explicit keys; the same key gives every model the same noise.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.robustness.boundary import logit_margin, softmax_margin
from vaerob_jax.sweeps import parallel

__all__ = [
    "EVAL_ATTACKS",
    "PGD_OBJECTIVES",
    "RFGSM_VARIANTS",
    "EvalSettings",
    "Evaluation",
    "distance_upper_bound",
    "evaluate_classifiers",
    "pgd_flips",
    "rfgsm",
]

#: Evaluation attacks of :func:`evaluate_classifiers` ('worst' is their per-point OR).
EVAL_ATTACKS = ("rfgsm", "pgd")
#: Readings of R+FGSM's step (spec 004 §2).
RFGSM_VARIANTS = ("tramer", "torchattacks")


def _per_example(eps: Any, x: jax.Array) -> jax.Array:
    """ε as an array broadcasting over x: a scalar, or one radius per example (N,)."""
    e = jnp.asarray(eps, x.dtype)
    return e.reshape(e.shape + (1,) * (x.ndim - e.ndim)) if e.ndim else e


def _bounds(x: jax.Array, eps: jax.Array, box: tuple[float, float] | None):
    lo, hi = x - eps, x + eps
    if box is not None:
        lo, hi = jnp.maximum(lo, box[0]), jnp.minimum(hi, box[1])
    return lo, hi


#: Objectives PGD ascends: the cross-entropy of ŷ, or the logit margin max_{j≠ŷ} z_j − z_ŷ
#: (Carlini–Wagner's; unlike the CE it does not saturate when softmax(z)_ŷ rounds to 1).
PGD_OBJECTIVES = ("margin", "ce")


def _objective(logits: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    if kind == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, target)
    own = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
    other = jnp.max(
        jnp.where(jax.nn.one_hot(target, logits.shape[-1], dtype=bool), -jnp.inf, logits), -1
    )
    return other - own


def _ce_grad(clf: Any, params: Any, x: jax.Array, target: jax.Array, kind: str = "ce") -> jax.Array:
    def total(z):
        return jnp.sum(_objective(clf.logits(params, z), target, kind))

    return jax.grad(total)(x)


def rfgsm(
    clf: Any,
    params: Any,
    x: jax.Array,
    target: jax.Array,
    eps: Any,
    key: jax.Array,
    *,
    alpha: float = 0.5,
    variant: str = "tramer",
    box: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """R+FGSM inputs x' with ‖x' − x‖∞ <= ε and x' in ``box`` (batched over examples).

    Args:
      clf, params: a classifier with ``logits(params, x)`` and its parameters.
      x: inputs (N, ...).
      target: (N,) the class whose cross-entropy is raised (the prediction ŷ).
      eps: budget, a scalar or (N,).
      key: PRNG key of the random sign step.
      alpha: the random step as a share of ε, in [0, 1] (α = ε: random step only).
      variant: :data:`RFGSM_VARIANTS`.
      box: valid input range, or None (unbounded inputs, e.g. Gaussian mixtures).
    """
    if variant not in RFGSM_VARIANTS:
        raise ValueError(f"variant must be one of {RFGSM_VARIANTS}, got {variant!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (share of eps) must lie in [0, 1], got {alpha}")
    e = _per_example(eps, x)
    lo, hi = _bounds(x, e, box)
    a = alpha * e
    x1 = jnp.clip(x + a * jnp.sign(jax.random.normal(key, x.shape, x.dtype)), lo, hi)
    step = (e - a) if variant == "tramer" else a
    x2 = x1 + step * jnp.sign(_ce_grad(clf, params, x1, target))
    return jax.lax.stop_gradient(jnp.clip(x2, lo, hi))


def pgd_flips(
    clf: Any,
    params: Any,
    x: jax.Array,
    target: jax.Array,
    eps: Any,
    key: jax.Array,
    *,
    steps: int = 20,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    objective: str = "margin",
) -> jax.Array:
    """Whether L∞ PGD within ε moves argmax f away from ``target`` at any iterate (N,) bool.

    Uniform random start in the ball ∩ box, ``steps`` signed steps of 2.5ε/steps on
    ``objective`` (:data:`PGD_OBJECTIVES`: the logit margin by default, or the cross-entropy
    of ``target``), projection after every step; ``restarts`` independent starts (OR of their
    flips). ε = 0 never flips (the clean prediction is the target).
    """
    if int(steps) < 1 or int(restarts) < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
    if objective not in PGD_OBJECTIVES:
        raise ValueError(f"objective must be one of {PGD_OBJECTIVES}, got {objective!r}")
    e = _per_example(eps, x)
    lo, hi = _bounds(x, e, box)
    size = 2.5 * e / int(steps)

    def moved(z):
        return jnp.argmax(clf.logits(params, z), -1) != target

    def one_start(k):
        z0 = jnp.clip(x + e * jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0), lo, hi)

        def body(_, carry):
            z, flipped = carry
            z = jnp.clip(z + size * jnp.sign(_ce_grad(clf, params, z, target, objective)), lo, hi)
            return z, flipped | moved(z)

        return jax.lax.fori_loop(0, int(steps), body, (z0, moved(z0)))[1]

    flips = jax.vmap(one_start)(jax.random.split(key, int(restarts)))
    return jnp.any(flips, axis=0) & (jnp.reshape(jnp.asarray(eps), (-1,)) > 0)


def distance_upper_bound(
    clf: Any,
    params: Any,
    x: jax.Array,
    target: jax.Array,
    key: jax.Array,
    *,
    max_eps: float,
    halvings: int = 12,
    steps: int = 10,
    box: tuple[float, float] | None = (0.0, 1.0),
    objective: str = "margin",
) -> tuple[jax.Array, jax.Array]:
    """Attack-based upper bound of the L∞ distance to the decision boundary, by bisection.

    Starting from [0, ``max_eps``], each of ``halvings`` rounds runs :func:`pgd_flips` at the
    midpoint and keeps the half holding the smallest flipping radius found: PGD flipping at ε
    proves Δ(x, f) <= ε, so the returned ``upper`` is a valid bound whatever the attack
    misses (a weaker attack only loosens it). The bracket [lower, upper] has width
    max_eps/2^halvings; ``lower`` is where PGD failed, not a certified bound.

    Returns:
      ``(upper, censored)``, (N,) each: ``censored`` where PGD did not flip even at
      ``max_eps`` (``upper`` is then ``max_eps``, a lower end of the unknown distance).
    """
    if not max_eps > 0 or int(halvings) < 1:
        raise ValueError(f"max_eps must be > 0 and halvings >= 1, got {max_eps}, {halvings}")
    n = x.shape[0]
    top = jnp.full((n,), max_eps, x.dtype)
    k0, k1 = jax.random.split(key)
    kw: dict[str, Any] = {"steps": steps, "box": box, "objective": objective}
    censored = ~pgd_flips(clf, params, x, target, top, k0, **kw)

    def body(i, carry):
        lo, hi = carry
        mid = 0.5 * (lo + hi)
        f = pgd_flips(clf, params, x, target, mid, jax.random.fold_in(k1, i), **kw)
        return jnp.where(f, lo, mid), jnp.where(f, mid, hi)

    _, upper = jax.lax.fori_loop(0, int(halvings), body, (jnp.zeros_like(top), top))
    return upper, censored


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How :func:`evaluate_classifiers` attacks and measures.

    Attributes:
      eps: evaluation budgets (L∞).
      pgd_steps: steps of the PGD evaluation attack (004: PGD-20).
      pgd_restarts: its random starts.
      pgd_objective: what PGD (and the distance bisection) ascends, :data:`PGD_OBJECTIVES`.
      rfgsm_alpha: R+FGSM's random step as a share of ε.
      rfgsm_variant: :data:`RFGSM_VARIANTS`.
      distance_max: upper end of the bisection bracket (None: no distance).
      distance_halvings: bisection rounds (bracket width distance_max / 2^halvings).
      distance_steps: PGD steps per bisection round.
      box: valid input range, or None.
      chunk: examples per compiled evaluation call.
    """

    eps: tuple[float, ...] = (0.02, 0.05, 0.1)
    pgd_steps: int = 20
    pgd_restarts: int = 1
    pgd_objective: str = "margin"
    rfgsm_alpha: float = 0.5
    rfgsm_variant: str = "tramer"
    distance_max: float | None = 0.5
    distance_halvings: int = 12
    distance_steps: int = 10
    box: tuple[float, float] | None = (0.0, 1.0)
    chunk: int = 2048

    def __post_init__(self) -> None:
        # A hashable tuple of floats: the settings are a static argument of the compiled program.
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        if self.box is not None:
            object.__setattr__(self, "box", (float(self.box[0]), float(self.box[1])))
        if not self.eps or any(not (np.isfinite(e) and e > 0) for e in self.eps):
            raise ValueError(f"eval eps must be finite values > 0, got {self.eps}")
        if self.pgd_steps < 1 or self.pgd_restarts < 1 or self.chunk < 1:
            raise ValueError(
                f"pgd_steps, pgd_restarts and chunk must be >= 1, got {self.pgd_steps}, "
                f"{self.pgd_restarts}, {self.chunk}"
            )
        if self.pgd_objective not in PGD_OBJECTIVES:
            raise ValueError(f"pgd_objective must be one of {PGD_OBJECTIVES}")
        if self.rfgsm_variant not in RFGSM_VARIANTS:
            raise ValueError(f"rfgsm_variant must be one of {RFGSM_VARIANTS}")
        if not 0.0 <= self.rfgsm_alpha <= 1.0:
            raise ValueError(f"rfgsm_alpha must lie in [0, 1], got {self.rfgsm_alpha}")
        if self.distance_halvings < 1 or self.distance_steps < 1:
            raise ValueError(
                f"distance_halvings and distance_steps must be >= 1, got "
                f"{self.distance_halvings}, {self.distance_steps}"
            )
        if self.distance_max is not None and not self.distance_max > 0:
            raise ValueError(f"distance_max must be > 0 or None, got {self.distance_max}")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Per-example results of K models on N examples (numpy).

    Attributes:
      prediction: (K, N) argmax f(x).
      correct: (K, N) prediction == label.
      flipped: attack name ('rfgsm', 'pgd', 'worst' = their OR) -> (K, E, N) bool.
      softmax_margin, logit_margin: (K, N) top-2 gaps.
      distance: (K, N) attack-based L∞ distance upper bound (None without a distance).
      distance_censored: (K, N) bool, PGD did not flip at ``distance_max``.
      eps: (E,) the budgets.
    """

    prediction: np.ndarray
    correct: np.ndarray
    flipped: dict[str, np.ndarray]
    softmax_margin: np.ndarray
    logit_margin: np.ndarray
    distance: np.ndarray | None
    distance_censored: np.ndarray | None
    eps: np.ndarray


@functools.partial(jax.jit, static_argnames=("clf", "settings"))
def _evaluate_chunk(clf: Any, settings: EvalSettings, params: Any, x: jax.Array, key: jax.Array):
    eps = jnp.asarray(settings.eps, x.dtype)
    k_rf, k_pgd, k_dist = jax.random.split(key, 3)

    def one_model(p):
        logits = clf.logits(p, x)
        pred = jnp.argmax(logits, -1)

        def at(e, i):
            x_rf = rfgsm(
                clf,
                p,
                x,
                pred,
                e,
                jax.random.fold_in(k_rf, i),
                alpha=settings.rfgsm_alpha,
                variant=settings.rfgsm_variant,
                box=settings.box,
            )
            rf = jnp.argmax(clf.logits(p, x_rf), -1) != pred
            pg = pgd_flips(
                clf,
                p,
                x,
                pred,
                e,
                jax.random.fold_in(k_pgd, i),
                steps=settings.pgd_steps,
                restarts=settings.pgd_restarts,
                box=settings.box,
                objective=settings.pgd_objective,
            )
            return rf, pg

        rf, pg = jax.vmap(at)(eps, jnp.arange(eps.shape[0]))
        out = {
            "prediction": pred,
            "rfgsm": rf,
            "pgd": pg,
            "softmax_margin": softmax_margin(logits),
            "logit_margin": logit_margin(logits),
        }
        if settings.distance_max is not None:
            out["distance"], out["distance_censored"] = distance_upper_bound(
                clf,
                p,
                x,
                pred,
                k_dist,
                max_eps=settings.distance_max,
                halvings=settings.distance_halvings,
                steps=settings.distance_steps,
                box=settings.box,
                objective=settings.pgd_objective,
            )
        return out

    return jax.vmap(one_model)(params)


def evaluate_classifiers(
    clf: Any,
    params: Any,
    x: Any,
    labels: Any,
    key: jax.Array,
    settings: EvalSettings = EvalSettings(),
) -> Evaluation:
    """Attacks and margins of a stack of K models (leading axis of every params leaf).

    One compiled program per chunk shape, vmapped over models and budgets; examples go in
    chunks of ``settings.chunk`` (the last one padded and the padding dropped). Chunk c uses
    ``fold_in(key, c)``, the same for every model. Inside an active
    :func:`~vaerob_jax.sweeps.parallel.use_devices` block of several devices the models are
    split over the devices (padded with copies of the last one, dropped again).

    Raises:
      ValueError: inputs not of ``clf.image_shape``, labels not (N,) in [0, classes), params
        without a common leading model axis.
    """
    xs = np.asarray(x, np.float32)
    y = np.asarray(labels)
    shape = tuple(clf.image_shape)
    if xs.ndim != len(shape) + 1 or xs.shape[1:] != shape:
        raise ValueError(
            f"inputs must have shape (N, {', '.join(map(str, shape))}), got {xs.shape}"
        )
    if y.shape != (xs.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be ({xs.shape[0]},) integers, got {y.shape} {y.dtype}")
    if y.size == 0 or y.min() < 0 or y.max() >= clf.num_classes:
        raise ValueError(f"labels must lie in [0, {clf.num_classes}) and be non-empty")
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(params)}
    if len(sizes) != 1:
        raise ValueError(f"params leaves must share one leading model axis, got sizes {sizes}")
    n = xs.shape[0]
    chunk = min(settings.chunk, n)
    n_models = sizes.pop()
    grid_mesh = parallel.resolve_mesh()  # models split over an active mesh's devices
    if grid_mesh is not None:
        padded, _ = parallel.pad_axis(params, 0, parallel.mesh_size(grid_mesh))
        params = parallel.shard_axis(padded, grid_mesh)
    parts: list[dict[str, np.ndarray]] = []
    for c, start in enumerate(range(0, n, chunk)):
        xc = xs[start : start + chunk]
        pad = chunk - xc.shape[0]
        if pad:
            xc = np.concatenate([xc, np.repeat(xc[-1:], pad, axis=0)])
        out = jax.device_get(_evaluate_chunk(clf, settings, params, xc, jax.random.fold_in(key, c)))
        parts.append({k: np.asarray(v)[:n_models, ..., : chunk - pad] for k, v in out.items()})
    cat = {k: np.concatenate([p[k] for p in parts], axis=-1) for k in parts[0]}
    correct = cat["prediction"] == y[None, :]
    flipped = {"rfgsm": cat["rfgsm"].astype(bool), "pgd": cat["pgd"].astype(bool)}
    flipped["worst"] = flipped["rfgsm"] | flipped["pgd"]
    return Evaluation(
        prediction=cat["prediction"],
        correct=correct,
        flipped=flipped,
        softmax_margin=cat["softmax_margin"].astype(np.float64),
        logit_margin=cat["logit_margin"].astype(np.float64),
        distance=cat["distance"].astype(np.float64) if "distance" in cat else None,
        distance_censored=cat["distance_censored"].astype(bool) if "distance" in cat else None,
        eps=np.asarray(settings.eps, np.float64),
    )
