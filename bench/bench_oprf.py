"""Benchmark the RFC 9497 OPRF against libsodium's raw ristretto255 scalar multiplication.

Every figure is the median of several runs, printed per second and as a share of the raw
multiplication rate: one multiplication is the floor of every OPRF operation, so the share
says how much the protocol (hash-to-group, proofs, Python) costs on top of it.

    .venv/bin/python bench/bench_oprf.py [--runs 5] [--batch 1000]

The default run takes well under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from rich.console import Console
from rich.table import Table

from xiezhi import oprf
from xiezhi.oprf import Mode


def _inputs(count: int) -> list[bytes]:
    # ID-number-sized inputs; their content does not change the cost.
    return [os.urandom(18) for _ in range(count)]


def _median_rate(run: Callable[[], float], items: int, runs: int) -> float:
    """Items per second, the median over `runs` calls of `run` (which returns seconds)."""
    return statistics.median(items / run() for _ in range(runs))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_scalarmult_rate(count: int, runs: int) -> tuple[float, str]:
    """crypto_scalarmult_ristretto255 through ctypes, one preallocated buffer: the baseline."""
    lib = ctypes.CDLL(ctypes.util.find_library("sodium"))
    if lib.sodium_init() < 0:
        raise RuntimeError("libsodium failed to initialise")
    lib.sodium_version_string.restype = ctypes.c_char_p
    mult = lib.crypto_scalarmult_ristretto255
    mult.argtypes = (ctypes.c_char_p,) * 3
    mult.restype = ctypes.c_int
    k, point, out = (ctypes.create_string_buffer(32) for _ in range(3))
    lib.crypto_core_ristretto255_scalar_random(k)
    lib.crypto_scalarmult_ristretto255_base(point, k)

    def run() -> float:
        return _timed(lambda: [mult(out, k, point) for _ in range(count)])

    return _median_rate(run, count, runs), lib.sodium_version_string().decode()


def evaluate_rates(sk: bytes, count: int, runs: int) -> tuple[float, float]:
    """Server-side unblinded Evaluate, one call per input and as one batch."""
    inputs = _inputs(count)
    single = _median_rate(lambda: _timed(lambda: [oprf.evaluate(sk, x, Mode.OPRF) for x in inputs]), count, runs)
    batch = _median_rate(lambda: _timed(lambda: oprf.evaluate_batch(sk, inputs, Mode.OPRF)), count, runs)
    return single, batch


def blind_evaluate_rate(sk: bytes, mode: Mode, batch: int, runs: int) -> float:
    """BlindEvaluate per element, over one batch (VOPRF: including the batched proof)."""
    elements = [b.blinded_element for b in oprf.blind(_inputs(batch), mode)]
    return _median_rate(lambda: _timed(lambda: oprf.blind_evaluate(sk, elements, mode)), batch, runs)


def client_rate(keys: oprf.KeyPair, batch: int, runs: int) -> float:
    """VOPRF client per element: Blind, then Finalize with proof verification (the server's
    BlindEvaluate in between is not timed)."""
    inputs = _inputs(batch)

    def run() -> float:
        start = time.perf_counter()
        blinded = oprf.blind(inputs, Mode.VOPRF)
        blinding = time.perf_counter() - start
        elements = [b.blinded_element for b in blinded]
        answer = oprf.blind_evaluate(keys.sk, elements, Mode.VOPRF)
        blinds = [b.blind for b in blinded]
        return blinding + _timed(
            lambda: oprf.finalize(
                inputs,
                blinds,
                answer.evaluated_elements,
                elements,
                answer.proof,
                keys.pk,
                Mode.VOPRF,
            )
        )

    return _median_rate(run, batch, runs)


def _evaluate_chunk(sk: bytes, chunk: list[bytes]) -> list[bytes]:
    return oprf.evaluate_batch(sk, chunk, Mode.OPRF)


def multicore_rate(sk: bytes, workers: int, chunk: int, runs: int) -> float:
    """evaluate_batch across a process pool, four chunks per worker per run."""
    chunks = [_inputs(chunk) for _ in range(4 * workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_evaluate_chunk, [sk] * workers, [c[:10] for c in chunks[:workers]]))

        def run() -> float:
            return _timed(lambda: list(pool.map(_evaluate_chunk, [sk] * len(chunks), chunks)))

        return _median_rate(run, chunk * len(chunks), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--batch", type=int, default=1000, help="elements per batch")
    args = parser.parse_args()
    runs, batch, workers = args.runs, args.batch, os.cpu_count() or 1
    keys = oprf.generate_key_pair(Mode.VOPRF)

    raw, version = raw_scalarmult_rate(4 * batch, runs)
    single, batched = evaluate_rates(keys.sk, 2 * batch, runs)
    rows = [
        ("raw crypto_scalarmult_ristretto255", raw),
        ("evaluate, one call per input", single),
        (f"evaluate_batch of {2 * batch}", batched),
        ("blind_evaluate, OPRF", blind_evaluate_rate(keys.sk, Mode.OPRF, batch, runs)),
        ("blind_evaluate, VOPRF + proof", blind_evaluate_rate(keys.sk, Mode.VOPRF, batch, runs)),
        ("client blind + finalize + verify", client_rate(keys, batch, runs)),
        (f"evaluate_batch on {workers} processes", multicore_rate(keys.sk, workers, batch, runs)),
    ]
    table = Table(
        title=f"ristretto255-SHA512 OPRF: median of {runs} runs, batches of {batch}",
        caption="per element; one core unless stated; % of one core's raw multiplication rate",
    )
    for column in ("operation", "per second", "µs each", "% of raw"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for name, rate in rows:
        table.add_row(name, f"{rate:,.0f}", f"{1e6 / rate:.1f}", f"{100 * rate / raw:.0f}%")
    console = Console()
    console.print(
        f"libsodium {version}, Python {platform.python_version()}, "
        f"{platform.machine()}, {workers} CPU(s) reported by os.cpu_count()"
    )
    console.print(table)


if __name__ == "__main__":
    main()
