"""Shared set-up for the benchmarks: generated data sets, cached under bench/out/."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from devkit.demo.generate import generate

OUT = Path(__file__).resolve().parent / "out"


def dataset(debtors: int, seed: int = 2026) -> Path:
    """A generated data set with `debtors` 终本 debtors, made once and reused."""
    root = OUT / f"data-{debtors}-{seed}"
    marker = root / ".complete"
    if not marker.exists():
        generate(root, seed=seed, debtors=debtors)
        marker.touch()
    return root


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times
