"""Index build at scale: peak memory and time of a full build as the agency's table grows, and
of the incremental rebuild after 1% of its rows changed.

    python bench/build_scale.py --sizes 1000000 3000000 10000000 [--rows-per-subject 20]
                                [--database sqlite|postgresql|mysql]

For each size an agency table of that many 终本 case rows (`rows-per-subject` cases per
debtor, valid resident IDs, some in other spellings) is written to a SQLite file, or to a
private PostgreSQL or MariaDB server started as the tests start theirs (there the database
digests the rows: `connectors.row_digests`); then, each
in its own process so its peak resident memory (ru_maxrss) is its own: a full build of
`court.multiple_terminated` (two or more 终本 cases), 1% of the rows changed (deleted,
re-dated, new debtors), and the incremental rebuild; then a full build stopped half way through
its evaluation (as a crash would) and run again. The build streams its tokens to a sink
that reads every chunk as the gateway would receive it and keeps nothing: this benchmark
measures the connector; the gateway's token store has its own. Figures are single runs per
size (the build takes minutes at 10M rows); run it again to see the spread.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, make_url, text

from connectors.config import ConnectorConfig
from connectors.incremental import EVALUATE_CHUNK, build_and_publish_incremental
from connectors.publisher import TokenStream
from xiezhi import oprf
from xiezhi.ids import resident_id_check_char
from xiezhi.wire import PublicationView

CAPABILITY = {
    "id": "court.multiple_terminated",
    "title": "两起以上终本案件的被执行人",
    "tier": 1,
    "query": {
        "default": "SELECT debtor_id AS subject_id, case_no AS key FROM enforcement_cases WHERE status = '终本'",
        "mysql": "SELECT debtor_id AS subject_id, case_no AS `key` FROM enforcement_cases WHERE status = '终本'",
    },
    "reduce": {"distinct_keys_at_least": 2},
}
KEY = bytes(range(32))  # a benchmark's key, never a connector's


class CountingSink:
    """Receives what the gateway would (every chunk read), keeps counts only."""

    def __init__(self) -> None:
        self.tokens = 0
        self.versions: dict[str, int] = {}

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: object, tokens: TokenStream
    ) -> PublicationView:
        self.tokens += sum(len(chunk) // 16 for chunk in tokens.chunks())
        publication = str(uuid.uuid4())
        self.versions[publication] = 1
        return _view(publication, connector, epoch, 1)

    def publish_delta(self, connector: str, epoch: int, public_key: bytes, capability: object, base: str,
                      added: TokenStream, removed: TokenStream) -> PublicationView:  # fmt: skip
        self.tokens += sum(len(c) // 16 for c in added.chunks()) + sum(len(c) // 16 for c in removed.chunks())
        self.versions[base] = self.versions.get(base, 1) + 1  # another process published the base
        return _view(base, connector, epoch, self.versions[base])

    def publication(self, connector: str, publication_id: str) -> PublicationView:
        return _view(publication_id, connector, 1, self.versions.get(publication_id, 1))

    def activate(self, connector: str, epoch: int) -> None:
        return None


def _view(publication: str, connector: str, epoch: int, version: int) -> PublicationView:
    return PublicationView(
        publication_id=publication, connector=connector, capability=CAPABILITY["id"], epoch=epoch,
        token_count=0, received=0, committed=True, version=version,
    )  # fmt: skip


def resident_id(n: int) -> str:
    """The n-th of a run of distinct valid resident IDs (district 330803, born 1950–1999)."""
    sequence, day, month, year = n % 900, (n // 900) % 28, (n // 25_200) % 12, (n // 302_400) % 50
    first17 = f"330803{1950 + year:04d}{1 + month:02d}{1 + day:02d}{100 + sequence:03d}"
    return first17 + resident_id_check_char(first17)


TABLE = "enforcement_cases"


def write_table(url: str, rows: int, rows_per_subject: int) -> None:
    """The court's table of `rows` cases at `url` (n numbers the rows, for the changes below)."""
    engine = create_engine(url)
    columns = "n INTEGER, case_no VARCHAR(40), debtor_id VARCHAR(40), status VARCHAR(10), terminated_on VARCHAR(10)"
    insert = text(f"INSERT INTO {TABLE} VALUES (:n, :case_no, :debtor_id, :status, :terminated_on)")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {TABLE} ({columns})"))
        batch: list[dict[str, object]] = []
        for i in range(rows):
            debtor = resident_id(i // rows_per_subject)
            batch.append({
                "n": i, "case_no": f"（2024）浙0803执{i}号", "debtor_id": debtor.lower() if i % 97 == 0 else debtor,
                "status": "终本" if i % 3 else "执行中", "terminated_on": "2024-06-30",
            })  # fmt: skip
            if len(batch) == 20_000:
                connection.execute(insert, batch)
                batch = []
        if batch:
            connection.execute(insert, batch)
    engine.dispose()


def change_one_percent(url: str, rows: int, rows_per_subject: int) -> None:
    """A third of a percent of rows deleted, as many made 终本, as many new cases of new debtors."""
    engine = create_engine(url)
    fresh = rows // rows_per_subject + 1
    with engine.begin() as connection:
        connection.execute(text(f"DELETE FROM {TABLE} WHERE n % 300 = 1"))
        connection.execute(text(f"UPDATE {TABLE} SET status = '终本' WHERE n % 300 = 2"))
        connection.execute(
            text(f"INSERT INTO {TABLE} VALUES (:n, :case_no, :debtor_id, '终本', '2025-01-01')"),
            [
                {"n": rows + i, "case_no": f"（2025）浙0803执{i}号", "debtor_id": resident_id(fresh + i // 2)}
                for i in range(rows // 300)
            ],
        )
    engine.dispose()


@contextmanager
def agency_database(kind: str, folder: Path) -> Iterator[str]:
    """An empty database of `kind` for the agency's table: a SQLite file, or a private
    PostgreSQL or MariaDB server (as the tests start them); its URL."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'court.sqlite'}"
        return
    if kind == "postgresql":
        from tests.postgres import postgres_server

        with postgres_server() as url:
            yield url
        return
    from tests.mariadb import mariadb_server

    with mariadb_server() as url:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("CREATE DATABASE court CHARACTER SET utf8mb4"))
        engine.dispose()
        yield str(make_url(url).set(database="court").render_as_string(hide_password=False))


class Killed(Exception):
    """Stops a build the way a crash would, after a given number of evaluated steps."""


def child(database: str, state_dir: Path, stop_after: int = 0) -> None:
    config = ConnectorConfig.model_validate(
        {
            "connector": "court",
            "title": "人民法院",
            "database_url": database,
            "capabilities": [CAPABILITY],
        }
    )
    pair = oprf.derive_key_pair(KEY, b"bench", oprf.Mode.VOPRF)  # the same key in every run: one state
    steps = 0

    def hook(step: str) -> None:
        nonlocal steps
        steps += step == "evaluated-chunk"
        if stop_after and steps >= stop_after:
            raise Killed(step)

    started = time.perf_counter()
    try:
        report = build_and_publish_incremental(config, pair, 1, state_dir, CountingSink(), hook=hook)
    except Killed:
        print(json.dumps({"seconds": time.perf_counter() - started, "killed_after_steps": steps}))
        return
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (cap,) = report.capabilities
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "evaluated": report.subjects, "tokens": cap.tokens,
                      "rows": cap.rows, "added": cap.added, "removed": cap.removed}))  # fmt: skip


def run_child(database: str, state_dir: Path, stop_after: int = 0) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", database, str(state_dir), "--stop-after", str(stop_after)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--rows-per-subject", type=int, default=20)
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql", "mysql"),
        default="sqlite",
        help="where the agency's table is: a SQLite file, or a private PostgreSQL or MariaDB server",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--resume-up-to", type=int, default=10**12, help="sizes above this skip the kill-and-resume run"
    )
    args = parser.parse_args()
    if args.child:
        database, state_dir = args.child
        child(database, Path(state_dir), stop_after=args.stop_after)
        return
    print(
        "rows        full s   peak MB  evaluated  tokens    | 1% changed: s   peak MB  evaluated  share of full"
        "  | killed half way, then resumed: s"
    )
    for rows in args.sizes:
        with tempfile.TemporaryDirectory() as folder, agency_database(args.database, Path(folder)) as database:
            state = Path(folder) / "state"
            write_table(database, rows, args.rows_per_subject)
            full = run_child(database, state)
            change_one_percent(database, rows, args.rows_per_subject)
            again = run_child(database, state)
            # A fresh full build stopped after half its evaluation steps, then run again.
            resumed = {"seconds": float("nan"), "evaluated": 0}
            if rows <= args.resume_up_to:
                half = max(1, int(full["evaluated"]) // EVALUATE_CHUNK // 2)
                run_child(database, Path(folder) / "killed", stop_after=half)
                resumed = run_child(database, Path(folder) / "killed")
            print(
                f"{rows:>10,}  {full['seconds']:7.1f}  {full['peak_mb']:7.0f}  {full['evaluated']:>9,}  "
                f"{full['tokens']:>8,}  | {again['seconds']:13.1f}  {again['peak_mb']:7.0f}  {again['evaluated']:>9,}  "
                f"{again['seconds'] / full['seconds']:6.1%}  | {resumed['seconds']:8.1f} "
                f"({resumed['evaluated']:,} left to evaluate)",
                flush=True,
            )


if __name__ == "__main__":
    main()
