"""The subgroup study repeated over training seeds, and whether its subgroup ordering repeats.

Each run of the study tests its disparities given ONE trained model per β: the omnibus and
pairwise p-values are calibrated for the attacked examples, not for the training run. On the
embedded data three seeds named three different least-robust subgroups (README, "Readings"),
so a disparity is a claim about the recipe only if it survives retraining. ``run_replicates``
runs the whole study (models, classifiers, attacked examples and attack keys) for seeds
``config.seed, config.seed + 1, ...`` into ``out/seed=<s>/`` (each an ordinary, resumable study
folder) and then tests, per (β, ε) cell, whether the runs rank the subgroups' median Δc alike:
Friedman's test with the runs as blocks, its exact permutation p-value and Kendall's W
(:func:`vaerob_jax.robustness.stats.friedman_test`), Holm-adjusted over the cells. It writes

* ``replicate_medians.csv``: per cell, run and subgroup the median Δc, its rank in the run
  and that run's own omnibus p-value;
* ``replicate_tests.csv``: per cell the Friedman statistic, W, exact and Holm p-values, the
  smallest attainable p, the subgroup of highest mean rank and in how many runs it was
  highest, each run's highest subgroup and omnibus p-value;
* ``figures/subgroup_medians_per_training_run.png`` and ``replicates.md``, whose sentences
  are computed from those tables.

Example:
    >>> paths = run_replicates(SUBGROUP_PRESETS["tiny"], "results/replicates", replicates=3)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vaerob_jax.report.markdown import Section, tied_extremes, write_report
from vaerob_jax.report.plotting import fmt_num, new_figure, save_figure
from vaerob_jax.robustness.stats import friedman_test, holm
from vaerob_jax.studies.subgroups.config import SubgroupStudyConfig
from vaerob_jax.sweeps.tables import read_csv, write_csv

__all__ = [
    "REPLICATE_MEDIAN_COLUMNS",
    "REPLICATE_TEST_COLUMNS",
    "replicate_readings",
    "replicate_seeds",
    "replicate_tables",
    "run_replicates",
    "write_replicate_outputs",
]

ALPHA = 0.05
FRIEDMAN_PROCEDURE = (
    "Friedman test, training runs as blocks, subgroups ranked by median Δc within each run, "
    "exact permutation p-value (every within-run ordering equally likely under H0)"
)
REPLICATE_MEDIAN_COLUMNS = (
    "beta",
    "eps",
    "seed",
    "subgroup",
    "n",
    "median",
    "rank",
    "relative_to_run_mean",
    "run_omnibus_p",
)
REPLICATE_TEST_COLUMNS = (
    "beta",
    "eps",
    "runs",
    "seeds",
    "statistic",
    "kendall_w",
    "p_value",
    "p_holm",
    "min_p",
    "exact",
    "highest",
    "times_highest",
    "lowest",
    "mean_ranks",
    "highest_each_run",
    "run_omnibus_p",
    "runs_rejecting",
    "procedure",
)

Rows = list[dict[str, Any]]


def replicate_seeds(config: SubgroupStudyConfig, replicates: int) -> list[int]:
    """The seeds of ``replicates`` runs: ``config.seed``, ``config.seed + 1``, ..."""
    if int(replicates) < 2:
        raise ValueError(
            f"replicates must be >= 2 to compare training runs, got {replicates} (one run is "
            "the ordinary study)"
        )
    return [int(config.seed) + i for i in range(int(replicates))]


def run_replicates(
    config: SubgroupStudyConfig,
    out_dir: str | Path,
    replicates: int,
    *,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Runs the study once per seed into ``out_dir/seed=<s>`` and compares the runs.

    Every run is an ordinary study folder: an interrupted call resumes, finished runs are
    read back in seconds. The config is validated (and ``replicates`` checked) before the
    first run starts.

    Args:
      config: the study settings; its ``seed`` is the first run's.
      out_dir: folder of the runs and of the comparison's tables, figure and report.
      replicates: number of runs (>= 2).
      fresh, progress, log: as for :func:`~vaerob_jax.studies.subgroups.run_subgroup_study`.

    Returns:
      Paths of the comparison's outputs ('replicate_medians', 'replicate_tests', 'figure',
      'report') and of every run's report ('report_seed=<s>').
    """
    from vaerob_jax.studies.subgroups import run_subgroup_study, validate_config

    say = log or print
    seeds = replicate_seeds(config, replicates)
    validate_config(config)
    out = Path(out_dir)
    runs: dict[int, Path] = {}
    paths: dict[str, Path] = {}
    started = time.perf_counter()
    for i, seed in enumerate(seeds):
        folder = out / f"seed={seed}"
        say(f"replicate {i + 1} of {len(seeds)}: seed {seed} -> {folder}")
        t0 = time.perf_counter()
        run_paths = run_subgroup_study(
            dataclasses.replace(config, seed=seed), folder, fresh=fresh, progress=progress, log=log
        )
        runs[seed] = folder
        paths[f"report_seed={seed}"] = run_paths["report"]
        done, elapsed = i + 1, time.perf_counter() - started
        left = (len(seeds) - done) * elapsed / done
        say(
            f"replicate {done} of {len(seeds)} finished in {(time.perf_counter() - t0) / 60:.1f} "
            f"min" + (f"; ETA {left / 60:.1f} min for the rest" if done < len(seeds) else "")
        )
    paths.update(write_replicate_outputs(runs, out))
    say(f"replicates report: {paths['report']}")
    return paths


def _run_tables(folder: Path) -> tuple[Rows, Rows]:
    summary, omnibus = folder / "summary.csv", folder / "disparity_omnibus.csv"
    for f in (summary, omnibus):
        if not f.is_file():
            raise ValueError(f"{f} is missing: {folder} is not a finished subgroup study")
    typed = {"subgroup": str, "highest": str, "lowest": str}
    return read_csv(summary, typed), read_csv(omnibus, typed)


def replicate_tables(runs: Mapping[int, str | Path]) -> tuple[Rows, Rows]:
    """Per-run medians and the across-run tests from finished study folders ``{seed: dir}``.

    Every run must hold the same (β, ε) cells and subgroups (else ValueError naming the run).
    """
    if len(runs) < 2:
        raise ValueError(f"replicate_tables needs at least 2 runs, got {len(runs)}")
    seeds = sorted(runs)
    tables = {s: _run_tables(Path(runs[s])) for s in seeds}

    def layout(s: int) -> tuple[list[tuple[float, float]], list[str]]:
        rows = tables[s][0]
        cells = sorted({(float(r["beta"]), float(r["eps"])) for r in rows})
        groups = list(dict.fromkeys(r["subgroup"] for r in rows))
        return cells, groups

    cells, groups = layout(seeds[0])
    for s in seeds[1:]:
        other_cells, other_groups = layout(s)
        if other_cells != cells or sorted(other_groups) != sorted(groups):
            raise ValueError(
                f"run seed={s} ({runs[s]}) has cells {other_cells} and subgroups "
                f"{other_groups}, run seed={seeds[0]} has {cells} and {groups}: only runs of "
                "one config differing in the seed can be compared"
            )
    medians: Rows = []
    tests: Rows = []
    for beta, eps in cells:
        table = np.empty((len(seeds), len(groups)))
        run_p, run_top = [], []
        for i, s in enumerate(seeds):
            summary, omnibus = tables[s]
            by_group = {
                r["subgroup"]: r
                for r in summary
                if float(r["beta"]) == beta and float(r["eps"]) == eps
            }
            omni = [o for o in omnibus if float(o["beta"]) == beta and float(o["eps"]) == eps]
            p_run = float(omni[0]["p_value"]) if omni else float("nan")
            table[i] = [float(by_group[g]["median"]) for g in groups]
            mean = float(np.mean(table[i]))
            order = np.argsort(np.argsort(table[i])) + 1
            for j, g in enumerate(groups):
                medians.append(
                    {
                        "beta": beta,
                        "eps": eps,
                        "seed": s,
                        "subgroup": g,
                        "n": int(by_group[g]["n"]),
                        "median": float(table[i, j]),
                        "rank": int(order[j]),
                        "relative_to_run_mean": float(table[i, j] / mean - 1)
                        if mean > 0
                        else np.nan,
                        "run_omnibus_p": p_run,
                    }
                )
            run_p.append(p_run)
            named = [{"subgroup": g, "median": v} for g, v in zip(groups, table[i], strict=True)]
            tops = tied_extremes(named, "median", highest=True)
            run_top.append("=".join(t["subgroup"] for t in tops))  # ties joined, none picked
        res = friedman_test(table, names=groups)
        tests.append(
            {
                "beta": beta,
                "eps": eps,
                "runs": len(seeds),
                "seeds": ";".join(str(s) for s in seeds),
                "statistic": res["statistic"],
                "kendall_w": res["kendall_w"],
                "p_value": res["p_value"],
                "min_p": res["min_p"],
                "exact": res["exact"],
                "highest": res["highest"],
                "times_highest": res["times_highest"],
                "lowest": res["lowest"],
                "mean_ranks": ";".join(f"{g}:{res['mean_ranks'][g]:.3g}" for g in groups),
                "highest_each_run": ";".join(run_top),
                "run_omnibus_p": ";".join(f"{p:.4g}" for p in run_p),
                "runs_rejecting": int(sum(p < ALPHA for p in run_p)),
                "procedure": FRIEDMAN_PROCEDURE,
            }
        )
    adjusted = holm([t["p_value"] for t in tests])
    for t, p in zip(tests, adjusted, strict=True):
        t["p_holm"] = float(p)
    return medians, tests


def _cannot_reject(min_p: float, alpha: float, n_cells: int) -> bool:
    """Whether the smallest attainable p is above Holm's first threshold alpha / n_cells, so no
    cell can reject whatever the rankings."""
    return min_p > alpha / n_cells


def _top_name(top: str) -> str:
    names = top.split("=")
    return names[0] if len(names) == 1 else " and ".join(names) + " tied"


def _cell_sentence(t: dict[str, Any], alpha: float, n_cells: int) -> str:
    runs = int(t["runs"])
    tops = t["highest_each_run"].split(";")
    distinct = list(dict.fromkeys(tops))
    where = (
        f"the same subgroup ({_top_name(tops[0])}) has the highest median in all {runs} runs"
        if len(distinct) == 1
        else "the highest median belongs to "
        + ", ".join(f"{_top_name(g)} in {tops.count(g)}" for g in distinct)
        + f" of the {runs} runs"
    )
    head = (
        f"At β={t['beta']:g}, ε={t['eps']:g} {where}; the runs' agreement in ranking, Kendall's "
        f"W, is {t['kendall_w']:.2f} (1 = identical rankings, 0 = none; Friedman p = "
        f"{t['p_value']:.3g}, Holm over the cells {t['p_holm']:.3g}; {runs} runs can reach "
        f"p = {t['min_p']:.2g} at best), and {t['runs_rejecting']} of the {runs} runs' own "
        f"omnibus tests reject at {alpha:g}."
    )
    if _cannot_reject(float(t["min_p"]), alpha, n_cells):
        return head + (
            f" {runs} runs cannot reject after Holm's adjustment over {n_cells} cells whatever "
            "their rankings, so this does not test whether the ordering repeats: use more runs."
        )
    if t["p_holm"] < alpha:
        return head + (
            f" The ordering repeats across training runs: {t['highest']} rank highest on average "
            f"(highest in {t['times_highest']} of {runs})."
        )
    if t["runs_rejecting"]:
        return head + (
            " A disparity found within a run is not reproduced by retraining here (the "
            "Friedman test does not reject), so read it as a property of that trained model "
            "unless more runs show the ordering repeats."
        )
    return head + " Neither the runs nor their comparison show a disparity."


def replicate_readings(tests: Rows, alpha: float = ALPHA) -> list[str]:
    """The report's sentences, computed from ``replicate_tests`` rows: an overall one, then
    one per β at the largest ε."""
    if not tests:
        raise ValueError("replicate_readings: no test rows")
    runs = int(tests[0]["runs"])
    reject = [t for t in tests if t["p_holm"] < alpha]
    run_level = [t for t in tests if t["runs_rejecting"]]
    cells = ", ".join(f"β={t['beta']:g}, ε={t['eps']:g}" for t in reject) or "none"
    overall = (
        f"Over {runs} training runs (seeds {tests[0]['seeds'].replace(';', ', ')}), the "
        f"subgroups' ordering by median Δc is reproduced (Friedman, Holm-adjusted p < {alpha:g}) "
        f"in {len(reject)} of {len(tests)} (β, ε) cells ({cells}); at least one run's own "
        f"omnibus test rejects in {len(run_level)} of the {len(tests)}. The smallest p-value "
        f"{runs} runs can reach is {tests[0]['min_p']:.2g}"
        + (
            f", above the Holm threshold of {alpha / len(tests):.2g} for {len(tests)} cells: "
            "more runs are needed before any cell can reject"
            if _cannot_reject(float(tests[0]["min_p"]), alpha, len(tests))
            else ""
        )
        + "."
    )
    eps_max = max(float(t["eps"]) for t in tests)
    return [overall] + [
        _cell_sentence(t, alpha, len(tests)) for t in tests if float(t["eps"]) == eps_max
    ]


def plot_medians_per_run(medians: Rows, path: str | Path) -> None:
    """Per β at the largest ε: each subgroup's median Δc relative to its run's mean over
    subgroups, one line per training run (crossing lines: the runs disagree)."""
    eps_max = max(float(r["eps"]) for r in medians)
    rows = [r for r in medians if float(r["eps"]) == eps_max]
    betas = sorted({float(r["beta"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    groups = list(dict.fromkeys(r["subgroup"] for r in rows))
    markers = "osD^v<>p*h"
    fig, axes = new_figure(1, len(betas), 100, sharey=True)
    x = np.arange(len(groups))
    for ax, b in zip(axes[0], betas, strict=True):
        for i, s in enumerate(seeds):
            by_group = {
                r["subgroup"]: r for r in rows if float(r["beta"]) == b and int(r["seed"]) == s
            }
            y = [100 * float(by_group[g]["relative_to_run_mean"]) for g in groups]
            style = {"color": f"C{i % 10}", "marker": markers[i % len(markers)]}
            (line,) = ax.plot(x, y, label=f"seed {s}", **style)
            line.set_gid(f"run:{s}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"β = {fmt_num(b)}, ε = {fmt_num(eps_max)}")
    axes[0, 0].set_ylabel("median Δc vs run mean (%)")
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, path)


def write_replicate_outputs(
    runs: Mapping[int, str | Path], out_dir: str | Path, alpha: float = ALPHA
) -> dict[str, Path]:
    """Tables, figure and report comparing finished study folders ``{seed: dir}``."""
    out = Path(out_dir)
    medians, tests = replicate_tables(runs)
    paths = {
        "replicate_medians": out / "replicate_medians.csv",
        "replicate_tests": out / "replicate_tests.csv",
        "figure": out / "figures" / "subgroup_medians_per_training_run.png",
        "report": out / "replicates.md",
    }
    write_csv(paths["replicate_medians"], medians, REPLICATE_MEDIAN_COLUMNS)
    write_csv(paths["replicate_tests"], tests, REPLICATE_TEST_COLUMNS)
    plot_medians_per_run(medians, paths["figure"])
    readings = replicate_readings(tests, alpha)
    show = ("beta", "eps", "kendall_w", "p_value", "p_holm", "highest_each_run", "run_omnibus_p")
    sections: Sequence[Section] = [
        Section(
            "Does the subgroup ordering survive retraining?",
            reading="\n\n".join(readings),
            figure=paths["figure"],
        ),
        Section(
            "Across-run tests (replicate_tests.csv)",
            reading=f"Procedure: {FRIEDMAN_PROCEDURE}; Holm's adjustment over the cells.",
            table=tests,
            columns=show,
            digits=3,
        ),
        Section(
            "Per-run reports",
            reading="\n".join(
                f"- seed {s}: [{link}]({link})"
                for s in sorted(runs)
                for link in [Path(os.path.relpath(Path(runs[s]) / "report.md", out)).as_posix()]
            ),
        ),
    ]
    write_report(paths["report"], "Subgroup robustness over training runs", sections)
    return paths
