"""End-to-end studies: each is config -> one library call that writes tables, figures, report."""

from vaerob_jax.studies.config import SubgroupStudyConfig, config_fingerprint, override
from vaerob_jax.studies.margins import (
    MARGIN_PRESETS,
    MarginStudyConfig,
    make_example_program,
    prepare_margin_inputs,
    run_margin_study,
    summarize_margins,
    validate_margin_config,
)
from vaerob_jax.studies.subgroups import prepare_inputs, run_subgroup_study, validate_config

__all__ = [
    "MARGIN_PRESETS",
    "MarginStudyConfig",
    "make_example_program",
    "prepare_margin_inputs",
    "run_margin_study",
    "summarize_margins",
    "validate_margin_config",
    "SubgroupStudyConfig",
    "config_fingerprint",
    "override",
    "prepare_inputs",
    "run_subgroup_study",
    "validate_config",
]
