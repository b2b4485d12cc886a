"""004's evaluation: R+FGSM, PGD flips, distance bisection, evaluate_classifiers, MLP classifier.

Known answers come from linear models with unbounded inputs, where the L∞ attack is exact:
the worst point of the ε-ball is x − ε·sign(w)·s (s the side of the boundary), so a point
flips iff its exact L∞ distance |w·x + b| / ‖w‖₁ is below ε.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaerob_jax.fairness.evaluate import (
    EVAL_ATTACKS,
    RFGSM_VARIANTS,
    EvalSettings,
    distance_upper_bound,
    evaluate_classifiers,
    pgd_flips,
    rfgsm,
)
from vaerob_jax.models.classifier import make_mlp_classifier
from vaerob_jax.robustness import linear_distance, logit_margin, softmax_margin

D = 3  # input dimension of the linear model
TIE = 1e-4  # points this close to a threshold are left out of exact comparisons


def _stack(*trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _take(tree, k):
    return jax.tree.map(lambda a: a[k : k + 1], tree)


@pytest.fixture(scope="module")
def mlp():
    """3-class MLP on 4-D inputs in [0, 1] with one hidden layer of 8."""
    clf = make_mlp_classifier((4,), 3, hidden=(8,))
    params = clf.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.0, (12, 4)), jnp.float32)
    return clf, params, x


def _linear_params(clf, seed):
    p = clf.init(jax.random.key(seed))
    bias = jnp.asarray([0.1 * seed - 0.1, 0.15], jnp.float32)  # a nonzero offset b1 − b0
    return {"Dense_0": {"kernel": p["Dense_0"]["kernel"], "bias": bias}}


@pytest.fixture(scope="module")
def linear():
    """Binary linear model on R^3 (box=None) and 40 Gaussian points."""
    clf = make_mlp_classifier((D,), 2, hidden=())
    params = _linear_params(clf, 1)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(40, D)), jnp.float32)
    return clf, params, x


def _exact_linf(params, x):
    """|w·x + b| / ‖w‖₁ for w = W[:, 1] − W[:, 0], b = b1 − b0 (float64)."""
    W = np.asarray(params["Dense_0"]["kernel"], np.float64)
    bb = np.asarray(params["Dense_0"]["bias"], np.float64)
    w, b = W[:, 1] - W[:, 0], bb[1] - bb[0]
    return np.abs(np.asarray(x, np.float64) @ w + b) / np.abs(w).sum()


@functools.partial(jax.jit, static_argnames=("clf", "steps", "box"))
def _pgd_jit(clf, params, x, target, eps, key, steps, box):
    return pgd_flips(clf, params, x, target, eps, key, steps=steps, box=box)


def _pgd(clf, params, x, target, eps, key, steps=4, box=None):
    """pgd_flips with a per-example ε (N,), compiled once per model and shapes."""
    eps = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (x.shape[0],))
    return np.asarray(_pgd_jit(clf, params, x, target, eps, key, steps, box))


def _pred(clf, params, x):
    return jnp.argmax(clf.logits(params, x), -1)


def _moved(clf, params, x, x_adv):
    return np.asarray(_pred(clf, params, x_adv) != _pred(clf, params, x))


def _far(dist, *thresholds):
    """Mask of points not within TIE of any threshold."""
    keep = np.ones(dist.shape, bool)
    for t in thresholds:
        keep &= np.abs(dist - t) > TIE
    return keep


def _reference_rfgsm(clf, params, x, target, eps, key, alpha, variant, box):
    """R+FGSM written out from its definition (Tramèr et al. 2018)."""
    e = jnp.asarray(eps, jnp.float32).reshape(-1, *([1] * (x.ndim - 1)))
    lo, hi = x - e, x + e
    if box is not None:
        lo, hi = jnp.maximum(lo, box[0]), jnp.minimum(hi, box[1])
    a = alpha * e
    x1 = jnp.clip(x + a * jnp.sign(jax.random.normal(key, x.shape)), lo, hi)

    def loss(z):
        logits = clf.logits(params, z)
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).sum()

    step = e - a if variant == "tramer" else a
    return jnp.clip(x1 + step * jnp.sign(jax.grad(loss)(x1)), lo, hi)


# --- R+FGSM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", RFGSM_VARIANTS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_rfgsm_stays_in_ball_and_box_and_matches_definition(mlp, variant, alpha):
    clf, params, x = mlp
    target, key, eps = _pred(clf, params, x), jax.random.key(3), 0.1
    xa = rfgsm(clf, params, x, target, eps, key, alpha=alpha, variant=variant, box=(0.0, 1.0))
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert float(jnp.max(jnp.abs(xa - x))) <= eps + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    want = _reference_rfgsm(clf, params, x, target, eps, key, alpha, variant, (0.0, 1.0))
    np.testing.assert_allclose(np.asarray(xa), np.asarray(want), atol=1e-6)
    if not (variant == "torchattacks" and alpha == 0.0):
        assert float(jnp.max(jnp.abs(xa - x))) > 0.5 * eps  # it did move


def test_rfgsm_alpha_one_tramer_is_the_random_step_only(mlp):
    clf, params, x = mlp
    key, eps = jax.random.key(5), 0.2
    xa = rfgsm(clf, params, x, _pred(clf, params, x), eps, key, alpha=1.0, variant="tramer")
    noise = jax.random.normal(key, x.shape)
    np.testing.assert_allclose(
        np.asarray(xa), np.asarray(jnp.clip(x + eps * jnp.sign(noise), 0.0, 1.0)), atol=1e-7
    )


def test_rfgsm_torchattacks_alpha_zero_does_not_move(mlp):
    clf, params, x = mlp
    xa = rfgsm(
        clf,
        params,
        x,
        _pred(clf, params, x),
        0.3,
        jax.random.key(0),
        alpha=0.0,
        variant="torchattacks",
    )
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(x))


def test_rfgsm_tramer_alpha_zero_is_fgsm(mlp):
    # α = 0: one full signed gradient step of size ε, then clipped to the box.
    clf, params, x = mlp
    target, eps = _pred(clf, params, x), 0.15

    def loss(z):
        return optax.softmax_cross_entropy_with_integer_labels(clf.logits(params, z), target).sum()

    want = jnp.clip(x + eps * jnp.sign(jax.grad(loss)(x)), 0.0, 1.0)
    xa = rfgsm(clf, params, x, target, eps, jax.random.key(9), alpha=0.0)
    np.testing.assert_allclose(np.asarray(xa), np.asarray(want), atol=1e-7)


@pytest.mark.parametrize("variant", RFGSM_VARIANTS)
def test_rfgsm_per_example_eps_respects_each_radius(mlp, variant):
    clf, params, x = mlp
    eps = jnp.linspace(0.0, 0.3, x.shape[0])
    xa = rfgsm(clf, params, x, _pred(clf, params, x), eps, jax.random.key(1), variant=variant)
    dev = np.asarray(jnp.max(jnp.abs(xa - x), axis=1))
    assert np.all(dev <= np.asarray(eps) + 1e-6)
    assert dev[0] == 0.0  # ε = 0 leaves the point alone
    assert np.all(dev[1:] > 0.0)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    # Each row equals the scalar-ε attack at its own radius (same noise: same key and shape).
    for i in (3, 11):
        xi = rfgsm(
            clf,
            params,
            x,
            _pred(clf, params, x),
            float(eps[i]),
            jax.random.key(1),
            variant=variant,
        )
        np.testing.assert_allclose(np.asarray(xa[i]), np.asarray(xi[i]), atol=1e-6)


def test_rfgsm_rejects_bad_variant_and_alpha(mlp):
    clf, params, x = mlp
    t, k = _pred(clf, params, x), jax.random.key(0)
    with pytest.raises(ValueError, match="variant"):
        rfgsm(clf, params, x, t, 0.1, k, variant="madry")
    with pytest.raises(ValueError, match="alpha"):
        rfgsm(clf, params, x, t, 0.1, k, alpha=1.5)


# --- linear model: exact answers ------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.2, 0.45])
def test_linear_rfgsm_and_pgd_flip_exactly_the_points_within_eps(linear, eps):
    clf, params, x = linear
    dist = _exact_linf(params, x)
    keep = _far(dist, eps)
    want = dist < eps
    assert 5 <= want[keep].sum() <= keep.sum() - 5  # both outcomes occur
    # Against the library's exact distance, multi-class (W, b) and binary (w, b) forms.
    W, bias = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    np.testing.assert_allclose(np.asarray(linear_distance(x, W, bias, "linf")), dist, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(linear_distance(x, W[:, 1] - W[:, 0], bias[1] - bias[0], "linf")),
        dist,
        atol=1e-5,
    )
    target = _pred(clf, params, x)
    xa = rfgsm(clf, params, x, target, eps, jax.random.key(2), alpha=0.0, box=None)
    np.testing.assert_array_equal(_moved(clf, params, x, xa)[keep], want[keep])
    flips = _pgd(clf, params, x, target, eps, jax.random.key(4))
    assert flips.shape == (x.shape[0],) and flips.dtype == bool
    np.testing.assert_array_equal(flips[keep], want[keep])


def test_pgd_eps_zero_never_flips(mlp, linear):
    for clf, params, x, box in [(*mlp, (0.0, 1.0)), (*linear, None)]:
        t = _pred(clf, params, x)
        assert not np.any(np.asarray(pgd_flips(clf, params, x, t, 0.0, jax.random.key(0), box=box)))
        # A per-example budget: rows with ε = 0 never flip, rows with a large ε do (linear).
        eps = jnp.where(jnp.arange(x.shape[0]) % 2 == 0, 0.0, 5.0)
        f = _pgd(clf, params, x, t, eps, jax.random.key(1), box=box)
        assert not np.any(f[::2])
        if box is None:
            assert np.all(f[1::2])


def test_pgd_flips_grow_with_eps_on_linear_model(linear):
    clf, params, x = linear
    dist, t = _exact_linf(params, x), _pred(clf, params, x)
    grid = (0.05, 0.15, 0.3, 0.6)
    keep = _far(dist, *grid)
    flips = [_pgd(clf, params, x, t, e, jax.random.key(i))[keep] for i, e in enumerate(grid)]
    for small, large in zip(flips, flips[1:], strict=False):
        assert np.all(small <= large)  # flipped at ε1 ⇒ flipped at ε2 > ε1
    assert flips[0].sum() < flips[-1].sum()
    for e, f in zip(grid, flips, strict=True):
        np.testing.assert_array_equal(f, dist[keep] < e)


def test_pgd_rejects_bad_steps(linear):
    clf, params, x = linear
    with pytest.raises(ValueError, match="steps"):
        pgd_flips(clf, params, x, _pred(clf, params, x), 0.1, jax.random.key(0), steps=0)


def test_distance_upper_bound_brackets_exact_linear_distance(linear):
    clf, params, x = linear
    max_eps = 0.5
    halvings = 8
    dist = _exact_linf(params, x)
    upper, censored = distance_upper_bound(
        clf,
        params,
        x,
        _pred(clf, params, x),
        jax.random.key(7),
        max_eps=max_eps,
        halvings=halvings,
        steps=3,
        box=None,
    )
    upper, censored = np.asarray(upper), np.asarray(censored)
    assert upper.shape == censored.shape == (x.shape[0],)
    width = max_eps / 2**halvings
    keep = _far(dist, max_eps)
    np.testing.assert_array_equal(censored[keep], dist[keep] >= max_eps)
    assert 0 < censored.sum() < x.shape[0]
    ok = ~censored
    assert np.all(upper[ok] >= dist[ok] - 1e-6)
    assert np.all(upper[ok] - dist[ok] <= width + 1e-6)
    np.testing.assert_allclose(upper[censored], max_eps)


def test_distance_upper_bound_rejects_bad_bracket(linear):
    clf, params, x = linear
    t, k = _pred(clf, params, x), jax.random.key(0)
    with pytest.raises(ValueError, match="max_eps"):
        distance_upper_bound(clf, params, x, t, k, max_eps=0.0)
    with pytest.raises(ValueError, match="halvings"):
        distance_upper_bound(clf, params, x, t, k, max_eps=0.5, halvings=0)


# --- evaluate_classifiers -------------------------------------------------------------------

MLP_SETTINGS = EvalSettings(
    eps=(0.05, 0.2), pgd_steps=4, distance_max=0.5, distance_halvings=5, distance_steps=3
)
LIN_SETTINGS = EvalSettings(
    eps=(0.1, 0.3, 0.6),
    pgd_steps=3,
    rfgsm_alpha=0.0,
    distance_max=0.8,
    distance_halvings=6,
    distance_steps=3,
    box=None,
)


@pytest.fixture(scope="module")
def mlp_stack(mlp):
    clf, _, x = mlp
    params = _stack(*(clf.init(jax.random.key(s)) for s in range(3)))
    labels = np.random.default_rng(2).integers(0, 3, x.shape[0])
    ev = evaluate_classifiers(clf, params, x, labels, jax.random.key(11), MLP_SETTINGS)
    return clf, params, x, labels, ev


def test_evaluation_shapes_worst_and_margins(mlp_stack):
    clf, params, x, labels, ev = mlp_stack
    K, E, N = 3, len(MLP_SETTINGS.eps), x.shape[0]
    assert set(ev.flipped) == {*EVAL_ATTACKS, "worst"}
    for flags in ev.flipped.values():
        assert flags.shape == (K, E, N) and flags.dtype == bool
    np.testing.assert_array_equal(ev.flipped["worst"], ev.flipped["rfgsm"] | ev.flipped["pgd"])
    for a in (ev.prediction, ev.correct, ev.softmax_margin, ev.logit_margin):
        assert a.shape == (K, N)
    assert ev.distance.shape == ev.distance_censored.shape == (K, N)
    np.testing.assert_array_equal(ev.eps, MLP_SETTINGS.eps)
    assert np.all((ev.distance > 0) & (ev.distance <= MLP_SETTINGS.distance_max + 1e-6))
    for k in range(K):
        pk = jax.tree.map(lambda a, k=k: a[k], params)
        logits = clf.logits(pk, x)
        np.testing.assert_array_equal(ev.prediction[k], np.asarray(jnp.argmax(logits, -1)))
        np.testing.assert_array_equal(ev.correct[k], ev.prediction[k] == labels)
        np.testing.assert_allclose(ev.softmax_margin[k], softmax_margin(logits), atol=1e-6)
        np.testing.assert_allclose(ev.logit_margin[k], logit_margin(logits), atol=1e-6)
        # Hand-computed top-2 gap of the probabilities.
        p = np.sort(np.asarray(jax.nn.softmax(logits, -1), np.float64), axis=-1)
        np.testing.assert_allclose(ev.softmax_margin[k], p[:, -1] - p[:, -2], atol=1e-6)


def test_stack_member_equals_model_alone(mlp_stack):
    clf, params, x, labels, ev = mlp_stack
    for k in range(3):
        one = evaluate_classifiers(
            clf, _take(params, k), x, labels, jax.random.key(11), MLP_SETTINGS
        )
        np.testing.assert_array_equal(one.prediction[0], ev.prediction[k])
        np.testing.assert_array_equal(one.correct[0], ev.correct[k])
        for name in ev.flipped:
            np.testing.assert_array_equal(one.flipped[name][0], ev.flipped[name][k])
        np.testing.assert_allclose(one.softmax_margin[0], ev.softmax_margin[k], atol=1e-6)
        np.testing.assert_allclose(one.logit_margin[0], ev.logit_margin[k], atol=1e-6)
        np.testing.assert_allclose(one.distance[0], ev.distance[k], atol=1e-6)
        np.testing.assert_array_equal(one.distance_censored[0], ev.distance_censored[k])


def test_same_key_is_reproducible_and_shared_by_models(mlp_stack, mlp):
    clf, params, x, labels, ev = mlp_stack
    again = evaluate_classifiers(clf, params, x, labels, jax.random.key(11), MLP_SETTINGS)
    for field in ("prediction", "correct", "softmax_margin", "logit_margin", "distance"):
        np.testing.assert_array_equal(getattr(again, field), getattr(ev, field))
    np.testing.assert_array_equal(again.distance_censored, ev.distance_censored)
    for name in ev.flipped:
        np.testing.assert_array_equal(again.flipped[name], ev.flipped[name])
    # Three copies of one model see the same noise: identical rows.
    same = _stack(*([mlp[1]] * 3))
    ev3 = evaluate_classifiers(clf, same, x, labels, jax.random.key(11), MLP_SETTINGS)
    for name in ev3.flipped:
        assert np.all(ev3.flipped[name] == ev3.flipped[name][:1])
    assert np.all(ev3.distance == ev3.distance[:1])


def test_linear_stack_matches_exact_answers_for_any_chunking(linear):
    clf, _, x = linear
    stack = [_linear_params(clf, s) for s in (1, 2, 3)]
    params = _stack(*stack)
    labels = np.random.default_rng(3).integers(0, 2, x.shape[0])
    n, settings7 = x.shape[0], LIN_SETTINGS
    assert n % 7 != 0  # the last chunk is padded
    full = evaluate_classifiers(
        clf, params, x, labels, jax.random.key(0), dataclasses.replace(settings7, chunk=n)
    )
    chunked = evaluate_classifiers(
        clf, params, x, labels, jax.random.key(0), dataclasses.replace(settings7, chunk=7)
    )
    width = LIN_SETTINGS.distance_max / 2**LIN_SETTINGS.distance_halvings
    for k, pk in enumerate(stack):
        dist = _exact_linf(pk, x)
        keep = _far(dist, *LIN_SETTINGS.eps, LIN_SETTINGS.distance_max)
        for name in full.flipped:  # chunkings agree wherever float error cannot decide
            np.testing.assert_array_equal(
                chunked.flipped[name][k][:, keep], full.flipped[name][k][:, keep]
            )
        for ev in (full, chunked):
            for j, e in enumerate(LIN_SETTINGS.eps):
                for name in ("rfgsm", "pgd", "worst"):
                    np.testing.assert_array_equal(ev.flipped[name][k, j][keep], dist[keep] < e)
            cens = ev.distance_censored[k]
            np.testing.assert_array_equal(cens[keep], dist[keep] >= LIN_SETTINGS.distance_max)
            ok = ~cens
            assert np.all(ev.distance[k][ok] >= dist[ok] - 1e-6)
            assert np.all(ev.distance[k][ok] - dist[ok] <= width + 1e-6)
    np.testing.assert_array_equal(chunked.prediction, full.prediction)
    np.testing.assert_array_equal(chunked.correct, full.correct)
    np.testing.assert_allclose(chunked.softmax_margin, full.softmax_margin, atol=1e-6)
    np.testing.assert_allclose(chunked.logit_margin, full.logit_margin, atol=1e-6)
    np.testing.assert_allclose(chunked.distance, full.distance, atol=width + 1e-6)


def test_evaluate_rejects_bad_inputs(mlp_stack):
    clf, params, x, labels, _ = mlp_stack
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="inputs must have shape"):
        evaluate_classifiers(clf, params, np.zeros((12, 5)), labels, k, MLP_SETTINGS)
    with pytest.raises(ValueError, match="inputs must have shape"):
        evaluate_classifiers(clf, params, np.zeros((12, 4, 1)), labels, k, MLP_SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        evaluate_classifiers(clf, params, x, np.full(12, 3), k, MLP_SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        evaluate_classifiers(clf, params, x, np.full(12, -1), k, MLP_SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        evaluate_classifiers(clf, params, x, labels[:5], k, MLP_SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        evaluate_classifiers(clf, params, x, labels.astype(np.float32), k, MLP_SETTINGS)
    bad = {**params, "Dense_1": {**params["Dense_1"], "bias": params["Dense_1"]["bias"][:2]}}
    with pytest.raises(ValueError, match="leading model axis"):
        evaluate_classifiers(clf, bad, x, labels, k, MLP_SETTINGS)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"eps": (0.1, 0.0)}, "eps"),
        ({"eps": (-0.1,)}, "eps"),
        ({"eps": ()}, "eps"),
        ({"eps": (float("inf"),)}, "eps"),
        ({"rfgsm_variant": "madry"}, "rfgsm_variant"),
        ({"rfgsm_alpha": -0.1}, "rfgsm_alpha"),
        ({"pgd_steps": 0}, "pgd_steps"),
        ({"chunk": 0}, "chunk"),
        ({"distance_max": 0.0}, "distance_max"),
    ],
)
def test_eval_settings_reject_bad_values(kwargs, word):
    with pytest.raises(ValueError, match=word):
        EvalSettings(**kwargs)


def test_evaluation_without_distance(linear):
    clf, params, x = linear
    s = EvalSettings(eps=(0.2,), pgd_steps=2, distance_max=None, box=None)
    ev = evaluate_classifiers(
        clf, _stack(params), x, np.zeros(x.shape[0], int), jax.random.key(0), s
    )
    assert ev.distance is None and ev.distance_censored is None
    assert ev.flipped["pgd"].shape == (1, 1, x.shape[0])


# --- make_mlp_classifier --------------------------------------------------------------------


def test_linear_mlp_is_exactly_an_affine_map():
    clf = make_mlp_classifier((2, 3), 4, hidden=())
    params = clf.init(jax.random.key(0))
    assert set(params) == {"Dense_0"}
    W, b = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    assert W.shape == (6, 4) and b.shape == (4,)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 3)), jnp.float32)
    np.testing.assert_allclose(
        np.asarray(clf.logits(params, x)), np.asarray(x.reshape(5, 6) @ W + b), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(clf.logits(params, x[0]), clf.logits(params, x)[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(clf.predict_proba(params, x)).sum(-1), 1.0, atol=1e-6)


def test_mlp_hidden_layers_and_spec():
    clf = make_mlp_classifier([4], 3, hidden=[8, 5])
    params = clf.init(jax.random.key(0))
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(4, 8), (8, 5), (5, 3)]
    assert clf.logits(params, jnp.zeros((2, 4))).shape == (2, 3)
    spec = clf.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["arch"] == "MLPNet" and spec["hidden"] == [8, 5]
    assert spec["image_shape"] == [4] and spec["num_classes"] == 3
    lin = make_mlp_classifier((2,), 2, hidden=()).spec()
    assert json.loads(json.dumps(lin)) == lin and lin["hidden"] == []
    assert lin != spec


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (((2,), 1, (8,)), "num_classes"),
        (((), 2, (8,)), "input_shape"),
        (((0, 2), 2, (8,)), "input_shape"),
        (((2,), 2, (8, 0)), "hidden"),
        (((2,), 2, (-3,)), "hidden"),
    ],
)
def test_make_mlp_classifier_rejects_bad_args(args, word):
    with pytest.raises(ValueError, match=word):
        make_mlp_classifier(*args)
