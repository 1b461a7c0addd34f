"""Index build rate per core on the local process pool and on a Ray cluster on the same machine.

Builds one roster connector's index (default: housing_fund) from a generated data set, once
with the local engine (a process per core) and once with the Ray engine against a Ray head
started here with as many CPUs, and prints subjects per second per core for each beside the raw
ristretto255 scalar multiplication rate of one core (libsodium), measured just before each
engine's runs (the machine may be shared: the load average is printed too), medians of
several runs.

    .venv/bin/python bench/build_engines.py [--debtors 200000] [--repeats 3] [--connector housing_fund]

Two figures per engine: the whole build (the agency's query, ID normalisation, evaluation,
token derivation, sorting) and the evaluation alone (`evaluate_tokens` over the prepared
items). The Ray engine joins the cluster at its first run and stays joined; the fixed cost
column is a run over no chunk (putting the key in the object store, and nothing else).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_oprf import raw_scalarmult_rate
from bench.common import dataset
from connectors.config import ConnectorConfig
from connectors.engines import Engine, LocalEngine, RayEngine
from connectors.indexer import BuiltIndex, Item, build, collect, evaluate_tokens
from devkit.environment import load_roster
from tests.ray_cluster import ray_head
from xiezhi import oprf
from xiezhi.ids import SubjectId


def items_of(config: ConnectorConfig) -> list[Item]:
    """The (OPRF input, capabilities) items a build of `config` evaluates, in the build's order."""
    members: dict[SubjectId, list[str]] = {}
    for capability_id, result in collect(config).items():
        for subject in result.subjects:
            members.setdefault(subject, []).append(capability_id)
    return [(subject.oprf_input(), tuple(caps)) for subject, caps in members.items()]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass(frozen=True)
class Row:
    engine: str
    built: BuiltIndex
    build_seconds: float
    evaluation_seconds: float
    fixed_seconds: float
    raw_per_second: float  # one core's ristretto255 scalar multiplications, just before
    load: float  # the machine's 1-minute load average, just after


def _nothing(shared: bytes, chunk: list[Item]) -> None:
    return None


def measure(
    name: str, engine: Engine, config: ConnectorConfig, key: oprf.KeyPair, items: list[Item], repeats: int
) -> Row:
    """The engine's whole build, its evaluation alone and its fixed cost (a run over no chunk), in
    seconds, with the raw multiplication rate of one core measured just before."""
    built = build(config, key, 1, engine=engine)  # a warm-up, and the index to compare
    raw, _ = raw_scalarmult_rate(20_000, repeats)
    whole = median_seconds(lambda: build(config, key, 1, engine=engine), repeats)
    evaluation = median_seconds(lambda: sum(1 for _ in evaluate_tokens(key.sk, items, engine=engine)), repeats)
    fixed = median_seconds(lambda: list(engine.map(_nothing, key.sk, iter(()))), repeats)
    return Row(name, built, whole, evaluation, fixed, raw, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--debtors", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connector", default="housing_fund")
    args = parser.parse_args()
    data = dataset(args.debtors)
    (entry,) = [entry for entry in load_roster() if entry.name == args.connector]
    config = ConnectorConfig.from_file(
        entry.path, database_url=f"sqlite:///{data / 'agencies' / f'{args.connector}.sqlite'}"
    )
    key = oprf.generate_key_pair(oprf.Mode.VOPRF)
    items = items_of(config)
    cores = os.cpu_count() or 1
    _, sodium = raw_scalarmult_rate(1_000, 1)
    rows = [measure(f"local pool ({cores} processes)", LocalEngine(cores), config, key, items, args.repeats)]
    with ray_head(cpus=cores) as cluster:
        with closing(RayEngine(cluster.address)) as ray:
            rows.append(measure(f"Ray ({cores} CPUs, same machine)", ray, config, key, items, args.repeats))
    if rows[0].built != rows[1].built:
        raise SystemExit("the two engines built different indexes")
    table = Table(
        title=f"{args.connector}: {len(items):,} subjects from {args.debtors:,} generated debtors, {cores} cores "
        f"(median of {args.repeats}; libsodium {sodium})"
    )
    columns = ("engine", "build s", "build /s/core", "evaluation s", "evaluation /s/core", "raw mult /s/core")
    for column in (*columns, "evaluation % of raw", "fixed cost s", "load"):
        table.add_column(column, justify="right")
    for row in rows:
        per_core = len(items) / row.evaluation_seconds / cores
        table.add_row(
            row.engine,
            f"{row.build_seconds:.2f}",
            f"{len(items) / row.build_seconds / cores:,.0f}",
            f"{row.evaluation_seconds:.2f}",
            f"{per_core:,.0f}",
            f"{row.raw_per_second:,.0f}",
            f"{100 * per_core / row.raw_per_second:.0f}%",
            f"{row.fixed_seconds:.2f}",
            f"{row.load:.1f}",
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
