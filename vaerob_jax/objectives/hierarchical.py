"""β-TCDLGM and Seatbelt-VAE losses (002 §3, Eqs. 5-11) for :class:`HierarchicalVAE`.

Per example (spec 002 §1.3) one reparameterised chain z^1_i ~ q(·|x_i), z^{m+1}_i ~ q(·|z^m_i)
(``model.sample_chain`` with the example's key ``split(key, B)[i]``), and
  loss_i = −log p(x_i | z_i) + Σ_{m<L} [log q(z^m_i|parent) − log p(z^m_i|z^{m+1}_i)]
           + [log q(z^L_i|z^{L−1}_i) − log q̂(z^L_i)] + β[log q̂(z^L_i) − Σ_j log q̂_j(z^L_ij)]
           + [Σ_j log q̂_j(z^L_ij) − log p(z^L_i)],
i.e. Eq. 9 with the KL terms of the lower layers as Monte-Carlo log-ratios (the exact ELBO of
Eq. 5) and the top layer decomposed as in β-TCVAE (:mod:`vaerob_jax.objectives.tc`): q̂ is built
from the batch's top conditionals N(μ^q_L(z^{L−1}_m), σ^q_L(z^{L−1}_m)²) — z^{L−1}_m takes the
role of x_m, with the same N — using MWS (default) or the correct MSS matrix. The likelihood is
the model's: p(x | z^1..z^L) for ``kind='seatbelt'`` (Eq. 8/10), p(x | z^1) for ``kind='dlgm'``
(β-TCDLGM, Eq. 11); nothing else differs.

Options:
* ``layer_kl='analytic'``: the lower layers use the closed-form KL(q(z^m|parent) ‖
  p(z^m|z^{m+1}_i)) as Eq. 9 is printed — biased, since z^{m+1}_i is drawn from q(·|z^m_i).
* Free bits (Kingma et al. 2016; 002 §3 "greatly ameliorates the optimisation challenges"),
  hyperparameter ``free_bits`` = τ nats per dimension (default 0.125: 002 does not state τ; the
  first author's blog images carry "0.125", unconfirmed). For a layer m below the top, its
  term becomes Σ_d [KL̄_{m,d} ≥ τ ? T̄_{m,d} : τ], where KL̄_{m,d} is the batch-mean closed-form
  KL of dimension d and T̄_{m,d} the batch mean of the layer's own per-dimension term (the MC
  log-ratio, or KL̄ itself with ``layer_kl='analytic'``, which gives exactly Σ_d max(τ, KL̄_d)).
  Dimensions below τ contribute a constant (zero gradient); τ ≤ 0 recovers the plain loss
  exactly. ``free_bits_layers``: 'below_top' (default), 'none', or 'all', where the top layer
  (whose TC-decomposed term does not split by dimension) is one group: its batch-mean term is
  replaced by τ·d_L while its closed-form KL to N(0, I) is below τ·d_L.

Identities (tests): L = 1 Seatbelt is :func:`~vaerob_jax.objectives.tc.beta_tcvae_loss` bit for
bit on the same params and key; at β = 1 (free bits off, MC layers) the loss is the MC negative
ELBO of the hierarchy for either estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vaerob_jax.objectives.base import BatchLoss
from vaerob_jax.objectives.tc import _combine, check_estimator_sizes, log_importance_weights

__all__ = [
    "DEFAULT_FREE_BITS",
    "FREE_BITS_LAYERS",
    "LAYER_KLS",
    "hierarchical_tc_loss",
    "seatbelt_loss",
    "tcdlgm_loss",
]

LAYER_KLS = ("mc", "analytic")
FREE_BITS_LAYERS = ("below_top", "all", "none")
DEFAULT_FREE_BITS = 0.125


def _gate(kl_bar: jax.Array, term: jax.Array, tau: jax.Array) -> jax.Array:
    """Free-bits gate: ``term`` where the closed-form KL reaches τ (or τ ≤ 0), else τ."""
    return jnp.where((kl_bar >= tau) | (tau <= 0), term, tau)


def hierarchical_tc_loss(
    model: Any,
    estimator: str = "mws",
    *,
    dataset_size: int,
    layer_kl: str = "mc",
    free_bits_layers: str = "below_top",
) -> BatchLoss:
    """The β-TC hierarchical loss of the module docstring for ``model`` (either kind).

    Args:
      model: a HierarchicalVAE (``sample_chain``, ``prior``, ``log_likelihood``); its
        ``kind`` picks the likelihood's inputs (Seatbelt: all layers; DLGM: z^1).
      estimator: 'mws' (default) or 'mss', for q̂ of the top layer.
      dataset_size: N (static, >= the batch size).
      layer_kl: 'mc' (default, exact ELBO) or 'analytic' for the layers below the top.
      free_bits_layers: 'below_top' (default), 'all' or 'none'.

    Returns:
      BatchLoss with hyperparameters 'beta' (required) and 'free_bits' (τ, default 0.125).
      Aux: 'recon', 'kl' (MC KL of the whole chain), 'elbo', 'kl1'..'klL' (batch-mean
      closed-form KL per layer; the top one against N(0, I)), and the minibatch 'mi', 'tc',
      'dwkl' of the top layer (biased under MWS; report the full-data estimator).
    """
    if not hasattr(model, "sample_chain") or not hasattr(model, "prior"):
        raise ValueError("hierarchical losses need a HierarchicalVAE (sample_chain and prior)")
    if layer_kl not in LAYER_KLS:
        raise ValueError(f"unknown layer_kl {layer_kl!r}; choose one of {LAYER_KLS}")
    if free_bits_layers not in FREE_BITS_LAYERS:
        raise ValueError(
            f"unknown free_bits_layers {free_bits_layers!r}; choose one of {FREE_BITS_LAYERS}"
        )
    check_estimator_sizes(2 if estimator == "mss" else 1, dataset_size, estimator)
    n_layers = len(model.layer_dims)

    def one(params, x, k):
        zs, qs = model.sample_chain(params, x, k)
        ps = model.prior(params, zs)
        recon = -model.log_likelihood(params, x, zs)
        mc = tuple(qs[m].log_prob(zs[m]) - ps[m].log_prob(zs[m]) for m in range(n_layers - 1))
        an = tuple(qs[m].kl(ps[m]) for m in range(n_layers - 1))
        return recon, zs[-1], qs[-1], mc, an

    def fn(params, batch, key, hp):
        xs = batch["x"]
        size = xs.shape[0]
        log_w = log_importance_weights(size, dataset_size, estimator, xs.dtype)
        keys = jax.random.split(key, size)
        recon, z_top, q_top, mc, an = jax.vmap(one, in_axes=(None, 0, 0))(params, xs, keys)
        tau = jnp.asarray(hp["free_bits"], xs.dtype)
        kl_top_bar = jnp.mean(jnp.sum(q_top.kl_standard(), axis=-1))
        aux = {f"kl{m + 1}": jnp.mean(jnp.sum(an[m], axis=-1)) for m in range(n_layers - 1)}
        aux[f"kl{n_layers}"] = kl_top_bar
        if n_layers == 1:
            lower = None
        else:
            term = jnp.zeros((), xs.dtype)
            for m in range(n_layers - 1):
                kl_bar = jnp.mean(an[m], axis=0)
                plain = kl_bar if layer_kl == "analytic" else jnp.mean(mc[m], axis=0)
                if free_bits_layers != "none":
                    plain = _gate(kl_bar, plain, tau)
                term = term + jnp.sum(plain)
            kl_lower = sum(jnp.sum(mc[m], axis=-1) for m in range(n_layers - 1))
            lower = (term, kl_lower, aux)
        gate_top: Callable[[jax.Array], jax.Array] | None = None
        if free_bits_layers == "all":
            # the top layer as one free-bits group of d_L dimensions
            d_top = z_top.shape[-1]

            def _top_gate(top_term: jax.Array) -> jax.Array:
                return _gate(kl_top_bar, top_term, tau * d_top)

            gate_top = _top_gate

        loss, out = _combine(recon, z_top, q_top, log_w, hp["beta"], lower, gate_top)
        if n_layers == 1:
            out.update(aux)
        return loss, out

    return BatchLoss(
        fn,
        f"hierarchical_tc_{model.kind}",
        required=("beta",),
        defaults=(("free_bits", DEFAULT_FREE_BITS),),
        options=(
            ("estimator", estimator),
            ("dataset_size", int(dataset_size)),
            ("layer_kl", layer_kl),
            ("free_bits_layers", free_bits_layers),
            ("model", model.spec()),
        ),
    )


def seatbelt_loss(model: Any, estimator: str = "mws", **kwargs: Any) -> BatchLoss:
    """Seatbelt-VAE (002 Eq. 9/10): :func:`hierarchical_tc_loss` for a ``kind='seatbelt'`` model."""
    if getattr(model, "kind", None) != "seatbelt":
        raise ValueError(f"seatbelt_loss needs a kind='seatbelt' model, got {model.kind!r}")
    return hierarchical_tc_loss(model, estimator, **kwargs)


def tcdlgm_loss(model: Any, estimator: str = "mws", **kwargs: Any) -> BatchLoss:
    """β-TCDLGM (002 Eq. 11): :func:`hierarchical_tc_loss` for a ``kind='dlgm'`` model."""
    if getattr(model, "kind", None) != "dlgm":
        raise ValueError(f"tcdlgm_loss needs a kind='dlgm' model, got {model.kind!r}")
    return hierarchical_tc_loss(model, estimator, **kwargs)
