"""002's figures: the drawn data (read back from the Figure handed to ``save_figure``) equal the
tables', files are real PNGs, and figures without enough data raise ValueError."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from vaerob_jax.report import figures_002 as F
from vaerob_jax.report import plotting

# (model_id, model, family, layers, beta)
MODELS = [
    ("vae", "VAE", "tcvae", 1, 1.0),
    ("tc4", "β-TCVAE β=4", "tcvae", 1, 4.0),
    ("tc10", "β-TCVAE β=10", "tcvae", 1, 10.0),
    ("sb2_1", "Seatbelt L=2 β=1", "seatbelt", 2, 1.0),
    ("sb2_10", "Seatbelt L=2 β=10", "seatbelt", 2, 10.0),
    ("sb3_10", "Seatbelt L=3 β=10", "seatbelt", 3, 10.0),
    ("dl2_10", "β-TCDLGM L=2 β=10", "tcdlgm", 2, 10.0),
]


@pytest.fixture
def captured(monkeypatch):
    """The Figures the module saves (the real save_figure still writes the file)."""
    figs = []

    def save(fig, path):
        figs.append(fig)
        return plotting.save_figure(fig, path)

    monkeypatch.setattr(F, "save_figure", save)
    return figs


def check_png(fig, path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == tuple(np.round(fig.get_size_inches() * fig.dpi).astype(int))


def as_strings(rows):
    """The rows as a CSV round trip gives them: every value a string."""
    return [{k: str(v) for k, v in r.items()} for r in rows]


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    rows = []
    for mid, model, fam, L, b in MODELS:
        for mode in ("latent", "output"):
            m = float(rng.normal(1.0 + 0.1 * b * L, 0.2))
            lo, hi = m - float(rng.uniform(0.05, 0.3)), m + float(rng.uniform(0.05, 0.3))
            rows.append(
                {
                    "model_id": mid,
                    "model": model,
                    "family": fam,
                    "layers": L,
                    "beta": b,
                    "mode": mode,
                    "mean_log10_delta": m,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "mean_log10_ratio": m - 0.5,
                    "ratio_ci_lo": lo - 0.5,
                    "ratio_ci_hi": hi - 0.5,
                    "mean_target_nll": 100.0 + 10 * m,
                    "nll_ci_lo": 99.0 + 10 * m,
                    "nll_ci_hi": 101.0 + 10 * m,
                    "mean_d_norm": float(rng.uniform(0.5, 2.0)),
                }
            )
    return rows


def containers_by_label(ax):
    return {c.get_label(): c for c in ax.containers}


def errorbar_data(cont):
    """(x, y, lo, hi) of an ErrorbarContainer, points in drawing order."""
    line, _, (bars,) = cont.lines
    x, y = line.get_data()
    segs = np.array([np.asarray(s) for s in bars.get_segments()])
    np.testing.assert_allclose(segs[:, 0, 0], x)
    return np.asarray(x), np.asarray(y), segs[:, 0, 1], segs[:, 1, 1]


@pytest.mark.parametrize("strings", [False, True])
def test_delta_vs_beta_lines_and_cis(tmp_path, captured, summary, strings):
    path = tmp_path / "d.png"
    F.plot_delta_vs_beta(as_strings(summary) if strings else summary, path)
    (fig,) = captured
    check_png(fig, path)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [F.MODE_TITLES["latent"], F.MODE_TITLES["output"]]
    assert "higher = more robust" in axes[0].get_ylabel()
    groups = {
        "β-TCVAE": ("tcvae", 1),
        "Seatbelt L=2": ("seatbelt", 2),
        "Seatbelt L=3": ("seatbelt", 3),
        "β-TCDLGM L=2": ("tcdlgm", 2),
    }
    for ax, mode in zip(axes, ("latent", "output")):
        conts = containers_by_label(ax)
        assert sorted(conts) == sorted(groups)
        for label, (fam, L) in groups.items():
            want = sorted(
                (r for r in summary if (r["family"], r["layers"], r["mode"]) == (fam, L, mode)),
                key=lambda r: r["beta"],
            )
            x, y, lo, hi = errorbar_data(conts[label])
            np.testing.assert_allclose(x, [r["beta"] for r in want])
            np.testing.assert_allclose(y, [r["mean_log10_delta"] for r in want])
            np.testing.assert_allclose(lo, [r["ci_lo"] for r in want])
            np.testing.assert_allclose(hi, [r["ci_hi"] for r in want])
    # The VAE is the β-TCVAE line's β = 1 point.
    x, y, _, _ = errorbar_data(containers_by_label(axes[0])["β-TCVAE"])
    assert x.tolist() == [1.0, 4.0, 10.0]


def test_delta_vs_beta_needs_rows_and_two_betas(tmp_path, summary):
    with pytest.raises(ValueError, match="no rows"):
        F.plot_delta_vs_beta([], tmp_path / "a.png")
    one_beta = [r for r in summary if r["beta"] == 10.0]
    with pytest.raises(ValueError, match="two β values"):
        F.plot_delta_vs_beta(one_beta, tmp_path / "a.png")
    bad_mode = [dict(r, mode="other") for r in summary]
    with pytest.raises(ValueError, match="mode"):
        F.plot_delta_vs_beta(bad_mode, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def grid_of(fig, mode):
    (img,) = fig.findobj(lambda a: a.get_gid() == f"grid:{mode}")
    ax = img.axes
    arr = np.ma.filled(np.ma.asarray(img.get_array(), float), np.nan)
    Ls = [t.get_text().split()[0] for t in ax.get_yticklabels()]
    betas = [t.get_text() for t in ax.get_xticklabels()]
    return arr, Ls, betas, ax


@pytest.mark.parametrize("strings", [False, True])
@pytest.mark.parametrize(
    ("family", "column"),
    [("seatbelt", "mean_log10_delta"), ("tcdlgm", "mean_target_nll")],
)
def test_layer_beta_grid_cells(tmp_path, captured, summary, family, column, strings):
    path = tmp_path / "g.png"
    table = as_strings(summary) if strings else summary
    F.plot_layer_beta_grid(table, path, family=family, column=column)
    (fig,) = captured
    check_png(fig, path)
    for mode in ("latent", "output"):
        arr, Ls, betas, ax = grid_of(fig, mode)
        want_L = sorted({1} | {r["layers"] for r in summary if r["family"] == family})
        assert Ls == [str(L) for L in want_L]
        assert "β-TCVAE" in ax.get_yticklabels()[0].get_text()
        want_b = sorted({r["beta"] for r in summary if r["family"] in (family, "tcvae")})
        assert betas == [f"{b:g}" for b in want_b]
        assert arr.shape == (len(want_L), len(want_b))
        texts = {t.get_gid(): t.get_text() for t in ax.texts}
        for i, L in enumerate(want_L):
            for j, b in enumerate(want_b):
                src = "tcvae" if L == 1 else family
                cell = [
                    r[column]
                    for r in summary
                    if (r["family"], r["layers"], r["beta"], r["mode"]) == (src, L, b, mode)
                ]
                if cell:
                    assert arr[i, j] == pytest.approx(cell[0])
                    assert texts[f"cell:{mode}:{L}:{b:g}"] == f"{cell[0]:.2f}"
                else:
                    assert math.isnan(arr[i, j])
                    assert f"cell:{mode}:{L}:{b:g}" not in texts
    # At least one blank cell in this design (e.g. Seatbelt L=3 β=1).
    assert np.isnan(grid_of(fig, "latent")[0]).any()


def test_layer_beta_grid_family_own_l1_row_wins(tmp_path, captured, summary):
    rows = [*summary]
    rows.append(dict(summary[0], family="seatbelt", layers=1, beta=1.0, mean_log10_delta=-7.0))
    F.plot_layer_beta_grid(rows, tmp_path / "g.png")
    arr, Ls, betas, ax = grid_of(captured[0], "latent")
    assert arr[0, betas.index("1")] == -7.0
    # β = 4 at L = 1 still comes from the β-TCVAE.
    want = [r for r in summary if r["model_id"] == "tc4" and r["mode"] == "latent"]
    assert arr[0, betas.index("4")] == pytest.approx(want[0]["mean_log10_delta"])


def test_layer_beta_grid_errors(tmp_path, summary):
    with pytest.raises(ValueError, match="no rows of family 'nope'"):
        F.plot_layer_beta_grid(summary, tmp_path / "g.png", family="nope")
    with pytest.raises(ValueError, match="no rows"):
        F.plot_layer_beta_grid([], tmp_path / "g.png")
    with pytest.raises(ValueError, match="lacks column"):
        F.plot_layer_beta_grid(summary, tmp_path / "g.png", column="missing")


@pytest.fixture(scope="module")
def metrics():
    rng = np.random.default_rng(1)
    rows = []
    for mid, model, fam, L, b in MODELS:
        e = -300.0 - 5 * b / L + float(rng.normal())
        rows.append(
            {
                "model_id": mid,
                "model": model,
                "family": fam,
                "layers": L,
                "beta": b,
                "mig": 0.01 * b,
                "tc": 1.0,
                "elbo": e,
                "elbo_ci_lo": e - float(rng.uniform(1, 3)),
                "elbo_ci_hi": e + float(rng.uniform(1, 3)),
                "recon": -e - 20,
                "kl": 20.0,
            }
        )
    return rows


@pytest.mark.parametrize("strings", [False, True])
def test_elbo_vs_beta(tmp_path, captured, metrics, strings):
    path = tmp_path / "e.png"
    F.plot_elbo_vs_beta(as_strings(metrics) if strings else metrics, path)
    (fig,) = captured
    check_png(fig, path)
    (ax,) = [a for a in fig.axes if a.containers]
    conts = containers_by_label(ax)
    assert sorted(conts) == sorted(["β-TCVAE", "Seatbelt L=2", "Seatbelt L=3", "β-TCDLGM L=2"])
    x, y, lo, hi = errorbar_data(conts["Seatbelt L=2"])
    want = [r for r in metrics if r["family"] == "seatbelt" and r["layers"] == 2]
    np.testing.assert_allclose(x, [1.0, 10.0])
    np.testing.assert_allclose(y, [r["elbo"] for r in want])
    np.testing.assert_allclose(lo, [r["elbo_ci_lo"] for r in want])
    np.testing.assert_allclose(hi, [r["elbo_ci_hi"] for r in want])
    with pytest.raises(ValueError, match="no rows"):
        F.plot_elbo_vs_beta([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="two β"):
        F.plot_elbo_vs_beta(metrics[:1], tmp_path / "x.png")


def test_noise_histograms(tmp_path, captured):
    rng = np.random.default_rng(2)
    labels = ["VAE", "β-TCVAE β=10", "Seatbelt L=2 β=10"]
    scales = [0.05, 0.1, 0.2]
    values = [rng.normal(-100 * (i + 1), 5, size=(3, 200)) for i in range(3)]
    values[1][0, :5] = np.nan  # left out
    path = tmp_path / "n.png"
    F.plot_noise_histograms((labels, scales, values), path)
    (fig,) = captured
    check_png(fig, path)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("noise")]
    assert [ax.get_title() for ax in panels] == ["noise s = 0.05", "noise s = 0.1", "noise s = 0.2"]
    for j, ax in enumerate(panels):
        steps = [p for p in ax.patches if str(p.get_gid()).startswith(f"hist:{j}:")]
        assert len(steps) == len(labels)
        assert [p.get_label() for p in steps] == labels
        edges = [p.get_data().edges for p in steps]
        for e in edges[1:]:
            np.testing.assert_array_equal(e, edges[0])  # shared bins
        for p, v in zip(steps, values):
            vals, e = p.get_data().values, p.get_data().edges
            fin = v[j][np.isfinite(v[j])]
            want, _ = np.histogram(fin, bins=e, density=True)
            np.testing.assert_allclose(vals, want)
            assert float(np.sum(vals * np.diff(e))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no models"):
        F.plot_noise_histograms(([], scales, []), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        F.plot_noise_histograms((labels, scales[:2], values), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no finite values"):
        F.plot_noise_histograms((["a"], [0.1], [np.full((1, 4), np.nan)]), tmp_path / "x.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_attack_examples_strip(tmp_path, captured, channels):
    rng = np.random.default_rng(3)
    H = W = 8
    strips = []
    for _ in range(2):
        s = rng.uniform(-0.2, 1.2, size=(6, H, W, channels))
        s[3] = rng.uniform(-0.3, 0.4, size=(H, W, channels))  # distortion d
        strips.append(s)
    strips[1][3] = 0.1  # constant distortion -> 0.5
    labels = ["VAE", "Seatbelt L=2 β=10"]
    lambdas = [2.0**-3.3, 1.0]
    path = tmp_path / "s.png"
    F.plot_attack_examples((labels, strips, lambdas), path)
    (fig,) = captured
    check_png(fig, path)

    def image(i, j):
        (im,) = fig.findobj(lambda a: a.get_gid() == f"strip:{i}:{j}")
        return np.asarray(im.get_array(), float), im

    for i, s in enumerate(strips):
        for j in range(6):
            arr, im = image(i, j)
            assert arr.shape == ((H, W) if channels == 1 else (H, W, 3))
            if channels == 1:
                assert im.get_cmap().name == "gray"
            src = s[j][..., 0] if channels == 1 else s[j]
            if j == 3:
                if i == 0:
                    want = (src - s[3].min()) / (s[3].max() - s[3].min())
                    assert arr.min() == pytest.approx(0.0)
                    assert arr.max() == pytest.approx(1.0)
                else:
                    want = np.full_like(src, 0.5)
            else:
                want = np.clip(src, 0, 1)
            np.testing.assert_allclose(arr, want)
    row_labels = [fig.axes[i * 6].get_ylabel() for i in range(2)]
    assert row_labels == ["VAE\nλ=2^-3.3", "Seatbelt L=2 β=10\nλ=2^0.0"]
    assert [fig.axes[j].get_title() for j in range(6)] == list(F.STRIP_TITLES)
    with pytest.raises(ValueError, match="no strips"):
        F.plot_attack_examples(([], [], []), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        F.plot_attack_examples((["a"], [np.zeros((5, H, W, 1))], [1.0]), tmp_path / "x.png")


@pytest.fixture(scope="module")
def attacks():
    rng = np.random.default_rng(4)
    rows = []
    for mid, model, fam, L, b in MODELS[:3]:
        for mode in ("latent", "output"):
            for pair in range(4):
                for k in (-20, -10, 0, 10, 20):
                    rows.append(
                        {
                            "model_id": mid,
                            "model": model,
                            "family": fam,
                            "layers": L,
                            "beta": b,
                            "mode": mode,
                            "pair": pair,
                            "lambda": 2.0**k,
                            "log2_lambda": float(k),
                            "delta_value": float(10 ** rng.uniform(-1, 3)),
                            "d_norm": float(rng.uniform(0, 5)),
                            "divergence": 1.0,
                            "target_nll": 50.0,
                        }
                    )
    return rows


@pytest.mark.parametrize("strings", [False, True])
def test_delta_vs_lambda_means_over_pairs(tmp_path, captured, attacks, strings):
    path = tmp_path / "l.png"
    shuffled = [attacks[i] for i in np.random.default_rng(5).permutation(len(attacks))]
    F.plot_delta_vs_lambda(as_strings(shuffled) if strings else shuffled, path)
    (fig,) = captured
    check_png(fig, path)
    assert len([ax for ax in fig.axes if ax.lines]) == 4
    for mode in ("latent", "output"):
        for mid, model, *_ in MODELS[:3]:
            (dl,) = fig.findobj(lambda a, m=mode, i=mid: a.get_gid() == f"delta_lambda:{m}:{i}")
            (dn,) = fig.findobj(lambda a, m=mode, i=mid: a.get_gid() == f"dnorm_lambda:{m}:{i}")
            assert dl.get_label() == model
            mine = [r for r in attacks if (r["model_id"], r["mode"]) == (mid, mode)]
            ks = sorted({r["log2_lambda"] for r in mine})
            np.testing.assert_allclose(dl.get_xdata(), ks)
            np.testing.assert_allclose(dn.get_xdata(), ks)
            want_d = [
                np.mean([math.log10(r["delta_value"]) for r in mine if r["log2_lambda"] == k])
                for k in ks
            ]
            want_n = [np.mean([r["d_norm"] for r in mine if r["log2_lambda"] == k]) for k in ks]
            np.testing.assert_allclose(dl.get_ydata(), want_d)
            np.testing.assert_allclose(dn.get_ydata(), want_n)
    with pytest.raises(ValueError, match="no rows"):
        F.plot_delta_vs_lambda([], tmp_path / "x.png")
    one = [r for r in attacks if r["log2_lambda"] == 0.0]
    with pytest.raises(ValueError, match="two λ"):
        F.plot_delta_vs_lambda(one, tmp_path / "x.png")


def test_delta_vs_lambda_without_log2_column(tmp_path, captured, attacks):
    rows = [{k: v for k, v in r.items() if k != "log2_lambda"} for r in attacks]
    F.plot_delta_vs_lambda(rows, tmp_path / "l.png")
    (dl,) = captured[0].findobj(lambda a: a.get_gid() == "delta_lambda:latent:vae")
    np.testing.assert_allclose(dl.get_xdata(), [-20, -10, 0, 10, 20])


@pytest.mark.parametrize("strings", [False, True])
def test_solver_agreement(tmp_path, captured, strings):
    rng = np.random.default_rng(6)
    rows = []
    for comp, n_worse in (("check", 3), ("scipy", 0)):
        for i in range(20):
            ref = float(10 ** rng.uniform(-2, 2))
            ours = ref * (1.01 if i < n_worse else 1.0 + 5e-4 * rng.uniform(-1, 1))
            rows.append(
                {
                    "comparison": comp,
                    "mode": ("latent", "output")[i % 2],
                    "ours": ours,
                    "reference": ref,
                }
            )
    path = tmp_path / "a.png"
    F.plot_solver_agreement(as_strings(rows) if strings else rows, path)
    (fig,) = captured
    check_png(fig, path)
    panels = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["check", "scipy"]
    assert "85.0 % of 20" in panels[0].get_title()
    assert "100.0 % of 20" in panels[1].get_title()
    for ax, comp in zip(panels, ("check", "scipy")):
        for mode in ("latent", "output"):
            (coll,) = [c for c in ax.collections if c.get_gid() == f"agree:{comp}:{mode}"]
            want = [
                (math.log10(r["reference"]), math.log10(r["ours"]))
                for r in rows
                if (r["comparison"], r["mode"]) == (comp, mode)
            ]
            np.testing.assert_allclose(coll.get_offsets(), want)
        (ident,) = [ln for ln in ax.lines if ln.get_gid() == f"identity:{comp}"]
        x, y = ident.get_data()
        np.testing.assert_allclose(x, y)
    colours = {c.get_gid(): tuple(c.get_facecolor()[0]) for c in panels[0].collections}
    assert colours["agree:check:latent"] != colours["agree:check:output"]
    with pytest.raises(ValueError, match="no rows"):
        F.plot_solver_agreement([], tmp_path / "x.png")


def test_agreement_share_tolerance():
    assert F.agreement_share([1.0, 1.0005, 1.01], [1.0, 1.0, 1.0]) == pytest.approx(2 / 3)
