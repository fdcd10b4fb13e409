"""``python -m bench <name>|all [--quick] [--json FILE] [--repeats N]``; ``plot FILE``; ``table FILE``;
``chaos [--minutes N | --quick] [--strict] [--seed N]`` (the chaos run, ``bench/chaos.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import harness


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", help=f"one of: all, plot, table, chaos, {', '.join(harness.available())}")
    parser.add_argument("file", nargs="?", type=Path, help="with plot or table: the JSON written by --json")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (CI)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write all figures to this JSON file")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3, 1 with --quick)")
    parser.add_argument("--minutes", type=float, help="chaos: length of the run (default 10, 3 with --quick)")
    parser.add_argument("--strict", action="store_true", help="chaos: exit 1 if a guarantee was broken")
    parser.add_argument("--seed", type=int, help="chaos: seed of the random faults (printed when not given)")
    parser.add_argument("--keep", action="store_true", help="chaos: keep the work directory (logs, stores)")
    args = parser.parse_args(argv)
    if args.name == "chaos":
        from bench import chaos

        return chaos.main(args.minutes, args.quick, args.strict, args.json_path, args.seed, args.keep)
    if args.name == "plot":
        from bench import plot

        return plot.main(args.file)
    if args.name == "table":
        from bench import table

        return table.main(args.file)
    names = harness.available() if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in harness.available()]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; available: {', '.join(harness.available())}")
    return harness.main(names, args.quick, args.json_path, args.repeats)


if __name__ == "__main__":
    sys.exit(cli())
