"""The packet layer's compiled loops (gprocket/packet/_speed.c) under ASan/UBSan, on a veth pair.

The module is rebuilt with clang's address and undefined-behaviour
sanitizers into a copy of the installed package (tests/support/sanitized.py)
and a child runs the ring through it: frames sent in batches (sendmmsg) and
through a TX ring, received in a TPACKET_V3 ring, each block walked, its
metadata read, turned into pcap records and written to files (with a 1 KiB
staging buffer, so records are split over many writes and the long frames
go alone, then the default 64 KiB), every file equal to one
PcapWriter.write per frame. The ring is mapped memory, which ASan does not
watch: each block is also copied into a heap buffer of exactly its used
length and every call is repeated on the copy, with output buffers of exactly
the size the records need and the smallest staging the writer accepts, so a
read or write one byte out of place is reported. Any report aborts the
child. Root: packet sockets and the namespaces of tests/support/lab.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.lab import VethLab, veth_lab
from support.sanitized import build_sanitized, sanitized_env

from gprocket.packet import _build as _packet_build

TESTS = Path(__file__).resolve().parents[1]
COUNT = 120  # a round: half by sendmmsg, half through the TX ring

CHILD = """
import importlib, json, os, socket, struct, sys
import gevent.socket
from support.lab import ether_frame, inside
from gprocket.packet import pcap, ring

root, module, ns_a, ns_b, if_a, if_b, mac_a, mac_b, scratch = sys.argv[1:10]
count = int(sys.argv[10])
speed = importlib.import_module(module)
assert speed.__file__.startswith(root) and ring._packet_speed is speed, speed.__file__
ffi, lib = speed.ffi, speed.lib
failures = []
out = {"sent": 0, "received": 0, "blocks": 0, "files": 0}


def check(ok, what):
    if not ok:
        failures.append(what)


def packet_socket(ns):
    with inside(ns):
        return gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)


def per_frame(path, records, snaplen, nano, limit):
    with pcap.PcapWriter(path, snaplen=snaplen, nanosecond=nano) as writer:
        for r in records[:limit]:
            writer.write(r.data, r.sec, r.nsec if nano else r.nsec // 1000, r.wire_len)
    with open(path, "rb") as f:
        return f.read()


def on_the_heap(block, records, views):
    # The block's used bytes (blk_len, at offset 20) in a heap buffer of exactly that size.
    (used,) = struct.unpack_from("=I", block.view, 20)
    copy = ffi.new("uint8_t[]", used)
    ffi.memmove(copy, block.view[:used], used)
    n = block.count
    starts, ends = ffi.new("uint32_t[]", n), ffi.new("uint32_t[]", n)
    check(lib.gpk_walk_block(copy, starts, ends, n) == n, "walk count")
    data = ffi.buffer(copy)
    check([data[s:e] for s, e in zip(ffi.unpack(starts, n), ffi.unpack(ends, n))] == views,
          "walk bounds")
    meta = ffi.new("uint32_t[]", 5 * n)
    check(lib.gpk_block_meta(copy, meta, n) == n, "meta count")
    check(ffi.unpack(meta, 5 * n)[0::5] == [r.wire_len for r in records], "meta lengths")
    for snaplen in (262144, 40):
        for nano in (0, 1):
            want = per_frame(f"{scratch}/want", records, snaplen, nano, None)[24:]
            exact = ffi.new("uint8_t[]", len(want))
            frames, nbytes = ffi.new("uint32_t *"), ffi.new("uint64_t *")
            size = lib.gpk_block_to_pcap(copy, exact, len(want), snaplen, nano, frames, nbytes)
            check(size == len(want) and ffi.buffer(exact)[:] == want, "records")
            check(lib.gpk_block_to_pcap(copy, exact, len(want) - 1, snaplen, nano, frames,
                                        nbytes) == -1, "records one byte short")
            stage, iov = ffi.new("uint8_t[]", 16 + 256), ffi.new("struct iovec[]", 2)
            written = ffi.new("uint32_t *")
            fd = os.open(f"{scratch}/heap", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                got = lib.gpk_block_write(fd, copy, snaplen, nano, n, stage, 16 + 256, iov, 2,
                                          written)
            finally:
                os.close(fd)
            with open(f"{scratch}/heap", "rb") as f:
                check(got == n and f.read() == want, "write from the heap copy")


tx = packet_socket(ns_b)
tx.bind((if_b, 0))
tx_ring_sock = packet_socket(ns_b)
tx_ring_sock.bind((if_b, 0))
tx_ring = ring.TxRing(tx_ring_sock, frame_size=2048, frame_count=16)
# 14 + 4 * (1 .. 360) bytes: both sides of the 256-byte staging limit.
frames = [ether_frame(mac_a, mac_b, 0x88B5, struct.pack("!I", i) * (1 + i * 37 % 360))
          for i in range(count)]


def drain(rx, stage):
    # Every frame of every block, each block checked on the way (views end here).
    got = []
    for block in rx.blocks(timeout=0.5):
        out["blocks"] += 1
        records = block.records()
        views = [bytes(v) for v in block.frames()]
        got += views
        for snaplen in (262144, 300, 40):
            for nano in (False, True):
                whole = per_frame(f"{scratch}/want", records, snaplen, nano, None)
                check(block.pcap_records(snaplen, nano) == whole[24:], "pcap_records")
                for limit in (None, 3):
                    want = whole if limit is None else per_frame(
                        f"{scratch}/want", records, snaplen, nano, limit)
                    with pcap.PcapWriter(f"{scratch}/got", snaplen=snaplen,
                                         nanosecond=nano) as writer:
                        writer.write_block(block, limit)
                    with open(f"{scratch}/got", "rb") as f:
                        check(f.read() == want, f"file {stage} {snaplen} {nano} {limit}")
                    out["files"] += 1
        on_the_heap(block, records, views)
    return got


for stage in (1024, 1 << 16):
    ring._PCAP_WRITE = stage  # read when a ring first writes
    rx_sock = packet_socket(ns_a)
    rx = ring.RxRing(rx_sock, block_size=1 << 16, block_count=8, timeout_ms=100)
    rx_sock.bind((if_a, 3))
    out["sent"] += ring.BatchSender(tx).send(frames[: count // 2])
    out["sent"] += tx_ring.send(frames[count // 2:])
    got = drain(rx, stage)
    out["received"] += len(got)
    check(got == frames, f"frames received {stage}")
    rx.close()
    rx_sock.close()
tx_ring.close()
out["failures"] = failures
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    with veth_lab("gps") as made:
        yield made


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is part of the CI image")
def test_compiled_ring_and_pcap_run_clean_under_asan_and_ubsan(tmp_path: Path,
                                                               lab: VethLab) -> None:
    module = build_sanitized(_packet_build, tmp_path / "copy")
    dotted = _packet_build.ffibuilder._assigned_source[0]
    assert module.is_file()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = sanitized_env(f"{tmp_path / 'copy'}:{TESTS}")
    proc = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(CHILD),
                           str(tmp_path / "copy"), dotted, lab.ns_a, lab.ns_b, lab.if_a,
                           lab.if_b, lab.mac_a, lab.mac_b, str(scratch), str(COUNT)],
                          env=env, capture_output=True, text=True, check=False, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    got = json.loads(proc.stdout)
    assert got["failures"] == []
    assert got["sent"] == got["received"] == 2 * COUNT
    assert got["blocks"] >= 2 and got["files"] == got["blocks"] * 12
