"""Pausing the cyclic garbage collector over a sweep's acyclic allocation bursts."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_PAUSE_MAX = 3.0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector over a burst of acyclic allocations.

    A sweep allocates a few objects per target (states, replies, results),
    none in a reference cycle; reference counting frees them as usual. Left
    running, the collector would traverse the growing heap again and again
    (measured: 10-15% of a 10,000-target sweep). multiping() pauses it for
    a whole sweep planned to last at most GC_PAUSE_MAX seconds, otherwise
    (and in multiping_iter, whose consumer runs between results) only over
    synchronous bursts, so other greenlets' cyclic garbage is never held
    back for long.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
