"""The per-example program of the margin study of 001, compiled once per model shape.

For one model's params and a chunk of examples, one jitted, vmapped program computes
Theorem 1's lower bound (Eq. 4 of 001: ``σ_min · (Φ⁻¹(p_r) − Φ⁻¹(m)) / ‖J_μ‖_F``, NaN where
the clean input is not r-robust), the numerically estimated margin R^r_X(x) (Eq. 3: bisection
on the L2 input radius with the Eq. 5 output attack) and a random-probe estimate of ‖J_μ‖_F.
The bound and the margin search use the same Monte-Carlo draws η (common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.robustness.jacobian import encoder_jacobian_fro_probe, theorem1_bound
from vaerob_jax.robustness.margin import make_margin_estimator, pgd_attack_fn
from vaerob_jax.sweeps import parallel

__all__ = ["make_margin_program", "run_in_chunks"]


def make_margin_program(
    model: Any,
    *,
    n_samples: int,
    n_iter: int,
    attack_steps: int,
    attack_rule: str = "sign",
    restarts: int = 1,
    n_starts: int = 1,
    method: str = "bisect",
    log_range: float = 1e3,
    apply_to: str = "mean",
    n_probes: int = 4,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Callable[..., dict[str, jax.Array]]:
    """The jitted per-example computation of the study, vmapped over a chunk of examples.

    Returns ``program(params, xs, ids, key, r, m, r_max, tau) -> dict of (B,) arrays`` for one
    model's params and a chunk ``xs`` of B examples. Example ``i`` draws all its randomness
    from ``fold_in(key, ids[i])`` (its example id), so results do not depend on the chunking.
    ``r``, ``m``, ``r_max`` and ``tau`` are array arguments: one compiled program serves every
    model of the grid and every chunk of the same size.

    Fields: ``sigma_min``, ``jac_fro``, ``p_r``, ``p_r_se``, ``bound``, ``bound_defined``
    (Theorem 1 of 001, Eq. 4), ``estimate``, ``low``, ``high``, ``width``, ``width_rel``,
    ``p_clean``,
    ``censored`` (the margin of Eq. 3 by bisection with the Eq. 5 attack), ``attacks``,
    ``attack_failed``, ``attack_nonfinite_steps`` (its attacks' record), ``jac_fro_probe``
    = sqrt of the Hutchinson estimate of ‖J‖_F² and ``jac_fro_probe_se`` its delta-method
    standard error (inf with one probe).

    ``box``: the attack's pixel box, (0, 1) by default (perturbed images stay images);
    ``None`` searches the whole L2 ball, as Eq. 3 of 001 states the margin (no box), which
    can only give a smaller or equal margin estimate.
    """
    attack_fn = pgd_attack_fn(
        model, steps=attack_steps, rule=attack_rule, restarts=restarts, box=box
    )
    estimator = make_margin_estimator(
        model,
        attack_fn,
        n_samples=n_samples,
        n_iter=n_iter,
        n_starts=n_starts,
        method=method,
        log_range=log_range,
        apply_to=apply_to,
    )

    def one(params: Any, x: jax.Array, key: jax.Array, r: Any, m: Any, r_max: Any, tau: Any):
        k_margin = jax.random.fold_in(key, 0)
        # The estimator gives its only example fold_in(k_margin, 0) and draws η from
        # fold_in(that, 0): feeding the bound the same key makes p_r the estimator's p_clean.
        k_mc = jax.random.fold_in(jax.random.fold_in(k_margin, 0), 0)
        b = theorem1_bound(model, params, x, r, k_mc, n_samples, tau, m=m)
        g = estimator(params, x[None], r, k_margin, m, r_max, tau)
        sq, sq_se = encoder_jacobian_fro_probe(
            model, params, x, jax.random.fold_in(key, 1), n_probes
        )
        fro = jnp.sqrt(sq)
        out = {k: b[k] for k in ("sigma_min", "jac_fro", "p_r", "p_r_se", "bound")}
        out["bound_defined"] = b["bound_defined"]
        out.update(
            {k: g[k][0] for k in ("estimate", "low", "high", "width", "width_rel", "p_clean")}
        )
        out["censored"] = g["censored"][0]
        for k in ("attacks", "attack_failed", "attack_nonfinite_steps"):
            out[k] = g[k][0]
        out["jac_fro_probe"] = fro
        out["jac_fro_probe_se"] = sq_se / (2.0 * jnp.maximum(fro, 1e-30))
        return out

    @jax.jit
    def program(params, xs, ids, key, r, m, r_max, tau):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
        return jax.vmap(one, in_axes=(None, 0, 0, None, None, None, None))(
            params, xs, keys, r, m, r_max, tau
        )

    return program


def run_in_chunks(
    program: Callable[..., dict[str, jax.Array]],
    params: Any,
    images: np.ndarray,
    ids: np.ndarray,
    key: jax.Array,
    scalars: tuple[jax.Array, ...],
    chunk: int,
    progress: Callable[[int], None] | None = None,
    mesh: Any = None,
) -> dict[str, np.ndarray]:
    """Runs ``program`` over fixed-size chunks (the last padded by repeating its first row).

    With a mesh of several devices (``mesh=`` or an active
    :func:`~vaerob_jax.sweeps.parallel.use_devices` block) each chunk, rounded up to a
    multiple of the device count, is split over the devices; params, key and scalars are
    copied to each. Randomness follows example ids, so the split does not change results.
    """
    n = images.shape[0]
    grid_mesh = parallel.resolve_mesh(mesh)
    if grid_mesh is not None:
        d = parallel.mesh_size(grid_mesh)
        chunk = -(-chunk // d) * d
        params, key, scalars = parallel.replicate((params, key, scalars), grid_mesh)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, chunk):
        idx = np.arange(start, min(start + chunk, n))
        pad = np.concatenate([idx, np.full(chunk - idx.size, idx[0])])
        xs, xids = jnp.asarray(images[pad]), jnp.asarray(ids[pad], jnp.int32)
        if grid_mesh is not None:
            xs, xids = parallel.shard_axis((xs, xids), grid_mesh)
        res = program(params, xs, xids, key, *scalars)
        parts.append({k: np.asarray(v)[: idx.size] for k, v in res.items()})
        if progress is not None:
            progress(int(idx.size))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
