"""β-TCVAE: the total-correlation decomposition as a batch loss, and its estimators (002 §2.1).

002's Eqs. 2-4 split the dataset-level KL term of the ELBO, with q(z) = (1/N) Σ_n q(z|x_n)
the average encoding distribution and a factorised prior p(z), into
  E_q(x) KL(q(z|x) ‖ p(z)) = I_q(x; z) + TC + Σ_j KL(q(z_j) ‖ p(z_j)),
with TC = KL(q(z) ‖ Π_j q(z_j)). β-TCVAE (Chen et al. 2018) up-weights the TC by β. Per example
of a minibatch, z_i ~ q(z|x_i) reparameterised (spec 002 §1.1), the loss we minimise is
  loss_i = −log p(x_i|z_i) + [log q(z_i|x_i) − log q̂(z_i)] + β[log q̂(z_i) − Σ_d log q̂_d(z_id)]
           + [Σ_d log q̂_d(z_id) − log p(z_i)],
which at β = 1 telescopes to the one-sample negative ELBO for any estimator q̂.

The aggregate densities q̂ come from the batch itself (Chen et al. 2018 §4.1 / App. C), with
ℓ_ijd = log N(z_id; μ_jd, σ²_jd) the density of sample i under the posterior of example j:
  log q̂(z_i)     = LSE_j [log W_ij + Σ_d ℓ_ijd],    log q̂_d(z_id) = LSE_j [log W_ij + ℓ_ijd].
* MWS (Minibatch Weighted Sampling, default: 002 §3.1 trains with "a simple generalisation of
  MWS"): W_ij = 1/(N·B) for all i, j.
* MSS (Minibatch Stratified Sampling): M = B − 1, s = (N − M)/(N·M), W_ii = 1/N,
  W_{i,(i+1) mod B} = s, every other W_ij = 1/M. Each row sums to 1, and with a batch of distinct
  indices (``data.batch_indices`` samples without replacement) Σ_j W_ij q(z|x_{b_j}) is
  unbiased for (1/N) Σ_n q(z|x_n) *given the anchor* b_i: the self term carries 1/N, the
  other B − 1 terms (N − 1)/N in total.
  The widely copied public MSS code builds W with a strided fill that walks down columns 0 and 1
  instead of the diagonal (REFERENCE_NOTES 002); :func:`stride_bug_importance_weights`
  reproduces that matrix for the tests only.

Why TC must never be reported from MWS values: MWS's weights sum to B/(N·B) = 1/N per row, not
1, so log q̂(z) ≈ log q(z) − log N while Σ_d log q̂_d ≈ Σ_d log q_d − D log N; the reported TC is
off by up to (D − 1) log N (exactly that for collapsed posteriors) and I by up to log N. The
offsets are constants, so MWS *gradients* train well, but its values are not estimates of I, TC
or the dimension-wise KL. Report them with the full-data estimator :func:`tc_decomposition`
(Chen's ``elbo_decomposition``): all N components, S ≤ 10,000 samples, streamed in chunks.

(One file of ~500 lines: the minibatch estimators, the loss and the full-data estimator share
their density helpers.)

Why one file of ~520 lines: the estimators' weights, the reference code's stride-bug
variant kept for comparison, the streamed log-sum-exp and the loss are one derivation whose
formulas are checked side by side against the equations above.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.distributions import DiagGaussian, standard_normal_log_prob
from vaerob_jax.objectives.base import BatchLoss

__all__ = [
    "ESTIMATORS",
    "aggregate_log_densities",
    "beta_tcvae_loss",
    "check_estimator_sizes",
    "elbo_decomposition",
    "encode_chains",
    "importance_weights",
    "log_importance_weights",
    "log_mixture_density",
    "pairwise_log_density",
    "stride_bug_importance_weights",
    "tc_decomposition",
    "tc_decomposition_from_samples",
    "tc_penalty",
]

ESTIMATORS = ("mws", "mss")


# -- minibatch estimators ------------------------------------------------------------------------
def check_estimator_sizes(batch_size: Any, dataset_size: Any, estimator: str) -> tuple[int, int]:
    """Validates (B, N, estimator); returns (B, N) as ints or raises ValueError naming the field."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown tc estimator {estimator!r}; choose one of {ESTIMATORS}")
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int | np.integer):
        raise ValueError(
            f"dataset_size must be an int (the training-set size N), got {dataset_size!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an int, got {batch_size!r}")
    b, n = int(batch_size), int(dataset_size)
    if b < 1:
        raise ValueError(f"batch_size must be >= 1, got {b}")
    if estimator == "mss" and b < 2:
        raise ValueError("the 'mss' estimator needs batch_size >= 2 (M = B - 1 strata)")
    if n < b:
        raise ValueError(
            f"dataset_size N={n} is smaller than the batch size B={b}: the estimators assume a "
            "batch of distinct training examples"
        )
    return b, n


def importance_weights(batch_size: int, dataset_size: int, estimator: str = "mws") -> np.ndarray:
    """The (B, B) weight matrix W of the estimator, float64 (row i = sample, column j = component).

    MWS: every entry 1/(N·B). MSS (the correct matrix): W_ii = 1/N, W_{i,(i+1) mod B} = s with
    s = (N − M)/(N·M), M = B − 1, every other entry 1/M (Chen et al. 2018 App. C).
    """
    b, n = check_estimator_sizes(batch_size, dataset_size, estimator)
    if estimator == "mws":
        return np.full((b, b), 1.0 / (n * b))
    m = b - 1
    w = np.full((b, b), 1.0 / m)
    rows = np.arange(b)
    w[rows, (rows + 1) % b] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
    return w


def log_importance_weights(
    batch_size: int, dataset_size: int, estimator: str = "mws", dtype: Any = jnp.float32
) -> jax.Array:
    """log W of :func:`importance_weights`: a (B, B) input of :func:`aggregate_log_densities`."""
    return jnp.asarray(np.log(importance_weights(batch_size, dataset_size, estimator)), dtype)


def stride_bug_importance_weights(batch_size: int, dataset_size: int) -> np.ndarray:
    """REFERENCE ONLY (tests): the MSS matrix as the widely copied public code builds it.

    That code fills the flattened (B, B) matrix with stride B starting at offsets 0 and 1, which
    writes 1/N down column 0 and s down column 1 (not the diagonal and the super-diagonal), then
    sets entry (B − 2, 0) to s. Rows still mostly sum to 1, so a row-sum check misses it; the
    conditional-unbiasedness test (spec 002 §4.1) does not. Never use it for training.
    """
    b, n = check_estimator_sizes(batch_size, dataset_size, "mss")
    m = b - 1
    w = np.full((b, b), 1.0 / m)
    flat = w.reshape(-1)  # a view: the strided writes below land in w
    flat[0 :: m + 1] = 1.0 / n
    flat[1 :: m + 1] = (n - m) / (n * m)
    w[m - 1, 0] = (n - m) / (n * m)
    return w


def pairwise_log_density(z: jax.Array, q: DiagGaussian) -> jax.Array:
    """ℓ_ijd = log N(z_id; μ_jd, σ²_jd) for samples z (S, D) and components q (fields (C, D))."""
    return q.log_prob(z[:, None, :])


def aggregate_log_densities(
    z: jax.Array, q: DiagGaussian, log_w: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Minibatch (log q̂(z_i), Σ_d log q̂_d(z_id)) for a batch (Chen et al. 2018 §4.1).

    Args:
      z: samples (B, D), row i drawn from q(z|x_i).
      q: the batch's posteriors, fields (B, D).
      log_w: log importance weights (B, B) (:func:`log_importance_weights`).

    Returns:
      Two (B,) arrays: LSE_j [log W_ij + Σ_d ℓ_ijd] and Σ_d LSE_j [log W_ij + ℓ_ijd].
    """
    ell = pairwise_log_density(z, q)
    log_qz = jax.nn.logsumexp(log_w + jnp.sum(ell, axis=-1), axis=1)
    log_qz_dims = jax.nn.logsumexp(log_w[:, :, None] + ell, axis=1)
    return log_qz, jnp.sum(log_qz_dims, axis=-1)


def tc_penalty(
    z: jax.Array, q: DiagGaussian, log_w: jax.Array, beta: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-example decomposed KL with β on the TC: MI_i + β·TC_i + DWKL_i (spec 002 §1.1).

    MI_i = log q(z_i|x_i) − log q̂(z_i), TC_i = log q̂(z_i) − Σ_d log q̂_d(z_id),
    DWKL_i = Σ_d log q̂_d(z_id) − log p(z_i) with p = N(0, I). Shared by β-TCVAE and the top layer
    of the hierarchical losses, so that L = 1 Seatbelt equals β-TCVAE bit for bit.

    Returns:
      ((B,) penalties, dict of (B,) parts 'mi', 'tc', 'dwkl', 'kl' (= log q(z|x) − log p(z))).
    """
    log_qzx = jnp.sum(q.log_prob(z), axis=-1)
    log_pz = jnp.sum(standard_normal_log_prob(z), axis=-1)
    log_qz, log_qz_prod = aggregate_log_densities(z, q, log_w)
    mi = log_qzx - log_qz
    tc = log_qz - log_qz_prod
    dwkl = log_qz_prod - log_pz
    return mi + beta * tc + dwkl, {"mi": mi, "tc": tc, "dwkl": dwkl, "kl": log_qzx - log_pz}


def beta_tcvae_loss(model: Any, estimator: str = "mws", *, dataset_size: int) -> BatchLoss:
    """β-TCVAE (002 Eq. 4, Chen et al. 2018) as a :class:`BatchLoss` for the grid trainer.

    The batch mean of the per-example loss of the module docstring, with q̂ from the batch
    (``estimator``: 'mws' default, as 002 trains; 'mss' the correct stratified matrix).
    Example i draws z_i = μ_i + σ_i·η with η from ``fold_in(split(key, B)[i], 0)``, the
    convention of ``HierarchicalVAE.sample_chain`` for layer 1, so an L = 1 Seatbelt loss on the
    same params and key is bit-for-bit this loss.

    Args:
      model: a VAE (``posterior``, ``log_likelihood``).
      estimator: 'mws' or 'mss'.
      dataset_size: N, the training-set size (static; must be >= the batch size).

    Returns:
      BatchLoss with hyperparameter 'beta' (required). Aux: batch means of 'recon'
      (−log p(x|z)), 'kl' (MC log q(z|x) − log p(z)), 'elbo', and the *minibatch* estimates
      'mi_minibatch', 'tc_minibatch', 'dwkl_minibatch' (biased under MWS; see the module
      docstring — report :func:`tc_decomposition` instead).
    """
    check_estimator_sizes(2 if estimator == "mss" else 1, dataset_size, estimator)
    if hasattr(model, "sample_chain"):
        raise ValueError(
            "beta_tcvae_loss is for single-layer VAEs; use objectives.hierarchical.seatbelt_loss "
            "or tcdlgm_loss for a hierarchical model"
        )

    def one(params, x, k):
        q = model.posterior(params, x)
        z = q.sample(jax.random.fold_in(k, 0))
        return z, q, -model.log_likelihood(params, x, z)

    def fn(params, batch, key, hp):
        xs = batch["x"]
        size = xs.shape[0]
        log_w = log_importance_weights(size, dataset_size, estimator, xs.dtype)
        z, q, recon = jax.vmap(one, in_axes=(None, 0, 0))(params, xs, jax.random.split(key, size))
        return _combine(recon, z, q, log_w, hp["beta"], None)

    return BatchLoss(
        fn,
        "beta_tcvae",
        required=("beta",),
        options=(
            ("estimator", estimator),
            ("dataset_size", int(dataset_size)),
            ("model", model.spec()),
        ),
    )


def _combine(recon, z, q, log_w, beta, lower, gate_top=None):
    """Batch loss from per-example recon and top-layer samples (shared with the hierarchies).

    ``lower``: None, or (scalar batch-level lower-layer term, (B,) MC lower-layer KL, aux dict).
    ``gate_top``: None, or a map applied to the batch-mean top-layer penalty (free bits 'all').
    """
    penalty, parts = tc_penalty(z, q, log_w, beta)
    if gate_top is None:
        loss = jnp.mean(recon + penalty)
    else:
        loss = jnp.mean(recon) + gate_top(jnp.mean(penalty))
    kl = parts["kl"]
    aux: dict[str, jax.Array] = {}
    if lower is not None:
        term, kl_lower, lower_aux = lower
        loss = loss + term
        kl = kl + kl_lower
        aux.update(lower_aux)
    aux.update(
        {
            "recon": jnp.mean(recon),
            "kl": jnp.mean(kl),
            "elbo": -jnp.mean(recon + kl),
            "mi_minibatch": jnp.mean(parts["mi"]),
            "tc_minibatch": jnp.mean(parts["tc"]),
            "dwkl_minibatch": jnp.mean(parts["dwkl"]),
        }
    )
    return loss, aux


# -- full-data estimator -------------------------------------------------------------------------
def _stream_lse(carry, x):
    """One step of a streaming logsumexp over the last axis (safe when everything is −inf)."""
    m, s = carry
    new_m = jnp.maximum(m, jnp.max(x, axis=-1))
    shift = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(x - shift[..., None]), axis=-1)
    return new_m, s


@functools.partial(jax.jit, static_argnames=("sample_chunk", "component_chunk"))
def _mixture_impl(z, mean, logvar, g_s, g_c, sample_chunk, component_chunk):
    s_n, d = z.shape
    c_n = mean.shape[0]
    ps, pc = (-s_n) % sample_chunk, (-c_n) % component_chunk
    z = jnp.pad(z, ((0, ps), (0, 0)))
    g_s = jnp.pad(g_s, (0, ps), constant_values=-2)
    mean = jnp.pad(mean, ((0, pc), (0, 0))).reshape(-1, component_chunk, d)
    logvar = jnp.pad(logvar, ((0, pc), (0, 0))).reshape(-1, component_chunk, d)
    g_c = jnp.pad(g_c, (0, pc), constant_values=-1).reshape(-1, component_chunk)

    def rows(args):
        zc, gs = args
        init_j = (jnp.full((sample_chunk,), -jnp.inf, z.dtype), jnp.zeros((sample_chunk,), z.dtype))
        init_d = (
            jnp.full((sample_chunk, d), -jnp.inf, z.dtype),
            jnp.zeros((sample_chunk, d), z.dtype),
        )

        def step(carry, comp):
            cj, cd = carry
            mu, lv, gc = comp
            ell = DiagGaussian(mu, lv).log_prob(zc[:, None, :])  # (Cs, Cc, D)
            ok = gs[:, None] == gc[None, :]
            joint = jnp.where(ok, jnp.sum(ell, axis=-1), -jnp.inf)
            per = jnp.where(ok[..., None], ell, -jnp.inf)
            return (_stream_lse(cj, joint), _stream_lse(cd, jnp.moveaxis(per, 1, -1))), None

        ((mj, sj), (md, sd)), _ = jax.lax.scan(step, (init_j, init_d), (mean, logvar, g_c))
        return mj + jnp.log(sj), md + jnp.log(sd)

    zs = z.reshape(-1, sample_chunk, d)
    gss = g_s.reshape(-1, sample_chunk)
    joint, per = jax.lax.map(rows, (zs, gss))
    return joint.reshape(-1)[:s_n], per.reshape(-1, d)[:s_n]


def log_mixture_density(
    z: jax.Array,
    q: DiagGaussian,
    *,
    sample_groups: jax.Array | None = None,
    component_groups: jax.Array | None = None,
    sample_chunk: int = 128,
    component_chunk: int = 1024,
) -> tuple[jax.Array, jax.Array]:
    """log Σ_n [g_s = g_n] q(z_s | n): joint (S,) and per dimension (S, D), unnormalised.

    Streams over chunks of samples and components (memory ≈ sample_chunk·component_chunk·D
    floats, never S×N×D), so all N components of a data set can enter (Chen's full-data
    estimator; MIG's conditional entropies use the groups, i.e. the factor values). Subtract
    the log of the number of components in a sample's group to get the mixture density.

    Args:
      z: samples (S, D). q: components, fields (N, D).
      sample_groups, component_groups: optional int group ids (S,), (N,); a sample only sees
        components of its own group (default: one group).
      sample_chunk, component_chunk: chunk sizes (static).
    """
    z = jnp.asarray(z)
    mean, logvar = jnp.asarray(q.mean, z.dtype), jnp.asarray(q.logvar, z.dtype)
    if z.ndim != 2 or mean.ndim != 2 or mean.shape[1] != z.shape[1] or logvar.shape != mean.shape:
        raise ValueError(
            f"z must be (S, D) and q's fields (N, D) with the same D; got {z.shape}, "
            f"{mean.shape}, {logvar.shape}"
        )
    g_s = jnp.zeros(z.shape[0], jnp.int32) if sample_groups is None else jnp.asarray(sample_groups)
    g_c = jnp.zeros(mean.shape[0], jnp.int32) if component_groups is None else component_groups
    g_c = jnp.asarray(g_c)
    if g_s.shape != (z.shape[0],) or g_c.shape != (mean.shape[0],):
        raise ValueError("sample_groups must be (S,) and component_groups (N,)")
    if sample_chunk < 1 or component_chunk < 1:
        raise ValueError("sample_chunk and component_chunk must be >= 1")
    # never pad a small data set up to a large chunk
    sample_chunk = min(int(sample_chunk), z.shape[0])
    component_chunk = min(int(component_chunk), mean.shape[0])
    return _mixture_impl(
        z, mean, logvar, g_s.astype(jnp.int32), g_c.astype(jnp.int32), sample_chunk, component_chunk
    )


def tc_decomposition_from_samples(
    z: jax.Array,
    q: DiagGaussian,
    key: jax.Array | None = None,
    n_samples: int = 10_000,
    sample_chunk: int = 128,
    component_chunk: int = 1024,
) -> dict[str, jax.Array]:
    """Full-data estimates of I, TC and the dimension-wise KL (Chen et al. 2018 App. C).

    log q(z_s) = LSE_n Σ_d ℓ_snd − log N and log q_d(z_sd) = LSE_n ℓ_snd − log N over ALL N
    components, on S = min(N, n_samples) of the samples (a random subset drawn with ``key``
    when S < N). p(z) = N(0, I).

    Args:
      z: one sample per example (N, D), row n from q(z|x_n). q: the posteriors, fields (N, D).
      key: needed only when n_samples < N. n_samples: S.
      sample_chunk, component_chunk: as for :func:`log_mixture_density`.

    Returns:
      Scalars 'mi', 'tc', 'dwkl', 'kl' (= mi + tc + dwkl, the MC E KL(q(z|x) ‖ p(z))),
      'joint_entropy' (−E log q(z)); (D,) arrays 'dwkl_per_dim', 'marginal_entropies'.
    """
    n = z.shape[0]
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    s = min(int(n_samples), n)
    if s < n:
        if key is None:
            raise ValueError(f"n_samples={n_samples} < N={n}: a key is needed to pick the samples")
        idx = jax.random.permutation(key, n)[:s]
        zs = z[idx]
        qs = DiagGaussian(q.mean[idx], q.logvar[idx])
    else:
        zs, qs = z, q
    log_n = math.log(n)
    joint, per = log_mixture_density(
        zs, q, sample_chunk=sample_chunk, component_chunk=component_chunk
    )
    joint, per = joint - log_n, per - log_n
    log_qzx = jnp.sum(qs.log_prob(zs), axis=-1)
    log_pz_d = standard_normal_log_prob(zs)
    dw = jnp.mean(per - log_pz_d, axis=0)
    out = {
        "mi": jnp.mean(log_qzx - joint),
        "tc": jnp.mean(joint - jnp.sum(per, axis=-1)),
        "dwkl": jnp.sum(dw),
        "dwkl_per_dim": dw,
        "joint_entropy": -jnp.mean(joint),
        "marginal_entropies": -jnp.mean(per, axis=0),
    }
    out["kl"] = out["mi"] + out["tc"] + out["dwkl"]
    return out


def encode_chains(
    model: Any, params: Any, images: jax.Array, key: jax.Array, batch_size: int = 256
) -> dict[str, jax.Array]:
    """One reparameterised chain per image, chunked: what the full-data estimators need.

    Image n uses key ``fold_in(key, n)``. For a VAE the "top layer" is z itself; for a
    hierarchical model (has ``sample_chain``) it is z^L with its conditional q(z^L | z^{L−1}_n)
    (002 measures TC and MIG on the top layer).

    Returns:
      'z' (N, D) top-layer samples, 'mean'/'logvar' (N, D) their conditionals, 'recon' (N,)
      −log p(x|z), 'kl_lower' (N,) the MC Σ_{m<L} [log q(z^m|·) − log p(z^m|z^{m+1})] (0 for L=1),
      'kl_top_analytic' (N,) KL(q(z^L|·) ‖ N(0, I)).
    """
    images = jnp.asarray(images)
    return _encoder_program(model, int(batch_size))(params, images, key)


@functools.lru_cache(maxsize=32)
def _encoder_program(model: Any, batch_size: int):
    """One compiled chunked encoder per (model, batch_size)."""
    hierarchical = hasattr(model, "sample_chain")

    def one(params, x, k):
        if hierarchical:
            zs, qs = model.sample_chain(params, x, k)
            ps = model.prior(params, zs)
            lower = sum(
                (
                    jnp.sum(qs[m].log_prob(zs[m]) - ps[m].log_prob(zs[m]))
                    for m in range(len(zs) - 1)
                ),
                jnp.zeros((), x.dtype),
            )
            z, q = zs[-1], qs[-1]
        else:
            q = model.posterior(params, x)
            z = q.sample(jax.random.fold_in(k, 0))
            zs, lower = z, jnp.zeros((), x.dtype)
        return {
            "z": z,
            "mean": q.mean,
            "logvar": q.logvar,
            "recon": -model.log_likelihood(params, x, zs),
            "kl_lower": lower,
            "kl_top_analytic": jnp.sum(q.kl_standard()),
        }

    def program(params, images, key):
        def body(args):
            x, n = args
            return one(params, x, jax.random.fold_in(key, n))

        ids = jnp.arange(images.shape[0])
        return jax.lax.map(body, (images, ids), batch_size=batch_size)

    return jax.jit(program)


def _finite(out: dict[str, Any], what: str) -> dict[str, Any]:
    bad = [k for k, v in out.items() if not bool(jnp.all(jnp.isfinite(v)))]
    if bad:
        raise FloatingPointError(f"{what}: non-finite values in {bad}")
    return out


def tc_decomposition(
    model: Any,
    params: Any,
    images: jax.Array,
    key: jax.Array,
    n_samples: int = 10_000,
    batch_size: int = 256,
) -> dict[str, jax.Array]:
    """Full-data I, TC and dimension-wise KL of a trained model's (top-layer) aggregate posterior.

    What reports should show instead of the MWS training values (module docstring).
    ``fold_in(key, 0)`` draws the chains (:func:`encode_chains`), ``fold_in(key, 1)`` the
    sample subset. Raises FloatingPointError if any estimate is non-finite.
    """
    enc = encode_chains(model, params, images, jax.random.fold_in(key, 0), batch_size)
    out = tc_decomposition_from_samples(
        enc["z"], DiagGaussian(enc["mean"], enc["logvar"]), jax.random.fold_in(key, 1), n_samples
    )
    out["kl_analytic"] = jnp.mean(enc["kl_top_analytic"])
    return _finite(out, "tc_decomposition")


def elbo_decomposition(
    model: Any,
    params: Any,
    images: jax.Array,
    key: jax.Array,
    n_samples: int = 10_000,
    batch_size: int = 256,
) -> dict[str, jax.Array]:
    """:func:`tc_decomposition` plus the reconstruction and lower-layer terms of the ELBO.

    Adds 'recon' (mean −log p(x|z) over all N, the same chains), 'kl_lower' (mean MC KL of the
    layers below the top, 0 for a VAE) and 'elbo' = −(recon + kl_lower + kl) (with kl the
    full-data top-layer E KL on the S samples; equal to the MC ELBO when S = N).
    """
    enc = encode_chains(model, params, images, jax.random.fold_in(key, 0), batch_size)
    out = tc_decomposition_from_samples(
        enc["z"], DiagGaussian(enc["mean"], enc["logvar"]), jax.random.fold_in(key, 1), n_samples
    )
    out["kl_analytic"] = jnp.mean(enc["kl_top_analytic"])
    out["recon"] = jnp.mean(enc["recon"])
    out["kl_lower"] = jnp.mean(enc["kl_lower"])
    out["elbo"] = -(out["recon"] + out["kl_lower"] + out["kl"])
    return _finite(out, "elbo_decomposition")
