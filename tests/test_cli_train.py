"""``vaerob train`` end to end (in-process ``main([...])``) and its argument checks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from vaerob_jax.cli import COMMAND_MODULES, build_parser, main
from vaerob_jax.commands import train as train_command
from vaerob_jax.train import read_metrics

# digits at 8x8 with this MLP, 16 images, batch 4, lr 1e-3 and 3 betas: the same compiled
# program as the tiny-model grid tests.
TINY = [
    "train",
    "--dataset",
    "digits",
    "--image-size",
    "8",
    "--limit",
    "16",
    "--backbone",
    "mlp",
    "--hidden",
    "32,16",
    "--latent-dim",
    "4",
    "--batch-size",
    "4",
    "--learning-rate",
    "1e-3",
    "--log-every",
    "2",
    "--checkpoint-every",
    "4",
    "--quiet",
]


def _load_experiment():
    path = Path(__file__).resolve().parents[1] / "experiments" / "train_beta_grid.py"
    spec = importlib.util.spec_from_file_location("train_beta_grid", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_end_to_end_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main([*TINY, "--betas", "1,2,3", "--train-steps", "6", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained 3 models for 6 steps" in printed
    for name in ("metrics.csv", "config.json", "loss_curves.png", "checkpoints"):
        assert str(out / name) in printed and (out / name).exists()
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"

    config = json.loads((out / "config.json").read_text())
    assert config["args"]["betas"] == [1.0, 2.0, 3.0]
    assert config["model"] == {
        "backbone": "mlp",
        "image_shape": [8, 8, 1],
        "latent_dim": 4,
        "likelihood": "bernoulli",
        "hidden": [32, 16],
    }
    assert config["dataset"]["num_images"] == 16
    assert config["grid"][2] == {"model": 2, "beta": 3.0}
    assert config["loss"] == {"name": "beta_elbo", "kl_reduction": "sum"}
    assert config["train_config"]["steps"] == 6 and config["train_config"]["batch_size"] == 4

    m = read_metrics(out / "metrics.csv")
    np.testing.assert_array_equal(np.unique(m["step"]), [2, 4, 6])
    assert len(m["step"]) == 3 * 3
    np.testing.assert_array_equal(np.unique(m["beta"]), [1.0, 2.0, 3.0])
    assert np.all(np.isfinite(m["loss"]))

    # Another length is refused, the folder untouched; --extend resumes from the step-6
    # checkpoint and appends rows 8 and 10 only.
    rc = main([*TINY, "--betas", "1,2,3", "--train-steps", "10", "--out", str(out)])
    assert rc == 1 and "--extend" in capsys.readouterr().err
    assert read_metrics(out / "metrics.csv")["step"].max() == 6
    assert json.loads((out / "config.json").read_text())["train_config"]["steps"] == 6
    rc = main([*TINY, "--betas", "1,2,3", "--train-steps", "10", "--extend", "--out", str(out)])
    assert rc == 0
    assert "resumed from the checkpoint at step 6" in capsys.readouterr().out
    m2 = read_metrics(out / "metrics.csv")
    np.testing.assert_array_equal(np.unique(m2["step"]), [2, 4, 6, 8, 10])
    assert len(m2["step"]) == 5 * 3
    np.testing.assert_array_equal(m2["loss"][:9], m["loss"])

    # A different β grid in the same folder is refused with a clear message.
    rc = main([*TINY, "--betas", "1,2,4", "--train-steps", "10", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "different run" in err and "grid.beta" in err and str(out) in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--betas", "1,-2"], "beta values must be >= 0"),
        (["--betas", "1,x"], "comma-separated numbers"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--backbone", "resnet"], "invalid choice: 'resnet'"),
        (["--train-steps", "0"], "--train-steps must be >= 1"),
        (["--taus", "0,-0.5"], "tau values must be >= 0"),
        (["--betas", "1,1"], "repeats values"),
        (["--kl-reduction", "mean"], "invalid choice: 'mean'"),
        (["--batch-size", "64"], "--batch-size 64 exceeds the 16 images"),
        (["--backbone", "burgess64"], "backbone 'burgess64' cannot take (8, 8, 1) images"),
    ],
)
def test_bad_arguments_exit_2_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--train-steps", "2", "--out", str(out), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (out / "metrics.csv").exists() and not (out / "checkpoints").exists()


def test_parser_registry_and_missing_command(capsys):
    assert COMMAND_MODULES[0] == "vaerob_jax.commands.train"
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "x"])
    assert args.func is train_command.run and args.betas == [1.0, 5.0, 10.0]
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_experiment_config_round_trips_through_the_cli():
    exp = _load_experiment()
    config = exp.get_config()
    args = build_parser().parse_args(exp.to_argv(config, out="runs/x"))
    for name, value in config.items():
        parsed = getattr(args, name)
        if name == "betas":
            assert parsed == [float(v) for v in value.split(",")]
        else:
            assert parsed == value, name
    assert "vaerob train --dataset shapes --betas 1,5,10" in (exp.__doc__ or "")


def test_unusable_or_busy_out_exits_4_before_training(tmp_path, capsys):
    """Issue 9.5-6: a file as --out, a path under a file and a folder another run holds end
    with their own exit code and a message naming the path, before any training."""
    from vaerob_jax.sweeps import lock_output

    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file"), (a_file / "run", "lies under")):
        assert main([*TINY, "--train-steps", "2", "--out", str(out)]) == 4
        err = capsys.readouterr().err
        assert message in err and str(a_file) in err and "Traceback" not in err
    busy = tmp_path / "busy"
    with lock_output(busy, command="another run"):
        assert main([*TINY, "--train-steps", "2", "--out", str(busy)]) == 4
    err = capsys.readouterr().err
    assert "in use by another vaerob run" in err and "another run" in err
    assert not (busy / "checkpoints").exists() and not (busy / "config.json").exists()


def test_ctrl_c_ends_with_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import vaerob_jax.train as train_mod

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train_grid", ctrl_c)
    out = tmp_path / "run"
    assert main([*TINY, "--train-steps", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vaerob train: interrupted: {out} keeps no checkpoint yet; rerun the same command to "
        "resume from there"
    ]
    assert not (out / "config.json").exists()
