"""Waiting for something another thread or process brings about, bounded so a stuck test ends.

The bound is generous on purpose: it ends a test that would otherwise hang and says what
never happened; it is no speed check (a loaded machine can be many times slower than an
idle one, and speed is measured in bench/). Prefer an event to polling where the code
under test offers one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_SECONDS = 120.0


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    seconds: float = WAIT_SECONDS,
    pause: Callable[[float], object] = time.sleep,
) -> None:
    """Return once `condition()` is true; raise AssertionError naming `what` after `seconds`.

    `pause(seconds)` waits between checks: time.sleep, or a driver's own wait that keeps
    delivering its events (Playwright's page.wait_for_timeout takes milliseconds: wrap it)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {seconds:.0f} s")
        pause(0.1)
