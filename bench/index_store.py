"""The gateway's token store on PostgreSQL: lookups against publications of growing size, and
the time to drop one.

For each size a publication is opened through the gateway (`indexes.start`: its partition, its
lookup key), then its digests are loaded in bulk, straight into its partition. The fill
bypasses the API on purpose: publishing through it costs about 85 µs per token (hours at
100 million), and it is the stored table, not the upload, that the lookups measure. The
digests are what the API would store: `PRESENT` real tokens digested under the publication's
key (the tokens the lookups then find), the rest uniform random 16-byte values, which is what
HMAC-SHA256 digests of unknown tokens look like. The partition is loaded without its key,
keyed afterwards, attached and vacuumed (`--help` for sizes).

Lookups call `indexes.present` as the pipeline does: batches of `--batch` tokens, half held
and half not, each in its own session; per batch latency p50/p99 over `--batches` batches
after a warm-up, median of `--runs` runs. Dropping times `indexes.drop_publication` (its
partition dropped) against deleting the same rows from a plain table keyed as before
revision 0005.

Runs a private PostgreSQL server (tests/postgres.py) under a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.environment import REPO_ROOT
from gateway import indexes
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer, load_policy_dir, permit
from gateway.db import Publication, make_engine
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys
from gateway.vault import Vault
from tests.postgres import postgres_server
from xiezhi.wire import CapabilityDescriptor, StartPublication

AT = datetime(2026, 12, 2, tzinfo=UTC)
PRESENT = 200_000
PROSECUTOR = Principal("prosecutor-330803-01", "330803", frozenset({"prosecutor"}), clearance=3)
SERVER_SETTINGS = (
    "maintenance_work_mem=1GB",
    "max_wal_size=16GB",
    "work_mem=64MB",
    "wal_level=minimal",
    "max_wal_senders=0",
    "max_parallel_maintenance_workers=1",
)


def open_publication(engine: Engine, vault: Vault, count: int, number: int) -> Publication:
    capability = CapabilityDescriptor(id=f"court.bench_{number}", title="bench", tier=1)
    body = StartPublication(epoch=1, public_key=b"\x02" * 32, capability=capability, token_count=count, digest="0" * 64)
    with Session(engine) as session:
        publication = indexes.start(session, vault, "court", body, AT)
        session.commit()
        session.refresh(publication)
        session.expunge(publication)
        return publication


def fill(engine: Engine, vault: Vault, publication: Publication, count: int) -> list[bytes]:
    """Load `count` digests into the publication's partition; returns the tokens it holds."""
    held = [secrets.token_bytes(16) for _ in range(min(PRESENT, count))]
    digests = vault.digests(publication, held)
    with engine.begin() as connection:
        name = connection.execute(text("SELECT 'index_partitions.d_' || md5(:p)"), {"p": publication.id}).scalar_one()
        connection.execute(text(f"ALTER TABLE index_digests DETACH PARTITION {name}"))
        connection.execute(text(f"DROP TABLE {name}"))  # made again unindexed, in this transaction: no WAL
        connection.execute(text(f"CREATE TABLE {name} (LIKE index_digests INCLUDING DEFAULTS)"))
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.cursor() as cursor, cursor.copy(f"COPY {name} (publication_id, digest) FROM STDIN") as copy:
            for digest in digests:
                copy.write_row((publication.id, digest))
        filler = f"""INSERT INTO {name} (publication_id, digest)
                     SELECT :p, decode(md5(:salt || i::text), 'hex') FROM generate_series(1, :n) AS i"""
        connection.execute(text(filler), {"p": publication.id, "salt": secrets.token_hex(8), "n": count - len(held)})
        connection.execute(text(f"ALTER TABLE {name} ADD PRIMARY KEY (digest, since) INCLUDE (until)"))
        attach = "SELECT format('ALTER TABLE index_digests ATTACH PARTITION %s FOR VALUES IN (%L)', CAST(:n AS text), "
        attach += "CAST(:p AS text))"  # psycopg sends strings untyped; format() needs their type
        connection.execute(text(connection.execute(text(attach), {"n": name, "p": publication.id}).scalar_one()))
        connection.execute(
            text(f"UPDATE publications SET committed = true, received = {count} WHERE id = :p"), {"p": publication.id}
        )
    # As autovacuum does after many inserts (PostgreSQL 13 on): the visibility map it sets is
    # what lets a lookup read the key alone.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM (ANALYZE) {name}"))
    return held


def lookup_batches(
    engine: Engine,
    vault: Vault,
    grant: AuthorizedRequest,
    publication_id: str,
    held: list[bytes],
    batch: int,
    batches: int,
) -> list[float]:
    """Seconds per batch of `batch` tokens, half held, half not."""
    seconds = []
    for _ in range(batches):
        tokens = [
            *secrets.SystemRandom().sample(held, batch // 2),
            *(secrets.token_bytes(16) for _ in range(batch // 2)),
        ]
        started = time.perf_counter()
        with Session(engine) as session:
            found = indexes.present(session, vault, grant, publication_id, 1, tokens)
        seconds.append(time.perf_counter() - started)
        assert len(found) == batch // 2
    return seconds


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drop_times(engine: Engine, vault: Vault, publication_id: str, plain: bool) -> tuple[float, float | None]:
    """Seconds to drop the publication (its partition) and, with `plain`, to delete as many rows
    from a plain table keyed as `index_digests` was before revision 0005."""
    deleted = None
    if plain:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE plain_digests (LIKE index_digests INCLUDING DEFAULTS)"))
            connection.execute(
                text("INSERT INTO plain_digests SELECT * FROM index_digests WHERE publication_id = :p"),
                {"p": publication_id},
            )
            connection.execute(text("ALTER TABLE plain_digests ADD PRIMARY KEY (publication_id, digest, since)"))
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM plain_digests WHERE publication_id = :p"), {"p": publication_id})
        deleted = time.perf_counter() - started
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE plain_digests"))
    started = time.perf_counter()
    with Session(engine) as session:
        publication = session.get(Publication, publication_id)
        assert publication is not None
        indexes.drop_publication(session, vault, publication)
        session.commit()
    return time.perf_counter() - started, deleted


def prewarm(engine: Engine, filled: list[Filled]) -> None:
    """Read each partition's key into shared buffers, as a server serving it for a while holds it."""
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        for one in filled:
            key = "index_partitions.d_" + hashlib.md5(one.publication_id.encode()).hexdigest() + "_pkey"
            connection.execute(text("SELECT pg_prewarm(CAST(:key AS regclass))"), {"key": key})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="tokens per publication, comma-separated")
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--plain-delete-up-to", type=int, default=10_000_000, help="compare with a row delete for sizes up to this"
    )
    parser.add_argument("--shared-buffers", default="2GB", help="the server's shared_buffers")
    parser.add_argument(
        "--prewarm", action="store_true", help="load each partition's key into shared buffers first (pg_prewarm)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = (*SERVER_SETTINGS, f"shared_buffers={args.shared_buffers}")
    with TemporaryDirectory() as folder, postgres_server(settings=settings) as url:
        engine = make_engine(url, migrate_empty=True)
        LocalKeyring.create(Path(folder) / "keyring.json", AT)
        vault = Vault(Sealer(LocalKeyring(Path(folder) / "keyring.json"), SqlDataKeys(engine), lambda: AT))
        authorizer = Authorizer(load_policy_dir(REPO_ROOT / "policies"))
        grant = permit(PROSECUTOR, "r-bench", "run", authorizer.decide(PROSECUTOR, "model:asset_sweep", "run"))
        filled = [Filled.made(engine, vault, size, number) for number, size in enumerate(sizes)]
        if args.prewarm:
            prewarm(engine, filled)
        # Runs interleave the sizes: the machine's other load then falls on every size alike.
        for run in range(args.runs):
            for one in filled:
                lookup_batches(engine, vault, grant, one.publication_id, one.held, args.batch, 20)  # warm-up
                one.runs.append(
                    lookup_batches(engine, vault, grant, one.publication_id, one.held, args.batch, args.batches)
                )
                print(f"run {run + 1}, {one.size:,} tokens: p50 {quantile(one.runs[-1], 0.5) * 1e3:.1f} ms", flush=True)
        rows = [
            one.summary(args.batch, *drop_times(engine, vault, one.publication_id, one.size <= args.plain_delete_up_to))
            for one in filled
        ]
        engine.dispose()
    report(rows, args)


@dataclass
class Filled:
    """One filled publication: its size, the tokens it holds, and its lookup runs."""

    size: int
    publication_id: str
    held: list[bytes]
    seconds: float
    stored: int
    runs: list[list[float]] = field(default_factory=list)

    @classmethod
    def made(cls, engine: Engine, vault: Vault, size: int, number: int) -> Filled:
        started = time.perf_counter()
        publication = open_publication(engine, vault, size, number)
        held = fill(engine, vault, publication, size)
        seconds = time.perf_counter() - started
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT pg_total_relation_size('index_partitions.d_' || md5(:p))"), {"p": publication.id}
            ).scalar_one()
        print(f"{size:,} tokens filled in {seconds:.0f} s, {stored / 2**30:.2f} GiB", flush=True)
        return cls(size, publication.id, held, seconds, int(stored))

    def summary(self, batch: int, dropped: float, deleted: float | None) -> dict[str, float]:
        return {
            "size": self.size,
            "filled": self.seconds,
            "stored": self.stored,
            "p50": statistics.median(quantile(r, 0.5) for r in self.runs),
            "p99": statistics.median(quantile(r, 0.99) for r in self.runs),
            "rate": statistics.median(batch * len(r) / sum(r) for r in self.runs),
            "dropped": dropped,
            "deleted": -1.0 if deleted is None else deleted,
        }


def report(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    first = rows[0]
    table = Table(
        title=f"indexes.present on PostgreSQL, batches of {args.batch:,} (half held), "
        f"{args.batches} batches, median of {args.runs} runs"
    )
    for column in (
        "tokens",
        "fill s",
        "stored GiB",
        "p50 ms",
        "p99 ms",
        "tokens/s",
        f"p50 ÷ {first['size']:,.0f}",
        "drop (partition) s",
        "row delete s",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            f"{row['size']:,.0f}",
            f"{row['filled']:.0f}",
            f"{row['stored'] / 2**30:.2f}",
            f"{row['p50'] * 1e3:.1f}",
            f"{row['p99'] * 1e3:.1f}",
            f"{row['rate']:,.0f}",
            f"{row['p50'] / first['p50']:.2f}×",
            f"{row['dropped']:.3f}",
            "–" if row["deleted"] < 0 else f"{row['deleted']:.2f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
