"""Benchmarks, runnable as ``python -m benchmarks.<name> [--quick]``; each prints ratios."""
