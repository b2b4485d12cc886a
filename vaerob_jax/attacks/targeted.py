"""Targeted attacks on (hierarchical) VAEs, 002 §4: objectives, λ grid, pairs, per-pair records.

The adversary adds d to an input x so that the model treats x + d like a target image x_t.
Objectives follow the attack contract (docs/CONTRACTS.md): ``objective(params, inputs, delta,
key) -> scalar to MAXIMISE`` for one example, ``inputs`` a dict with 'x' (H, W, C) and 'target'
(H, W, C). Each returns minus the paper's divergence; the distortion penalty (002's +λ‖d‖₂,
unsquared by default) belongs to the threat, ``attacks.penalty('l2')``, which subtracts λ‖d‖₂
with an exact norm, so maximising ``objective − λ‖d‖`` minimises the paper's Δ.

* :func:`latent_objective`: −KL(q(z|x+d) ‖ q(z|x_t)) (Eq. 13, r = KL as Tabacof et al. 2016 and
  Gondim-Ribeiro et al. 2018), the closed-form Gaussian KL with *variances*
  (``DiagGaussian.kl``; their public code used standard deviations), target side
  ``stop_gradient``.
* :func:`dlgm_latent_objective`: Eq. 14, the same at z^1 of a hierarchical model.
* :func:`seatbelt_latent_objective`: Eq. 15, Σ over chosen layers (default all) of the layer
  KLs. q(z^i|x) for i ≥ 2 is a mixture (002 does not say how it is computed): default
  ``layer_dist='mean_path'``, the Gaussian of layer i obtained by feeding the parent's mean
  (``model.posterior``; deterministic, L-BFGS-friendly); ``'sampled'``: K chains with common
  noise for x + d and x_t, the KL between the conditionals given the sampled parents, averaged.
* :func:`output_objective`: Eq. 12 with its signs made consistent (spec 002 §2): the target's
  ELBO under the attacked encoder, E_{q(z|x+d)} log p(x_t|z) − KL(q(z|x+d) ‖ p(z)), over K
  fixed noise draws (default 4); hierarchical models: MC KL of the whole chain along the same
  draws, likelihood on the layers the model reads (Seatbelt: all, DLGM: z^1).

Fixed noise: draw k uses the chain key ``fold_in(key, k)`` (layer i of a chain then
``fold_in(chain key, i)``, the ``sample_chain`` convention), and the same draws serve x + d and
x_t. The objective is thus a deterministic function of its ``key`` argument: an L-BFGS driver
must pass the attack's (per-example) key unchanged at every evaluation, which fixes the noise
for the whole optimisation; a driver that folds the step into the key would redraw it.

Helpers: :func:`lambda_grid` (λ_k = 2^(−20 + 40k/(n−1)), 002 §5.2), :func:`sample_pairs`
(seeded distinct input–target pairs, the same for every model), and :func:`attack_record` with
what 002 reports per (model, mode, pair, λ): ‖d‖₂, Δ and its divergence part, −log p(x_t|z̃)
(mean of 16 draws), ‖g(x+d) − x_t‖₂, ‖g(x+d) − x‖₂, and the d = 0 references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.threats import exact_norm
from vaerob_jax.models.distributions import DiagGaussian

__all__ = [
    "LAYER_DISTS",
    "PENALTIES",
    "attack_record",
    "code_distance_objective",
    "dlgm_latent_objective",
    "lambda_grid",
    "latent_objective",
    "output_objective",
    "sample_pairs",
    "seatbelt_latent_objective",
    "target_nll",
]

Objective = Callable[[Any, Mapping[str, jax.Array], jax.Array, jax.Array], jax.Array]
LAYER_DISTS = ("mean_path", "sampled")
PENALTIES = ("l2", "l2_squared")
NLL_STREAM = 0x4E4C4C  # fold_in stream of the record's −log p(x_t|z̃) draws ("NLL")


def _hierarchical(model: Any) -> bool:
    return hasattr(model, "sample_chain")


def _images(model: Any, inputs: Mapping[str, jax.Array], delta: jax.Array):
    if "target" not in inputs:
        raise ValueError("targeted objectives need inputs['target'] (the target image x_t)")
    x, x_t = jnp.asarray(inputs["x"]), jnp.asarray(inputs["target"])
    shape = tuple(model.image_shape)
    if x.shape != shape or x_t.shape != shape or jnp.shape(delta) != shape:
        raise ValueError(
            f"x, target and delta must each be one image {shape}; got {x.shape}, "
            f"{x_t.shape}, {jnp.shape(delta)} (vmap over pairs and budgets)"
        )
    return x + delta, x_t


def _kl(q: DiagGaussian, q_t: DiagGaussian) -> jax.Array:
    return jnp.sum(q.kl(jax.lax.stop_gradient(q_t)))


def _tag(objective: Any, model: Any, name: str) -> Any:
    objective.image_shape = tuple(model.image_shape)
    objective.needs = ("x", "target")
    objective.__name__ = name
    return objective


def _check_draws(n_draws: int) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    return int(n_draws)


def latent_objective(model: Any) -> Objective:
    """Eq. 13 of 002: −KL(q(z|x+d) ‖ q(z|x_t)) for a single-layer VAE (target side constant).

    At d = 0 it is −KL(q(z|x) ‖ q(z|x_t)), the clean latent distance; the gradient there is
    finite (no norm inside). Hierarchical models: :func:`dlgm_latent_objective` (Eq. 14) or
    :func:`seatbelt_latent_objective` (Eq. 15).
    """
    if _hierarchical(model):
        raise ValueError(
            "latent_objective is Eq. 13 for a single-layer VAE; use dlgm_latent_objective "
            "(Eq. 14) or seatbelt_latent_objective (Eq. 15) for a hierarchical model"
        )

    def objective(params, inputs, delta, key):
        x_adv, x_t = _images(model, inputs, delta)
        return -_kl(model.posterior(params, x_adv), model.posterior(params, x_t))

    return _tag(objective, model, "latent_objective")


def code_distance_objective(model: Any) -> Objective:
    """Eq. 12 of 003: −‖z(x+d) − z(x_t)‖₂ with z = ``model.embed`` (the code of a deterministic
    autoencoder, the posterior mean of a VAE), target side ``stop_gradient``.

    003 bounds ‖d‖₂ ≤ λ (a ball threat, ``attacks.ball('l2')``) instead of penalising it; the
    attack maximises this value, so the paper's "attack loss" is its negative. The norm is
    ``safe_norm`` (finite gradient where the code already equals the target's). For VAEs,
    002's KL form is :func:`latent_objective`.
    """
    from vaerob_jax.attacks.objectives import safe_norm

    def objective(params, inputs, delta, key):
        del key
        x_adv, x_t = _images(model, inputs, delta)
        z_t = jax.lax.stop_gradient(model.embed(params, x_t))
        return -safe_norm(model.embed(params, x_adv) - z_t)

    tagged = _tag(objective, model, "code_distance_objective")
    tagged.requires = ("x", "target")
    return tagged


def dlgm_latent_objective(model: Any) -> Objective:
    """Eq. 14 of 002: −KL(q(z^1|x+d) ‖ q(z^1|x_t)), the bottom layer of a hierarchical model.

    For a DLGM/β-TCDLGM the likelihood reads only z^1, so matching it suffices (002 §4).
    """
    if not _hierarchical(model):
        raise ValueError("dlgm_latent_objective needs a hierarchical model; use latent_objective")

    def objective(params, inputs, delta, key):
        x_adv, x_t = _images(model, inputs, delta)
        return -_kl(model.posterior(params, x_adv)[0], model.posterior(params, x_t)[0])

    return _tag(objective, model, "dlgm_latent_objective")


def _layer_indices(layers: Any, n_layers: int) -> tuple[int, ...]:
    """0-based indices from 'all' | 'bottom' | 'top' | 1-based layer numbers (z^1..z^L)."""
    if isinstance(layers, str):
        named = {"all": tuple(range(n_layers)), "bottom": (0,), "top": (n_layers - 1,)}
        if layers not in named:
            raise ValueError(f"unknown layers {layers!r}; choose 'all', 'bottom', 'top' or 1..L")
        return named[layers]
    picked = tuple(int(i) for i in layers)
    if not picked or any(i < 1 or i > n_layers for i in picked) or len(set(picked)) < len(picked):
        raise ValueError(
            f"layers must be distinct layer numbers in 1..{n_layers} (z^1..z^L), got {layers!r}"
        )
    return tuple(i - 1 for i in picked)


def seatbelt_latent_objective(
    model: Any,
    layers: str | Sequence[int] = "all",
    layer_dist: str = "mean_path",
    n_draws: int = 4,
) -> Objective:
    """Eq. 15 of 002: −Σ_{i ∈ layers} KL(q(z^i|x+d) ‖ q(z^i|x_t)).

    Args:
      model: a hierarchical VAE.
      layers: 'all' (default, Eq. 15), 'bottom' (= Eq. 14), 'top', or 1-based layer numbers.
      layer_dist: 'mean_path' (default): layer i's Gaussian given the parent's mean
        (``model.posterior``); 'sampled': the average over ``n_draws`` chains (draw k from
        ``fold_in(key, k)``, the same noise for x + d and x_t) of the KL between the layer's
        conditionals given the sampled parents (module docstring: keep ``key`` fixed).
      n_draws: K for 'sampled'.
    """
    if not _hierarchical(model):
        raise ValueError("seatbelt_latent_objective needs a hierarchical model")
    if layer_dist not in LAYER_DISTS:
        raise ValueError(f"unknown layer_dist {layer_dist!r}; choose one of {LAYER_DISTS}")
    idx = _layer_indices(layers, len(model.layer_dims))
    k_draws = _check_draws(n_draws)

    def divergence(qs, qs_t):
        return sum(_kl(qs[i], qs_t[i]) for i in idx)

    def objective(params, inputs, delta, key):
        x_adv, x_t = _images(model, inputs, delta)
        if layer_dist == "mean_path":
            return -divergence(model.posterior(params, x_adv), model.posterior(params, x_t))

        def one(k):
            _, qs = model.sample_chain(params, x_adv, k)
            _, qs_t = model.sample_chain(params, x_t, k)
            return divergence(qs, qs_t)

        keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(k_draws))
        return -jnp.mean(jax.vmap(one)(keys))

    return _tag(objective, model, "seatbelt_latent_objective")


def _chain_elbo(
    model: Any, params: Any, x_in: jax.Array, x_score: jax.Array, k: jax.Array, kl: str
):
    """log p(x_score | z) − KL along one chain z ~ q(·|x_in) drawn with chain key k."""
    if _hierarchical(model):
        zs, qs = model.sample_chain(params, x_in, k)
        ps = model.prior(params, zs)
        kl_value = sum(jnp.sum(q.log_prob(z) - p.log_prob(z)) for z, q, p in zip(zs, qs, ps))
        return model.log_likelihood(params, x_score, zs) - kl_value
    q = model.posterior(params, x_in)
    z = q.sample(jax.random.fold_in(k, 0))
    if kl == "analytic":
        kl_value = jnp.sum(q.kl_standard())
    else:
        kl_value = jnp.sum(
            q.log_prob(z) - DiagGaussian(jnp.zeros_like(z), jnp.zeros_like(z)).log_prob(z)
        )
    return model.log_likelihood(params, x_score, z) - kl_value


def output_objective(model: Any, n_draws: int = 4, kl: str = "analytic") -> Objective:
    """Eq. 12 of 002 (signs made consistent): E_{q(z|x+d)} log p(x_t|z) − KL(q(z|x+d) ‖ p(z)).

    Maximising it maximises the target's ELBO under the attacked encoder; Δ_output = −this + λ‖d‖.

    Args:
      model: a VAE or a hierarchical VAE.
      n_draws: K fixed draws (default 4); draw k's chain key is ``fold_in(key, k)``.
      kl: single-layer VAEs only: 'analytic' (default, closed form) or 'mc' (log-ratio on the
        draws, what hierarchical models always use along their chains).
    """
    if kl not in ("analytic", "mc"):
        raise ValueError(f"unknown kl {kl!r}; choose 'analytic' or 'mc'")
    k_draws = _check_draws(n_draws)

    def objective(params, inputs, delta, key):
        x_adv, x_t = _images(model, inputs, delta)
        keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(k_draws))
        return jnp.mean(jax.vmap(lambda k: _chain_elbo(model, params, x_adv, x_t, k, kl))(keys))

    return _tag(objective, model, "output_objective")


# -- grid, pairs, records ------------------------------------------------------------------------
def lambda_grid(n: int = 50, lo: float = -20.0, hi: float = 20.0) -> np.ndarray:
    """The penalty weights λ_k = 2^(lo + (hi − lo)·k/(n − 1)), k = 0..n−1 (002 §5.2: 50 values,
    2^−20…2^20, as Tabacof et al. and Gondim-Ribeiro et al.), float64, increasing."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"lambda_grid: n must be a positive int, got {n!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)) or (n > 1 and not lo < hi):
        raise ValueError(f"lambda_grid: need finite lo < hi (log2 exponents), got {lo}, {hi}")
    if n == 1:
        return np.array([2.0**lo])
    return np.exp2(lo + (hi - lo) * np.arange(n) / (n - 1))


def sample_pairs(
    labels_or_n: Any, n_pairs: int, key_or_seed: Any, different_class: bool = False
) -> np.ndarray:
    """Seeded input–target index pairs (n_pairs, 2), all 2·n_pairs images distinct.

    The same seed gives the same pairs (use one set for every model: paired comparisons).

    Args:
      labels_or_n: the data set size N, or labels (N,) (needed for ``different_class``).
      n_pairs: number of pairs (002: 10).
      key_or_seed: an int seed or a JAX key (converted to a seed).
      different_class: targets of another class than their input (Tabacof et al.'s choice;
        002 just samples "random input–target pairs", the default).
    """
    if isinstance(labels_or_n, int | np.integer) and not isinstance(labels_or_n, bool):
        n, labels = int(labels_or_n), None
    else:
        labels = np.asarray(labels_or_n)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
        n = labels.shape[0]
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int | np.integer) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
    if 2 * n_pairs > n:
        raise ValueError(f"{n_pairs} pairs of distinct images need >= {2 * n_pairs}, got N={n}")
    if different_class and labels is None:
        raise ValueError("different_class=True needs labels, not a data set size")
    if isinstance(key_or_seed, int | np.integer):
        seed = int(key_or_seed)
    else:
        seed = int(jax.random.randint(key_or_seed, (), 0, np.iinfo(np.int32).max))
    perm = np.random.default_rng(seed).permutation(n)
    if not different_class:
        return np.stack([perm[:n_pairs], perm[n_pairs : 2 * n_pairs]], axis=1).astype(np.int64)
    assert labels is not None
    used = np.zeros(n, bool)
    pairs: list[tuple[int, int]] = []
    for i in perm:
        if len(pairs) == n_pairs:
            break
        if used[i]:
            continue
        free = perm[~used[perm] & (labels[perm] != labels[i]) & (perm != i)]
        if free.size == 0:
            continue
        used[i] = used[free[0]] = True
        pairs.append((int(i), int(free[0])))
    if len(pairs) < n_pairs:
        raise ValueError(f"only {len(pairs)} input-target pairs of different classes exist")
    return np.asarray(pairs, np.int64)


def target_nll(
    model: Any, params: Any, x_in: jax.Array, x_t: jax.Array, key: jax.Array, n_draws: int = 16
) -> jax.Array:
    """−log p(x_t | z̃), z̃ ~ q(z|x_in), averaged over ``n_draws`` chains (002 §5.2 metric).

    Draw k uses the chain key ``fold_in(key, k)``; the likelihood reads the layers the model
    does (Seatbelt: all, DLGM: z^1).
    """
    k_draws = _check_draws(n_draws)

    def one(k):
        if _hierarchical(model):
            zs, _ = model.sample_chain(params, x_in, k)
        else:
            zs = model.posterior(params, x_in).sample(jax.random.fold_in(k, 0))
        return -model.log_likelihood(params, x_t, zs)

    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(k_draws))
    return jnp.mean(jax.vmap(one)(keys))


def attack_record(
    model: Any,
    objective: Objective,
    params: Any,
    inputs: Mapping[str, jax.Array],
    delta: jax.Array,
    lam: jax.Array,
    key: jax.Array,
    *,
    n_draws: int = 16,
    penalty: str = "l2",
) -> dict[str, jax.Array]:
    """What 002 records for one attack (model, mode, pair, λ); pure, vmappable over all four.

    Args:
      model, objective, params: the attacked model and the objective the attack maximised.
      inputs: {'x', 'target'} of one pair; delta: the final perturbation; lam: its λ.
      key: the key the objective was evaluated with (its fixed noise); the −log p draws use
        ``fold_in(key, NLL_STREAM)``, common to d and d = 0.
      n_draws: draws for −log p(x_t|z̃) (002: the mean of 16). penalty: 'l2' (002) or
        'l2_squared' (the public codes) for Δ.

    Returns:
      Scalars: 'd_norm' ‖d‖₂; 'divergence' (−objective); 'delta_value' Δ = divergence +
      λ·‖d‖ (or ‖d‖²); 'divergence_d0' = Δ(d = 0); 'target_nll', 'target_nll_d0'
      −log p(x_t|z̃) at d and at d = 0, 'target_nll_self' −log p(x_t|z_t), z_t ~ q(z|x_t);
      'recon_to_target' ‖g(x+d) − x_t‖₂, 'recon_to_input' ‖g(x+d) − x‖₂ and the references
      'ref_target_recon' ‖g(x_t) − x_t‖₂, 'ref_input_to_target' ‖g(x) − x_t‖₂,
      'ref_input_recon' ‖g(x) − x‖₂ (g: ``model.reconstruct``).
    """
    if penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; choose one of {PENALTIES}")
    x, x_t = jnp.asarray(inputs["x"]), jnp.asarray(inputs["target"])
    x_adv = x + delta
    d_norm = exact_norm(delta)
    divergence = -objective(params, inputs, delta, key)
    pen = d_norm if penalty == "l2" else jnp.sum(jnp.square(delta))
    nll_key = jax.random.fold_in(key, NLL_STREAM)
    g_adv, g_x, g_t = (model.reconstruct(params, v) for v in (x_adv, x, x_t))
    return {
        "d_norm": d_norm,
        "divergence": divergence,
        "delta_value": divergence + lam * pen,
        "divergence_d0": -objective(params, inputs, jnp.zeros_like(delta), key),
        "target_nll": target_nll(model, params, x_adv, x_t, nll_key, n_draws),
        "target_nll_d0": target_nll(model, params, x, x_t, nll_key, n_draws),
        "target_nll_self": target_nll(model, params, x_t, x_t, nll_key, n_draws),
        "recon_to_target": exact_norm(g_adv - x_t),
        "recon_to_input": exact_norm(g_adv - x),
        "ref_target_recon": exact_norm(g_t - x_t),
        "ref_input_to_target": exact_norm(g_x - x_t),
        "ref_input_recon": exact_norm(g_x - x),
    }
