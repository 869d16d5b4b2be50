"""Benchmark: one echo each to 1,000 and 10,000 local targets, IPv4 and IPv6.

Compares gprocket.icmp.multiping with `fping -i 0` and icmplib's multiping
(at the best of a few concurrencies), all inside a network namespace this
script creates (127.0.0.0/8 and a local 2001:db8::/64 answer echo). Prints
the median of REPEAT runs of each, the targets found alive, and the ratios.

    PYTHONPATH=/work/main /opt/gprocket/venv/bin/python bench/ping.py

Needs root (it makes the namespace; inside it everything runs as root).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPEAT = 5
SIZES = (1000, 10000)
ICMPLIB_CONCURRENCY = (100, 500, 2000)


def targets(family: int, n: int) -> list[str]:
    if family == 4:
        return [str(ipaddress.IPv4Address("127.0.0.0") + i) for i in range(1, n + 1)]
    return [str(ipaddress.IPv6Address("2001:db8::") + i) for i in range(1, n + 1)]


def median_run(run: Callable[[], int], repeat: int = REPEAT) -> tuple[float, int]:
    """Median wall time of `repeat` runs, and the smallest alive count seen."""
    times, alive = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        alive.append(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(alive)


def run_gprocket(addrs: list[str], kind: str) -> int:
    from gprocket import icmp
    hosts = icmp.multiping(addrs, timeout=2, socket_kind=kind)  # type: ignore[arg-type]
    return sum(h.is_alive for h in hosts)


def run_fping(path: str) -> int:
    proc = subprocess.run(["fping", "-i", "0", "-a", "-q", "-f", path],
                          capture_output=True, text=True, check=False)
    return len(proc.stdout.split())


def run_icmplib(addrs: list[str], concurrency: int, privileged: bool) -> int:
    import icmplib
    hosts = icmplib.multiping(addrs, count=1, interval=0, timeout=2,
                              concurrent_tasks=concurrency, privileged=privileged)
    return sum(h.is_alive for h in hosts)


def inside() -> None:
    rows = []
    for family in (4, 6):
        for n in SIZES:
            addrs = targets(family, n)
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
                handle.write("\n".join(addrs) + "\n")
                path = handle.name
            try:
                ours_dgram = median_run(lambda a=addrs: run_gprocket(a, "datagram"))
                ours_raw = median_run(lambda a=addrs: run_gprocket(a, "raw"))
                fping = median_run(lambda p=path: run_fping(p))
                best: tuple[float, int, str] | None = None
                for concurrency in ICMPLIB_CONCURRENCY:
                    for privileged in (True, False):
                        start = time.perf_counter()
                        alive = run_icmplib(addrs, concurrency, privileged)
                        took = time.perf_counter() - start
                        label = f"{concurrency}/{'raw' if privileged else 'dgram'}"
                        if best is None or took < best[0]:
                            best = (took, alive, label)
                assert best is not None
                conc, priv = best[2].split("/")
                icmplib_t = median_run(
                    lambda a=addrs, c=int(conc), p=(priv == "raw"): run_icmplib(a, c, p),
                    repeat=3)
            finally:
                os.unlink(path)
            rows.append({"family": family, "n": n, "ours_dgram": ours_dgram,
                         "ours_raw": ours_raw, "fping": fping, "icmplib": icmplib_t,
                         "icmplib_best": best[2]})
    print(json.dumps(rows))


def report(rows: list[dict[str, object]]) -> None:
    head = (f"{'family':<6} {'targets':>7}  {'gprocket dgram':>15} {'gprocket raw':>13} "
            f"{'fping -i 0':>11} {'icmplib':>11}  {'dgram/fping':>11} {'icmplib/dgram':>13}"
            f"  alive (ours/raw/fping/icmplib)  icmplib best")
    print(head)
    print("-" * len(head))
    for row in rows:
        dgram, raw, fping, icmp_ = (row[k] for k in ("ours_dgram", "ours_raw", "fping",
                                                       "icmplib"))
        assert isinstance(dgram, list | tuple) and isinstance(raw, list | tuple)
        assert isinstance(fping, list | tuple) and isinstance(icmp_, list | tuple)
        print(f"IPv{row['family']:<2}   {row['n']:>7}  {dgram[0] * 1000:>12.1f} ms "
              f"{raw[0] * 1000:>10.1f} ms {fping[0] * 1000:>8.1f} ms "
              f"{icmp_[0] * 1000:>8.1f} ms  {dgram[0] / fping[0]:>10.2f}x "
              f"{icmp_[0] / dgram[0]:>12.1f}x  "
              f"{dgram[1]}/{raw[1]}/{fping[1]}/{icmp_[1]}  {row['icmplib_best']}")
    print(f"\nmedian of {REPEAT} runs each (icmplib: 3, at the best of "
          f"{len(ICMPLIB_CONCURRENCY) * 2} settings tried once); dgram/fping: gprocket's "
          "time as a fraction of fping's (target <= 0.8); icmplib/dgram: how many times "
          "faster than icmplib (target >= 8).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside()
        return 0
    if os.geteuid() != 0:
        print("bench/ping.py needs root to create its network namespace", file=sys.stderr)
        return 2
    name = f"gpi-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def ns(*argv: str) -> None:
            subprocess.run(["ip", "netns", "exec", name, *argv], check=True,
                           capture_output=True)
        ns("ip", "link", "set", "lo", "up")
        ns("ip", "-6", "route", "add", "local", "2001:db8::/64", "dev", "lo")
        # Root may use ICMP datagram sockets too (gprocket's and icmplib's
        # unprivileged mode); the raw runs are measured as well.
        ns("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        env = dict(os.environ)
        env.setdefault("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        proc = subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__,
                               "--inside"], capture_output=True, text=True, env=env,
                              check=False)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        report(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
