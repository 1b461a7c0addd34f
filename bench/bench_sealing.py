"""Sealing throughput: AES-256-GCM as the gateway uses it, next to the raw library figure.

`Sealer.seal` and `Sealer.open` (gateway.sealing) with a request/table/connector context, a
`LocalKeyring` and data keys in SQLite (`SqlDataKeys`), as the gateway would run them: the
data key is unwrapped once and cached, so the figures are the steady state. Beside them,
`AESGCM.encrypt` / `decrypt` from `cryptography` on the same sizes with the same associated
data and a fresh random nonce per call, with the AESGCM object built once: what the
library does before Xiezhi's header, context encoding, key lookup and per-call key set-up.

Payloads of 4 KiB, 64 KiB and 1 MiB; each round seals (or opens) about --megabytes of data
per size. MB/s are 10^6 bytes per second, medians over --rounds rounds.

What the gap is made of: at 4 KiB, a fixed few microseconds per call (the context's JSON,
the clock, building the AESGCM key schedule, the header). At 1 MiB, `seal` must copy the
ciphertext once to put the header in front (`bytes` are immutable and the library returns
its own), and glibc's malloc, which trims the heap each time such a block is freed, makes
every copy fault its pages in afresh. `open` decrypts from a view and copies nothing. Run
with MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=268435456 to see the seal row
without the page faults.

    .venv/bin/python bench/bench_sealing.py [--quick] [--rounds 5] [--megabytes 256]

The table is printed and written to bench/out/sealing.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import OUT
from gateway.db import make_engine
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys, canonical_context
from xiezhi import crypto

SIZES = (4 * 1024, 64 * 1024, 1024 * 1024)
CONTEXT = {"connector": "court", "request": "6f1c3f0e-1b7a-4a57-9a8e-1e0b5c1d2e3f", "table": "results"}
COLUMNS = ("Sealer.seal", "AESGCM.encrypt", "Sealer.open", "AESGCM.decrypt")


def make_sealer(folder: Path) -> Sealer:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    keyring = LocalKeyring.create(folder / "keyring.json", datetime.now(UTC))
    store = SqlDataKeys(make_engine(f"sqlite:///{folder / 'keys.sqlite'}", migrate_empty=True))
    return Sealer(keyring, store, lambda: datetime.now(UTC))


def operations(sealer: Sealer, size: int) -> dict[str, Callable[[], object]]:
    """One call of each measured operation on a `size`-byte payload."""
    payload = os.urandom(size)
    blob = sealer.seal(payload, CONTEXT)
    header = blob[: len(blob) - crypto.GCM_NONCE_BYTES - size - 16]
    aad = header + canonical_context(CONTEXT)
    aesgcm = AESGCM(crypto.random_key())
    nonce = os.urandom(crypto.GCM_NONCE_BYTES)
    sealed = aesgcm.encrypt(nonce, payload, aad)
    assert sealer.open(blob, CONTEXT) == payload and aesgcm.decrypt(nonce, sealed, aad) == payload
    return {
        "Sealer.seal": lambda: sealer.seal(payload, CONTEXT),
        "AESGCM.encrypt": lambda: aesgcm.encrypt(os.urandom(crypto.GCM_NONCE_BYTES), payload, aad),
        "Sealer.open": lambda: sealer.open(blob, CONTEXT),
        "AESGCM.decrypt": lambda: aesgcm.decrypt(nonce, sealed, aad),
    }


def megabytes_per_second(run: Callable[[], object], size: int, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return calls * size / (time.perf_counter() - started) / 1e6


def measure(sealer: Sealer, size: int, megabytes: int, rounds: int) -> dict[str, list[float]]:
    """Per operation, the MB/s of each round; operations interleave within a round."""
    runs = operations(sealer, size)
    calls = max(1, megabytes * 1_000_000 // size)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(megabytes_per_second(run, size, calls))
    return rates


def table(results: dict[int, dict[str, list[float]]]) -> list[str]:
    head = f"{'payload':>8}" + "".join(f"{name:>16}" for name in COLUMNS) + f"{'seal/raw':>10}{'open/raw':>10}"
    lines = [head + "   (MB/s, medians)"]
    for size, rates in results.items():
        medians = {name: statistics.median(rates[name]) for name in COLUMNS}
        cells = "".join(f"{medians[name]:>16,.0f}" for name in COLUMNS)
        seal_ratio = medians["Sealer.seal"] / medians["AESGCM.encrypt"]
        open_ratio = medians["Sealer.open"] / medians["AESGCM.decrypt"]
        lines.append(f"{_size(size):>8}{cells}{seal_ratio:>10.0%}{open_ratio:>10.0%}")
    lines.append("")
    for size, rates in results.items():
        for name in COLUMNS:
            lines.append(f"{_size(size):>8} {name:<15} rounds: {', '.join(f'{x:,.0f}' for x in rates[name])}")
    return lines


def _size(size: int) -> str:
    return f"{size // 1024 // 1024} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="less data, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=256, help="data sealed per size and round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.megabytes = 1, 32
    sealer = make_sealer(OUT / "sealing")
    results = {size: measure(sealer, size, args.megabytes, args.rounds) for size in SIZES}
    lines = [
        f"sealing benchmark on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one thread",
        f"{args.megabytes} MB per size and round, {args.rounds} round{'s' if args.rounds > 1 else ''}",
        *table(results),
    ]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sealing.txt").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
