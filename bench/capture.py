"""Capture and send rates on one veth pair: gprocket against tcpdump, scapy and trafgen.

Run as root (it makes two network namespaces joined by a veth pair, removed
at the end):

    /opt/gprocket/venv/bin/python bench/capture.py

Every figure comes from this one run; the machine is shared, so each table
interleaves its contenders round by round and shows medians:

1. live: trafgen sends N 60-byte frames as fast as it can; each receiver
   reports frames received and drops (one round).
2. drain: N frames are queued in the receiver's ring while it is stopped
   (SIGSTOP, or not yet reading); the rate is how fast it then consumes them:
   its ceiling, independent of the generator.
3. send: frames per second handed to the kernel, the same number of
   same-size frames for every sender, timed by wall clock without start-up
   (trafgen by its own clock around its send loop), all pinned to the CPU
   trafgen pins itself to; ratios are per round against that round's trafgen.

The last table puts the targets next to our figures. With ``--hog N`` every
table is measured quiet and with N busy processes running (bench/_hog.py:
paused for the quiet rounds, resumed for the loaded ones, killed at the
end), side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _hog
import gevent
import gevent.socket
import gevent.subprocess

from gprocket.packet import ring

# -P: the installed gprocket (with its compiled ring walker), never a checkout
# that happens to be the working directory.
PYTHON = (sys.executable, "-P")
REPO = Path(__file__).resolve().parent.parent
# The veth lab is test support, not part of the installed package.
sys.path.insert(0, str(REPO / "tests"))
from support.lab import (  # noqa: E402
    VethLab,
    ether_frame,
    inside,
    listening,
    trafgen_config,
    veth_lab,
)


def trafgen(lab: VethLab, frame: bytes, count: int) -> float:
    """Send with trafgen from namespace b; returns trafgen's own send-loop time in seconds.

    trafgen prints it as "S sec, U usec on CPU0": gettimeofday() around its
    send loop (wall clock, start-up excluded), not CPU time.
    """
    # gevent's subprocess: receivers in this process keep reading meanwhile.
    out = gevent.subprocess.run(lab.argv_b(["trafgen", "-o", lab.if_b, "-P", "1", "-n", str(count),
                                     trafgen_config(frame)]),
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+) sec, (\d+) usec on CPU", out)
    if match is None:
        raise RuntimeError(f"unexpected trafgen output:\n{out}")
    return int(match.group(1)) + int(match.group(2)) / 1e6


def packet_socket(ns: str) -> socket.socket:
    with inside(ns):
        sock: socket.socket = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    return sock


def kernel_drops(sock: socket.socket) -> int:
    from gprocket.packet import lowlevel
    _, drops = lowlevel.getsockopt(sock, "PACKET_STATISTICS")
    return int(drops)


class Result:
    def __init__(self, name: str, received: int, seconds: float, dropped: int) -> None:
        self.name, self.received, self.seconds, self.dropped = name, received, seconds, dropped

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def drop_rate(self) -> float:
        total = self.received + self.dropped
        return self.dropped / total if total else 0.0


# ---------------------------------------------------------------- live receivers

def live_ring(lab: VethLab, frame: bytes, n: int) -> Result:
    sock = packet_socket(lab.ns_a)
    rx = ring.RxRing(sock, block_size=1 << 20, block_count=64, timeout_ms=10)
    sock.bind((lab.if_a, 3))
    got = 0

    def consume() -> None:
        nonlocal got
        block = rx.next_block(timeout=1.0)
        while block is not None:
            got += _consume(block)
            block = rx.next_block(timeout=1.0)

    worker = gevent.spawn(consume)
    gevent.sleep(0.2)
    sent_in = trafgen(lab, frame, n)
    worker.join()
    stats = rx.stats()
    rx.close()
    sock.close()
    return Result(RING_ITER, got, sent_in, stats.dropped)


def live_plain(lab: VethLab, frame: bytes, n: int) -> Result:
    sock = packet_socket(lab.ns_a)
    sock.bind((lab.if_a, 3))
    buf = bytearray(2048)
    got = 0

    def consume() -> None:
        nonlocal got
        sock.settimeout(1.0)
        with contextlib.suppress(TimeoutError, socket.timeout):
            while True:
                sock.recv_into(buf)
                got += 1

    worker = gevent.spawn(consume)
    gevent.sleep(0.2)
    sent_in = trafgen(lab, frame, n)
    worker.join()
    dropped = kernel_drops(sock)
    sock.close()
    return Result("gprocket plain cooperative recv", got, sent_in, dropped)


def live_scapy(lab: VethLab, frame: bytes, n: int) -> Result:
    from scapy.config import conf
    from scapy.sendrecv import AsyncSniffer
    stamps: list[float] = []
    with inside(lab.ns_a):
        conf.ifaces.reload()
        sniffer = AsyncSniffer(iface=lab.if_a, store=False,
                               prn=lambda _p: stamps.append(time.perf_counter()))
        sniffer.start()
    time.sleep(0.5)
    sent_in = trafgen(lab, frame, n)
    time.sleep(1.5)
    sniffer.stop()
    return Result("scapy sniff", len(stamps), sent_in, n - len(stamps))


def _listening(lab: VethLab, argv: list[str]) -> subprocess.Popen[str]:
    """Start a capture tool in namespace A; return once it says it is listening."""
    return listening(lab.argv_a(argv))


def _tool_live(lab: VethLab, frame: bytes, n: int, argv: list[str], name: str, *,
               parse: Callable[[str], tuple[int, int]]) -> Result:
    proc = _listening(lab, argv)
    sent_in = trafgen(lab, frame, n)
    _, err = proc.communicate(timeout=60)
    got, dropped = parse(err)
    return Result(name, got, sent_in, dropped)


def _parse_tcpdump(err: str) -> tuple[int, int]:
    got = int(re.search(r"(\d+) packets captured", err).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"(\d+) packets dropped by kernel", err).group(1))  # type: ignore[union-attr]
    return got, dropped


def live_tcpdump(lab: VethLab, frame: bytes, n: int) -> Result:
    return _tool_live(lab, frame, n, ["tcpdump", "-i", lab.if_a, "-c", str(n), "-B", "65536",
                                      "-w", "/dev/null"], "tcpdump -w /dev/null",
                      parse=_parse_tcpdump)


def live_sniff(lab: VethLab, frame: bytes, n: int) -> Result:
    return _tool_live(lab, frame, n, [*PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                                      "-c", str(n), "-w", "/dev/null", "--progress", "0"],
                      "gprocket sniff -w /dev/null", parse=_parse_tcpdump)


# ---------------------------------------------------------------- drain (ceiling)

def _consume(block: ring.Block) -> int:
    """Touch every frame as a Python object; in its own frame so no view outlives it."""
    got = 0
    for f in block:
        got += len(f) > 0
    block.release()
    return got


def _consume_list(block: ring.Block) -> int:
    """As _consume, through Block.frames(): the whole block's views in one list."""
    got = 0
    for f in block.frames():
        got += len(f) > 0
    block.release()
    return got


RING_ITER = "gprocket ring (for frame in block: memoryview)"
RING_LIST = "gprocket ring (block.frames(): list of views)"


def drain_ring(lab: VethLab, frame: bytes, n: int,
               consume: Callable[[ring.Block], int] = _consume, name: str = RING_ITER) -> Result:
    sock = packet_socket(lab.ns_a)
    rx = ring.RxRing(sock, block_size=1 << 19, block_count=256, timeout_ms=100)
    sock.bind((lab.if_a, 3))
    trafgen(lab, frame, n)
    time.sleep(0.3)
    got = 0
    start = time.perf_counter()
    block = rx.poll_block()
    while block is not None:
        got += consume(block)
        block = rx.poll_block()
    seconds = time.perf_counter() - start
    stats = rx.stats()
    rx.close()
    sock.close()
    return Result(name, got, seconds, stats.dropped)


def _tool_drain(lab: VethLab, frame: bytes, n: int, argv: list[str], name: str) -> Result:
    proc = _listening(lab, argv)
    proc.send_signal(signal.SIGSTOP)
    trafgen(lab, frame, n)
    # tcpdump's blocks retire up to 1 s after their first frame: let all retire.
    time.sleep(1.2)
    start = time.perf_counter()
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    seconds = time.perf_counter() - start
    got, dropped = _parse_tcpdump(err)
    return Result(name, got, seconds, dropped)


def drain_tcpdump(lab: VethLab, frame: bytes, n: int, out: Path) -> Result:
    return _tool_drain(lab, frame, n, ["tcpdump", "-i", lab.if_a, "-c", str(n), "-B", "131072",
                                       "-w", str(out)], "tcpdump -w FILE")


def drain_sniff(lab: VethLab, frame: bytes, n: int, out: Path) -> Result:
    return _tool_drain(lab, frame, n, [*PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                                       "-c", str(n), "-B", "131072", "-w", str(out),
                                       "--progress", "0"], "gprocket sniff -w FILE")


# ---------------------------------------------------------------- senders

def send_tx_ring(lab: VethLab, frames: list[bytes]) -> float:
    sock = packet_socket(lab.ns_b)
    sock.bind((lab.if_b, 0))
    sender = ring.TxRing(sock, frame_size=128, frame_count=8192, qdisc_bypass=True)
    start = time.perf_counter()
    sender.send(frames)
    seconds = time.perf_counter() - start
    sender.close()
    sock.close()
    return len(frames) / seconds


def send_sendmmsg(lab: VethLab, frames: list[bytes]) -> float:
    sock = packet_socket(lab.ns_b)
    sock.bind((lab.if_b, 0))
    sender = ring.BatchSender(sock, qdisc_bypass=True)
    start = time.perf_counter()
    sender.send(frames)
    seconds = time.perf_counter() - start
    sock.close()
    return len(frames) / seconds


def trafgen_rate(lab: VethLab, frame: bytes, count: int) -> float:
    """trafgen's send rate: ``count`` frames over its own clock around its send loop.

    trafgen reads gettimeofday() just before its first frame and just after
    its last: wall-clock time without its start-up (ring set-up, forks), the
    same span the gprocket senders below are timed over.
    """
    return count / trafgen(lab, frame, count)


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Run this process on ``cpu`` alone for the block, as ``trafgen -P 1`` pins itself."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def middle(results: list[Result]) -> Result:
    """The run with the median rate."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def send_plain(lab: VethLab, frames: list[bytes]) -> float:
    with inside(lab.ns_b):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((lab.if_b, 0))
    start = time.perf_counter()
    for f in frames:
        sock.send(f)
    seconds = time.perf_counter() - start
    sock.close()
    return len(frames) / seconds


def send_scapy_socket(lab: VethLab, frames: list[bytes]) -> float:
    from scapy.config import conf
    with inside(lab.ns_b):
        conf.ifaces.reload()
        l2 = conf.L2socket(iface=lab.if_b)
    start = time.perf_counter()
    for f in frames:
        # scapy's stubs say Packet; at run time it sends bytes as they are.
        l2.send(f)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    l2.close()
    return len(frames) / seconds


def send_scapy_sendp(lab: VethLab, frames: list[bytes]) -> float:
    from scapy.layers.l2 import Ether
    from scapy.sendrecv import sendp
    packets = [Ether(f) for f in frames]
    with inside(lab.ns_b):
        start = time.perf_counter()
        sendp(packets, iface=lab.if_b, verbose=False)
        seconds = time.perf_counter() - start
    return len(frames) / seconds


# ---------------------------------------------------------------- report

def _label(phase: str, hog: int) -> str:
    return "quiet" if phase == _hog.QUIET else f"{hog} hog{'s' if hog > 1 else ''}"


def live_table(title: str, rows: dict[str, list[Result]], offered: int, hog: int) -> None:
    print(f"\n{title}")
    head = f"  {'receiver':48}"
    for phase in rows:
        head += f" | {_label(phase, hog) + ': received':>17} {'dropped':>9} {'drop rate':>10}"
    print(head)
    for index, first in enumerate(next(iter(rows.values()))):
        line = f"  {first.name:48}"
        for phase_rows in rows.values():
            r = phase_rows[index]
            lost = max(r.dropped, offered - r.received)
            line += f" | {r.received:17d} {lost:9d} {lost / offered:10.1%}"
        print(line)


def table(title: str, rows: dict[str, list[Result]], anchor: int, hog: int) -> None:
    """Frames/s per receiver and phase, each with its ratio to the same phase's anchor row."""
    print(f"\n{title}")
    first = next(iter(rows.values()))
    versus = "vs " + first[anchor].name
    head = f"  {'receiver':48} {'frames':>9}"
    for phase in rows:
        head += f" | {_label(phase, hog) + ': frames/s':>18} {'drops':>8} {'ratio':>6}"
    print(head + f"   (ratio: {versus})")
    for index, r in enumerate(first):
        line = f"  {r.name:48} {r.received:9d}"
        for phase_rows in rows.values():
            row, base = phase_rows[index], phase_rows[anchor]
            ratio = row.rate / base.rate if base.rate else 0.0
            line += f" | {row.rate:18,.0f} {row.drop_rate:8.1%} {ratio:5.2f}x"
        print(line)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="gpk-bench-") as tmp:
        yield Path(tmp)


TARGETS = {
    "ring": 2.5e6,     # frames/s delivered to Python as per-frame objects
    "sniff": 1.0,      # sniff-to-pcap rate / tcpdump's (issue 15; issue 4 asked 0.5)
    "send": 0.9,       # batched send rate / trafgen's
}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300_000, help="frames per live/drain run")
    parser.add_argument("--send", type=int, default=200_000, help="frames per send run")
    parser.add_argument("--scapy", type=int, default=20_000, help="frames for scapy senders")
    parser.add_argument("--runs", type=int, default=5,
                        help="interleaved rounds per table (medians are shown)")
    parser.add_argument("--send-runs", type=int, default=9,
                        help="interleaved rounds for the send table (short runs swing most)")
    parser.add_argument("--cpu", type=int, default=0,
                        help="CPU for the senders (trafgen -P 1 pins itself to CPU 0)")
    _hog.add_argument(parser)
    args = parser.parse_args()
    # scapy warns about every frame type it cannot guess; the counts are what matter here.
    logging.getLogger("scapy").setLevel(logging.ERROR)
    r = args.runs
    print(f"speedups built: {ring.HAVE_SPEEDUPS}; frames of 60 bytes; {r} interleaved rounds "
          "per table, medians shown (the machine is shared: single runs swing by 2x)"
          + (f"; every table quiet and with {args.hog} busy process(es) (--hog)"
             if args.hog else ""))
    with veth_lab("gpk") as lab, scratch() as tmp, _hog.Hogs(args.hog) as hogs:
        phases = hogs.phases
        frame = ether_frame("ff:ff:ff:ff:ff:ff", lab.mac_b, 0x88B5, b"gprocket bench")
        n = args.n
        live: dict[str, list[Result]] = {}
        for phase in phases:
            hogs.phase(phase)
            live[phase] = [live_ring(lab, frame, n), live_plain(lab, frame, n),
                           live_sniff(lab, frame, n), live_tcpdump(lab, frame, n),
                           live_scapy(lab, frame, n)]
        hogs.pause()
        offered = n / trafgen(lab, frame, n)
        live_table(f"live receive: trafgen sends {n} frames at its full rate (~{offered:,.0f}/s "
                   "quiet, by its own clock)", live, n, args.hog)

        # Interleaved rounds: every receiver sees the same background load.
        drains: list[Callable[[], Result]] = [
            lambda: drain_ring(lab, frame, n),
            lambda: drain_ring(lab, frame, n, _consume_list, RING_LIST),
            lambda: drain_sniff(lab, frame, n, tmp / "ours.pcap"),
            lambda: drain_tcpdump(lab, frame, n, tmp / "tcpdump.pcap"),
        ]
        rounds: dict[str, list[list[Result]]] = {phase: [] for phase in phases}
        for index in range(r):
            for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
                hogs.phase(phase)
                rounds[phase].append([measure() for measure in drains])
        hogs.pause()
        drain = {phase: [middle([run[i] for run in runs]) for i in range(len(drains))]
                 for phase, runs in rounds.items()}
        sniff_ratio = {phase: statistics.median(run[2].rate / run[3].rate for run in runs)
                       for phase, runs in rounds.items()}
        table(f"drain: {n} frames queued, then consumed (median of {r} rounds; tools timed "
              "from SIGCONT to exit)", drain, 3, args.hog)
        print("  sniff ÷ tcpdump, median of the per-round ratios: " + ", ".join(
            f"{_label(phase, args.hog)} {ratio:.2f}x" for phase, ratio in sniff_ratio.items()))

        frames = [ether_frame("ff:ff:ff:ff:ff:ff", lab.mac_b, 0x88B5, i.to_bytes(4, "big"))
                  for i in range(args.send)]
        measures: list[tuple[str, Callable[[], float]]] = [
            ("trafgen (its send loop, wall clock)", lambda: trafgen_rate(lab, frame, args.send)),
            ("gprocket batched (sendmmsg)", lambda: send_sendmmsg(lab, frames)),
            ("gprocket batched (TX ring)", lambda: send_tx_ring(lab, frames)),
            ("plain Python send loop", lambda: send_plain(lab, frames)),
            ("scapy reused L2 socket", lambda: send_scapy_socket(lab, frames[: args.scapy])),
        ]
        samples: dict[str, dict[str, list[float]]] = {
            phase: {name: [] for name, _ in measures} for phase in phases}
        with pinned(args.cpu):
            for index in range(args.send_runs):
                for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
                    hogs.phase(phase)
                    for name, measure in measures:
                        samples[phase][name].append(measure())
        hogs.pause()
        anchor = measures[0][0]
        rates = {phase: {name: statistics.median(values) for name, values in by_name.items()}
                 for phase, by_name in samples.items()}
        # Each round's rate over the same round's trafgen: load swings cancel out.
        ratios = {phase: {name: statistics.median(
            v / t for v, t in zip(values, by_name[anchor], strict=True))
            for name, values in by_name.items()} for phase, by_name in samples.items()}
        sendp_rate = send_scapy_sendp(lab, frames[: args.scapy // 4])
        print(f"\nsend: {args.send} frames of 60 bytes each (scapy: fewer), pinned to CPU "
              f"{args.cpu} like trafgen; medians of {args.send_runs} interleaved rounds")
        head = f"  {'sender':48}"
        for phase in phases:
            head += f" | {_label(phase, args.hog) + ': frames/s':>18} {'vs trafgen (paired)':>20}"
        print(head)
        for name, _ in measures:
            print(f"  {name:48}" + "".join(
                f" | {rates[phase][name]:18,.0f} {ratios[phase][name]:19.2f}x" for phase in phases))
        print(f"  {'scapy sendp(list) (one run, quiet)':48} | {sendp_rate:18,.0f} "
              f"{sendp_rate / rates[_hog.QUIET][anchor]:19.2f}x")

        print("\ntargets (target | ours | verdict)")
        rows = []
        for phase in phases:
            tag = "" if phase == _hog.QUIET else f" [{_label(phase, args.hog)}]"
            ring_rate = drain[phase][0].rate
            send_ratio = max(ratios[phase]["gprocket batched (sendmmsg)"],
                             ratios[phase]["gprocket batched (TX ring)"])
            ring_live = live[phase][0]
            rows += [
                ("ring to Python, per-frame objects" + tag,
                 f">= {TARGETS['ring'] / 1e6:.1f}M frames/s", f"{ring_rate / 1e6:.2f}M frames/s",
                 ring_rate >= TARGETS["ring"]),
                ("sniff -w vs tcpdump -w (drain)" + tag, f">= {TARGETS['sniff']:.2f}x",
                 f"{sniff_ratio[phase]:.3f}x", sniff_ratio[phase] >= TARGETS["sniff"]),
                ("drops at the generator's top rate" + tag, "0", f"{ring_live.dropped}",
                 ring_live.dropped == 0 and ring_live.received == n),
                ("batched send vs trafgen (best of ours)" + tag, f">= {TARGETS['send']:.2f}x",
                 f"{send_ratio:.3f}x", send_ratio >= TARGETS["send"]),
            ]
        for what, target, ours, ok in rows:
            print(f"  {what:50} {target:>20} {ours:>18}   {verdict(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
