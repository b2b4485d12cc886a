"""Figures (matplotlib, headless) and the written Markdown report, from tidy tables.

Shared helpers live in :mod:`~vaerob_jax.report.plotting`; each paper's figures in their own
module (``figures_000``: subgroup robustness, ``figures_001``: margins, ...).
"""

from vaerob_jax.report.figures_000 import (
    plot_classifier_accuracy,
    plot_deviation_distributions,
    plot_deviation_vs_recon,
    plot_embedding,
    plot_example_grid,
    plot_median_vs_eps,
    plot_neighbour_pull,
    plot_single_attribute,
    relabel_subgroups,
)
from vaerob_jax.report.figures_001 import (
    plot_bound_vs_margin,
    plot_margin_distributions,
    plot_margin_vs_deviation,
    plot_margin_vs_tau,
    plot_vs_beta,
)
from vaerob_jax.report.figures_checks import plot_attack_convergence
from vaerob_jax.report.markdown import (
    Section,
    format_number,
    markdown_table,
    reading_highest_median,
    render_report,
    tied_extremes,
    write_report,
)
from vaerob_jax.report.plotting import (
    ATTRIBUTE_GROUPS,
    SUBGROUP_COLORS,
    SUBGROUP_ORDER,
    pearson,
    rank_average,
    save_figure,
    spearman,
    subgroup_colors,
    subgroup_order,
)

__all__ = [
    "ATTRIBUTE_GROUPS",
    "SUBGROUP_COLORS",
    "SUBGROUP_ORDER",
    "Section",
    "format_number",
    "markdown_table",
    "pearson",
    "plot_attack_convergence",
    "plot_bound_vs_margin",
    "plot_classifier_accuracy",
    "plot_deviation_distributions",
    "plot_deviation_vs_recon",
    "plot_embedding",
    "plot_example_grid",
    "plot_margin_distributions",
    "plot_margin_vs_deviation",
    "plot_margin_vs_tau",
    "plot_median_vs_eps",
    "plot_neighbour_pull",
    "plot_single_attribute",
    "plot_vs_beta",
    "rank_average",
    "reading_highest_median",
    "relabel_subgroups",
    "render_report",
    "save_figure",
    "spearman",
    "subgroup_colors",
    "subgroup_order",
    "tied_extremes",
    "write_report",
]
