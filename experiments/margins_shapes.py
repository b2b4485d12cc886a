"""The margin study of 001 (Theorem 1 vs the estimated margin, Figs. 6, 7, 9) on ``shapes``.

Run (after the subgroup study, whose trained β grid it reuses and whose Δc it joins):
    vaerob subgroups --out results/subgroups
    vaerob margins --out results/margins --subgroup-study results/subgroups

or standalone (trains the same β ∈ {1, 5, 10} burgess64 grid on 32×32 itself, 1,000 steps):
    vaerob margins --out results/margins

001 Fig. 7's ablation over the encoder-std offset τ (trains a β × τ grid):
    vaerob margins --out results/margins_tau --taus 0,0.1,0.5,1

What to expect in ``results/margins``: ``margins.csv`` with one row per model × example
(64 test examples per Young × Male subgroup, the subgroup study's attacked ones: 256 per
model, 768 rows), ``margin_summary.csv``,
``figures/bound_vs_margin.png`` (001 Fig. 6: points mostly above y = x where Theorem 1's
first-order bound holds), ``figures/sigma_jacobian_margin_vs_beta.png`` (001 Fig. 9: σ_min
rises and ‖J_μ‖_F falls with β, so the bound and the margin rise), per-subgroup margin
distributions, ``figures/margin_vs_deviation.png`` when joined with a subgroup study, and
``report.md`` whose readings give the share of examples with bound ≤ estimated margin and
the subgroup with the smallest median margin per β. Rows with p_r ≤ 0.5 have no bound (NaN).

Cost on the 2-core CPU: the margin part is (n_iter + 1) · attack_steps = 70 output-damage
PGD steps plus 16 Jacobian VJPs and ~224 decoder passes per model · example: measured
0.26 s per model · example (``timings.json``: ``per_model_example_s``), so about 3.5 minutes
for the 768 model · examples. Training the β grid from scratch costs what the subgroup
study's training costs (about 5.5 minutes); reusing that grid skips it.
"""

from __future__ import annotations

from vaerob_jax.studies.margins import MARGIN_PRESETS, MarginStudyConfig

__all__ = ["get_config"]


def get_config() -> MarginStudyConfig:
    """The default margin study (the 'shapes' preset of ``vaerob margins``)."""
    return MARGIN_PRESETS["shapes"]
