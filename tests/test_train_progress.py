"""Metrics log (tidy CSV, resumable), progress lines with ETA, and the loss-curve figure."""

from __future__ import annotations

import io

import numpy as np
import pytest

from vaerob_jax.sweeps import progress as progress_module
from vaerob_jax.sweeps.progress import Progress
from vaerob_jax.train import MetricsLog, read_metrics
from vaerob_jax.train import plots as plots_module

METRICS = ("loss", "recon", "kl")
GRID = {"beta": [1.0, 5.0], "seed": [0, 0]}


def _metrics(step: int, k: int = 2) -> dict[str, np.ndarray]:
    base = np.arange(k, dtype=np.float64)
    return {"loss": 10.0 * step + base, "recon": 5.0 * step + base, "kl": step + base}


def test_metrics_log_is_tidy_and_resume_drops_later_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, GRID, METRICS)
    for s in (1, 2, 3):
        log.append(s, _metrics(s), elapsed_s=float(s))
    m = read_metrics(path)
    assert tuple(m) == ("step", "model", "beta", "seed", *METRICS, "elapsed_s")
    np.testing.assert_array_equal(m["step"], [1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(m["model"], [0, 1] * 3)
    np.testing.assert_array_equal(m["beta"], [1.0, 5.0] * 3)
    assert m["seed"].dtype == np.int64
    np.testing.assert_array_equal(m["loss"], [10, 11, 20, 21, 30, 31])

    resumed = MetricsLog(path, GRID, METRICS, resume_step=2)
    assert resumed.elapsed_offset == 2.0  # elapsed time continues from the checkpoint
    resumed.append(3, _metrics(3), elapsed_s=0.5)
    m = read_metrics(path)
    np.testing.assert_array_equal(m["step"], [1, 1, 2, 2, 3, 3])
    np.testing.assert_allclose(m["elapsed_s"][-1], 2.5)

    # Resuming with a grid that also names τ (same run): old rows get τ by model index.
    wider = MetricsLog(path, {"beta": [1.0, 5.0], "tau": [0.0, 0.5], "seed": [0, 0]}, METRICS, 3)
    m = read_metrics(path)
    assert tuple(m)[:5] == ("step", "model", "beta", "tau", "seed")
    np.testing.assert_array_equal(m["tau"], [0.0, 0.5] * 3)
    np.testing.assert_array_equal(m["loss"], [10, 11, 20, 21, 30, 31])
    assert wider.columns == tuple(m)

    fresh = MetricsLog(path, {"seed": [0]}, ["loss", "error"])  # a new run replaces the file
    fresh.append(1, {"loss": np.array([0.7]), "error": np.array([0.25])}, 0.0)
    m = read_metrics(path)
    assert tuple(m) == ("step", "model", "seed", "loss", "error", "elapsed_s")
    assert m["step"].tolist() == [1] and m["error"].tolist() == [0.25]


def test_progress_lines_report_eta(monkeypatch):
    clock = iter([100.0, 110.0, 112.0, 120.0])  # start, then one reading per printed update
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()  # not a TTY: periodic lines instead of a bar
    rep = Progress(20, done=10, desc="train", unit="steps", stream=stream, min_interval_s=5.0)
    rep.update(12, "loss 3..4")  # 10 s for 2 steps: 5 s/step, 8 left -> ETA 40 s
    rep.update(13)  # only 2 s later: throttled
    rep.update(20)  # the last step is always printed
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == "[train] 12/20 steps (10 resumed), elapsed 10s, ETA 40s, loss 3..4"
    assert lines[1].startswith("[train] 20/20 steps") and lines[1].endswith("ETA 0s")


def test_progress_emits_through_a_logger_and_rejects_unknown_modes():
    got: list[str] = []
    rep = Progress(4, unit="model·examples", mode="log", min_interval_s=0.0, emit=got.append)
    rep.advance(1)
    rep.advance(3)
    assert len(got) == 2 and got[0].startswith("1/4 model·examples (0 resumed)")
    assert got[1].endswith("ETA 0s")
    with pytest.raises(ValueError, match="progress must be"):
        Progress(4, mode="loud")


def test_progress_disabled_is_silent():
    stream = io.StringIO()
    rep = Progress(5, mode=False, stream=stream)
    for s in range(1, 6):
        rep.update(s, "loss 1..1")
    rep.close()
    assert stream.getvalue() == ""


def test_loss_curve_figure_has_one_line_per_model(tmp_path):
    log = MetricsLog(tmp_path / "m.csv", {"beta": [1.0, 10.0], "seed": [0, 0]}, METRICS)
    for s in (1, 2, 3):
        log.append(s, _metrics(s), elapsed_s=0.0)
    figure = plots_module._loss_figure(read_metrics(tmp_path / "m.csv"), None)
    axes = figure.axes
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("training loss") and titles[1].startswith("reconstruction")
    assert titles[2].startswith("KL(q(z|x)")
    for ax, column in zip(axes, ("loss", "recon", "kl")):
        lines = ax.get_lines()
        assert len(lines) == 2
        for k, line in enumerate(lines):
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
            expected = [_metrics(s)[column][k] for s in (1, 2, 3)]
            np.testing.assert_array_equal(line.get_ydata(), expected)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["β=1", "β=10"]
    out = plots_module.plot_loss_curves(tmp_path / "m.csv", tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = {c: np.zeros(0) for c in ("step", "model", "beta", "loss", "elapsed_s")}
    with pytest.raises(ValueError, match="no metrics"):
        plots_module.plot_loss_curves(empty, tmp_path / "x.png")
