"""Figures: files are real PNGs of the figure's size, and the drawn data equal the inputs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from scipy import stats

from vaerob_jax.report import (
    SUBGROUP_COLORS,
    plot_bound_vs_margin,
    plot_classifier_accuracy,
    plot_deviation_distributions,
    plot_deviation_vs_recon,
    plot_embedding,
    plot_example_grid,
    plot_margin_distributions,
    plot_margin_vs_deviation,
    plot_median_vs_eps,
    plot_neighbour_pull,
    plot_single_attribute,
    plot_vs_beta,
    rank_average,
    spearman,
    subgroup_colors,
)

SUBGROUPS = ["young-women", "young-men", "old-women", "old-men"]
DPI = 40


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def check_png(fig, path):
    w, h = png_size(path)
    exp_w, exp_h = np.round(fig.get_size_inches() * fig.dpi).astype(int)
    assert (w, h) == (exp_w, exp_h)
    assert path.stat().st_size > 1000


def by_gid(fig, gid):
    return fig.findobj(lambda a: a.get_gid() == gid)


@pytest.fixture(scope="module")
def dev_rows():
    rng = np.random.default_rng(0)
    rows = []
    for b in (1.0, 5.0):
        for e in (0.05, 0.1):
            for gi, s in enumerate(SUBGROUPS):
                for i in range(7):
                    rows.append(
                        {
                            "beta": b,
                            "eps": e,
                            "subgroup": s,
                            "example_id": i,
                            "delta_c": float(rng.gamma(2.0) * (gi + 1) * e / b),
                            "recon_loss": float(rng.uniform(50, 80)),
                            "latent_shift": float(rng.uniform()),
                        }
                    )
    return rows


def test_deviation_vs_recon(tmp_path, dev_rows):
    path = tmp_path / "f.png"
    fig = plot_deviation_vs_recon(dev_rows, path, eps=0.1, dpi=DPI)
    check_png(fig, path)
    assert len(fig.axes) == 2
    for ax, b in zip(fig.axes, (1.0, 5.0)):
        assert ax.get_title() == f"β = {b:g}"
        for s in SUBGROUPS:
            (coll,) = [c for c in ax.collections if c.get_gid() == f"points:{s}"]
            want = [
                (r["recon_loss"], r["delta_c"])
                for r in dev_rows
                if r["beta"] == b and r["eps"] == 0.1 and r["subgroup"] == s
            ]
            np.testing.assert_allclose(coll.get_offsets(), want)
            np.testing.assert_allclose(
                coll.get_facecolor()[0][:3],
                tuple(int(SUBGROUP_COLORS[s][i : i + 2], 16) / 255 for i in (1, 3, 5)),
            )
    with pytest.raises(ValueError, match=r"eps values \['0.05', '0.1'\]; pass eps="):
        plot_deviation_vs_recon(dev_rows, tmp_path / "g.png")
    with pytest.raises(ValueError, match="no rows with eps=0.3"):
        plot_deviation_vs_recon(dev_rows, tmp_path / "g.png", eps=0.3)


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_deviation_distributions_boxes_and_medians(tmp_path, dev_rows, kind):
    path = tmp_path / "d.png"
    counts = {"young-women": 103, "young-men": 53, "old-women": 11, "old-men": 70}
    fig = plot_deviation_distributions(dev_rows, path, kind=kind, counts=counts, dpi=DPI)
    check_png(fig, path)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("β")]
    assert len(panels) == 4
    for ax in panels:
        b, e = (float(t.split("= ")[1]) for t in ax.get_title().split(", "))
        boxes = [a for a in ax.get_children() if str(a.get_gid()).startswith("box:")]
        assert sorted(a.get_gid() for a in boxes) == sorted(f"box:{s}" for s in SUBGROUPS)
        (meds,) = [c for c in ax.collections if c.get_gid() == "medians"]
        want = [
            np.median(
                [
                    r["delta_c"]
                    for r in dev_rows
                    if (r["beta"], r["eps"], r["subgroup"]) == (b, e, s)
                ]
            )
            for s in SUBGROUPS
        ]
        np.testing.assert_allclose(meds.get_offsets()[:, 1], want)
        np.testing.assert_array_equal(meds.get_offsets()[:, 0], [1, 2, 3, 4])
    heights = {s: by_gid(fig, f"count:{s}")[0].get_height() for s in SUBGROUPS}
    assert heights == counts


def test_single_attribute_merges_subgroups(tmp_path, dev_rows):
    rows = [r for r in dev_rows if r["beta"] == 1.0 and r["eps"] == 0.1]
    fig = plot_single_attribute(rows, tmp_path / "a.png", "age", dpi=DPI)
    (ax,) = fig.axes
    gids = sorted(a.get_gid() for a in ax.get_children() if str(a.get_gid()).startswith("box:"))
    assert gids == ["box:old", "box:young"]
    (meds,) = [c for c in ax.collections if c.get_gid() == "medians"]
    young = [r["delta_c"] for r in rows if r["subgroup"].startswith("young")]
    old = [r["delta_c"] for r in rows if r["subgroup"].startswith("old")]
    np.testing.assert_allclose(meds.get_offsets()[:, 1], [np.median(young), np.median(old)])
    with pytest.raises(ValueError, match="attribute must be one of"):
        plot_single_attribute(rows, tmp_path / "a.png", "hair")


def test_median_vs_eps_lines_and_ci(tmp_path):
    rows = []
    for b in (1.0, 10.0):
        for s_i, s in enumerate(SUBGROUPS[:3]):
            for e in (0.1, 0.03, 0.06):  # unsorted on purpose
                m = b * e + s_i
                rows.append(
                    dict(beta=b, eps=e, subgroup=s, median=m, ci_low=m - 0.1, ci_high=m + 0.2)
                )
    path = tmp_path / "m.png"
    fig = plot_median_vs_eps(rows, path, dpi=DPI)
    check_png(fig, path)
    ax = fig.axes[1]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "median:old-women"]
    np.testing.assert_allclose(line.get_xdata(), [0.03, 0.06, 0.1])
    np.testing.assert_allclose(line.get_ydata(), [10 * 0.03 + 2, 10 * 0.06 + 2, 10 * 0.1 + 2])
    (band,) = [c for c in ax.collections if c.get_gid() == "ci:old-women"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.min(), 2.2) and np.isclose(ys.max(), 3.2)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['ci_low', 'ci_high'\]"):
        plot_median_vs_eps([{"beta": 1, "eps": 0.1, "subgroup": "a", "median": 1}], path)


def test_classifier_accuracy_bars(tmp_path):
    rng = np.random.default_rng(3)
    rows, want = [], {}
    for clf in ("gender", "age"):
        for s in SUBGROUPS:
            acc = float(rng.uniform(0.5, 1))
            rows.append(
                dict(classifier=clf, subgroup=s, input="clean", beta=float("nan"), accuracy=acc)
            )
            want[(clf, "clean", "", s)] = acc
            for inp in ("recon", "adv_recon"):
                for b in (1.0, 5.0, 10.0):
                    acc = float(rng.uniform(0.5, 1))
                    rows.append(dict(classifier=clf, subgroup=s, input=inp, beta=b, accuracy=acc))
                    want[(clf, inp, f"{b:g}", s)] = acc
    path = tmp_path / "c.png"
    fig = plot_classifier_accuracy(rows, path, dpi=DPI)
    check_png(fig, path)
    assert [ax.get_title() for ax in fig.axes] == ["age classifier", "gender classifier"]
    for ax in fig.axes:
        clf = ax.get_title().split()[0]
        bars = [p for p in ax.patches if str(p.get_gid()).startswith("bar:")]
        assert len(bars) == 4 * 7
        for p in bars:
            _, inp, b, s = p.get_gid().split(":")
            assert np.isclose(p.get_height(), want[(clf, inp, b, s)])
    with pytest.raises(ValueError, match="duplicate accuracy row"):
        plot_classifier_accuracy(rows + rows[:1], tmp_path / "c.png")
    with pytest.raises(ValueError, match="input values"):
        plot_classifier_accuracy([dict(subgroup="a", input="noisy", accuracy=1.0)], path)


def test_neighbour_pull_bar_heights(tmp_path):
    rng = np.random.default_rng(4)
    rows = [
        dict(
            beta=5.0,
            subgroup=s,
            example_id=i,
            other_share_clean=float(rng.uniform(0, 0.5)),
            other_share_adv=float(rng.uniform(0.3, 1)),
        )
        for s in SUBGROUPS
        for i in range(5)
    ]
    path = tmp_path / "p.png"
    fig = plot_neighbour_pull(rows, path, dpi=DPI)
    check_png(fig, path)
    for s in SUBGROUPS:
        for when, col in (("before", "other_share_clean"), ("after", "other_share_adv")):
            (bar,) = by_gid(fig, f"pull:{when}:{s}")
            assert np.isclose(
                bar.get_height(), np.mean([r[col] for r in rows if r["subgroup"] == s])
            )


def test_embedding(tmp_path):
    rng = np.random.default_rng(5)
    n = 60
    xy = rng.normal(size=(n, 2))
    groups = rng.integers(-1, 4, size=n)
    shade = np.full(n, np.nan)
    attacked = np.array([1, 7, 20, 33])
    shade[attacked] = [0.5, 2.0, 1.0, 3.5]
    xy_adv = xy + 0.3
    path = tmp_path / "e.png"
    fig = plot_embedding(xy, groups, SUBGROUPS, path, shade, xy_adv=xy_adv, dpi=DPI)
    check_png(fig, path)
    (att,) = by_gid(fig, "attacked")
    np.testing.assert_allclose(att.get_offsets(), xy[attacked])
    np.testing.assert_allclose(att.get_array(), shade[attacked])
    assert att.norm.vmin == 0.5 and att.norm.vmax == 3.5
    assert len(fig.axes) == 2  # the scatter and its Δc colour bar
    (pull,) = by_gid(fig, "pull")
    assert len(pull.get_segments()) == 4
    for gi, s in enumerate(SUBGROUPS):
        m = (groups == gi) & ~np.isfinite(shade)
        (coll,) = by_gid(fig, f"embed:{s}")
        np.testing.assert_allclose(coll.get_offsets(), xy[m])
    with pytest.raises(ValueError, match="group ids must lie"):
        plot_embedding(xy, groups + 1, SUBGROUPS, path)
    with pytest.raises(ValueError, match="shape"):
        plot_embedding(xy[:, :1], groups, SUBGROUPS, path)


def test_example_grid(tmp_path):
    rng = np.random.default_rng(6)
    imgs = [rng.uniform(-0.2, 1.2, size=(3, 8, 8, 1)) for _ in range(4)]
    path = tmp_path / "x.png"
    fig = plot_example_grid(*imgs, ["young-men", "old-women", "old-men"], path, dpi=DPI)
    check_png(fig, path)
    assert len(fig.axes) == 12
    for k, ax in enumerate(fig.axes):
        i, j = divmod(k, 3)
        (im,) = ax.images
        np.testing.assert_allclose(im.get_array(), np.clip(imgs[i][j, ..., 0], 0, 1))
    assert fig.axes[1].get_title() == "old-women"
    with pytest.raises(ValueError, match="2 labels for 3 examples"):
        plot_example_grid(*imgs, ["a", "b"], path)
    with pytest.raises(ValueError, match="share one shape"):
        plot_example_grid(imgs[0], imgs[1][:2], imgs[2], imgs[3], ["a", "b", "c"], path)


@pytest.fixture(scope="module")
def margin_rows():
    rng = np.random.default_rng(7)
    rows = []
    for b in (1.0, 4.0, 8.0):
        for s in SUBGROUPS:
            for i in range(6):
                sig = float(rng.uniform(0.1, 0.3) * np.sqrt(b))
                jac = float(rng.uniform(5, 10) / b)
                bound = sig / jac * 2
                rows.append(
                    dict(
                        beta=b,
                        tau=0.0,
                        subgroup=s,
                        example_id=i,
                        sigma_min=sig,
                        jac_fro=jac,
                        p_r=0.9,
                        bound=bound,
                        margin_estimate=bound * float(rng.uniform(1, 2)),
                        margin_bracket=0.01,
                        delta_c=float(rng.uniform()),
                        eps=0.1,
                    )
                )
    rows[3]["bound"] = float("nan")
    rows[10]["bound"] = float("nan")
    return rows


def test_bound_vs_margin_title_and_identity(tmp_path, margin_rows):
    path = tmp_path / "b.png"
    fig = plot_bound_vs_margin(margin_rows, path, dpi=DPI)
    check_png(fig, path)
    keep = [r for r in margin_rows if np.isfinite(r["bound"])]
    x = np.array([r["bound"] for r in keep])
    y = np.array([r["margin_estimate"] for r in keep])
    r_p = np.corrcoef(x, y)[0, 1]
    r_s = stats.spearmanr(x, y).statistic
    title = fig.axes[0].get_title()
    assert f"Pearson r = {r_p:.3f}" in title and f"Spearman ρ = {r_s:.3f}" in title
    assert f"n = {len(keep)}, 2 undefined dropped" in title
    (ident,) = by_gid(fig, "identity")
    np.testing.assert_allclose(ident.get_xdata(), ident.get_ydata())
    (fit,) = by_gid(fig, "fit")
    slope = np.diff(fit.get_ydata()) / np.diff(fit.get_xdata())
    assert np.isclose(slope[0], np.polyfit(x, y, 1)[0])
    with pytest.raises(ValueError, match="need 2"):
        plot_bound_vs_margin(
            [dict(subgroup="a", bound=float("nan"), margin_estimate=1.0)] * 3, path
        )


def test_spearman_matches_scipy_with_ties():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 1.0])
    y = np.array([1.0, 2.0, 2.0, 3.0, 0.5, 4.0])
    np.testing.assert_allclose(rank_average(x), stats.rankdata(x))
    assert np.isclose(spearman(x, y), stats.spearmanr(x, y).statistic)


def test_vs_beta_means(tmp_path, margin_rows):
    path = tmp_path / "v.png"
    fig = plot_vs_beta(margin_rows, path, dpi=DPI)
    check_png(fig, path)
    assert [ax.get_title() for ax in fig.axes] == ["sigma_min", "jac_fro", "margin_estimate"]
    for col in ("sigma_min", "jac_fro"):
        (line,) = by_gid(fig, f"all:{col}")
        want = [np.mean([r[col] for r in margin_rows if r["beta"] == b]) for b in (1, 4, 8)]
        np.testing.assert_allclose(line.get_ydata(), want)
        (line,) = by_gid(fig, f"old-men:{col}")
        want = [
            np.mean([r[col] for r in margin_rows if r["beta"] == b and r["subgroup"] == "old-men"])
            for b in (1, 4, 8)
        ]
        np.testing.assert_allclose(line.get_ydata(), want)
    two_tau = margin_rows + [dict(margin_rows[0], tau=0.5)]
    with pytest.raises(ValueError, match="pass tau="):
        plot_vs_beta(two_tau, path)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['p_z'\]"):
        plot_vs_beta(margin_rows, path, columns=("p_z",))


def test_margin_distributions_and_vs_deviation(tmp_path, margin_rows):
    path = tmp_path / "md.png"
    fig = plot_margin_distributions(margin_rows, path, column="bound", dpi=DPI)
    check_png(fig, path)
    assert len(fig.axes) == 3
    (meds,) = [c for c in fig.axes[0].collections if c.get_gid() == "medians"]
    want = [
        np.nanmedian([r["bound"] for r in margin_rows if r["beta"] == 1 and r["subgroup"] == s])
        for s in SUBGROUPS
    ]
    np.testing.assert_allclose(meds.get_offsets()[:, 1], want)

    path = tmp_path / "mv.png"
    fig = plot_margin_vs_deviation(margin_rows, path, dpi=DPI)
    check_png(fig, path)
    for ax, b in zip(fig.axes, (1.0, 4.0, 8.0)):
        sel = [r for r in margin_rows if r["beta"] == b]
        rho = stats.spearmanr([r["margin_estimate"] for r in sel], [r["delta_c"] for r in sel])
        assert ax.get_title() == f"β = {b:g}: Spearman ρ = {rho.statistic:.3f} (n = {len(sel)})"


def test_bad_inputs(tmp_path, dev_rows):
    with pytest.raises(ValueError, match="no rows given"):
        plot_deviation_distributions([], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['recon_loss'\]"):
        plot_deviation_vs_recon([{"beta": 1, "subgroup": "a", "delta_c": 1.0}], tmp_path / "a.png")
    with pytest.raises(ValueError, match="suffix"):
        plot_deviation_distributions(dev_rows, tmp_path / "a.txt")
    with pytest.raises(ValueError, match="kind must be"):
        plot_deviation_distributions(dev_rows, tmp_path / "a.png", kind="strip")
    with pytest.raises(ValueError, match="not in rows"):
        plot_deviation_distributions(dev_rows, tmp_path / "a.png", subgroups=["elderly"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_palette_is_fixed_by_name():
    a = subgroup_colors(["old-men", "young-women"])
    b = subgroup_colors(SUBGROUPS + ["zeta", "alpha"])
    assert a["old-men"] == b["old-men"] and a["young-women"] == b["young-women"]
    assert b["alpha"] != b["zeta"] and len(set(b.values())) == 6


def test_attack_convergence_lines_and_seed_bars(tmp_path):
    from vaerob_jax.report import plot_attack_convergence

    rows = [
        dict(
            beta=b, subgroup=s, steps=40, restarts=3, median_default=1.0 + i,
            median_doubled=1.1 + i, strong_steps=80, strong_restarts=6, median_strong=1.5 + i,
            seed_median_min=0.9 + i, seed_median_max=1.2 + i,
        )
        for b in (1.0, 5.0)
        for i, s in enumerate(SUBGROUPS[:2])
    ]  # fmt: skip
    path = tmp_path / "c.png"
    fig = plot_attack_convergence(rows, path, dpi=DPI)
    check_png(fig, path)
    ax = fig.axes[1]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == f"convergence:{SUBGROUPS[1]}"]
    np.testing.assert_allclose(line.get_xdata(), [120, 240, 480])  # steps x restarts
    np.testing.assert_allclose(line.get_ydata(), [2.0, 2.1, 2.5])
    (bar,) = [c for c in ax.collections if c.get_gid() == f"seeds:{SUBGROUPS[1]}"]
    ys = np.concatenate([seg[:, 1] for seg in bar.get_segments()])
    assert np.isclose(ys.min(), 1.9) and np.isclose(ys.max(), 2.2)
    with pytest.raises(ValueError, match="median_strong"):
        plot_attack_convergence([{k: v for k, v in rows[0].items() if k != "median_strong"}], path)
