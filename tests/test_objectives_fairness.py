"""004's training losses: Eq. 3 penalty, margin losses, the fair/robust BatchLoss."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.objectives.classification import cross_entropy
from vaerob_jax.objectives.fairness import (
    SaturatedGroupLossWarning,
    adversarial_inputs,
    check_saturated_groups,
    fair_robust_loss,
    fairness_penalty,
    group_losses,
    minmax_group_loss,
    validate_fairness_data,
    validate_fairness_grid,
)
from vaerob_jax.objectives.losses import label_margin, margin_loss, ramp_loss


@dataclasses.dataclass(frozen=True)
class TinyMLP:
    """A two-layer MLP on (B, 4, 4, 1) images with 3 classes (a ClassifierModel stand-in)."""

    num_classes: int = 3

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (16, 12)) * 0.5,
            "b1": jnp.zeros(12),
            "w2": jax.random.normal(k2, (12, self.num_classes)) * 0.5,
            "b2": jnp.zeros(self.num_classes),
        }

    def logits(self, params, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    def spec(self):
        return {"kind": "tiny_mlp", "num_classes": self.num_classes}


@pytest.fixture(scope="module")
def setup():
    clf = TinyMLP()
    params = clf.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.uniform(size=(24, 4, 4, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 3, 24), jnp.int32),
        "group": jnp.asarray(rng.integers(0, 3, 24), jnp.int32),
    }
    return clf, params, batch


def _penalty_np(losses, groups, reduce):
    overall = losses.mean()
    devs = [abs(losses[groups == a].mean() - overall) for a in np.unique(groups)]
    return sum(devs) if reduce == "sum" else sum(devs) / len(devs)


def test_penalty_matches_numpy_and_masks_absent_groups():
    rng = np.random.default_rng(1)
    losses = rng.exponential(size=40).astype(np.float32)
    groups = rng.choice([0, 1, 3], size=40)  # group 2 and 4 absent
    for reduce in ("sum", "mean"):
        got = fairness_penalty(jnp.asarray(losses), jnp.asarray(groups), 5, reduce)
        np.testing.assert_allclose(got, _penalty_np(losses, groups, reduce), rtol=1e-5)
    gl = group_losses(jnp.asarray(losses), jnp.asarray(groups), 5)
    np.testing.assert_array_equal(gl.present, [True, True, False, True, False])
    np.testing.assert_array_equal(gl.n, np.bincount(groups, minlength=5))
    np.testing.assert_allclose(gl.mean[3], losses[groups == 3].mean(), rtol=1e-6)
    # min–max (App. C) over present groups only.
    want = max(losses[groups == a].mean() for a in (0, 1, 3))
    np.testing.assert_allclose(minmax_group_loss(losses, groups, 5), want, rtol=1e-6)


def test_penalty_is_zero_for_equal_group_losses():
    losses = jnp.array([0.3, 0.7, 0.3, 0.7, 0.5, 0.5])
    groups = jnp.array([0, 0, 1, 1, 2, 2])
    for reduce in ("sum", "mean"):
        assert float(fairness_penalty(losses, groups, 3, reduce)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="penalty reduce"):
        fairness_penalty(losses, groups, 3, "max")


def test_margin_losses_known_values():
    m = jnp.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(ramp_loss(m), [1, 1, 0.5, 0, 0])
    # Flat start s = .5: flat at 1 up to m = .5, then linear to 0 at m = 1.
    np.testing.assert_allclose(ramp_loss(m, 0.5), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(ramp_loss(jnp.array([0.75]), 0.5), [0.5])
    # Margins from logits: z_y − max_{j≠y} z_j.
    logits = jnp.array([[2.0, 0.5, 1.0], [0.0, 3.0, 3.0], [1.0, -1.0, 0.0]])
    label = jnp.array([0, 1, 2])
    np.testing.assert_allclose(label_margin(logits, label), [1.0, 0.0, -1.0])
    mm = np.array([1.0, 0.0, -1.0])
    np.testing.assert_allclose(
        margin_loss("logistic", logits, label), np.log1p(np.exp(-mm)), rtol=1e-6
    )
    np.testing.assert_allclose(margin_loss("exp", logits, label), np.exp(-mm), rtol=1e-6)
    np.testing.assert_array_equal(margin_loss("zero_one", logits, label), [0.0, 1.0, 1.0])
    # Binary CE is the logistic loss of the margin.
    two = jnp.array([[0.3, -0.4], [1.0, 2.5]])
    y2 = jnp.array([1, 1])
    np.testing.assert_allclose(
        margin_loss("ce", two, y2), margin_loss("logistic", two, y2), rtol=1e-6
    )
    # The exponential loss stays finite for badly wrong examples.
    assert np.isfinite(float(margin_loss("exp", jnp.array([[0.0, 200.0]]), jnp.array([0]))[0]))
    with pytest.raises(ValueError, match="unknown loss"):
        margin_loss("hinge", logits, label)


def test_zero_lambda_zero_eps_is_plain_cross_entropy(setup):
    clf, params, batch = setup
    loss = fair_robust_loss(clf, num_groups=3, pgd_steps=3)
    hp = {"lam": jnp.float32(0.0), "eps_star": jnp.float32(0.0), "step": jnp.int32(7)}
    key = jax.random.key(3)
    plain = cross_entropy(clf)

    def value(p, fn, h):
        return fn(p, batch, key, h)[0]

    f_fair = jax.jit(jax.value_and_grad(lambda p: value(p, loss, hp)))
    f_plain = jax.jit(jax.value_and_grad(lambda p: value(p, plain, {})))
    (v1, g1), (v2, g2) = f_fair(params), f_plain(params)
    assert float(v1) == float(v2)
    jax.tree.map(np.testing.assert_array_equal, g1, g2)


def test_zero_eps_is_exactly_eq3(setup):
    clf, params, batch = setup
    key = jax.random.key(5)
    for reduce in ("sum", "mean"):
        loss = fair_robust_loss(clf, num_groups=3, pgd_steps=3, penalty_reduce=reduce)
        no_pgd = fair_robust_loss(clf, num_groups=3, pgd_steps=0, penalty_reduce=reduce)
        hp = {"lam": jnp.float32(0.7), "eps_star": jnp.float32(0.0), "step": jnp.int32(0)}

        def eq3(p, reduce=reduce):
            import optax

            ce = optax.softmax_cross_entropy_with_integer_labels(
                clf.logits(p, batch["x"]), batch["label"]
            )
            return jnp.mean(ce) + 0.7 * fairness_penalty(ce, batch["group"], 3, reduce)

        v, g = jax.jit(jax.value_and_grad(lambda p, f=loss, h=hp: f(p, batch, key, h)[0]))(params)
        v0 = jax.jit(lambda p, f=no_pgd, h=hp: f(p, batch, key, h)[0])(params)
        want, gw = jax.jit(jax.value_and_grad(eq3))(params)
        assert float(v) == float(want) == float(v0)
        jax.tree.map(np.testing.assert_array_equal, g, gw)


def test_robust_term_uses_pgd_inside_ball_and_box(setup):
    clf, params, batch = setup
    eps = jnp.float32(0.1)
    key = jax.random.key(9)
    attack = jax.jit(lambda x, y, e, k: adversarial_inputs(clf, params, x, y, e, k, steps=5))
    x_adv = attack(batch["x"], batch["label"], eps, key)
    assert float(jnp.max(jnp.abs(x_adv - batch["x"]))) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    import optax

    def ce(x):
        return optax.softmax_cross_entropy_with_integer_labels(
            clf.logits(params, x), batch["label"]
        ).mean()

    assert float(ce(x_adv)) > float(ce(batch["x"]))  # the attack ascends the loss
    # The loss's robust term is the mean loss at exactly these inputs (same key).
    loss = fair_robust_loss(clf, num_groups=3, pgd_steps=5)
    hp = {"lam": jnp.float32(0.0), "eps_star": eps, "step": jnp.int32(0)}
    value, aux = jax.jit(lambda h: loss(params, batch, key, h))(hp)
    np.testing.assert_allclose(aux["loss_adv"], ce(x_adv), rtol=1e-6)
    np.testing.assert_allclose(value, aux["loss_clean"] + ce(x_adv), rtol=1e-6)


def test_gradients_finite_for_every_loss_and_grid_vmaps(setup):
    clf, params, batch = setup
    losses = ("ce", "ramp", "logistic", "exp")
    loss = fair_robust_loss(clf, num_groups=3, loss=losses, pgd_steps=2, ramp_warmup_steps=5)
    grid = {  # λ × ε* × loss as per-model arrays, as the grid trainer passes them
        "lam": jnp.array([0.0, 0.5, 2.0, 1.0]),
        "eps_star": jnp.array([0.0, 0.05, 0.1, 0.2]),
        "loss_id": jnp.array([0, 1, 2, 3]),
        "step": jnp.array([0, 10, 10, 10], jnp.int32),
    }
    keys = jax.random.split(jax.random.key(0), 4)
    fn = jax.jit(
        jax.vmap(jax.value_and_grad(lambda p, h, k: loss(p, batch, k, h)[0]), in_axes=(None, 0, 0))
    )
    values, grads = fn(params, grid, keys)
    assert np.all(np.isfinite(values))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # Model k of the vmapped grid equals the same point evaluated alone.
    single = jax.jit(lambda h, k: loss(params, batch, k, h)[0])
    for k in range(4):
        hp = {n: v[k] for n, v in grid.items()}
        np.testing.assert_allclose(values[k], single(hp, keys[k]), rtol=1e-5)


def test_loss_selection_and_ramp_warmup(setup):
    clf, params, batch = setup
    key = jax.random.key(1)
    multi = fair_robust_loss(
        clf, num_groups=3, loss=("ce", "ramp"), pgd_steps=0, ramp_warmup_steps=100
    )
    ramp = fair_robust_loss(clf, num_groups=3, loss="ramp", pgd_steps=0, ramp_warmup_steps=100)
    ce = fair_robust_loss(clf, num_groups=3, loss="ce", pgd_steps=0)
    base = {"lam": jnp.float32(0.4)}
    late = {**base, "step": jnp.int32(100)}
    early = {**base, "step": jnp.int32(99)}
    v_ramp = ramp(params, batch, key, late)[0]
    assert float(multi(params, batch, key, {**late, "loss_id": jnp.int32(1)})[0]) == float(v_ramp)
    # During the warm-up the ramp objective IS the cross-entropy objective.
    assert float(ramp(params, batch, key, early)[0]) == float(ce(params, batch, key, early)[0])
    assert float(v_ramp) != float(ce(params, batch, key, late)[0])
    # The warm-up length is itself a hyperparameter (a grid axis without recompiling).
    assert float(ramp(params, batch, key, {**early, "ramp_warmup_steps": 0})[0]) == float(v_ramp)
    assert set(multi.required) == {"lam", "loss_id"}
    assert ramp.defaults == (("ramp_warmup_steps", 100.0),)


def test_minmax_method(setup):
    clf, params, batch = setup
    loss = fair_robust_loss(clf, num_groups=3, method="minmax", pgd_steps=0)
    assert loss.required == ()
    import optax

    ce = optax.softmax_cross_entropy_with_integer_labels(
        clf.logits(params, batch["x"]), batch["label"]
    )
    v, aux = loss(params, batch, jax.random.key(0), {})
    np.testing.assert_allclose(v, minmax_group_loss(ce, batch["group"], 3), rtol=1e-6)
    np.testing.assert_allclose(aux["group_loss_max"], v, rtol=1e-6)


def test_group_is_not_a_model_input(setup):
    clf, params, batch = setup
    loss = fair_robust_loss(clf, num_groups=3, pgd_steps=0)
    hp = {"lam": jnp.float32(0.0)}
    shuffled = {**batch, "group": batch["group"][::-1]}
    a = loss(params, batch, jax.random.key(0), hp)[1]
    b = loss(params, shuffled, jax.random.key(0), hp)[1]
    assert float(a["error"]) == float(b["error"]) and float(a["loss_clean"]) == float(
        b["loss_clean"]
    )


def test_bad_configuration_and_data_raise(setup):
    clf = setup[0]
    with pytest.raises(ValueError, match="no gradient"):
        fair_robust_loss(clf, num_groups=2, loss="zero_one")
    with pytest.raises(ValueError, match="penalty_reduce"):
        fair_robust_loss(clf, num_groups=2, penalty_reduce="max")
    with pytest.raises(ValueError, match="method"):
        fair_robust_loss(clf, num_groups=2, method="lagrangian")
    with pytest.warns(UserWarning, match="warm-up"):
        fair_robust_loss(clf, num_groups=2, loss="ramp")
    loss = fair_robust_loss(clf, num_groups=2)
    with pytest.raises(ValueError, match="eps_star"):
        loss.check(["lam"], ["x", "label", "group"])
    with pytest.raises(ValueError, match="group"):
        loss.check(["lam", "eps_star"], ["x", "label"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        validate_fairness_data([0, 1, 3], [0, 1, 1], 3, 2)
    with pytest.raises(ValueError, match=r"group\(s\) \[1\] have no examples"):
        validate_fairness_data([0, 1, 2], [0, 0, 2], 3, 3)
    with pytest.raises(ValueError, match="'lam' must be finite and >= 0"):
        validate_fairness_grid({"lam": [0.0, -1.0]})
    with pytest.raises(ValueError, match="'eps_star'"):
        validate_fairness_grid({"eps_star": [float("nan")]})
    validate_fairness_data([0, 1, 2], [0, 1, 1], 3, 2)


def test_saturated_group_warning():
    with pytest.warns(SaturatedGroupLossWarning, match=r"models \[\[1\]\]"):
        flags = check_saturated_groups([[0.2, 0.6, 0.4], [1.0, 0.995, 1.0]])
    np.testing.assert_array_equal(flags, [False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Equal but not saturated (a genuinely fair model) is fine; so is saturated but unequal.
        assert not check_saturated_groups([0.3, 0.3, 0.3]).any()
        assert not check_saturated_groups([1.0, 0.5]).any()
