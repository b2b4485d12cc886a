"""A batched, vmappable box-constrained L-BFGS for 002's targeted attacks, and its scipy reference.

002 (§2 "Optimiser") minimises Δ(d) = divergence(x + d, x_t) + λ‖d‖₂ over the pixel box
−x ≤ d ≤ 1 − x with scipy's L-BFGS-B (m = 25, factr = 10, start d ~ U(±1e−8)). One attack
is cheap; 002 runs λ × pairs × models of them. scipy drives one problem at a time from the
host, and ``jaxopt.LBFGSB`` vmapped is pathological on CPU (its data-dependent outer
while-loop serialises the batch), so :func:`lbfgsb_minimize` is written for ONE problem in
pure JAX with a FIXED number of outer iterations (``lax.scan``): ``jax.vmap`` over problems
then compiles to one program whose every iteration evaluates all problems' value and gradient
in one batched call. A problem that has converged is frozen (every state update masked), so
it stays put while the others go on, and its line search costs no evaluations.

The method — projected L-BFGS with an active set (Bertsekas' projected Newton with an L-BFGS
reduced inverse Hessian, in the spirit of Kim, Sra & Dhillon 2010), per iteration:

1. Active set: a variable at its bound whose gradient pushes outward (x_i = l_i, g_i > 0 or
   x_i = u_i, g_i < 0) is fixed; the others are free. Stop (converged) if the projected
   gradient ‖P(x − g) − x‖∞ ≤ ``pgtol`` (scipy's test).
2. Direction: the two-loop recursion on the free variables only — g, every s_j and y_j
   masked to the free set; a pair enters only if its masked curvature s_j·y_j > eps·y_j·y_j,
   so the reduced inverse Hessian is positive definite and d = −H g_free a descent
   direction (checked: if g·d is not negative and finite, d = −g_free, the projected
   steepest descent). H₀ = γI, γ = s·y / y·y of the newest pair.
3. Projected backtracking line search on the arc x(t) = P(x + t d): Armijo
   f(x(t)) ≤ f(x) + 1e−4·g·(x(t) − x), or Hager & Zhang's approximate Wolfe test where
   float32 rounding hides the predicted decrease (f(x(t)) ≤ f(x) + 1e−6|f(x)| and the slope
   g(x(t))·(x(t) − x) within [0.9, −0.8]·g·(x(t) − x)); at most ``max_linesearch`` trials, t
   shrunk by a safeguarded quadratic interpolation (factor in [0.1, 0.5]; 0.25 after a
   non-finite trial). First trial t = 1; without curvature history t = 1/‖d‖₂ (a
   unit-length step, scipy's first step for unbounded problems), cut to 10x the fraction
   the previous such search accepted (near the kink of λ‖d‖ at d = 0 every search
   backtracks far). Non-finite trials are counted and rejected.
4. Update: a pair (s, y) is kept only when s·y > eps·y·y (no Wolfe condition is enforced).
   Stop (converged) when the relative decrease (f_old − f)/max(|f_old|, |f|) ≤ ``ftol``
   after a full quasi-Newton step (first trial t = 1), or on five such iterations in a row
   otherwise (a short, backtracked step says the direction was poor, not that x is
   optimal). scipy's test has max(·, ·, 1) in the denominator, harmless with float64's
   factr·eps = 2e−15 but an absolute 1e−6 stop in float32, which ended small-λ attacks
   (Δ ~ 1e−5) early. A failed line search drops the history and retries from the projected
   steepest descent; a failed steepest-descent search stops (``converged`` False).

What is and is not L-BFGS-B proper: scipy's L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995) finds a
generalised Cauchy point along the projected-gradient path of the full limited-memory
quadratic model (which fixes the active set), minimises the model over the free variables
of that point (subspace minimisation, direct primal method), and then runs a Moré–Thuente
line search (strong Wolfe) capped by the box. Here the active set comes from the
gradient's sign at the bounds (step 1), the reduced direction from the masked two-loop
recursion (no Cauchy point, no subspace minimisation with the bound-aware compact
representation), and the line search is Armijo backtracking on the projection arc (so a
step may add new bounds anywhere along it). Both are descent methods converging to KKT
points; their iterates differ, so compare final objectives, not iterates or iteration counts.
In float32 (the attacks') the attainable relative decrease is ~1e−7, so the default ``ftol``
is 10·eps(float32) rather than scipy's 10·eps(float64).

Every trial's value is compared with the best seen so far, and the best point found (an
accepted iterate, or a trial the Armijo test rejected with a lower value still) is
returned with its value and projected gradient. A non-finite start value or gradient ends
the run at once with ``value`` = ``start_value`` non-finite and ``converged`` False; every
non-finite evaluation is counted in ``nonfinite``.

:func:`targeted_attack` wraps it for 002's objectives (``vaerob_jax.attacks.targeted``),
:func:`lbfgsb_scipy` / :func:`targeted_attack_scipy` are the scipy reference (float64 on the
host driving a jitted float32 value-and-grad, one problem per call).

Example:
    >>> attack = jax.jit(jax.vmap(targeted_attack(latent_objective(model)),
    ...                           in_axes=(None, None, 0, None)))
    >>> out = attack(params, {"x": x, "target": x_t}, jnp.asarray(lambda_grid(13)), key)
    >>> out["delta"].shape          # (13, H, W, C)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.attacks.threats import exact_norm

__all__ = [
    "ATTACK_PENALTIES",
    "LBFGSBResult",
    "START_STREAM",
    "lbfgsb_minimize",
    "lbfgsb_scipy",
    "targeted_attack",
    "targeted_attack_scipy",
]

ATTACK_PENALTIES = ("l2", "l2_squared")
START_STREAM = 0x53545254  # fold_in stream of the start draw ("STRT"): objective key intact
START_SCALE = 1e-8  # 002: d0 ~ U(−1e−8, 1e−8)
_ARMIJO = 1e-4
_APPROX_EPS = 1e-6  # Hager & Zhang's ε of the approximate Wolfe test


class LBFGSBResult(NamedTuple):
    """Result of :func:`lbfgsb_minimize` (one problem; leading axes under vmap).

    Attributes:
      x: best point found (shape of x0), always inside [lower, upper].
      value: fun at x.
      start_value: fun at the projected start.
      iterations: iterations taken before convergence or freezing (int32).
      evaluations: value-and-gradient evaluations used, the start's included (int32).
      converged: stopped by the pgtol or ftol test before the iteration cap.
      nonfinite: number of evaluations with a non-finite value or gradient (int32).
      pg_norm: projected-gradient inf-norm ‖P(x − ∇f(x)) − x‖∞ at x.
    """

    x: jax.Array
    value: jax.Array
    start_value: jax.Array
    iterations: jax.Array
    evaluations: jax.Array
    converged: jax.Array
    nonfinite: jax.Array
    pg_norm: jax.Array


class _State(NamedTuple):
    x: jax.Array
    f: jax.Array
    g: jax.Array
    s_hist: jax.Array  # (m, n), oldest first
    y_hist: jax.Array
    valid: jax.Array  # (m,) bool
    gamma: jax.Array
    ratio: jax.Array  # last accepted t / first trial's t (scales the next first trial)
    small: jax.Array  # consecutive iterations with a relative decrease <= ftol
    best_x: jax.Array
    best_f: jax.Array
    best_g: jax.Array
    done: jax.Array
    converged: jax.Array
    iterations: jax.Array
    evaluations: jax.Array
    nonfinite: jax.Array


def _pg(x: jax.Array, g: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    return jnp.clip(x - g, lower, upper) - x


def _two_loop(g, s_hist, y_hist, valid, gamma, free, eps):
    """−H g on the free variables: the masked L-BFGS two-loop recursion (newest pair last)."""
    sf = jnp.where(free, s_hist, 0.0)
    yf = jnp.where(free, y_hist, 0.0)
    sy = jnp.sum(sf * yf, axis=1)
    yy = jnp.sum(yf * yf, axis=1)
    use = valid & (sy > eps * yy) & (sy > 0)
    rho = jnp.where(use, 1.0 / jnp.where(use, sy, 1.0), 0.0)
    m = s_hist.shape[0]
    q = jnp.where(free, g, 0.0)
    alphas = [None] * m
    for j in reversed(range(m)):  # newest first
        alphas[j] = rho[j] * jnp.dot(sf[j], q)
        q = q - alphas[j] * yf[j]
    r = gamma * q
    for j in range(m):  # oldest first
        beta = rho[j] * jnp.dot(yf[j], r)
        r = r + (alphas[j] - beta) * sf[j]
    return -r


def lbfgsb_minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    lower: Any,
    upper: Any,
    *,
    iterations: int | jax.Array = 100,
    memory: int = 10,
    max_linesearch: int = 20,
    ftol: float = 10 * float(jnp.finfo(jnp.float32).eps),
    pgtol: float = 1e-5,
) -> LBFGSBResult:
    """Minimise the scalar differentiable fun(x) over lower ≤ x ≤ upper from x0 (module doc).

    Pure JAX with a fixed number of outer iterations, so ``jax.vmap`` over x0 / lower /
    upper (and over whatever ``fun`` closes over, through a vmapped wrapper) is one program.

    Args:
      fun: x (shape of x0) -> scalar; differentiated with ``jax.value_and_grad``.
      x0: the start (floating; projected into the box first). The state has its dtype.
      lower, upper: bounds broadcastable to x0's shape; may be −inf / inf.
      iterations: outer iterations; converged problems are frozen. A Python int runs a
        ``lax.scan`` of that length; an integer array (traced, not batched under vmap) a
        ``lax.while_loop`` of the same steps that also ends once the problem is done (under
        vmap: once all are), so one compiled program serves several iteration budgets (an
        attack and its longer convergence check) and a batch that has converged stops.
      memory: curvature pairs kept (static).
      max_linesearch: line-search trials per iteration (static).
      ftol: relative-decrease stopping tolerance (scipy's factr·eps).
      pgtol: projected-gradient inf-norm stopping tolerance (scipy's pgtol / gtol).

    Returns:
      An :class:`LBFGSBResult`.
    """
    dynamic = isinstance(iterations, jax.Array)
    checks = (("memory", memory),) if dynamic else (("iterations", iterations), ("memory", memory))
    for name, v in checks:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if isinstance(max_linesearch, bool) or not isinstance(max_linesearch, int | np.integer):
        raise ValueError(f"max_linesearch must be an int >= 1, got {max_linesearch!r}")
    if max_linesearch < 1:
        raise ValueError(f"max_linesearch must be an int >= 1, got {max_linesearch!r}")
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.float32)
    dtype, shape = x0.dtype, x0.shape
    n = int(np.prod(shape))
    m = max(int(memory), 1)
    eps = float(jnp.finfo(dtype).eps)
    tiny = float(jnp.finfo(dtype).tiny)
    lo = jnp.broadcast_to(jnp.asarray(lower, dtype), shape).reshape(n)
    hi = jnp.broadcast_to(jnp.asarray(upper, dtype), shape).reshape(n)
    value_and_grad = jax.value_and_grad(lambda z: jnp.asarray(fun(z.reshape(shape))).reshape(()))

    def evaluate(z):
        f, g = value_and_grad(z)
        f, g = f.astype(dtype), g.astype(dtype)
        return f, g, jnp.isfinite(f) & jnp.all(jnp.isfinite(g))

    x = jnp.clip(x0.reshape(n), lo, hi)
    f0, g0, fin0 = evaluate(x)
    int0 = jnp.zeros((), jnp.int32)
    state = _State(
        x=x,
        f=f0,
        g=g0,
        s_hist=jnp.zeros((m, n), dtype),
        y_hist=jnp.zeros((m, n), dtype),
        valid=jnp.zeros((m,), bool),
        gamma=jnp.ones((), dtype),
        ratio=jnp.ones((), dtype),
        small=jnp.zeros((), jnp.int32),
        best_x=x,
        best_f=f0,
        best_g=g0,
        done=~fin0,
        converged=jnp.zeros((), bool),
        iterations=int0,
        evaluations=int0 + 1,
        nonfinite=(~fin0).astype(jnp.int32),
    )

    def step(st: _State, _: Any) -> tuple[_State, None]:
        at_bound = ((st.x <= lo) & (st.g > 0)) | ((st.x >= hi) & (st.g < 0))
        free = ~at_bound
        pg_small = jnp.max(jnp.abs(_pg(st.x, st.g, lo, hi)), initial=0.0) <= pgtol
        active = ~st.done & ~pg_small
        history = jnp.any(st.valid & bool(memory))
        d = _two_loop(st.g, st.s_hist, st.y_hist, st.valid & bool(memory), st.gamma, free, eps)
        gd = jnp.dot(st.g, d)
        descent = (gd < 0) & jnp.all(jnp.isfinite(d))
        d = jnp.where(descent, d, -jnp.where(free, st.g, 0.0))
        gd = jnp.where(descent, gd, jnp.dot(st.g, d))
        d_norm = jnp.sqrt(jnp.sum(d * d))
        fallback = ~descent | ~history
        # First trial: the quasi-Newton step t = 1; without curvature history a unit-length
        # step, shortened to 10x the fraction of its first trial the last search accepted (so
        # that near the kink of λ‖d‖ at d = 0, where every search backtracks far, one starts
        # near where the last one ended; shortening quasi-Newton steps too stalled them).
        t_nominal = jnp.where(fallback, 1.0 / jnp.maximum(d_norm, tiny), 1.0)
        shorten = jnp.where(fallback, jnp.minimum(1.0, 10.0 * st.ratio), 1.0)
        t0 = (t_nominal * shorten).astype(dtype)
        has_dir = gd < 0

        # carry: t, trial, accepted, x_new, f_new, g_new, best_(x, f, g), evals, nonfinite,
        # accepted t
        def ls_cond(c):
            return active & has_dir & ~c[2] & (c[1] < max_linesearch)

        def ls_body(c):
            t, trial, _, xn, fn, gn, bx, bf, bg, ev, nf, t_ok = c
            xt = jnp.clip(st.x + t * d, lo, hi)
            ft, gt, fin = evaluate(xt)
            lin = jnp.dot(st.g, xt - st.x)
            moved = jnp.any(xt != st.x)
            # Armijo, or Hager & Zhang's approximate Wolfe test where f's rounding hides the
            # predicted decrease: f barely above f(x) and the slope along the step risen
            # from lin to within [0.9 lin, −0.8 lin] (a step near the model's minimum).
            slope = jnp.dot(gt, xt - st.x)
            approx = (ft <= st.f + _APPROX_EPS * jnp.abs(st.f)) & (slope >= 0.9 * lin)
            approx &= slope <= -0.8 * lin
            ok = fin & moved & ((ft <= st.f + _ARMIJO * lin) | approx)
            better = fin & ((ft < bf) | ~jnp.isfinite(bf))
            bx = jnp.where(better, xt, bx)
            bf = jnp.where(better, ft, bf)
            bg = jnp.where(better, gt, bg)
            curv = (ft - st.f) - lin
            tq = -lin * t / (2.0 * jnp.where(curv > 0, curv, 1.0))
            t_next = jnp.where(fin & (curv > 0), jnp.clip(tq, 0.1 * t, 0.5 * t), 0.25 * t)
            # A step too short to move x in this precision cannot succeed after shrinking.
            trial = jnp.where(moved | ok, trial + 1, max_linesearch)
            xn = jnp.where(ok, xt, xn)
            fn = jnp.where(ok, ft, fn)
            gn = jnp.where(ok, gt, gn)
            t_ok = jnp.where(ok, t, t_ok)
            return (t_next, trial, ok, xn, fn, gn, bx, bf, bg, ev + 1, nf + (~fin), t_ok)

        c0 = (
            t0,
            int0,
            jnp.zeros((), bool),
            st.x,
            st.f,
            st.g,
            st.best_x,
            st.best_f,
            st.best_g,
            st.evaluations,
            st.nonfinite,
            t0,
        )
        _, trials, ok, xn, fn, gn, bx, bf, bg, ev, nf, t_acc = jax.lax.while_loop(
            ls_cond, ls_body, c0
        )
        ratio = jnp.where(ok, t_acc / t_nominal, 1.0).astype(dtype)

        s, y = xn - st.x, gn - st.g
        sy, yy = jnp.dot(s, y), jnp.dot(y, y)
        store = ok & (sy > eps * yy) & (sy > 0) & bool(memory)
        s_hist = jnp.where(store, jnp.concatenate([st.s_hist[1:], s[None]]), st.s_hist)
        y_hist = jnp.where(store, jnp.concatenate([st.y_hist[1:], y[None]]), st.y_hist)
        valid = jnp.where(store, jnp.concatenate([st.valid[1:], jnp.ones((1,), bool)]), st.valid)
        gamma = jnp.where(store, sy / jnp.where(store, yy, 1.0), st.gamma)
        # Failed search: drop the history (retry from steepest descent); failed again: stop.
        valid = jnp.where(ok, valid, False)
        gamma = jnp.where(ok, gamma, 1.0).astype(dtype)
        rel = (st.f - fn) / jnp.maximum(jnp.maximum(jnp.abs(st.f), jnp.abs(fn)), tiny)
        # A full quasi-Newton step (first trial, from the curvature history) that barely
        # decreases f counts as converged, other steps only on the fifth such iteration in a
        # row: a short step after backtracking signals a poor direction, which the next
        # iteration's model may fix.
        tiny_decrease = ok & (rel <= ftol)
        small = jnp.where(tiny_decrease, st.small + 1, 0)
        full_step = (trials == 1) & ~fallback & (t0 >= t_nominal)
        f_conv = tiny_decrease & (full_step | (small >= 5))
        stalled = ~ok & fallback
        new = _State(
            x=xn,
            f=fn,
            g=gn,
            s_hist=s_hist,
            y_hist=y_hist,
            valid=valid,
            gamma=gamma,
            ratio=ratio,
            small=small,
            best_x=bx,
            best_f=bf,
            best_g=bg,
            done=f_conv | stalled,
            converged=f_conv,
            iterations=st.iterations + 1,
            evaluations=ev,
            nonfinite=nf,
        )
        frozen = st._replace(
            done=st.done | pg_small, converged=st.converged | (~st.done & pg_small)
        )
        out = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, frozen)
        return out, None

    if dynamic:
        # Stops once the problem is done (under vmap: once every problem is), instead of
        # running frozen no-op steps to the end of the budget.
        def cond(carry):
            i, st = carry
            return (i < iterations) & ~st.done

        _, final = jax.lax.while_loop(
            cond, lambda carry: (carry[0] + 1, step(carry[1], None)[0]), (jnp.int32(0), state)
        )
    else:
        final, _ = jax.lax.scan(step, state, None, length=int(iterations))
    bx = final.best_x
    pg_norm = jnp.max(jnp.abs(_pg(bx, final.best_g, lo, hi)), initial=0.0)
    return LBFGSBResult(
        x=bx.reshape(shape),
        value=final.best_f,
        start_value=f0,
        iterations=final.iterations,
        evaluations=final.evaluations,
        converged=final.converged,
        nonfinite=final.nonfinite,
        pg_norm=pg_norm,
    )


def _one_blas_thread() -> Any:
    """scipy's L-BFGS-B makes many tiny BLAS calls; a multi-threaded BLAS made them ~20x
    slower on the 2-core CPU (3 ms vs 0.17 ms per ``setulb`` call at n = 1024, m = 25)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, "blas")


def lbfgsb_scipy(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: Any,
    lower: Any,
    upper: Any,
    *,
    maxiter: int = 100,
    memory: int = 25,
    factr: float = 10.0,
    pgtol: float = 1e-5,
) -> tuple[np.ndarray, float, int, int]:
    """Reference: ``scipy.optimize.minimize(method='L-BFGS-B', jac=True)`` in float64.

    Args:
      value_and_grad: x (float64 array shaped like x0) -> (value, gradient).
      x0, lower, upper: the start and bounds (broadcast to x0's shape; ±inf allowed).
      maxiter, memory, factr, pgtol: scipy's maxiter, maxcor, factr (ftol = factr·eps64)
        and pgtol (gtol).

    Returns:
      (x, value, n_iterations, n_evaluations), x shaped like x0 (float64).
    """
    from scipy.optimize import minimize as _minimize

    x0 = np.asarray(x0, np.float64)
    shape = x0.shape
    lo = np.broadcast_to(np.asarray(lower, np.float64), shape).reshape(-1)
    hi = np.broadcast_to(np.asarray(upper, np.float64), shape).reshape(-1)
    bounds = [
        (None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
        for a, b in zip(lo, hi)
    ]

    def fg(z):
        v, g = value_and_grad(z.reshape(shape))
        return float(v), np.asarray(g, np.float64).reshape(-1)

    with _one_blas_thread():
        res = _minimize(
            fg,
            np.clip(x0.reshape(-1), lo, hi),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={
                "maxiter": int(maxiter),
                "maxcor": int(memory),
                "ftol": float(factr) * float(np.finfo(np.float64).eps),
                "gtol": float(pgtol),
            },
        )
    return res.x.reshape(shape), float(res.fun), int(res.nit), int(res.nfev)


def _check_penalty(penalty: str) -> str:
    if penalty not in ATTACK_PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; choose one of {ATTACK_PENALTIES}")
    return penalty


def _delta_fn(objective: Any, penalty: str) -> Callable[..., jax.Array]:
    """Δ(params, inputs, lam, key, d) = −objective + λ·pen(d) (002's attack loss)."""

    def delta_value(params, inputs, lam, key, d):
        pen = exact_norm(d) if penalty == "l2" else jnp.sum(jnp.square(d))
        return -objective(params, inputs, d, key) + jnp.asarray(lam, d.dtype) * pen

    return delta_value


def _start(key: jax.Array, x: jax.Array) -> jax.Array:
    """002's start U(−1e−8, 1e−8) from fold_in(key, START_STREAM), clipped into the box."""
    d0 = START_SCALE * jax.random.uniform(
        jax.random.fold_in(key, START_STREAM), x.shape, x.dtype, -1.0, 1.0
    )
    return jnp.clip(d0, -x, 1.0 - x)


def targeted_attack(
    objective: Any,
    *,
    iterations: int = 100,
    memory: int = 25,
    penalty: str = "l2",
    max_linesearch: int = 20,
) -> Callable[..., dict[str, jax.Array]]:
    """002's targeted attack min_d −objective(d) + λ·pen(d) on −x ≤ d ≤ 1 − x, one problem.

    Args:
      objective: ``objective(params, inputs, delta, key) -> scalar`` to maximise (minus the
        divergence; ``vaerob_jax.attacks.targeted``), inputs {'x', 'target'} (H, W, C).
      iterations, memory, max_linesearch: :func:`lbfgsb_minimize`'s (static).
      penalty: 'l2' (002: exact ‖d‖₂) or 'l2_squared' (‖d‖², the public codes).

    Returns:
      ``attack(params, inputs, lam, key) -> dict`` with 'delta' (H, W, C), 'value' (Δ at
      delta), 'start_value', 'iterations', 'evaluations', 'converged', 'nonfinite',
      'pg_norm'. Pure; jit and vmap over params / inputs / lam / key. ``n_iterations`` (an
      int32 array, not vmapped) overrides ``iterations`` at call time, so the same compiled
      program runs the attack and a longer check attack. The objective gets
      ``key`` unchanged at every evaluation (its fixed noise); the start is drawn from
      ``fold_in(key, START_STREAM)``.
    """
    _check_penalty(penalty)
    delta_value = _delta_fn(objective, penalty)

    def attack(
        params, inputs: Mapping[str, jax.Array], lam, key, n_iterations=None
    ) -> dict[str, jax.Array]:
        x = jnp.asarray(inputs["x"])
        d0 = _start(key, x)
        res = lbfgsb_minimize(
            lambda d: delta_value(params, inputs, lam, key, d),
            d0,
            -x,
            1.0 - x,
            iterations=iterations if n_iterations is None else n_iterations,
            memory=memory,
            max_linesearch=max_linesearch,
        )
        return {
            "delta": res.x,
            "value": res.value,
            "start_value": res.start_value,
            "iterations": res.iterations,
            "evaluations": res.evaluations,
            "converged": res.converged,
            "nonfinite": res.nonfinite,
            "pg_norm": res.pg_norm,
        }

    return attack


@functools.lru_cache(maxsize=32)
def _scipy_programs(objective: Any, penalty: str) -> tuple[Any, Any]:
    """(start, value_and_grad) jitted once per objective and penalty."""
    delta_value = _delta_fn(objective, penalty)
    vg = jax.jit(jax.value_and_grad(delta_value, argnums=4))
    return jax.jit(_start), vg


def targeted_attack_scipy(
    objective: Any,
    params: Any,
    inputs: Mapping[str, Any],
    lam: Any,
    key: jax.Array,
    *,
    maxiter: int = 100,
    memory: int = 25,
    penalty: str = "l2",
) -> dict[str, Any]:
    """The problem of :func:`targeted_attack` solved by :func:`lbfgsb_scipy` (002's driver).

    scipy works in float64 on the host; every evaluation calls a jitted float32
    value-and-grad (compiled once per objective and penalty; new params, inputs, λ or key
    reuse it). Same start as :func:`targeted_attack`.

    Returns:
      dict(delta=np.ndarray (H, W, C) float32, value=float Δ, iterations=int,
      evaluations=int).
    """
    _check_penalty(penalty)
    start, vg = _scipy_programs(objective, penalty)
    x = jnp.asarray(inputs["x"])
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    lam = jnp.asarray(lam, x.dtype)
    x_np = np.asarray(x, np.float64)

    def value_and_grad(d: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = vg(params, inputs, lam, key, jnp.asarray(d, x.dtype))
        return float(v), np.asarray(g, np.float64)

    d, _, nit, nfev = lbfgsb_scipy(
        value_and_grad,
        np.asarray(start(key, x), np.float64),
        -x_np,
        1.0 - x_np,
        maxiter=maxiter,
        memory=memory,
    )
    d32 = np.clip(d, -x_np, 1.0 - x_np).astype(np.float32)
    value = float(vg(params, inputs, lam, key, jnp.asarray(d32))[0])
    return {"delta": d32, "value": value, "iterations": nit, "evaluations": nfev}
