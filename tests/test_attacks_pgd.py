"""Attack engine tests on tiny models: invariants, known orderings, determinism, compilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.attacks import (
    DRIVER_ENV_VAR,
    best_of,
    latent_damage,
    loop_driver,
    norm_of,
    output_damage,
    pgd,
    run_attack,
)
from vaerob_jax.attacks.driver import _chunk_program, _finalize_program, _init_program

EPS = jnp.array([0.02, 0.05, 0.1, 0.2], jnp.float32)


def attack_batch(attack, params, xs, eps, key, **kw):
    """Deltas (E, N, ...) of every image at every budget."""
    return run_attack(attack, params, {"x": xs}, eps, key, **kw).delta


def attack_models(attack, params, xs, eps, key, **kw):
    return run_attack(attack, params, {"x": xs}, eps, key, models=True, **kw).delta


def attack_each(attack, params, xs, eps, key, **kw):
    return run_attack(attack, params, {"x": xs}, eps, key, paired=True, **kw).delta


@pytest.fixture(scope="module")
def linf_attack(tiny_model):
    """The shared L∞ sign attack (one compile per program shape, reused by several tests)."""
    return pgd(latent_damage(tiny_model), norm="linf", steps=8)


def _damage(objective, params, xs, deltas):
    """objective(params, x, delta) for deltas (..., N, H, W, C) -> (..., N)."""
    key = jax.random.key(0)
    f = jax.vmap(lambda x, d: objective(params, {"x": x}, d, key))
    for _ in range(deltas.ndim - xs.ndim):
        f = jax.vmap(f, in_axes=(None, 0))
    return np.asarray(jax.jit(f)(xs, deltas))


def _norms(deltas, norm):
    flat = deltas.reshape(-1, *deltas.shape[-3:])
    return np.asarray(jax.vmap(lambda d: norm_of(d, norm))(flat)).reshape(deltas.shape[:-3])


# ---- invariants for every option --------------------------------------------------------------
CONFIGS = [
    dict(obj="latent", norm="linf", rule="sign", constraint="project", normalize=None),
    dict(obj="output", norm="l2", rule="adam", constraint="project", normalize="minmax"),
    dict(obj="latent_sampled", norm="linf", rule="adam", constraint="rescale", normalize="minmax"),
    dict(obj="output", norm="l2", rule="sign", constraint="rescale", normalize=None),
    dict(obj="latent", norm="linf", rule="apgd", constraint="project", normalize=None),
    dict(obj="output", norm="l2", rule="apgd", constraint="project", normalize=None),
]


def _objective(model, name, normalize):
    if name == "output":
        return output_damage(model, normalize=normalize)
    return latent_damage(model, use_mean=(name == "latent"), normalize=normalize)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_perturbation_stays_in_threat_set(cfg, tiny_model, tiny_params, tiny_images):
    obj = _objective(tiny_model, cfg["obj"], cfg["normalize"])
    attack = pgd(
        obj, cfg["norm"], steps=4, rule=cfg["rule"], restarts=2, constraint=cfg["constraint"]
    )
    xs = tiny_images[:6].at[0].set(0.0).at[1].set(1.0)  # images on the box faces too
    eps = jnp.array([0.0, 0.05, 0.5], jnp.float32)
    d = attack_batch(attack, tiny_params, xs, eps, jax.random.key(0), driver="scan")
    assert d.shape == (3, 6, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(d)))
    n = _norms(d, cfg["norm"])
    if cfg["constraint"] == "rescale":
        np.testing.assert_allclose(n, np.broadcast_to(np.asarray(eps)[:, None], n.shape), rtol=1e-5)
    else:
        assert np.all(n <= np.asarray(eps)[:, None] * (1 + 1e-5) + 1e-7)
        xadv = np.asarray(xs[None] + d)
        assert xadv.min() >= -1e-6 and xadv.max() <= 1 + 1e-6
        np.testing.assert_array_equal(np.asarray(d[0]), 0.0)  # ε = 0: no perturbation
    vals = _damage(obj, tiny_params, xs, d)
    assert np.all(np.isfinite(vals))


@pytest.mark.parametrize("name", ["latent", "latent_sampled", "output"])
@pytest.mark.parametrize("normalize", [None, "minmax"])
def test_objective_value_and_gradient_finite(name, normalize, tiny_model, tiny_params):
    obj = _objective(tiny_model, name, normalize)
    x = jnp.full((8, 8, 1), 0.5)  # constant image: min-max range 0 at δ = 0
    for delta in (jnp.zeros_like(x), 0.01 * jax.random.normal(jax.random.key(1), x.shape)):
        v, g = jax.value_and_grad(obj, argnums=2)(tiny_params, {"x": x}, delta, jax.random.key(2))
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    if name != "latent_sampled" and normalize is None:  # deterministic: damage(0) ≈ 0
        assert float(obj(tiny_params, {"x": x}, jnp.zeros_like(x), jax.random.key(0))) < 1e-5


def test_latent_damage_is_eq4_on_means(tiny_model, tiny_params, tiny_images):
    x, d = tiny_images[0], 0.1 * jnp.ones((8, 8, 1))
    want = jnp.linalg.norm(tiny_model.embed(tiny_params, x + d) - tiny_model.embed(tiny_params, x))
    got = latent_damage(tiny_model)(tiny_params, {"x": x}, d, jax.random.key(0))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    want_out = jnp.linalg.norm(
        tiny_model.reconstruct(tiny_params, x + d) - tiny_model.reconstruct(tiny_params, x)
    )
    got_out = output_damage(tiny_model)(tiny_params, {"x": x}, d, jax.random.key(0))
    np.testing.assert_allclose(float(got_out), float(want_out), rtol=1e-5)


# ---- attack quality ---------------------------------------------------------------------------
def _noise_damage(obj, params, xs, eps, key, draws=5):
    """Damage of random ±eps corner noise (the strongest random L∞ noise), clipped to the box."""
    signs = jax.random.rademacher(key, (draws, *xs.shape), jnp.float32)
    deltas = jnp.clip(xs[None] + eps * signs, 0.0, 1.0) - xs[None]
    return _damage(obj, params, xs, deltas)  # (draws, N)


def test_attack_beats_random_noise_and_grows_with_eps(
    linf_attack, tiny_model, tiny_params, tiny_images
):
    obj = latent_damage(tiny_model)
    d = attack_batch(linf_attack, tiny_params, tiny_images, EPS, jax.random.key(0))
    dmg = _damage(obj, tiny_params, tiny_images, d)  # (E, N)
    for e, eps in enumerate(np.asarray(EPS)):
        noise = _noise_damage(obj, tiny_params, tiny_images, eps, jax.random.key(e))
        assert np.median(dmg[e]) > 1.2 * np.median(noise)
        assert np.mean(dmg[e] >= noise.max(axis=0)) >= 0.9
    assert np.all(np.diff(dmg.mean(axis=1)) > 0)


def test_restarts_never_worse_than_one_start(linf_attack, tiny_model, tiny_params, tiny_images):
    obj = latent_damage(tiny_model)
    key = jax.random.key(4)
    one = attack_batch(linf_attack, tiny_params, tiny_images, EPS, key)
    many = attack_batch(
        pgd(obj, steps=8, restarts=3), tiny_params, tiny_images, EPS, key, driver="scan"
    )
    d1, d3 = (
        _damage(obj, tiny_params, tiny_images, one),
        _damage(obj, tiny_params, tiny_images, many),
    )
    assert np.all(d3 >= d1 - 1e-6)
    assert np.mean(d3 > d1 + 1e-6) > 0.25  # and restarts usually help


def test_later_restarts_combine_into_the_longer_attack(tiny_model, tiny_params, tiny_images):
    # Restarts 0-1 and then restarts 2-4 of the same key (first_restart=2), combined by
    # best_of, are the 5-restart attack: its best value, perturbation and start value.
    obj = latent_damage(tiny_model)
    key = jax.random.key(8)

    def run(restarts, first=0):
        attack = pgd(obj, steps=6, rule="apgd", restarts=restarts, first_restart=first)
        return run_attack(attack, tiny_params, {"x": tiny_images}, EPS[:2], key, driver="scan")

    whole, head, tail = run(5), run(2), run(3, first=2)
    both = best_of(head, tail)
    np.testing.assert_allclose(both.value, whole.value, rtol=1e-5)
    np.testing.assert_allclose(both.start_value, whole.start_value, rtol=1e-5)
    np.testing.assert_allclose(both.delta, whole.delta, atol=1e-6)
    np.testing.assert_array_equal(both.nonfinite, head.nonfinite + tail.nonfinite)
    took_tail = np.asarray(tail.value > head.value)
    assert 0 < took_tail.mean() < 1  # both parts supply some of the best results
    # the tail's restarts are not the head's: a first_restart of 0 would repeat them
    assert not np.allclose(run(2, first=2).value, head.value)
    with pytest.raises(ValueError, match="one shape"):
        best_of(head, jax.tree.map(lambda a: a[:1], tail))
    with pytest.raises(ValueError, match="first_restart"):
        pgd(obj, first_restart=-1)


# ---- determinism, batching, drivers, compilation ----------------------------------------------
def test_same_key_same_result_different_key_different(linf_attack, tiny_params, tiny_images):
    a = attack_batch(linf_attack, tiny_params, tiny_images, EPS, jax.random.key(0))
    b = attack_batch(linf_attack, tiny_params, tiny_images, EPS, jax.random.key(0))
    c = attack_batch(linf_attack, tiny_params, tiny_images, EPS, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.mean(np.asarray(a) != np.asarray(c)) > 0.5


def test_batched_equals_per_example_loop(linf_attack, tiny_params, tiny_images):
    key = jax.random.key(7)
    d = attack_batch(linf_attack, tiny_params, tiny_images, EPS, key)
    run = jax.jit(lambda p, x, e, k: linf_attack.run(p, {"x": x}, e, k).delta)
    for e, n in [(0, 0), (1, 5), (3, 15), (2, 9)]:
        single = run(tiny_params, tiny_images[n], EPS[e], jax.random.fold_in(key, n))
        np.testing.assert_allclose(np.asarray(d[e, n]), np.asarray(single), atol=1e-6)


def test_attack_each_uses_one_budget_per_example(linf_attack, tiny_params, tiny_images):
    key = jax.random.key(8)
    eps = jnp.linspace(0.0, 0.3, 16, dtype=jnp.float32)
    d = attack_each(linf_attack, tiny_params, tiny_images, eps, key)
    assert d.shape == (16, 8, 8, 1)
    np.testing.assert_allclose(_norms(d, "linf"), np.asarray(eps), rtol=1e-6)  # sign PGD: corners
    run = jax.jit(lambda p, x, e, k: linf_attack.run(p, {"x": x}, e, k).delta)
    for n in (0, 7, 15):
        single = run(tiny_params, tiny_images[n], eps[n], jax.random.fold_in(key, n))
        np.testing.assert_allclose(np.asarray(d[n]), np.asarray(single), atol=1e-6)
    with pytest.raises(ValueError, match="one per example"):
        attack_each(linf_attack, tiny_params, tiny_images, eps[:3], key)


def test_attack_models_equals_attack_batch_per_model(
    linf_attack, tiny_model, tiny_params, tiny_images
):
    other = tiny_model.init(jax.random.key(11))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), tiny_params, other)
    key = jax.random.key(3)
    dk = attack_models(linf_attack, stacked, tiny_images, EPS, key, driver="scan")
    assert dk.shape == (2, 4, 16, 8, 8, 1)
    for k, p in enumerate((tiny_params, other)):
        db = attack_batch(linf_attack, p, tiny_images, EPS, key)
        np.testing.assert_allclose(np.asarray(dk[k]), np.asarray(db), atol=1e-6)
    assert not np.allclose(np.asarray(dk[0]), np.asarray(dk[1]))


def test_python_chunks_driver_equals_scan_driver(tiny_model, tiny_params, tiny_images):
    # Adam (stateful) with restarts; steps = 3 with chunk = 2 also exercises the remainder chunk.
    # (The sign attack's chunk driver is compared with the fori-loop `run` in the batched test.)
    attack = pgd(output_damage(tiny_model), norm="linf", steps=3, rule="adam", restarts=2)
    xs, key = tiny_images[:6], jax.random.key(5)
    chunks = attack_batch(attack, tiny_params, xs, EPS[:2], key, driver="python_chunks", chunk=2)
    scan = attack_batch(attack, tiny_params, xs, EPS[:2], key, driver="scan")
    np.testing.assert_allclose(np.asarray(chunks), np.asarray(scan), atol=1e-5)
    assert float(jnp.max(jnp.abs(chunks))) > 0.0


def test_new_eps_value_does_not_recompile(linf_attack, tiny_model, tiny_params, tiny_images):
    traces = []
    base = latent_damage(tiny_model)

    def counted(params, inputs, delta, key):
        traces.append(1)  # runs only while tracing
        return base(params, inputs, delta, key)

    attack = pgd(counted, steps=4, image_shape=(8, 8, 1))
    xs = tiny_images[:4]
    attack_batch(attack, tiny_params, xs, jnp.array([0.1, 0.2]), jax.random.key(0), driver="scan")
    n_first = len(traces)
    assert n_first > 0
    d = attack_batch(
        attack, tiny_params, xs, jnp.array([0.03, 0.4]), jax.random.key(1), driver="scan"
    )
    assert len(traces) == n_first
    assert float(jnp.max(jnp.abs(d[1]))) > 0.2  # and the new budget was really used
    # python-chunk driver: its jitted programs gain no cache entry for a new ε grid
    attack_batch(linf_attack, tiny_params, tiny_images, EPS, jax.random.key(0))
    sizes = [f._cache_size() for f in (_init_program, _chunk_program, _finalize_program)]
    attack_batch(linf_attack, tiny_params, tiny_images, EPS * 1.5 + 0.01, jax.random.key(0))
    assert [f._cache_size() for f in (_init_program, _chunk_program, _finalize_program)] == sizes


def test_loop_driver_choice(monkeypatch):
    monkeypatch.delenv(DRIVER_ENV_VAR, raising=False)
    assert loop_driver() == ("python_chunks" if jax.default_backend() == "cpu" else "scan")
    monkeypatch.setenv(DRIVER_ENV_VAR, "scan")
    assert loop_driver() == "scan"
    assert loop_driver("python_chunks") == "python_chunks"
    with pytest.raises(ValueError, match="driver"):
        loop_driver("while")


# ---- bad input --------------------------------------------------------------------------------
def test_bad_input_raises_before_compiling(tiny_model, tiny_params, tiny_images):
    traces = []

    def counted(params, inputs, delta, key):
        traces.append(1)
        return latent_damage(tiny_model)(params, inputs, delta, key)

    attack = pgd(counted, steps=2, image_shape=(8, 8, 1))
    key, xs = jax.random.key(0), tiny_images[:2]
    bad = [
        ((xs, jnp.array([-0.1])), "budgets"),
        ((xs, jnp.array([jnp.nan])), "budgets"),
        ((xs, jnp.float32(0.1)), "budgets"),
        ((xs[:, :4], jnp.array([0.1])), "xs"),
        ((xs.at[0, 0, 0, 0].set(jnp.nan), jnp.array([0.1])), "NaN"),
        ((xs + 2.0, jnp.array([0.1])), "box"),
    ]
    for (x, eps), msg in bad:
        with pytest.raises(ValueError, match=msg):
            attack_batch(attack, tiny_params, x, eps, key)
    with pytest.raises(ValueError, match="image"):
        attack.run(tiny_params, {"x": xs}, jnp.float32(0.1), key)
    with pytest.raises(ValueError, match="budgets"):
        attack.run(tiny_params, {"x": xs[0]}, jnp.float32(-1.0), key)
    with pytest.raises(ValueError, match="driver"):
        attack_batch(attack, tiny_params, xs, jnp.array([0.1]), key, driver="nope")
    assert traces == []
    for kwargs, msg in [
        (dict(norm="l1"), "norm"),
        (dict(rule="lbfgs"), "rule"),
        (dict(constraint="clip"), "constraint"),
        (dict(restarts=0), "restarts"),
        (dict(box=(1.0, 0.0)), "box"),
    ]:
        with pytest.raises(ValueError, match=msg):
            pgd(counted, **kwargs)
    with pytest.raises(ValueError, match="normalize"):
        latent_damage(tiny_model, normalize="zscore")


# ---- a trained tiny model ---------------------------------------------------------------------
def _train_tiny(model, params, images, key, steps=300):
    """A minimal local β-VAE fit (β = 1, Adam 1e-2) so the attack meets a non-random encoder."""
    import optax

    from vaerob_jax.objectives import beta_vae_loss

    tx = optax.adam(1e-2)

    def loss_fn(p, k):
        keys = jax.random.split(k, images.shape[0])
        losses = jax.vmap(lambda x, kk: beta_vae_loss(model, p, x, kk, 1.0)[0])(images, keys)
        return jnp.mean(losses)

    def body(i, carry):
        p, s = carry
        g = jax.grad(loss_fn)(p, jax.random.fold_in(key, i))
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0])(params)


def _ramp_images(n=32):
    """Learnable tiny images: sigmoid ramps x = σ(a·i + b·j + c) with random (a, b, c)."""
    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(-1.0, 1.0, (3, n, 1, 1, 1)) * [[[[[1.5]]]], [[[[1.5]]]], [[[[3.0]]]]]
    i, j = np.meshgrid(np.arange(8) - 3.5, np.arange(8) - 3.5, indexing="ij")
    return jnp.asarray(1 / (1 + np.exp(-(a * i[..., None] + b * j[..., None] + c))), jnp.float32)


def test_attack_on_trained_model_beats_noise_in_output_damage(linf_attack, tiny_model, tiny_params):
    images = _ramp_images()
    trained = _train_tiny(tiny_model, tiny_params, images, jax.random.key(0))
    recon = jax.vmap(lambda x: jnp.sum((tiny_model.reconstruct(trained, x) - x) ** 2))
    recon0 = jax.vmap(lambda x: jnp.sum((tiny_model.reconstruct(tiny_params, x) - x) ** 2))
    assert float(jnp.mean(recon(images))) < 0.3 * float(jnp.mean(recon0(images)))
    # 000's pipeline: attack the latent means (Eq. 4), measure Δc on the outputs (Eq. 5)
    xs = images[:16]  # same shapes as the other linf_attack calls: no new compile
    d = attack_batch(linf_attack, trained, xs, EPS, jax.random.key(1))
    out = output_damage(tiny_model)
    dc = _damage(out, trained, xs, d)
    for e in (1, 2, 3):
        noise = _noise_damage(out, trained, xs, EPS[e], jax.random.key(e))
        assert np.median(dc[e]) > 1.2 * np.median(noise)
    assert np.all(np.diff(dc.mean(axis=1)) > 0)
