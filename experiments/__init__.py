"""Experiment configs: small ``get_config()`` modules, each with the command that runs it."""
