"""Subcommands of the ``vaerob`` CLI; each module exposes ``register(subparsers)``."""

__all__: list[str] = []
