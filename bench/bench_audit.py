"""Audit log throughput: durable appends per second, and entries verified per second.

Appends (SQLite file, WAL, synchronous=FULL as the gateway runs it) through `AuditWriter`,
whose thread commits whatever queued during the previous commit as one transaction (group
commit), each event durable before its caller hears back:
- pipelined: 4 producer threads each keep --threads events in flight (`submit`) and wait for
  each one's durability in order, as a server with many requests in flight would;
- blocking: --threads caller threads each append one event and wait (`append`), as the
  gateway's request threads do. Each wake-up of a blocked thread costs a CPython hand-off of
  the interpreter lock, so this row measures the threads as much as the log.
The named alternative is one transaction per event, what a log does without batching
(`AuditLog.append_many([event])` per event). Events are shaped like the gateway's relay
entries (~370 bytes of canonical JSON). Checkpoints are signed every 256 entries, as by
default.

Verification: a log of --entries entries (checkpoints every 256), verified from its export
folder and from the database, on one process and on --workers processes
(`audit_log.verify.verify`, what `xiezhi audit verify` runs).

Figures are medians over --rounds rounds.

    .venv/bin/python bench/bench_audit.py [--quick] [--rounds 3] [--entries 1000000]

The table is printed and written to bench/out/audit.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit_log import AuditEvent, AuditLog, AuditWriter, CheckpointSigner, EventKind
from audit_log.export import DatabaseSource, write_export
from audit_log.note import generate_signer
from audit_log.store import append_events
from audit_log.verify import ExportSource, verify
from bench.common import OUT
from gateway.db import make_engine

AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
SIGNER = generate_signer("bench.xiezhi/audit")


def event(n: int) -> AuditEvent:
    return AuditEvent(
        kind=EventKind.RELAY,
        at=AT + timedelta(milliseconds=n),
        actor="prosecutor-330803-01",
        org="330803",
        request_id="6f1c3f0e-1b7a-4a57-9a8e-1e0b5c1d2e3f",
        action="evaluate",
        outcome="ok",
        model="asset_sweep",
        connector="court",
        purpose="（2025）浙0803执监15号",
        detail={"count": 5000, "epoch": 1},
    )


def fresh_log(folder: Path) -> AuditLog:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return AuditLog(make_engine(f"sqlite:///{folder / 'gateway.sqlite'}", migrate_empty=True))


def _writer(log: AuditLog) -> AuditWriter:
    return AuditWriter(log, CheckpointSigner(log, SIGNER, lambda: AT), every_entries=256, every_seconds=10.0)


Caller = Callable[[AuditWriter, list[AuditEvent]], None]


def _run_callers(folder: Path, total: int, threads: int, call: Caller) -> float:
    """Appends per second when `threads` threads each run `call` on their share of `total` events."""
    log = fresh_log(folder)
    writer = _writer(log)
    events = [event(n) for n in range(total)]
    share = total // threads
    shares = [events[i * share : (i + 1) * share] for i in range(threads)]
    workers = [threading.Thread(target=call, args=(writer, part)) for part in shares]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    writer.close()
    assert log.size() == share * threads
    log.engine.dispose()
    return share * threads / elapsed


def blocking_appends(folder: Path, total: int, threads: int) -> float:
    """Each caller thread appends one event at a time and waits until it is durable (`append`)."""

    def call(writer: AuditWriter, events: list[AuditEvent]) -> None:
        for e in events:
            writer.append(e)

    return _run_callers(folder, total, threads, call)


def pipelined_appends(folder: Path, total: int, producers: int, window: int) -> float:
    """Each producer keeps up to `window` events in flight (`submit`) and waits for each one's
    durability in order: the log's own rate, without one thread hand-off per event."""

    def call(writer: AuditWriter, events: list[AuditEvent]) -> None:
        in_flight: deque[Future[int]] = deque()
        for e in events:
            if len(in_flight) == window:
                in_flight.popleft().result()
            in_flight.append(writer.submit(e))
        for future in in_flight:
            future.result()

    return _run_callers(folder, total, producers, call)


def one_transaction_each(folder: Path, total: int) -> float:
    log = fresh_log(folder)
    events = [event(n) for n in range(total)]
    started = time.perf_counter()
    for e in events:
        log.append_many([e])
    elapsed = time.perf_counter() - started
    log.engine.dispose()
    return total / elapsed


def build_log(folder: Path, entries: int) -> AuditLog:
    log = fresh_log(folder)
    signer = CheckpointSigner(log, SIGNER, lambda: AT)
    block = [event(n) for n in range(256)]
    for _ in range(entries // 256):
        with log.engine.begin() as connection:
            append_events(connection, block)
        signer.issue()
    write_export(log, folder / "export")
    return log


def verified_per_second(log: AuditLog, folder: Path, source: str, workers: int) -> float:
    src = ExportSource(folder / "export") if source == "export" else DatabaseSource(log)
    started = time.perf_counter()
    report = verify(src, SIGNER.verifier(), workers=workers)
    elapsed = time.perf_counter() - started
    assert report.ok, report.problems
    return report.entries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.entries, args.appends = 1, 100_000, 20_000
    folder = OUT / "audit"
    lines = [f"audit log benchmark on {platform.processor() or platform.machine()}, {os.cpu_count()} cores"]

    pipelined = [pipelined_appends(folder / "appends", args.appends, 4, args.threads) for _ in range(args.rounds)]
    blocking = [blocking_appends(folder / "appends", args.appends, args.threads) for _ in range(args.rounds)]
    single = [one_transaction_each(folder / "single", max(500, args.appends // 50)) for _ in range(args.rounds)]
    for label, rates in (
        (f"appends, durable, batched (4 x {args.threads} in flight)", pipelined),
        (f"appends, durable, batched ({args.threads} blocking callers)", blocking),
        ("appends, one transaction each", single),
    ):
        lines.append(f"{label:<49}: {statistics.median(rates):>10,.0f} /s  (rounds: {_rounds(rates)})")

    log = build_log(folder / "verify", args.entries)
    for source in ("export", "database"):
        for workers in (1, args.workers):
            rates = [verified_per_second(log, folder / "verify", source, workers) for _ in range(args.rounds)]
            label = f"verified from {source} with {workers} process{'es' if workers > 1 else ''}"
            lines.append(f"{label:<49}: {statistics.median(rates):>10,.0f} entries/s  (rounds: {_rounds(rates)})")
    log.engine.dispose()
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "audit.txt").write_text(text + "\n", encoding="utf-8")


def _rounds(rates: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in rates)


if __name__ == "__main__":
    main()
