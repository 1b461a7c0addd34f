"""Index build rate: subjects evaluated and tokens derived per second, one core vs all cores.

Builds every roster connector's indexes (deploy/connectors/) over a generated data set (the work a
connector does before publishing), timing the build only, as medians of several runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dataset, median_seconds
from connectors.config import ConnectorConfig
from connectors.indexer import BuiltIndex, build
from devkit.environment import load_roster
from xiezhi import oprf


def build_all(configs: list[ConnectorConfig], key: oprf.KeyPair, workers: int) -> list[BuiltIndex]:
    return [build(c, key, 1, workers=workers) for c in configs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--debtors", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = dataset(args.debtors)
    key = oprf.generate_key_pair(oprf.Mode.VOPRF)
    configs = [
        ConnectorConfig.from_file(entry.path, database_url=f"sqlite:///{data / 'agencies' / f'{entry.name}.sqlite'}")
        for entry in load_roster()
    ]
    cores = os.cpu_count() or 1
    table = Table(title=f"Index build over {args.debtors:,} generated debtors (median of {args.repeats})")
    for column in ("workers", "subjects", "tokens", "seconds", "subjects/s", "subjects/s per core"):
        table.add_column(column, justify="right")
    for workers in sorted({1, cores}):
        built = build_all(configs, key, workers)
        subjects = sum(b.subjects for b in built)
        tokens = sum(len(i.tokens) for b in built for i in b.capabilities)
        seconds, _ = median_seconds(functools.partial(build_all, configs, key, workers), args.repeats)
        table.add_row(
            str(workers),
            f"{subjects:,}",
            f"{tokens:,}",
            f"{seconds:.2f}",
            f"{subjects / seconds:,.0f}",
            f"{subjects / seconds / workers:,.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
