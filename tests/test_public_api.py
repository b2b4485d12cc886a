"""Every public name listed in a package's __all__ exists (optax-style API test)."""

from __future__ import annotations

import importlib

import pytest

import vaerob_jax

PACKAGES = [name for name in vaerob_jax.__all__ if name != "__version__"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve(package):
    module = importlib.import_module(f"vaerob_jax.{package}")
    assert module.__all__, f"vaerob_jax.{package} exports nothing"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"vaerob_jax.{package}.__all__ lists undefined names {missing}"
    assert len(set(module.__all__)) == len(module.__all__)


def test_console_script_lists_every_command():
    from vaerob_jax.cli import COMMAND_MODULES, build_parser

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == {m.rsplit(".", 1)[1] for m in COMMAND_MODULES}
