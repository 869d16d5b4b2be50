"""Benchmark: one echo each to 1,000 and 10,000 local targets, IPv4 and IPv6.

Compares gprocket.icmp.multiping (compiled engine on datagram and raw
sockets, and the pure-Python fallback engine) with `fping -i 0` and
icmplib's multiping (at the best of a few concurrencies), and with a floor
(a bare sendto/recv loop that times and checks nothing), all inside a
network namespace this script creates (127.0.0.0/8 and a local
2001:db8::/64 answer echo). Prints the median of REPEAT interleaved runs of
each, the targets found alive, and the ratios. With ``--hog N`` every run is
also made with N busy processes running (bench/_hog.py: paused for the quiet
runs, resumed for the loaded ones, interleaved; killed at the end), and each
row's loaded figures are printed under its quiet ones.

    /opt/gprocket/venv/bin/python bench/ping.py [--hog 1]

Needs root (it makes the namespace; inside it everything runs as root).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial

import _hog
import _netns

REPEAT = 9
ICMPLIB_REPEAT = 3
SIZES = (1000, 10000)
ICMPLIB_CONCURRENCY = (100, 500, 2000)


def targets(family: int, n: int) -> list[str]:
    if family == 4:
        return [str(ipaddress.IPv4Address("127.0.0.0") + i) for i in range(1, n + 1)]
    return [str(ipaddress.IPv6Address("2001:db8::") + i) for i in range(1, n + 1)]


def timed(run: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    alive = run()
    return time.perf_counter() - start, alive


def interleaved(runs: dict[str, Callable[[], int]], repeat: int = REPEAT,
                hogs: _hog.Hogs | None = None) -> dict[str, dict[str, tuple[float, int]]]:
    """Per phase (quiet, and loaded with ``hogs``), the median wall time of
    each run and the smallest alive count it saw.

    The runs take turns, round after round (and phase after phase, the order
    swapped each round), so that a slow spell of a shared machine hits them
    all alike instead of one.
    """
    phases = hogs.phases if hogs is not None else (_hog.QUIET,)
    times: dict[str, dict[str, list[float]]] = {p: {name: [] for name in runs} for p in phases}
    alive: dict[str, dict[str, list[int]]] = {p: {name: [] for name in runs} for p in phases}
    for index in range(repeat):
        for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
            if hogs is not None:
                hogs.phase(phase)
            for name, run in runs.items():
                took, found = timed(run)
                times[phase][name].append(took)
                alive[phase][name].append(found)
    if hogs is not None:
        hogs.pause()
    return {phase: {name: (statistics.median(times[phase][name]), min(alive[phase][name]))
                    for name in runs} for phase in phases}


def run_gprocket(addrs: list[str], kind: str, engine: str) -> int:
    from gprocket import icmp
    os.environ["GPROCKET_ICMP_ENGINE"] = engine
    try:
        hosts = icmp.multiping(addrs, timeout=2, socket_kind=kind)  # type: ignore[arg-type]
    finally:
        del os.environ["GPROCKET_ICMP_ENGINE"]
    return sum(h.is_alive for h in hosts)


def run_floor(addrs: list[str], family: int) -> int:
    """Anchor: a bare sendto/recv loop on an ICMP datagram socket, one echo per
    target (windows of 256 in flight, replies drained between them), with no
    clock read, no payload check and no result: the kernel's cost per echo
    plus about a microsecond of Python per packet. No engine that also times
    and matches every reply can beat it by much."""
    import socket
    if family == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        request = b"\x08\x00\x00\x00\x00\x01\x00\x01" + bytes(56)
        targets_ = [(addr, 0) for addr in addrs]
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        request = b"\x80\x00\x00\x00\x00\x01\x00\x01" + bytes(56)
        targets_ = [(addr, 0, 0, 0) for addr in addrs]
    replies = 0
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        send, recv = sock.sendto, sock.recv
        for start in range(0, len(targets_), 256):
            for target in targets_[start:start + 256]:
                send(request, target)
            while True:
                try:
                    recv(128, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                replies += 1
        sock.settimeout(2)
        while replies < len(targets_):
            try:
                recv(128)
            except TimeoutError:
                break
            replies += 1
    return replies


def run_fping(path: str) -> int:
    proc = subprocess.run(["fping", "-i", "0", "-a", "-q", "-f", path],
                          capture_output=True, text=True, check=False)
    return len(proc.stdout.split())


def run_icmplib(addrs: list[str], concurrency: int, privileged: bool) -> int:
    import icmplib
    hosts = icmplib.multiping(addrs, count=1, interval=0, timeout=2,
                              concurrent_tasks=concurrency, privileged=privileged)
    return sum(h.is_alive for h in hosts)


def best_icmplib(addrs: list[str], hogs: _hog.Hogs) -> dict[str, tuple[float, int, str]]:
    """icmplib at its best, per phase: every setting tried once, the fastest timed again."""
    result = {}
    for phase in hogs.phases:
        hogs.phase(phase)
        best: tuple[float, int, int, bool] | None = None
        for concurrency in ICMPLIB_CONCURRENCY:
            for privileged in (True, False):
                took, alive = timed(partial(run_icmplib, addrs, concurrency, privileged))
                if best is None or took < best[0]:
                    best = (took, alive, concurrency, privileged)
        assert best is not None
        _, _, concurrency, privileged = best
        label = f"{concurrency}/{'raw' if privileged else 'dgram'}"
        again = interleaved({"icmplib": partial(run_icmplib, addrs, concurrency, privileged)},
                            repeat=ICMPLIB_REPEAT)[_hog.QUIET]["icmplib"]
        result[phase] = (again[0], again[1], label)
    hogs.pause()
    return result


def inside(hog: int) -> None:
    rows = []
    with _hog.Hogs(hog) as hogs:
        for family in (4, 6):
            for n in SIZES:
                addrs = targets(family, n)
                with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
                    handle.write("\n".join(addrs) + "\n")
                    path = handle.name
                try:
                    got = interleaved({
                        "c_dgram": partial(run_gprocket, addrs, "datagram", "c"),
                        "c_raw": partial(run_gprocket, addrs, "raw", "c"),
                        "py_dgram": partial(run_gprocket, addrs, "datagram", "python"),
                        "fping": partial(run_fping, path),
                        "floor": partial(run_floor, addrs, family),
                    }, hogs=hogs)
                    icmplib = best_icmplib(addrs, hogs)
                finally:
                    os.unlink(path)
                for phase, by_name in got.items():
                    icmplib_time, icmplib_alive, label = icmplib[phase]
                    row: dict[str, object] = {"family": family, "n": n, "phase": phase,
                                              "icmplib_best": label,
                                              "icmplib": [icmplib_time, icmplib_alive]}
                    row.update({name: list(value) for name, value in by_name.items()})
                    rows.append(row)
    print(json.dumps(rows))


def _pair(row: dict[str, object], key: str) -> tuple[float, int]:
    value = row[key]
    assert isinstance(value, list)
    return float(value[0]), int(value[1])


def report(rows: list[dict[str, object]], hog: int) -> None:
    head = (f"{'family':<6} {'targets':>7} {'load':>7} | {'C dgram':>8} {'C raw':>8} "
            f"{'py dgram':>8} {'fping':>8} {'icmplib':>8} {'floor':>8} | {'dgram/fping':>11} "
            f"{'raw/fping':>9} {'icmplib/dgram':>13} {'icmplib/raw':>11} {'icmplib/floor':>13} "
            f"| alive C-d/C-r/py/fping/icmplib/floor | icmplib best")
    print(head)
    print("-" * len(head))
    for row in rows:
        c_dgram, c_raw, py_dgram, fping, icmp_, floor = (
            _pair(row, k) for k in ("c_dgram", "c_raw", "py_dgram", "fping", "icmplib", "floor"))
        ms = [f"{v[0] * 1000:>8.1f}" for v in (c_dgram, c_raw, py_dgram, fping, icmp_, floor)]
        load = "quiet" if row["phase"] == _hog.QUIET else f"{hog} hog"
        print(f"IPv{row['family']:<3}  {row['n']:>7} {load:>7} | {' '.join(ms)} | "
              f"{c_dgram[0] / fping[0]:>10.2f}x {c_raw[0] / fping[0]:>8.2f}x "
              f"{icmp_[0] / c_dgram[0]:>12.1f}x {icmp_[0] / c_raw[0]:>10.1f}x "
              f"{icmp_[0] / floor[0]:>12.1f}x | "
              f"{c_dgram[1]}/{c_raw[1]}/{py_dgram[1]}/{fping[1]}/{icmp_[1]}/{floor[1]}"
              f" | {row['icmplib_best']}")
    print(f"\ntimes in ms, median of {REPEAT} interleaved runs each (icmplib: "
          f"{ICMPLIB_REPEAT}, at the fastest of {len(ICMPLIB_CONCURRENCY) * 2} settings "
          "tried once). C: the compiled engine (gprocket.icmp._speed); py: the pure-Python "
          "fallback. x/fping: gprocket's time as a fraction of fping's (target <= 0.8); "
          "icmplib/x: how many times faster than icmplib (target >= 8). floor: a bare "
          "sendto/recv loop, one echo per target and nothing timed or checked; "
          "icmplib/floor is about the most any engine could show against icmplib here.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    _hog.add_argument(parser)
    args = parser.parse_args()
    if args.inside:
        inside(args.hog)
        return 0
    if os.geteuid() != 0:
        print("bench/ping.py needs root to create its network namespace", file=sys.stderr)
        return 2
    got = _netns.run_inside("gpi-bench", [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "-6", "route", "add", "local", "2001:db8::/64", "dev", "lo"],
        # Root may use ICMP datagram sockets too (gprocket's and icmplib's
        # unprivileged mode); the raw runs are measured as well.
        ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
    ], [sys.executable, __file__, "--inside", "--hog", str(args.hog)])
    if got is None:
        return 1
    report(got, args.hog)
    return 0

if __name__ == "__main__":
    sys.exit(main())
