"""`gprocket sniff`: capture frames like tcpdump, without root.

    gprocket sniff -i IFACE [-c N] [-w FILE] [-s SNAPLEN] [-p] [FILTER...]

One summary line per frame on stdout (none with ``-w``), progress on stderr
every few seconds for long captures, and at the end the counts tcpdump
prints (captured, dropped by kernel). SIGINT/SIGTERM end the capture
cleanly: the pcap file is flushed and complete. Exit codes: 0 ok, 1
failure (no socket, no such interface), 2 usage error.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import time
from typing import TextIO

import gevent

from gprocket.packet import bpf, interfaces, pcap
from gprocket.packet.rawsock import ETH_P_ALL, open_packet_socket
from gprocket.packet.ring import RxRing
from gprocket.packet.summary import summarize

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprocket sniff",
        description="Capture frames on an interface (tcpdump-like lines, or -w FILE.pcap).")
    parser.add_argument("-i", dest="interface", required=True, help="interface to capture on")
    parser.add_argument("-c", dest="count", type=int, default=None,
                        help="stop after COUNT frames")
    parser.add_argument("-w", dest="write", default=None,
                        help="write frames to this pcap file instead of printing")
    parser.add_argument("-s", dest="snaplen", type=int, default=262144,
                        help="bytes kept per frame (default 262144)")
    parser.add_argument("-B", dest="buffer_kib", type=int, default=65536,
                        help="receive ring size in KiB (default 65536)")
    parser.add_argument("-p", dest="no_promisc", action="store_true",
                        help="do not put the interface into promiscuous mode")
    parser.add_argument("--nano", action="store_true",
                        help="nanosecond timestamps in the pcap file")
    parser.add_argument("--progress", type=float, default=2.0,
                        help="seconds between progress lines on stderr (0: none)")
    parser.add_argument("--helper", default=None, help="path of gprocket-helper")
    parser.add_argument("filter", nargs="*", metavar="FILTER",
                        help="tcpdump filter expression (compiled with libpcap)")
    return parser


class _Capture:
    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.captured = 0
        self.stopping = False
        self.writer: pcap.PcapWriter | None = None

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> int:
        args = self.args
        program = bpf.compile_expression(" ".join(args.filter)) if args.filter else None
        ifindex = interfaces.index_of(args.interface)
        sock = open_packet_socket(0, helper=args.helper)
        try:
            # Half-MiB blocks stay cache-friendly while Python walks them for
            # summaries (with -w compiled code writes them, 64 KiB at a time).
            ring = RxRing(sock, block_size=1 << 19, block_count=max(2, args.buffer_kib // 512),
                          timeout_ms=50)
            if program is not None:
                bpf.attach(sock, program)
            if not args.no_promisc:
                interfaces.set_promiscuous(sock, ifindex)
            interfaces.bind(sock, args.interface, ETH_P_ALL)
            if args.write:
                self.writer = pcap.PcapWriter(args.write, snaplen=args.snaplen,
                                              nanosecond=args.nano)
            print(f"gprocket sniff: listening on {args.interface} ({sock.rung}), "
                  f"snapshot length {args.snaplen} bytes", file=self.err, flush=True)
            try:
                self._loop(ring)
            finally:
                if self.writer is not None:
                    self.writer.close()
                stats = ring.stats()
                ring.close()
        finally:
            sock.close()
        print(f"{self.captured} packets captured\n{stats.dropped} packets dropped by kernel",
              file=self.err, flush=True)
        return 0

    def _loop(self, ring: RxRing) -> None:
        args = self.args
        start = last = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if args.progress and now - last >= args.progress and now - start >= args.progress:
                last = now
                print(f"gprocket sniff: {self.captured} packets captured", file=self.err,
                      flush=True)
            # One block per call: no frame stays referenced from this frame.
            if self._step(ring):
                return

    def _step(self, ring: RxRing) -> bool:
        """Handle one block; True once the count is reached."""
        args = self.args
        block = ring.next_block(timeout=0.2)
        if block is None:
            return False
        with block:
            room = None if args.count is None else args.count - self.captured
            if self.writer is not None:
                # Compiled, straight from the ring to the file: nothing per frame here.
                self.captured += self.writer.write_block(block, room)
            else:
                for rec in block.records()[:room]:
                    self.captured += 1
                    print(summarize(rec.data, rec.sec + rec.nsec / 1e9), file=self.out)
        return args.count is not None and self.captured >= args.count


def main(argv: list[str]) -> int:
    """Run ``gprocket sniff`` with ``argv`` (without the command name); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.count is not None and args.count <= 0:
        parser.print_usage(sys.stderr)
        print("gprocket sniff: -c must be positive", file=sys.stderr)
        return 2
    capture = _Capture(args, sys.stdout, sys.stderr)
    handlers = [gevent.signal_handler(sig, capture.stop)
                for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        code = capture.run()
        # The capture is over and everything it opened is closed: spare the
        # interpreter's exit a collection over every object it ever made
        # (tens of milliseconds, more than writing a short capture takes).
        gc.freeze()
        return code
    except ValueError as err:
        print(f"gprocket sniff: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"gprocket sniff: {err}", file=sys.stderr)
        fix = getattr(err, "fix", "")
        if fix:
            print(f"fix: {fix}", file=sys.stderr)
        return 1
    finally:
        for handler in handlers:
            handler.cancel()
        sys.stdout.flush()
