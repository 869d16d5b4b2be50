"""Packets per second through a Python ICMP echo responder on a TUN device.

The system's ``ping -f -l PRELOAD`` floods an address routed into the device
(inside a namespace made for the run) and counts the replies; the responder
is, in turn:

  blocking        anchor: a plain Python loop, blocking os.read/os.write on the
                  descriptor, no gevent (what one writes without gprocket)
  gprocket        TunTapDevice.read/write in a greenlet, beside a ticker
                  greenlet that must keep running
  gprocket-batch  TunTapDevice.read_batch/write_batch, same ticker

Every responder uses the same echo_reply() from examples/tun_echo.py, so the
figures differ only by the I/O path. Needs root (it creates the namespace and
runs ping -f). The variants run interleaved for several rounds (the flood and
the responder share the CPUs, so single runs vary); the median of each is
printed with its ratio to the blocking anchor, all from one run. With
``--hog N`` every round is run quiet and with N busy processes running
(bench/_hog.py: paused for the quiet runs, resumed for the loaded ones,
killed at the end), and the loaded figures are printed beside the quiet ones.

    /opt/gprocket/venv/bin/python bench/tun.py [--count 30000] [--preload 32] [--rounds 5] [--hog 1]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import secrets
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import _hog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from tun_echo import echo_reply  # noqa: E402

VARIANTS = ("blocking", "gprocket", "gprocket-batch")
TARGET = "10.9.0.2"


def serve_blocking(count: int) -> dict[str, float]:
    """The anchor: the tutorial loop, blocking reads and writes."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"gptb0", 0x0001 | 0x1000))
    for argv in (["ip", "addr", "add", "10.9.0.1/24", "dev", "gptb0"],
                 ["ip", "link", "set", "gptb0", "up"]):
        subprocess.run(argv, check=True)
    print(json.dumps({"ready": "gptb0"}), flush=True)
    replies = 0
    start = 0.0
    while replies < count:
        reply = echo_reply(os.read(fd, 2048))
        if reply is not None:
            if not replies:
                start = time.perf_counter()
            os.write(fd, reply)
            replies += 1
    elapsed = time.perf_counter() - start
    os.close(fd)
    return {"replies": replies, "elapsed": elapsed, "ticks": 0}


def serve_gprocket(count: int, batch: bool) -> dict[str, float]:
    import gevent

    from gprocket import tuntap

    device = tuntap.open("gptb0", up=True, address="10.9.0.1/24", strategies="plain")
    ticks = [0]

    def ticker() -> None:
        while True:
            ticks[0] += 1
            gevent.sleep(0.001)

    gevent.spawn(ticker)
    print(json.dumps({"ready": device.name}), flush=True)
    replies = 0
    start = 0.0
    while replies < count:
        packets = device.read_batch(64) if batch else [device.read()]
        out = [r for r in map(echo_reply, packets) if r is not None]
        if out and not replies:
            start = time.perf_counter()
        if batch:
            device.write_batch(out)
        else:
            for reply in out:
                device.write(reply)
        replies += len(out)
    elapsed = time.perf_counter() - start
    device.close()
    return {"replies": replies, "elapsed": elapsed, "ticks": ticks[0]}


def serve(variant: str, count: int) -> int:
    if variant == "blocking":
        result = serve_blocking(count)
    else:
        result = serve_gprocket(count, batch=variant == "gprocket-batch")
    print(json.dumps(result), flush=True)
    return 0


def flood(namespace: str, variant: str, count: int, preload: int) -> dict[str, float]:
    # The installed gprocket (compiled modules included), never the checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, __file__, "--serve", variant,
         "--count", str(count)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert server.stdout is not None
        if not server.stdout.readline():
            raise SystemExit(f"{variant}: the responder did not start")
        ping = subprocess.run(
            ["ip", "netns", "exec", namespace, "ping", "-q", "-n", "-f", "-l", str(preload),
             "-c", str(count), "-w", "60", TARGET],
            capture_output=True, text=True, check=False,
        )
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    match = re.search(r"(\d+) received.*time (\d+)ms", ping.stdout)
    if match is None:
        raise SystemExit(f"{variant}: unexpected ping output:\n{ping.stdout}{ping.stderr}")
    received, ping_ms = int(match.group(1)), int(match.group(2))
    result = json.loads(out.splitlines()[-1])
    return {"pps": result["replies"] / result["elapsed"], "ping_pps": received / (ping_ms / 1000),
            "received": received, "ticks": result["ticks"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30000, help="echo requests per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    parser.add_argument("--preload", type=int, default=32, help="ping -l: requests in flight")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    _hog.add_argument(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.count)
    if os.geteuid() != 0:
        print("bench/tun.py needs root (namespace, ping -f)", file=sys.stderr)
        return 2
    namespace = f"gpt-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        with _hog.Hogs(args.hog) as hogs:
            phases = hogs.phases
            runs: dict[str, dict[str, list[dict[str, float]]]] = {
                phase: {v: [] for v in VARIANTS} for phase in phases}
            for index in range(args.rounds):
                for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
                    hogs.phase(phase)
                    for variant in VARIANTS:
                        runs[phase][variant].append(
                            flood(namespace, variant, args.count, args.preload))
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    results = {phase: {v: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
                       for v, rs in by_variant.items()} for phase, by_variant in runs.items()}
    print(f"TUN echo responder, {args.count} ICMP echo requests x {args.rounds} rounds "
          f"(median), ping -f -l {args.preload}")
    head = f"{'responder':<16}"
    for phase in results:
        load = "quiet" if phase == _hog.QUIET else f"{args.hog} hog"
        head += f" | {load + ': pps (responder)':>24}{'ratio':>7}{'pps (ping)':>12}{'ratio':>7}"
        head += f"{'ticks':>7}"
    print(head)
    for variant in VARIANTS:
        line = f"{variant:<16}"
        for by_variant in results.values():
            r, anchor = by_variant[variant], by_variant["blocking"]
            line += (f" | {r['pps']:>24.0f}{r['pps'] / anchor['pps']:>7.2f}"
                     f"{r['ping_pps']:>12.0f}{r['ping_pps'] / anchor['ping_pps']:>7.2f}"
                     f"{r['ticks']:>7.0f}")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
