"""The attack engine beyond PGD: targets in the inputs, penalty budgets, L-BFGS, failure flags."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.attacks import (
    AttackResult,
    ball,
    exact_norm,
    latent_damage,
    make_attack,
    penalty,
    pgd,
    run_attack,
)
from vaerob_jax.attacks.driver import _scan_program
from vaerob_jax.attacks.steps import apgd_checkpoints, apgd_rule

D_IN, D_Z = 6, 3


def _linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.normal(size=(D_Z, D_IN)), jnp.float32)
    xs = jnp.asarray(rng.uniform(0.2, 0.8, size=(4, D_IN, 1, 1)), jnp.float32)
    targets = jnp.asarray(rng.uniform(0.2, 0.8, size=(4, D_IN, 1, 1)), jnp.float32)
    return a, xs, targets


def _targeted(traces=None):
    """−½‖A(x + d) − A x_t‖²: a targeted latent objective on a linear encoder (002 Eq. 13)."""

    def objective(params, inputs, delta, key):
        if traces is not None:
            traces.append(1)  # runs only while tracing
        x, xt = inputs["x"].ravel(), inputs["target"].ravel()
        diff = params @ (x + delta.ravel()) - jax.lax.stop_gradient(params @ xt)
        return -0.5 * jnp.sum(jnp.square(diff))

    objective.requires = ("x", "target")
    return objective


def test_exact_norm_value_and_gradient_at_zero():
    d = jnp.array([3.0, -4.0])
    np.testing.assert_allclose(exact_norm(d), 5.0, rtol=1e-7)
    np.testing.assert_allclose(exact_norm(d, "l2_squared"), 25.0, rtol=1e-7)
    g0 = jax.grad(exact_norm)(jnp.zeros(3))
    np.testing.assert_array_equal(g0, 0.0)
    np.testing.assert_array_equal(exact_norm(jnp.zeros(3)), 0.0)  # no smoothing offset at all


def test_lbfgs_with_squared_penalty_matches_closed_form_over_a_lambda_grid():
    a, xs, targets = _linear_problem()
    lams = jnp.asarray([1e-3, 0.1, 1.0, 10.0, 1e3], jnp.float32)
    attack = make_attack(
        _targeted(), penalty("l2_squared", box=None), rule="lbfgs", steps=30, image_shape=None
    )
    # The scan driver compiles the L-BFGS step (with its line search) once instead of
    # unrolling it per chunk; the drivers agree (test_attacks_pgd), and this keeps it fast.
    res = run_attack(
        attack, a, {"x": xs, "target": targets}, lams, jax.random.key(0), driver="scan"
    )
    assert res.delta.shape == (5, 4, D_IN, 1, 1)
    an = np.asarray(a, np.float64)
    for e, lam in enumerate(np.asarray(lams, np.float64)):
        for n in range(4):
            c = an @ (np.asarray(targets[n]).ravel() - np.asarray(xs[n]).ravel())
            # argmin ½‖A d − c‖² + λ‖d‖²  =  (AᵀA + 2λ I)⁻¹ Aᵀ c
            want = np.linalg.solve(an.T @ an + 2 * lam * np.eye(D_IN), an.T @ c)
            got = np.asarray(res.delta[e, n]).ravel()
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
    norms = np.linalg.norm(np.asarray(res.delta).reshape(5, 4, -1), axis=-1)
    assert np.all(np.diff(norms, axis=0) <= 1e-5)  # ‖d*(λ)‖ non-increasing in λ
    assert np.all(np.asarray(res.value) >= np.asarray(res.start_value) - 1e-6)


def test_unsquared_penalty_lambda_grid_without_recompiling():
    a, xs, targets = _linear_problem(1)
    traces: list[int] = []
    attack = make_attack(_targeted(traces), penalty("l2"), rule="lbfgs", steps=20)
    inputs = {"x": xs, "target": targets}
    grid1 = 2.0 ** jnp.linspace(-20.0, 20.0, 7)
    r1 = run_attack(attack, a, inputs, grid1, jax.random.key(0), driver="scan")
    n_traced = len(traces)
    sizes = _scan_program._cache_size()
    r2 = run_attack(attack, a, inputs, grid1 * 1.7, jax.random.key(0), driver="scan")
    assert len(traces) == n_traced and _scan_program._cache_size() == sizes
    for r in (r1, r2):
        x_adv = np.asarray(xs[None] + r.delta)
        assert x_adv.min() >= -1e-6 and x_adv.max() <= 1 + 1e-6  # pixels kept in [0, 1]
        norms = np.linalg.norm(np.asarray(r.delta).reshape(7, 4, -1), axis=-1)
        assert np.all(np.diff(norms, axis=0) <= 1e-4)
        assert norms[-1].max() < 1e-6  # λ = 2²⁰: d ≈ 0
        assert norms[0].min() > 1e-2  # λ = 2⁻²⁰: the attack moves


def test_missing_target_input_is_named_before_tracing():
    a, xs, _ = _linear_problem()
    traces: list[int] = []
    attack = make_attack(_targeted(traces), penalty("l2"), rule="lbfgs", steps=2)
    with pytest.raises(ValueError, match="target"):
        run_attack(attack, a, {"x": xs}, jnp.ones(2), jax.random.key(0))
    with pytest.raises(ValueError, match="leading size"):
        run_attack(attack, a, {"x": xs, "target": xs[:2]}, jnp.ones(2), jax.random.key(0))
    with pytest.raises(ValueError, match="step_size"):
        make_attack(_targeted(), penalty("l2"), rule="sign", steps=2)
    assert traces == []


def test_nonfinite_objective_is_reported_not_hidden(tiny_model, tiny_params, tiny_images):
    base = latent_damage(tiny_model)

    def poisoned(params, inputs, delta, key):
        v = base(params, inputs, delta, key)
        return jnp.where(jnp.sum(inputs["x"]) > 32.0, jnp.nan, v)  # NaN for bright images

    attack = pgd(poisoned, steps=5, image_shape=(8, 8, 1))
    xs = tiny_images[:4].at[0].set(0.9).at[1].set(0.1)
    res = run_attack(attack, tiny_params, {"x": xs}, jnp.array([0.1]), jax.random.key(0))
    nonfinite, improved = np.asarray(res.nonfinite)[0], np.asarray(res.improved)[0]
    assert nonfinite[0] == 6 and not improved[0]  # 5 steps + the final evaluation
    assert nonfinite[1] == 0 and improved[1]
    assert np.all(np.isfinite(np.asarray(res.delta)))


@pytest.mark.parametrize(
    ("rule", "norm"),
    [("sign", "linf"), ("sign", "l2"), ("adam", "linf"), ("apgd", "linf"), ("apgd", "l2")],
)
def test_every_rule_raises_the_objective_over_its_start(rule, norm, tiny_model, tiny_params):
    xs = jax.random.uniform(jax.random.key(3), (8, 8, 8, 1), minval=0.2, maxval=0.8)
    attack = make_attack(latent_damage(tiny_model), ball(norm), rule=rule, steps=12)
    eps = jnp.asarray([0.1 if norm == "linf" else 1.0])
    res = run_attack(attack, tiny_params, {"x": xs}, eps, jax.random.key(1))
    gain = np.asarray(res.value - res.start_value)[0]
    assert np.all(gain >= 0) and np.median(gain) > 0.2 * np.median(np.asarray(res.value))
    assert np.all(np.asarray(res.improved))


def test_result_is_a_pytree_with_matching_leading_axes(tiny_model, tiny_params, tiny_images):
    attack = pgd(latent_damage(tiny_model), steps=2)
    res = run_attack(attack, tiny_params, tiny_images[:5], jnp.array([0.1, 0.2]), jax.random.key(0))
    assert isinstance(res, AttackResult)
    assert res.delta.shape == (2, 5, 8, 8, 1)
    assert res.value.shape == res.start_value.shape == res.nonfinite.shape == (2, 5)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_schedule_moves_a_linear_objective_by_the_sum_of_its_steps(schedule):
    """On a linear objective sign-PGD moves every pixel by its step size each step, so after T
    steps δ_T − δ_0 = sign(w)·α·Σ_t m(t): T·α for 'constant', α·Σ 0.5(1 + cos(πt/T)) for
    'cosine' (an open ball: the projection never binds)."""
    w = jnp.array([[[1.0], [-2.0]], [[0.5], [3.0]]])
    x = jnp.zeros((2, 2, 1))

    def objective(params, inputs, delta, key):
        return jnp.sum(w * delta)

    def moved(steps):
        attack = make_attack(objective, ball("linf", None), "sign", steps, step_size=0.1,
                             schedule=schedule)  # fmt: skip
        return attack.run(None, {"x": x}, jnp.float32(100.0), jax.random.key(0)).delta

    t = np.arange(10)
    factor = np.ones(10) if schedule == "constant" else 0.5 * (1 + np.cos(np.pi * t / 10))
    np.testing.assert_allclose(
        moved(10) - moved(0), np.sign(w) * 0.1 * factor.sum(), rtol=1e-5, atol=1e-4
    )
    with pytest.raises(ValueError, match="unknown schedule"):
        make_attack(objective, ball("linf", None), "sign", 3, schedule="linear")


def test_apgd_checkpoints_are_the_published_ones():
    """Auto-PGD's checkpoints for 100 iterations (Croce & Hein 2020, §3.2): p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)."""
    assert apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    assert apgd_checkpoints(40) == (9, 17, 23, 28, 32, 35, 38, 40)
    assert apgd_checkpoints(0) == ()


def _run_rule(losses, steps):
    """Feeds the rule a fixed loss sequence (gradient +1 everywhere, identity projection)."""
    rule = apgd_rule(steps, "linf")
    delta = jnp.zeros((3,))
    state = rule.init(delta)
    for loss in losses:
        upd, state = rule.update(
            jnp.ones((3,)), state, delta, value=jnp.float32(loss), step_size=1.0,
            project=lambda d: d,
        )  # fmt: skip
        delta = delta + upd
    return state


def test_apgd_halves_its_step_at_every_checkpoint_where_the_objective_stalls():
    steps = 100
    stalled = _run_rule([1.0] * steps, steps)  # the loss never falls: halve at all 8
    assert float(stalled.scale) == 0.5 ** len(apgd_checkpoints(steps))
    improving = _run_rule(list(np.linspace(0, -1, steps)), steps)  # falls at every step
    assert float(improving.scale) == 1.0
    # falls in 2 of every 3 steps (< 75 %) and keeps a new best: halves at every checkpoint
    # whose window holds enough steps to fall short of 75 %
    zigzag = [-(t // 3) - 0.5 * (t % 3 == 1) for t in range(steps)]
    assert float(_run_rule(zigzag, steps).scale) < 1.0


def test_apgd_converges_to_an_interior_maximum_that_fixed_sign_steps_oscillate_around():
    """max −‖δ − a‖² over the L∞ ball of radius 1, a inside: the maximiser is a. Sign steps of
    a fixed size 2ε can only reach points on their lattice; Auto-PGD halves its way down."""
    a = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (4, 4, 1)), jnp.float32)

    def objective(params, inputs, delta, key):
        return -jnp.sum(jnp.square(delta - a))

    def best(rule, step):
        attack = make_attack(objective, ball("linf", None), rule, 100, step_size=step)
        return attack.run(None, {"x": jnp.zeros((4, 4, 1))}, jnp.float32(1.0), jax.random.key(0))

    apgd, fixed = best("apgd", 2.0), best("sign", 2.0)
    assert float(jnp.max(jnp.abs(apgd.delta - a))) < 0.05
    assert float(jnp.max(jnp.abs(fixed.delta - a))) > 0.2
    assert float(apgd.value) > float(fixed.value)
    with pytest.raises(ValueError, match="halves its own step"):
        make_attack(objective, ball("linf", None), "apgd", 10, step_size=2.0, schedule="cosine")


def _linear_damage():
    """‖A δ‖₂ with output A(x + δ): a linear encoder's latent damage, with an ODS output."""

    def objective(params, inputs, delta, key):
        return jnp.sqrt(jnp.sum(jnp.square(params @ delta.ravel())) + 1e-12)

    def output(params, inputs, delta, key):
        return params @ (inputs["x"] + delta).ravel()

    objective.output = output
    return objective


def _ods_weights(key, restarts):
    """The documented key derivation: w_r ~ U[−1, 1] from fold_in(k_start, 1)."""
    ks = [jax.random.split(jax.random.fold_in(key, r))[0] for r in range(restarts)]
    return [jax.random.uniform(jax.random.fold_in(k, 1), (D_Z,), jnp.float32, -1, 1) for k in ks]


@pytest.mark.parametrize("box", [None, (0.0, 1.0)])
def test_ods_starts_are_the_corners_that_maximise_a_random_output_direction(box):
    """For a linear output A(x + δ) and an L∞ ball the output-diversified start is
    Π(δ_u + 2ε·sign(Aᵀw)): every pixel at the end of its feasible interval that sign(Aᵀw)
    points to, i.e. the maximiser of w·Aδ over ball ∩ box, whatever the uniform point δ_u."""
    a, xs, _ = _linear_problem()
    x = xs[0].at[0].set(0.97).at[1].set(0.02)  # two pixels where the box binds
    eps, key, restarts = jnp.float32(0.1), jax.random.key(4), 5
    attack = make_attack(_linear_damage(), ball("linf", box), "sign", 0, 0.01, restarts,
                         start="ods")  # fmt: skip
    starts = np.asarray(attack.init(a, {"x": x}, eps, key).delta)
    lo, hi = (-eps, eps) if box is None else (np.maximum(-eps, -x), np.minimum(eps, 1 - x))
    for r, w in enumerate(_ods_weights(key, restarts)):
        s = np.sign(np.asarray(a.T @ w)).reshape(x.shape)
        np.testing.assert_allclose(starts[r], np.where(s > 0, hi, lo), atol=1e-6)
    assert len({tuple(np.sign(d).ravel()) for d in starts}) > 1  # the restarts differ


def test_ods_start_in_an_l2_ball_lies_on_its_sphere_along_the_output_gradient():
    a, xs, _ = _linear_problem()
    eps, key, restarts = jnp.float32(0.5), jax.random.key(5), 4
    attack = make_attack(_linear_damage(), ball("l2", None), "sign", 0, 0.01, restarts,
                         start="ods")  # fmt: skip
    starts = np.asarray(attack.init(a, {"x": xs[0]}, eps, key).delta).reshape(restarts, -1)
    for r, w in enumerate(_ods_weights(key, restarts)):
        g = np.asarray(a.T @ w)
        np.testing.assert_allclose(np.linalg.norm(starts[r]), 0.5, rtol=1e-5)
        # δ_u (norm ≤ ε) plus a step of 2ε along g: at most 30° away from g.
        assert starts[r] @ g / (np.linalg.norm(starts[r]) * np.linalg.norm(g)) > 0.866


def test_ods_start_needs_a_ball_and_an_output():
    def no_output(params, inputs, delta, key):
        return jnp.sum(delta)

    with pytest.raises(ValueError, match="'output' function"):
        make_attack(no_output, ball("linf"), "sign", 3, start="ods")
    with pytest.raises(ValueError, match="ball threat"):
        make_attack(_linear_damage(), penalty("l2"), "sign", 3, 0.1, start="ods")
    with pytest.raises(ValueError, match="unknown start"):
        make_attack(_linear_damage(), ball("linf"), "sign", 3, start="corner")
