"""Runs every benchmark and writes one JSON per benchmark into ``--out`` (default
``results/benchmarks``). ``--quick`` uses tiny shapes; the full run takes ~8 min
on 2 CPU cores (about 9 with bench_fairness, about 11-12 with bench_dae, ~1 min more with
bench_targeted, ~3 min more with bench_cpu_runtime, ~3 min more with bench_parallel, ~3 min
more with bench_precision).

    python -m benchmarks.run_all [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

BENCHMARKS = (
    "bench_train",
    "bench_attacks",
    "bench_attack_strength",
    "bench_margins",
    "bench_fairness",
    "bench_dae",
    "bench_targeted",
    "bench_cpu_runtime",
    "bench_parallel",
    "bench_precision",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        t = time.perf_counter()
        print(f"== {name} ==", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        flags = ["--quick"] if args.quick else []
        module.main([*flags, "--out", str(args.out / f"{name}.json")])
        print(f"== {name}: {time.perf_counter() - t:.0f}s ==", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
