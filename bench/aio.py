"""Benchmark: gprocket.aio beside the gevent front and icmplib, side by side.

1. One echo each to N local targets (127.0.0.0/8, default 10,000):
   ``aio.multiping`` against ``gprocket.icmp.multiping`` (the same compiled
   engine, awaited instead of run on the hub) and icmplib's
   ``async_multiping`` (at the best of a few concurrencies).
2. ``aio.open_fd`` through the broker against ``gprocket.open_fd`` through
   the gevent broker: a UDP port bound and closed, one at a time.

Everything runs as root inside a network namespace this script creates
(ping sockets allowed there; the packaged helper serves as the broker).
Runs take turns round after round; each figure is a median. Prints the
ratios with issue 16's targets: aio within 1.25x of gevent, >= 8x faster
than icmplib. With ``--hog N`` every round is run quiet and with N busy
processes running (bench/_hog.py: paused for the quiet runs, resumed for
the loaded ones), and the loaded figures are printed after the quiet ones.

    /opt/gprocket/venv/bin/python bench/aio.py [--targets N] [--opens N] [--rounds N] [--hog N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# The inner run takes -P (the installed package, not the checkout), which
# also leaves this directory off sys.path; it holds no gprocket.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _hog
import _netns

ICMPLIB_CONCURRENCY = (500, 2000)


def targets(n: int) -> list[str]:
    return [f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, n + 1)]


def rounds_of(runs: dict[str, Callable[[], tuple[float, int]]], rounds: int,
              hogs: _hog.Hogs | None = None) -> dict[str, dict[str, list[float]]]:
    """Per phase (quiet, and loaded with ``hogs``), the median seconds of each
    run and the fewest alive it saw, taking turns (the phases' order swapped
    each round).

    Each run times itself: an asyncio one inside its running loop, so that
    starting and closing a loop (asyncio.run) is not counted.
    """
    phases = hogs.phases if hogs is not None else (_hog.QUIET,)
    times: dict[str, dict[str, list[float]]] = {p: {name: [] for name in runs} for p in phases}
    alive: dict[str, dict[str, list[int]]] = {p: {name: [] for name in runs} for p in phases}
    for index in range(rounds):
        for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
            if hogs is not None:
                hogs.phase(phase)
            for name, run in runs.items():
                took, found = run()
                times[phase][name].append(took)
                alive[phase][name].append(found)
    if hogs is not None:
        hogs.pause()
    return {phase: {name: [statistics.median(times[phase][name]), min(alive[phase][name])]
                    for name in runs} for phase in phases}


def gevent_multiping(addrs: list[str]) -> tuple[float, int]:
    from gprocket import icmp
    start = time.perf_counter()
    alive = sum(h.is_alive for h in icmp.multiping(addrs, timeout=2))
    return time.perf_counter() - start, alive


def aio_multiping(addrs: list[str]) -> tuple[float, int]:
    from gprocket import aio

    async def main() -> tuple[float, int]:
        start = time.perf_counter()
        alive = sum(h.is_alive for h in await aio.multiping(addrs, timeout=2))
        return time.perf_counter() - start, alive

    return asyncio.run(main())


def icmplib_multiping(addrs: list[str], concurrency: int) -> tuple[float, int]:
    import icmplib

    async def main() -> tuple[float, int]:
        start = time.perf_counter()
        hosts = await icmplib.async_multiping(addrs, count=1, interval=0, timeout=2,
                                              concurrent_tasks=concurrency,
                                              privileged=False)
        return time.perf_counter() - start, sum(h.is_alive for h in hosts)

    return asyncio.run(main())


def gevent_opens(helper: str, count: int) -> tuple[float, int]:
    import gprocket
    start = time.perf_counter()
    for _ in range(count):
        os.close(gprocket.open_fd(5353, protocol="udp", ip="127.0.0.1",
                                  strategies="broker", helper=helper))
    return time.perf_counter() - start, count


_LOOP: asyncio.AbstractEventLoop | None = None
# Not gevent_opens' port: each front has its own broker, and a broker closes
# its copy of a descriptor just after sending it, so the other broker's bind
# of the same port right after a switch of fronts could meet EADDRINUSE.
AIO_PORT = 5354


def aio_opens(helper: str, count: int) -> tuple[float, int]:
    """On one loop kept across rounds: its broker stays up, as the gevent one does."""
    global _LOOP  # noqa: PLW0603 - one loop for the whole run
    from gprocket import aio
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()

    async def main() -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(count):
            os.close(await aio.open_fd(AIO_PORT, protocol="udp", ip="127.0.0.1",
                                       strategies="broker", helper=helper))
        return time.perf_counter() - start, count

    return _LOOP.run_until_complete(main())


def inside(n: int, opens: int, rounds: int, hog: int) -> None:
    import gprocket
    from gprocket.icmp import _fast
    if _fast._speed is None:
        print("note: gprocket.icmp._speed is not built: both fronts use the Python engine",
              file=sys.stderr)
    helper = str(Path(gprocket.__file__).parent / "_bin" / "gprocket-helper")
    addrs = targets(n)
    # icmplib at its best (quiet): each concurrency once, the fastest in the rounds.
    tried = {c: rounds_of({"x": partial(icmplib_multiping, addrs, c)}, 1)[_hog.QUIET]["x"][0]
             for c in ICMPLIB_CONCURRENCY}
    best = min(tried, key=lambda c: tried[c])
    with _hog.Hogs(hog) as hogs:
        ping = rounds_of({"aio": partial(aio_multiping, addrs),
                          "gevent": partial(gevent_multiping, addrs),
                          "icmplib": partial(icmplib_multiping, addrs, best)}, rounds, hogs)
        gevent_opens(helper, 50)  # both brokers started, caches warm
        aio_opens(helper, 50)
        acquire = rounds_of({"aio": partial(aio_opens, helper, opens),
                             "gevent": partial(gevent_opens, helper, opens)}, rounds, hogs)
    print(json.dumps({"n": n, "opens": opens, "rounds": rounds, "icmplib_best": best,
                      "ping": ping, "open": acquire}))


def report(got: dict[str, object], hog: int) -> None:
    pings = got["ping"]
    acquires = got["open"]
    assert isinstance(pings, dict) and isinstance(acquires, dict)
    for phase in pings:
        load = "quiet" if phase == _hog.QUIET else f"with {hog} hog{'s' if hog > 1 else ''}"
        print(f"[{load}]")
        report_phase(got, pings[phase], acquires[phase])


def report_phase(got: dict[str, object], ping: dict[str, list[float]],
                 acquire: dict[str, list[float]]) -> None:
    aio_t, gev_t, lib_t = (ping[k][0] for k in ("aio", "gevent", "icmplib"))
    alive = "/".join(str(ping[k][1]) for k in ("aio", "gevent", "icmplib"))
    print(f"multiping, {got['n']} targets (median of {got['rounds']} rounds, alive "
          f"aio/gevent/icmplib {alive}, icmplib at concurrency {got['icmplib_best']})")
    print(f"  aio.multiping          {aio_t * 1000:9.1f} ms")
    print(f"  gprocket.icmp (gevent) {gev_t * 1000:9.1f} ms   aio/gevent  "
          f"{aio_t / gev_t:5.2f}x (target <= 1.25)")
    print(f"  icmplib async_multiping{lib_t * 1000:9.1f} ms   icmplib/aio "
          f"{lib_t / aio_t:5.1f}x (target >= 8)")
    opens = int(str(got["opens"]))
    aio_o, gev_o = (acquire[k][0] / opens * 1e6 for k in ("aio", "gevent"))
    print(f"open through the broker, {opens} sequential UDP binds per round")
    print(f"  aio.open_fd            {aio_o:9.1f} us each")
    print(f"  gprocket.open_fd       {gev_o:9.1f} us each   aio/gevent  "
          f"{aio_o / gev_o:5.2f}x (target <= 1.25)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--opens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    _hog.add_argument(parser)
    args = parser.parse_args()
    if args.inside:
        inside(args.targets, args.opens, args.rounds, args.hog)
        return 0
    if os.geteuid() != 0:
        print("bench/aio.py needs root to create its network namespace", file=sys.stderr)
        return 2
    got = _netns.run_inside("gpa-bench", [
        ["ip", "link", "set", "lo", "up"],
        ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
    ], [sys.executable, "-P", __file__, "--inside", "--targets", str(args.targets),
        "--opens", str(args.opens), "--rounds", str(args.rounds), "--hog", str(args.hog)])
    if got is None:
        return 1
    report(got, args.hog)
    return 0

if __name__ == "__main__":
    sys.exit(main())
