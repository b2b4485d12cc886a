"""Fairness versus robustness (004): the Gaussian-mixture theory, samplers, trained thresholds."""
