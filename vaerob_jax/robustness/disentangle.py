"""Metrics of 002 beyond the attacks: MIG, the β = 1 ELBO, Gaussian-noise robustness, weight norms.

* :func:`mutual_information_gap` — MIG exactly as Chen et al. (2018) (spec 002 §3): one sampled
  z_n ~ q(z|x_n) per example; H(z_j) = −mean_s log[(1/N) Σ_n q(z_sj|x_n)] on S = min(N, 10,000)
  samples, the sum over ALL N components by a streamed logsumexp; H(z_j|v_k) = Σ_v p(v)
  H(z_j|v_k = v), each term using only the examples with that value as samples and as mixture
  components; I_jk = max(0, H(z_j) − H(z_j|v_k)) / H(v_k); MIG = mean_k (top1_j − top2_j).
  Defaults: p(v) and H(v_k) empirical (equal to Chen's 1/|V_k| and log|V_k| on a full factor
  grid such as dSprites; ``chen_weights=True`` uses those). Hierarchical models: the top layer
  z^L, with mixture components N(μ^q_L(z^{L−1}_n), σ²) from one chain per x. Continuous factors
  become 10 quantile bins, binary / few-valued ones are kept as is (:func:`discretize_factors`).
  Pitfalls avoided (disentangling-vae #52, #64): samples, not posterior means; every factor
  entropy > 0 is checked; exclude dSprites' shape with ``exclude=('shape',)``.
* :func:`elbo_evaluation` — the ELBO at β = 1 (Fig. 3): −log p(x|z) by K = 16 draws and the KL
  in closed form for single-layer models, by the same K chains (MC) for L > 1; reported apart.
* :func:`noise_log_likelihood` — §5.3 / Fig. 8: log p(x | z*), z* ~ q(z | x + s·ε), ε ~ N(0, I).
  002 scales data to [−1, 1]; our pixels are in [0, 1], so our s is the paper's s / 2. No
  clipping by default (002 does not say; ``clip=True`` keeps x̃ in [0, 1]).
* :func:`relative_weight_norm_change` — Table 1: (‖θ_new‖₂ − ‖θ_ref‖₂)/‖θ_ref‖₂ for the encoder
  (all q-nets: 'encoder' and 'up') and the decoder (likelihood and p-nets: 'decoder' and
  'down'), kernels only by default (002 does not say whether biases count).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.objectives.tc import encode_chains, log_mixture_density

__all__ = [
    "discretize_factors",
    "elbo_evaluation",
    "elbo_terms",
    "mig_from_samples",
    "mutual_information_gap",
    "noise_log_likelihood",
    "noise_robustness",
    "relative_weight_norm_change",
    "weight_norms",
]


# -- MIG ------------------------------------------------------------------------------------------
def discretize_factors(
    factors: Mapping[str, Any] | np.ndarray,
    n_bins: int = 10,
    exclude: Sequence[str] = (),
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes (N, K) and names of ground-truth factors, for MIG.

    A factor with at most ``n_bins`` distinct values (binary, small discrete) is kept as is;
    one with more is cut at its empirical quantiles into ``n_bins`` bins (ties may merge bins).
    Codes are 0..|V_k|−1.

    Args:
      factors: dict name -> (N,) values, or an (N, K) array (names 'f0', 'f1', ...).
      n_bins: bins for continuous factors (002 spec: 10).
      exclude: factor names to leave out (e.g. dSprites' 'shape', as Chen et al.).
    """
    if factors is None:
        raise ValueError("MIG needs ground-truth factors; this data set has none")
    if isinstance(factors, Mapping):
        items = [(str(k), np.asarray(v)) for k, v in factors.items() if k not in set(exclude)]
    else:
        arr = np.asarray(factors)
        if arr.ndim != 2:
            raise ValueError(f"factors must be a dict or an (N, K) array, got shape {arr.shape}")
        items = [(f"f{k}", arr[:, k]) for k in range(arr.shape[1]) if f"f{k}" not in set(exclude)]
    if not items:
        raise ValueError("MIG needs at least one ground-truth factor (after exclusions)")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    n = items[0][1].shape[0]
    codes = []
    for name, v in items:
        if v.shape != (n,):
            raise ValueError(f"factor {name!r} has shape {v.shape}, expected ({n},)")
        if np.unique(v).size > n_bins:
            edges = np.quantile(v.astype(np.float64), np.linspace(0, 1, n_bins + 1)[1:-1])
            v = np.searchsorted(edges, v, side="right")
        code = np.unique(v, return_inverse=True)[1].reshape(-1)
        if code.max() == 0:
            raise ValueError(f"factor {name!r} takes a single value: its entropy is 0 (exclude it)")
        codes.append(code)
    return np.stack(codes, axis=1).astype(np.int32), tuple(name for name, _ in items)


def mig_from_samples(
    z: jax.Array,
    q: DiagGaussian,
    codes: np.ndarray,
    key: jax.Array | None = None,
    n_samples: int = 10_000,
    chen_weights: bool = False,
    sample_chunk: int = 128,
    component_chunk: int = 1024,
) -> dict[str, np.ndarray]:
    """MIG (Chen et al. 2018) from one sample per example and the posteriors (module docstring).

    Args:
      z: samples (N, D), row n from q(z|x_n); q: the N posteriors, fields (N, D).
      codes: (N, K) integer factor values (:func:`discretize_factors`).
      key: picks the S = min(N, n_samples) samples when S < N.
      chen_weights: weight values 1/|V_k| and normalise by log|V_k| (Chen's code) instead of
        the empirical p(v) and H(v_k).

    Returns:
      numpy: 'mig' (scalar), 'gaps' (K,), 'mi' (D, K) normalised, 'mi_nats' (D, K),
      'marginal_entropies' (D,), 'cond_entropies' (D, K), 'factor_entropies' (K,).
    """
    z = jnp.asarray(z)
    n, d = z.shape
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != n:
        raise ValueError(f"codes must be (N, K) with N={n}, got {codes.shape}")
    if d < 2:
        raise ValueError("MIG compares the two most informative latent dims: it needs D >= 2")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    s = min(int(n_samples), n)
    if s < n:
        if key is None:
            raise ValueError(f"n_samples={n_samples} < N={n}: a key is needed to pick the samples")
        idx = np.asarray(jax.random.permutation(key, n)[:s])
    else:
        idx = np.arange(n)
    zs = z[idx]
    chunks: dict[str, Any] = {"sample_chunk": sample_chunk, "component_chunk": component_chunk}
    _, per = log_mixture_density(zs, q, **chunks)
    h_z = -np.mean(np.asarray(per, np.float64) - math.log(n), axis=0)
    k_f = codes.shape[1]
    h_cond = np.zeros((d, k_f))
    h_v = np.zeros(k_f)
    for k in range(k_f):
        c = codes[:, k]
        counts = np.bincount(c).astype(np.float64)
        _, per_k = log_mixture_density(
            zs, q, sample_groups=jnp.asarray(c[idx]), component_groups=jnp.asarray(c), **chunks
        )
        log_dens = np.asarray(per_k, np.float64) - np.log(counts[c[idx]])[:, None]
        present = np.bincount(c[idx], minlength=counts.size) > 0
        sums = np.stack([np.bincount(c[idx], -log_dens[:, j], counts.size) for j in range(d)], 1)
        h_given = sums[present] / np.bincount(c[idx], minlength=counts.size)[present, None]
        p = counts / n
        w = np.full(counts.size, 1.0 / counts.size) if chen_weights else p
        w = w[present] / w[present].sum()
        h_cond[:, k] = w @ h_given
        h_v[k] = math.log(counts.size) if chen_weights else -np.sum(p * np.log(p))
    mi_nats = np.maximum(0.0, h_z[:, None] - h_cond)
    mi = mi_nats / h_v[None, :]
    top = np.sort(mi, axis=0)[::-1]
    gaps = top[0] - top[1]
    out = {
        "mig": np.asarray(np.mean(gaps)),
        "gaps": gaps,
        "mi": mi,
        "mi_nats": mi_nats,
        "marginal_entropies": h_z,
        "cond_entropies": h_cond,
        "factor_entropies": h_v,
    }
    bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
    if bad:
        raise FloatingPointError(f"MIG: non-finite values in {bad}")
    return out


def mutual_information_gap(
    model: Any,
    params: Any,
    images: jax.Array,
    factors: Mapping[str, Any] | np.ndarray | None,
    key: jax.Array,
    n_samples: int = 10_000,
    n_bins: int = 10,
    exclude: Sequence[str] = (),
    chen_weights: bool = False,
    batch_size: int = 256,
) -> dict[str, Any]:
    """MIG of a model's (top-layer) code on factor-labelled images (Chen et al. 2018; 002 App.).

    ``fold_in(key, 0)`` draws one chain per image (``objectives.tc.encode_chains``),
    ``fold_in(key, 1)`` the sample subset. Returns :func:`mig_from_samples`'s dict plus
    'factor_names'. Raises ValueError for missing/mismatched factors before encoding.
    """
    codes, names = discretize_factors(factors, n_bins, exclude)  # type: ignore[arg-type]
    if codes.shape[0] != jnp.shape(images)[0]:
        raise ValueError(f"{codes.shape[0]} factor rows for {jnp.shape(images)[0]} images")
    enc = encode_chains(model, params, images, jax.random.fold_in(key, 0), batch_size)
    out: dict[str, Any] = mig_from_samples(
        enc["z"],
        DiagGaussian(enc["mean"], enc["logvar"]),
        codes,
        jax.random.fold_in(key, 1),
        n_samples,
        chen_weights,
    )
    out["factor_names"] = names
    return out


# -- β = 1 ELBO (Fig. 3) ---------------------------------------------------------------------------
def elbo_terms(model: Any, params: Any, x: jax.Array, key: jax.Array, n_draws: int = 16):
    """β = 1 ELBO of one example: {'recon', 'kl', 'elbo'} (002 Fig. 3; Eqs. 4, 10, 11 at β = 1).

    recon = mean over K draws of −log p(x|z) (draw k: chain key ``fold_in(key, k)``); kl in
    closed form for a single latent layer, else the MC Σ_m [log q(z^m|·) − log p(z^m|z^{m+1})]
    averaged over the same K chains.
    """
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n_draws))
    if hasattr(model, "sample_chain") and len(model.layer_dims) > 1:

        def chain(k):
            zs, qs = model.sample_chain(params, x, k)
            ps = model.prior(params, zs)
            kl = sum(jnp.sum(q.log_prob(z) - p.log_prob(z)) for z, q, p in zip(zs, qs, ps))
            return -model.log_likelihood(params, x, zs), kl

        recon, kl = jax.vmap(chain)(keys)
        recon, kl = jnp.mean(recon), jnp.mean(kl)
    else:
        q = model.posterior(params, x)
        q = q[0] if hasattr(model, "sample_chain") else q  # (DiagGaussian is itself a tuple)

        def draw(k):
            z = q.sample(jax.random.fold_in(k, 0))
            return -model.log_likelihood(params, x, (z,) if hasattr(model, "sample_chain") else z)

        recon = jnp.mean(jax.vmap(draw)(keys))
        kl = jnp.sum(q.kl_standard())
    return {"recon": recon, "kl": kl, "elbo": -(recon + kl)}


@functools.lru_cache(maxsize=32)
def _elbo_program(model: Any, n_draws: int, batch_size: int):
    def program(params, images, key):
        def body(args):
            x, n = args
            return elbo_terms(model, params, x, jax.random.fold_in(key, n), n_draws)

        return jax.lax.map(body, (images, jnp.arange(images.shape[0])), batch_size=batch_size)

    return jax.jit(program)


def elbo_evaluation(
    model: Any,
    params: Any,
    images: jax.Array,
    key: jax.Array,
    n_draws: int = 16,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """:func:`elbo_terms` for every image (image n: key ``fold_in(key, n)``), (N,) numpy arrays.

    Raises FloatingPointError if any value is non-finite.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    out = _elbo_program(model, int(n_draws), int(batch_size))(params, jnp.asarray(images), key)
    out = {k: np.asarray(v) for k, v in out.items()}
    bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
    if bad:
        raise FloatingPointError(f"elbo_evaluation: non-finite values in {bad}")
    return out


# -- Gaussian input noise (§5.3, Fig. 8) ----------------------------------------------------------
def noise_log_likelihood(
    model: Any,
    params: Any,
    x: jax.Array,
    key: jax.Array,
    scale: jax.Array | float,
    *,
    clip: bool = False,
    n_draws: int = 1,
) -> jax.Array:
    """log p(x | z*), z* ~ q(z | x̃), x̃ = x + s·ε (002 §5.3), averaged over ``n_draws`` z*.

    ε comes from ``fold_in(key, 0)`` (the same ε for every scale: paired over s), draw k of z*
    from the chain key ``fold_in(fold_in(key, 1), k)``. ``scale`` may be a traced array (vmap
    over a grid of s). s is in [0, 1] pixel units (= 002's s / 2).
    """
    eps = jax.random.normal(jax.random.fold_in(key, 0), jnp.shape(x), jnp.result_type(x))
    x_noisy = x + scale * eps
    if clip:
        x_noisy = jnp.clip(x_noisy, 0.0, 1.0)
    z_key = jax.random.fold_in(key, 1)

    def one(k):
        if hasattr(model, "sample_chain"):
            zs, _ = model.sample_chain(params, x_noisy, k)
        else:
            zs = model.posterior(params, x_noisy).sample(jax.random.fold_in(k, 0))
        return model.log_likelihood(params, x, zs)

    keys = jax.vmap(lambda k: jax.random.fold_in(z_key, k))(jnp.arange(n_draws))
    return jnp.mean(jax.vmap(one)(keys))


def noise_robustness(
    model: Any,
    params: Any,
    images: jax.Array,
    key: jax.Array,
    scales: Sequence[float] | jax.Array,
    *,
    clip: bool = False,
    n_draws: int = 1,
) -> np.ndarray:
    """(len(scales), N) values of :func:`noise_log_likelihood`; image n uses ``fold_in(key, n)``."""
    scales = jnp.asarray(scales, jnp.float32)
    if scales.ndim != 1 or not bool(jnp.all(scales >= 0)):
        raise ValueError(f"scales must be a 1-D array of values >= 0, got {scales}")
    images = jnp.asarray(images)
    keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(jnp.arange(images.shape[0]))
    out = np.asarray(_noise_program(model, bool(clip), int(n_draws))(params, images, keys, scales))
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("noise_robustness: non-finite log-likelihoods")
    return out


@functools.lru_cache(maxsize=32)
def _noise_program(model: Any, clip: bool, n_draws: int):
    def program(params, images, keys, scales):
        per_image = jax.vmap(
            lambda x, k, s: noise_log_likelihood(
                model, params, x, k, s, clip=clip, n_draws=n_draws
            ),
            in_axes=(0, 0, None),
        )
        return jax.vmap(per_image, in_axes=(None, None, 0))(images, keys, scales)

    return jax.jit(program)


# -- weight norms (Table 1) ------------------------------------------------------------------------
_GROUPS = {"encoder": ("encoder", "up"), "decoder": ("decoder", "down")}


def weight_norms(params: Mapping[str, Any], include_bias: bool = False) -> dict[str, float]:
    """‖θ‖₂ of the encoder ('encoder' + 'up' q-nets) and decoder ('decoder' + 'down' p-nets).

    Kernels only by default (leaves named 'kernel'); ``include_bias=True`` counts every leaf.
    """
    unknown = set(params) - {name for group in _GROUPS.values() for name in group}
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)} (expected {_GROUPS})")
    out = {}
    for group, names in _GROUPS.items():
        total = 0.0
        for name in names:
            if name not in params:
                continue
            for path, leaf in jax.tree_util.tree_flatten_with_path(params[name])[0]:
                last = path[-1]
                leaf_name = getattr(last, "key", getattr(last, "name", None))
                if include_bias or leaf_name == "kernel":
                    total += float(jnp.sum(jnp.square(jnp.asarray(leaf, jnp.float32))))
        out[group] = math.sqrt(total)
    return out


def relative_weight_norm_change(
    params_ref: Mapping[str, Any], params_new: Mapping[str, Any], include_bias: bool = False
) -> dict[str, float]:
    """Table 1 of 002: (‖θ_new‖₂ − ‖θ_ref‖₂)/‖θ_ref‖₂ per group (e.g. ref β = 1, new β = 10)."""
    ref = weight_norms(params_ref, include_bias)
    new = weight_norms(params_new, include_bias)
    for group, value in ref.items():
        if value == 0:
            raise ValueError(f"the reference {group} has zero weight norm")
    return {g: (new[g] - ref[g]) / ref[g] for g in ref}
