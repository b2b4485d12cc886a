"""Helpers shared by the benchmarks: the in-run matmul yardstick and XLA FLOP counts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` float32 n×n matmul throughput in GFLOP/s (2n³ flops), measured now.

    Achieved rates are reported as a fraction of this number from the same run, since the
    shared machine's speed varies from minute to minute.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def compiled_flops(compiled: Any) -> float:
    """FLOPs XLA's cost analysis counts for a compiled program (NaN where unavailable).

    A ``fori_loop``/``scan`` body is counted once, not per iteration: measure one step.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # best effort on some backends
        return float("nan")
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def grid_step_flops(model: Any, loss: Any, data: dict, config: Any, k: int) -> float | None:
    """XLA's FLOP estimate for one vmapped grid step with K models (None if unavailable)."""
    from vaerob_jax.train.steps import init_program, step_program, step_settings

    try:
        key = jax.random.key(0)
        settings = step_settings(config)
        one = jax.eval_shape(init_program(model, settings), key)
        params, opt_state = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((k, *a.shape), a.dtype), one
        )
        keys = jax.random.split(key, k)
        program = step_program(loss, settings).run
        lowered = program.lower(  # type: ignore[attr-defined]
            params,
            opt_state,
            {n: jnp.asarray(v) for n, v in data.items()},
            keys,
            keys,
            {n: jnp.zeros((k,), jnp.float32) for n in loss.hyperparameters},
            jnp.full((k,), config.learning_rate, jnp.float32),
            jnp.int32(0),
        )
        flops = compiled_flops(lowered.compile())
        return None if np.isnan(flops) else flops
    except Exception:  # the estimate is optional
        return None


def best_of(fn: Any, repeats: int) -> tuple[Any, float]:
    """Calls ``fn()`` once to compile and warm up, then ``repeats`` more times; returns the last
    result and the fastest of the timed calls in seconds (``fn`` blocks until its result is
    ready)."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return result, best


def report_json(result: dict[str, Any], out: Path | None) -> None:
    """Prints a benchmark's result as JSON and writes it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.write_text(text)
