"""Capture and send rates on one veth pair: gprocket against tcpdump, scapy and trafgen.

Run as root (it makes two network namespaces joined by a veth pair, removed
at the end):

    PYTHONPATH=/work/main /opt/gprocket/venv/bin/python bench/capture.py

Three tables, every figure from this one run:

1. live: trafgen sends N 60-byte frames as fast as it can; each receiver
   reports frames received, frames per second while receiving, and drop rate.
2. drain: N frames are queued in the receiver's ring while it is stopped
   (SIGSTOP, or not yet reading); the rate is how fast it then consumes them:
   its ceiling, independent of the generator.
3. send: frames per second handed to the kernel by each sender.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import gevent.socket
import gevent.subprocess

from gprocket import ring
from gprocket._packet_lab import VethLab, ether_frame, inside, trafgen_config, veth_lab

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent


def trafgen(lab: VethLab, frame: bytes, count: int) -> float:
    """Send with trafgen from namespace b; returns trafgen's own send time in seconds."""
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
        return gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)


def kernel_drops(sock: socket.socket) -> int:
    from gprocket import lowlevel
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
    return Result("gprocket ring (batch, memoryview per frame)", got, sent_in, stats.dropped)


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


def _tool_live(lab: VethLab, frame: bytes, n: int, argv: list[str], name: str, *,
               parse: Callable[[str], tuple[int, int]]) -> Result:
    proc = subprocess.Popen(lab.argv_a(argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            break
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
    return _tool_live(lab, frame, n, [PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                                      "-c", str(n), "-w", "/dev/null", "--progress", "0"],
                      "gprocket sniff -w /dev/null", parse=_parse_tcpdump)


# ---------------------------------------------------------------- drain (ceiling)

def _consume(block: ring.Block) -> int:
    """Touch every frame as a Python object; in its own frame so no view outlives it."""
    got = 0
    for f in block.frames():
        got += len(f) > 0
    block.release()
    return got


def drain_ring(lab: VethLab, frame: bytes, n: int) -> Result:
    sock = packet_socket(lab.ns_a)
    rx = ring.RxRing(sock, block_size=1 << 19, block_count=256, timeout_ms=100)
    sock.bind((lab.if_a, 3))
    trafgen(lab, frame, n)
    time.sleep(0.3)
    got = 0
    start = time.perf_counter()
    block = rx.poll_block()
    while block is not None:
        got += _consume(block)
        block = rx.poll_block()
    seconds = time.perf_counter() - start
    stats = rx.stats()
    rx.close()
    sock.close()
    return Result("gprocket ring (batch, memoryview per frame)", got, seconds, stats.dropped)


def _tool_drain(lab: VethLab, frame: bytes, n: int, argv: list[str], name: str) -> Result:
    proc = subprocess.Popen(lab.argv_a(argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            break
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
    return _tool_drain(lab, frame, n, [PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
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


def trafgen_wall_rate(lab: VethLab, frame: bytes, count: int) -> float:
    """trafgen's rate by wall clock, its start-up cost removed (two runs' difference)."""
    def wall(n: int) -> float:
        start = time.perf_counter()
        trafgen(lab, frame, n)
        return time.perf_counter() - start
    small = count // 10
    return (count - small) / max(wall(count) - wall(small), 1e-9)


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
        l2.send(f)
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

def live_table(title: str, rows: list[Result], offered: int) -> None:
    print(f"\n{title}")
    print(f"  {'receiver':44} {'received':>9} {'dropped':>9} {'drop rate':>10}")
    for r in rows:
        lost = max(r.dropped, offered - r.received)
        print(f"  {r.name:44} {r.received:9d} {lost:9d} {lost / offered:10.1%}")


def table(title: str, rows: list[Result], anchor: Result) -> None:
    print(f"\n{title}")
    versus = "vs " + anchor.name
    print(f"  {'receiver':44} {'frames':>9} {'frames/s':>12} {'drops':>8} {versus:>30}")
    for r in rows:
        ratio = r.rate / anchor.rate if anchor.rate else 0.0
        print(f"  {r.name:44} {r.received:9d} {r.rate:12,.0f} {r.drop_rate:8.1%} {ratio:30.2f}x")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="gpk-bench-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300_000, help="frames per live/drain run")
    parser.add_argument("--send", type=int, default=200_000, help="frames per send run")
    parser.add_argument("--scapy", type=int, default=20_000, help="frames for scapy senders")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (the median is shown)")
    args = parser.parse_args()
    # scapy warns about every frame type it cannot guess; the counts are what matter here.
    logging.getLogger("scapy").setLevel(logging.ERROR)
    print(f"speedups built: {ring.HAVE_SPEEDUPS}; frames of 60 bytes")
    with veth_lab("gpk") as lab, scratch() as tmp:
        frame = ether_frame("ff:ff:ff:ff:ff:ff", lab.mac_b, 0x88B5, b"gprocket bench")
        n = args.n
        live = [live_ring(lab, frame, n), live_plain(lab, frame, n), live_sniff(lab, frame, n),
                live_tcpdump(lab, frame, n), live_scapy(lab, frame, n)]
        offered = n / trafgen(lab, frame, n)
        live_table(f"live receive: trafgen sends {n} frames at its full rate (~{offered:,.0f}/s "
                   "by its CPU time)", live, n)
        rounds = [(drain_ring(lab, frame, n), drain_sniff(lab, frame, n, tmp / "ours.pcap"),
                   drain_tcpdump(lab, frame, n, tmp / "tcpdump.pcap"))
                  for _ in range(args.runs)]
        drain = [middle([run[i] for run in rounds]) for i in range(3)]
        table(f"drain: {n} frames queued, then consumed (median of {args.runs} runs; tools "
              "timed from SIGCONT to exit)", drain, drain[2])
        frames = [ether_frame("ff:ff:ff:ff:ff:ff", lab.mac_b, 0x88B5, i.to_bytes(4, "big"))
                  for i in range(args.send)]
        r = args.runs
        measures: list[tuple[str, Callable[[], float]]] = [
            ("gprocket batched (TX ring)", lambda: send_tx_ring(lab, frames)),
            ("gprocket batched (sendmmsg)", lambda: send_sendmmsg(lab, frames)),
            ("plain Python send loop", lambda: send_plain(lab, frames)),
            ("scapy reused L2 socket", lambda: send_scapy_socket(lab, frames[: args.scapy])),
            ("trafgen (wall clock)", lambda: trafgen_wall_rate(lab, frame, args.send)),
            ("trafgen (its own CPU-time figure)",
             lambda: args.send / trafgen(lab, frame, args.send)),
        ]
        # Interleaved rounds: every sender sees the same background load.
        samples: dict[str, list[float]] = {name: [] for name, _ in measures}
        for _ in range(r):
            for name, measure in measures:
                samples[name].append(measure())
        rates = {name: statistics.median(values) for name, values in samples.items()}
        trafgen_rate = rates["trafgen (wall clock)"]
        senders = [(name, rates[name]) for name, _ in measures]
        senders.insert(4, ("scapy sendp(list)", send_scapy_sendp(lab, frames[: args.scapy // 4])))
        print(f"\nsend: {args.send} frames (scapy: fewer), median of {r} runs")
        print(f"  {'sender':44} {'frames/s':>12} {'vs trafgen':>12}")
        for name, rate in senders:
            print(f"  {name:44} {rate:12,.0f} {rate / trafgen_rate:11.2f}x")
        ring_drain = drain[0].rate
        print("\ntargets: ring >= 2.5M frames/s to Python per-frame objects: "
              f"{ring_drain:,.0f} ({'met' if ring_drain >= 2.5e6 else 'NOT met'}); "
              f"sniff-to-pcap >= 0.5 x tcpdump: {drain[1].rate / drain[2].rate:.2f}; "
              f"no drops at the generator's rate: ring {live[0].dropped} dropped; "
              f"batched send >= 0.9 x trafgen (wall): {senders[0][1] / trafgen_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
