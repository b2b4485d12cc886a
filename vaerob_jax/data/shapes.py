"""``shapes``: procedural face-like images whose look depends on ``Male`` and ``Young``.

An embedded, file-free stand-in for CelebA's Young x Male study (000): every image is a
cartoon face rendered from per-example ground-truth factors, with both protected attributes
*visibly* encoded and several nuisance factors:

* ``Male``: a wider face with a squarer jaw (superellipse exponent 3.5 instead of 2 below the
  eyes), short hair instead of shoulder-long hair, thicker eyebrows, and a beard on half of
  the men; women have fuller, redder lips.
* ``Young``: young people have dark hair (black to brown; 2 % grey); 85 % of old people have grey to
  white hair (``Gray_Hair``, as in the reference code's old groups), and every old face has
  forehead wrinkles, nasolabial lines and paler, less saturated skin.
* nuisance: face position, scale and in-plane rotation, skin tone, background and clothing
  colour, and Gaussian pixel noise.

Subgroup shares default to CelebA's Young x Male shares (young women 51.0 %, young men
26.4 %, old women 7.3 %, old men 15.3 %). Example ``i`` of a split is rendered from
``fold_in(split_key, i)``, so it is the same whatever ``n`` or ``limit`` is; splits use keys
derived from the split name. Rendering is one vmapped, jitted function of the factors,
called on chunks of at most 1024 faces and at most 1024 x 64 x 64 pixels (so 16 faces of
512 x 512). A split of ``n`` faces pads its chunks to ``min(capacity, 2**ceil(log2(n)))``
faces (at least 2): memory scales with ``n`` and the image size, and one split compiles one
program. The padding keeps the pixels bit-identical to one padded chunk of 1024 faces on
XLA:CPU (checked for chunks of 2 to 1024 faces of sides 8 to 128; a vmap over one face
compiles to a program whose last bits differ, hence the minimum of 2). On the project's
2-core CPU shared with ~4 other busy processes (load ~7) 4096 64x64 faces took 6.8 s warm
plus ~7 s to compile; expect roughly a quarter of that on an idle machine.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.data.dataset import RawData
from vaerob_jax.data.tfds_sources import select_indices

__all__ = [
    "CELEBA_SHARES",
    "DEFAULT_SIZES",
    "MAX_CHUNK_PIXELS",
    "SUBGROUP_ORDER",
    "load_shapes",
    "render_faces",
]

#: CelebA's Young x Male shares (fractions), keyed by subgroup name.
CELEBA_SHARES: dict[str, float] = {
    "young-women": 0.510,
    "young-men": 0.264,
    "old-women": 0.073,
    "old-men": 0.153,
}
#: Order of the subgroups (the ids of CELEBA_SUBGROUPS["age_gender"]).
SUBGROUP_ORDER = ("young-women", "young-men", "old-women", "old-men")
#: Default number of examples per split.
DEFAULT_SIZES: dict[str, int] = {"train": 4096, "validation": 1024, "test": 1024}

_FACTOR_NAMES = (
    "male",
    "young",
    "gray_hair",
    "beard",
    "x",
    "y",
    "scale",
    "rotation",
    "skin_tone",
    "hair_shade",
    "bg_r",
    "bg_g",
    "bg_b",
    "cloth_r",
    "cloth_g",
    "cloth_b",
)


def _split_key(seed: int, split: str) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(split.encode()) & 0x7FFFFFFF)


_N_UNIFORMS = 16  # uniforms per example, all factors are functions of them


def _factors(u: jax.Array, cum_shares: jax.Array) -> dict[str, jax.Array]:
    """Ground-truth factors of one face from 16 uniforms (see the module docstring).

    The subgroup is an inverse-CDF draw on ``cum_shares`` (ids as in SUBGROUP_ORDER); every
    other factor is an affine map of its own uniform, so all are independent given the group.
    """
    group = jnp.sum(u[0] >= cum_shares[:-1])
    young = group < 2
    male = (group % 2) == 1
    gray = jnp.where(young, u[1] < 0.02, u[1] < 0.85)

    def between(x, lo, hi):
        return lo + (hi - lo) * x

    return {
        "male": male.astype(jnp.float32),
        "young": young.astype(jnp.float32),
        "gray_hair": gray.astype(jnp.float32),
        "beard": (male & (u[2] < 0.5)).astype(jnp.float32),
        "x": between(u[3], -0.12, 0.12),
        "y": between(u[4], -0.10, 0.10),
        "scale": between(u[5], 0.85, 1.1),
        "rotation": between(u[6], -0.3, 0.3),
        "skin_tone": u[7],
        "hair_shade": u[8],
        "bg_r": between(u[9], 0.05, 0.95),
        "bg_g": between(u[10], 0.05, 0.95),
        "bg_b": between(u[11], 0.05, 0.95),
        "cloth_r": between(u[12], 0.1, 0.9),
        "cloth_g": between(u[13], 0.1, 0.9),
        "cloth_b": between(u[14], 0.1, 0.9),
    }


def _soft(d: jax.Array, pw: jax.Array) -> jax.Array:
    """Coverage of a shape with signed distance ``d`` (negative inside), ~1 pixel edge."""
    return jnp.clip(0.5 - d / pw, 0.0, 1.0)[..., None]


def _ellipse(x, y, cx, cy, a, b, p=2.0):
    """Approximate signed distance to a superellipse |x/a|^p + |y/b|^p = 1."""
    r = (jnp.abs((x - cx) / a) ** p + jnp.abs((y - cy) / b) ** p) ** (1.0 / p)
    return (r - 1.0) * jnp.minimum(a, b)


def _segment(x, y, x0, y0, x1, y1, width):
    """Signed distance to a segment of half-width ``width``."""
    dx, dy = x1 - x0, y1 - y0
    t = jnp.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return jnp.hypot(x - x0 - t * dx, y - y0 - t * dy) - width


def _render_one(f: dict[str, jax.Array], noise: jax.Array, size: int, noise_std: float):
    """Renders one (size, size, 3) face in [0, 1] from its factors and standard-normal noise."""
    grid = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2.0 - 1.0
    v, u = jnp.meshgrid(grid, grid, indexing="ij")  # v: rows (down), u: columns
    c, s = jnp.cos(f["rotation"]), jnp.sin(f["rotation"])
    xs, ys = u - f["x"], v - f["y"]
    x = (c * xs + s * ys) / f["scale"]
    y = (-s * xs + c * ys) / f["scale"]
    pw = 2.0 / size / f["scale"]
    male, young, gray = f["male"], f["young"], f["gray_hair"]

    def paint(img, mask, colour):
        return img * (1.0 - mask) + jnp.asarray(colour) * mask

    light, dark = jnp.array([0.96, 0.80, 0.69]), jnp.array([0.42, 0.28, 0.20])
    skin = light + (dark - light) * f["skin_tone"]
    skin = skin + (1.0 - young) * 0.35 * (jnp.mean(skin) + 0.08 - skin)  # older: paler, greyer
    dark_hair = jnp.array([0.07, 0.05, 0.04]) + f["hair_shade"] * jnp.array([0.30, 0.18, 0.08])
    grey_hair = jnp.full(3, 0.62 + 0.33 * f["hair_shade"])
    hair = jnp.where(gray > 0.5, grey_hair, dark_hair)
    bg = jnp.stack([f["bg_r"], f["bg_g"], f["bg_b"]])
    cloth = jnp.stack([f["cloth_r"], f["cloth_g"], f["cloth_b"]])

    a_face = 0.36 + 0.08 * male
    b_face = 0.50
    jaw_p = jnp.where(y > 0.0, 2.0 + 1.5 * male, 2.0)  # men: squarer jaw
    d_face = _ellipse(x, y, 0.0, 0.0, a_face, b_face, jaw_p)

    img = jnp.broadcast_to(bg, (size, size, 3))
    img = paint(img, _soft(_ellipse(x, y, 0.0, 1.15, 0.8, 0.45), pw), cloth)  # shoulders
    img = paint(img, _soft(_ellipse(x, y, 0.0, 0.55, 0.13, 0.3), pw), skin)  # neck
    # hair behind the head: shoulder-long for women, a short cap for men
    d_long = jnp.minimum(
        _ellipse(x, y, 0.0, -0.05, a_face + 0.15, b_face + 0.12),
        jnp.maximum(jnp.abs(x) - (a_face + 0.15), jnp.abs(y - 0.32) - 0.42),
    )
    d_short = jnp.maximum(_ellipse(x, y, 0.0, -0.06, a_face + 0.05, b_face + 0.07), y + 0.12)
    img = paint(img, _soft(jnp.where(male > 0.5, d_short, d_long), pw), hair)
    img = paint(img, _soft(d_face, pw), skin)
    # fringe over the forehead (hairline)
    d_fringe = jnp.maximum(d_face, y + 0.30 + 0.04 * male)
    img = paint(img, _soft(d_fringe, pw), hair)
    # beard on the lower face
    d_beard = jnp.maximum(d_face, 0.10 - y)
    img = paint(img, f["beard"] * 0.9 * _soft(d_beard, pw), hair)
    # wrinkles of old faces: forehead lines and nasolabial folds
    lines = jnp.minimum(
        jnp.minimum(
            _segment(x, y, -0.17, -0.24, 0.17, -0.24, 0.010),
            _segment(x, y, -0.15, -0.19, 0.15, -0.19, 0.010),
        ),
        jnp.minimum(
            _segment(jnp.abs(x), y, 0.09, 0.07, 0.16, 0.24, 0.010),
            _segment(jnp.abs(x), y, 0.22, -0.06, 0.29, -0.02, 0.008),
        ),
    )
    img = paint(img, (1.0 - young) * 0.75 * _soft(lines, pw), 0.45 * skin)
    # eyebrows, eyes, mouth
    brow = _segment(jnp.abs(x), y, 0.08, -0.14, 0.22, -0.15, 0.012 + 0.012 * male)
    img = paint(img, _soft(brow, pw), hair * 0.8)
    eye = _ellipse(jnp.abs(x), y, 0.15, -0.06, 0.07, 0.04)
    img = paint(img, _soft(eye, pw), jnp.array([0.97, 0.97, 0.97]))
    img = paint(img, _soft(_ellipse(jnp.abs(x), y, 0.15, -0.06, 0.03, 0.03), pw), 0.1)
    lips = jnp.where(male > 0.5, jnp.array([0.62, 0.30, 0.30]), jnp.array([0.82, 0.12, 0.28]))
    mouth = _ellipse(x, y, 0.0, 0.27, 0.12, 0.025 + 0.015 * (1.0 - male))
    img = paint(img, _soft(mouth, pw), lips)
    img = img + noise_std * noise
    return jnp.clip(img, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size", "noise_std"))
def _generate(
    split_key: jax.Array, ids: jax.Array, cum_shares: jax.Array, size: int, noise_std: float
):
    def one(i):
        # one threefry draw per example (compiles faster than several): 16 normals become the
        # factor uniforms through the normal CDF, the rest is the pixel noise
        z = jax.random.normal(jax.random.fold_in(split_key, i), (_N_UNIFORMS + size * size * 3,))
        f = _factors(jax.scipy.stats.norm.cdf(z[:_N_UNIFORMS]), cum_shares)
        return f, _render_one(f, z[_N_UNIFORMS:].reshape(size, size, 3), size, noise_std)

    return jax.vmap(one)(ids)


#: Pixels rendered per compiled call at most: 1024 faces of 64 x 64 (~0.4 GB of temporaries).
MAX_CHUNK_PIXELS = 1024 * 64 * 64


def _padded_length(n: int, cap: int) -> int:
    """Faces per compiled call for ``n`` faces: the next power of two >= max(n, 2), <= cap."""
    length = 2
    while length < n:
        length *= 2
    return max(2, min(length, cap))


def _chunk_capacity(size: int, chunk_size: int = 1024, max_pixels: int = MAX_CHUNK_PIXELS) -> int:
    """Most faces of side ``size`` per compiled call: ``chunk_size`` and ``max_pixels`` bound it."""
    return max(1, min(int(chunk_size), int(max_pixels) // (size * size)))


def render_faces(
    key: jax.Array,
    ids: np.ndarray,
    size: int = 64,
    shares: Sequence[float] | None = None,
    noise_std: float = 0.02,
    chunk_size: int = 1024,
    max_pixels: int = MAX_CHUNK_PIXELS,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Samples factors and renders the faces with example ids ``ids`` of a split.

    Args:
      key: the split's key; example ``i`` uses ``fold_in(key, i)``.
      ids: int example ids.
      size: image side.
      shares: the four subgroup probabilities in :data:`SUBGROUP_ORDER` order.
      noise_std: standard deviation of the Gaussian pixel noise.
      chunk_size: most faces per compiled call.
      max_pixels: most pixels (faces x size x size) per compiled call; with ``chunk_size`` it
        bounds the renderer's memory whatever the image size. Every chunk is padded to
        ``min(bound, next power of two >= len(ids))`` faces (at least 2), so memory follows
        ``len(ids)`` and one call compiles one program.

    Returns:
      float32 (len(ids), size, size, 3) images in [0, 1] and the factors by name.

    Raises:
      ValueError: ``chunk_size`` or ``max_pixels`` below 1.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    p = np.asarray(
        [CELEBA_SHARES[g] for g in SUBGROUP_ORDER] if shares is None else shares, np.float64
    )
    cum_shares = jnp.asarray(np.cumsum(p / p.sum()), jnp.float32)
    ids = np.asarray(ids, np.int64)
    images = np.empty((len(ids), size, size, 3), np.float32)
    factors = {k: np.empty(len(ids), np.float32) for k in _FACTOR_NAMES}
    cap = _chunk_capacity(size, chunk_size, max_pixels)
    length = _padded_length(len(ids), cap)
    for start in range(0, len(ids), cap):
        sl = slice(start, start + cap)
        chunk = ids[sl]
        padded = np.pad(chunk, (0, length - len(chunk)))
        f, img = _generate(key, jnp.asarray(padded, jnp.uint32), cum_shares, size, noise_std)
        images[sl] = np.asarray(img)[: len(chunk)]
        for k in _FACTOR_NAMES:
            factors[k][sl] = np.asarray(f[k])[: len(chunk)]
    return images, factors


def _parse_shares(shares: Mapping[str, float] | Sequence[float] | None) -> list[float]:
    if shares is None:
        return [CELEBA_SHARES[g] for g in SUBGROUP_ORDER]
    if isinstance(shares, Mapping):
        unknown = sorted(set(shares) - set(SUBGROUP_ORDER))
        if unknown:
            raise ValueError(f"unknown subgroup(s) {unknown} in shares; use {list(SUBGROUP_ORDER)}")
        values = [float(shares.get(g, 0.0)) for g in SUBGROUP_ORDER]
    else:
        values = [float(s) for s in shares]
        if len(values) != 4:
            raise ValueError(
                f"shares needs 4 values in the order {list(SUBGROUP_ORDER)}; got {len(values)}"
            )
    arr = np.asarray(values)
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"shares must be finite, >= 0 and not all zero; got {values}")
    return values


def load_shapes(
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    n: int | None = None,
    shares: Mapping[str, float] | Sequence[float] | None = None,
    noise_std: float = 0.02,
) -> RawData:
    """The ``shapes`` dataset (see the module docstring).

    Args:
      split: any name; ``train`` has 4096 examples by default, ``validation``/``test`` 1024,
        others 1024. Different splits draw from different keys.
      image_size: image side (default 64); faces are rendered at that size directly.
      limit: keep a seeded random subset of at most this many examples.
      seed: the base seed.
      n: number of examples in the split (overrides the default size).
      shares: subgroup probabilities, a mapping by subgroup name or 4 values in the order
        young-women, young-men, old-women, old-men (normalised); default CelebA's.
      noise_std: Gaussian pixel noise.

    Returns:
      RawData with attributes ``Male``, ``Young``, ``Gray_Hair``, ``Beard`` and all factors.
    """
    size = 64 if image_size is None else int(image_size)
    if size < 4:
        raise ValueError(f"image_size must be >= 4 for shapes, got {size}")
    total = DEFAULT_SIZES.get(split, 1024) if n is None else int(n)
    if total < 1:
        raise ValueError(f"n must be >= 1, got {total}")
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    p = _parse_shares(shares)
    idx = select_indices(total, limit, seed, shuffle=False)
    images, factors = render_faces(_split_key(seed, split), idx, size, p, float(noise_std))
    attributes = {
        "Male": factors["male"] > 0.5,
        "Young": factors["young"] > 0.5,
        "Gray_Hair": factors["gray_hair"] > 0.5,
        "Beard": factors["beard"] > 0.5,
    }
    return RawData(images=images, attributes=attributes, example_ids=idx, factors=factors)
