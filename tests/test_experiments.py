"""Every experiment module returns a config its study accepts, and says how to run it."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import experiments
from vaerob_jax.studies.dae import DAEStudyConfig, validate_dae_config
from vaerob_jax.studies.disentangle import DisentangleStudyConfig, validate_disentangle_config
from vaerob_jax.studies.fairness import FairnessStudyConfig, validate_fairness_config
from vaerob_jax.studies.margins import MarginStudyConfig, validate_margin_config
from vaerob_jax.studies.subgroups import SubgroupStudyConfig, validate_config

MODULES = [m.name for m in pkgutil.iter_modules(experiments.__path__)]


@pytest.mark.parametrize("name", MODULES)
def test_experiment_module_has_a_command_and_a_valid_config(name):
    mod = importlib.import_module(f"experiments.{name}")
    assert "Run" in (mod.__doc__ or ""), f"experiments/{name}.py must say how to run it"
    cfg = mod.get_config()
    if isinstance(cfg, SubgroupStudyConfig):
        validate_config(cfg)
    elif isinstance(cfg, MarginStudyConfig):
        validate_margin_config(cfg)
    elif isinstance(cfg, FairnessStudyConfig):
        validate_fairness_config(cfg)
    elif isinstance(cfg, DAEStudyConfig):
        validate_dae_config(cfg)
    elif isinstance(cfg, DisentangleStudyConfig):
        validate_disentangle_config(cfg)
    else:
        assert isinstance(cfg, dict) and cfg  # `vaerob train` flags


def test_all_study_presets_have_an_experiment_module():
    configs = [importlib.import_module(f"experiments.{n}").get_config() for n in MODULES]
    from vaerob_jax.studies.dae import DAE_PRESETS
    from vaerob_jax.studies.disentangle import DISENTANGLE_PRESETS
    from vaerob_jax.studies.fairness import FAIRNESS_PRESETS
    from vaerob_jax.studies.margins import MARGIN_PRESETS
    from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS

    presets = {**SUBGROUP_PRESETS, **MARGIN_PRESETS}
    presets.update({f"fairness/{k}": v for k, v in FAIRNESS_PRESETS.items() if k != "tiny"})
    presets.update({f"dae/{k}": v for k, v in DAE_PRESETS.items() if k != "tiny"})
    presets.update({f"disentangle/{k}": v for k, v in DISENTANGLE_PRESETS.items() if k != "tiny"})
    for name, preset in presets.items():
        if name == "tiny":
            continue  # the test-suite preset
        assert any(c == preset for c in configs), f"preset {name!r} has no experiments/ module"
