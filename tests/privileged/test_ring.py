"""gprocket.packet.ring: the TPACKET_V3 receive ring and batched sending, on a real
veth pair (root)."""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.socket
import pytest
from support.lab import VethLab, ether_frame, inside, veth_lab

from gprocket.packet import pcap, ring


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    with veth_lab("gpk") as made:
        yield made


@pytest.fixture(params=["speedups", "pure-python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure-python":
        monkeypatch.setattr(ring, "_packet_speed", None)
    else:
        assert ring.HAVE_SPEEDUPS, "build it: python -m gprocket.packet._build"
    return str(request.param)


def _packet_socket(ns: str) -> socket.socket:
    with inside(ns):
        sock: socket.socket = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    return sock


def _frames(lab: VethLab, count: int) -> list[bytes]:
    return [ether_frame(lab.mac_a, lab.mac_b, 0x88B5, struct.pack("!I", i) * (1 + i % 50))
            for i in range(count)]


def _receiving(lab: VethLab, timeout_ms: int) -> Iterator[tuple[socket.socket, ring.RxRing]]:
    sock = _packet_socket(lab.ns_a)
    try:
        rx_ring = ring.RxRing(sock, block_size=1 << 16, block_count=8, timeout_ms=timeout_ms)
        sock.bind((lab.if_a, 3))
        yield sock, rx_ring
        # A failed test's traceback may still hold a block: the ring then
        # refuses to close, and the socket must not leak into the next test.
        rx_ring.close()
    finally:
        sock.close()


@pytest.fixture
def rx(lab: VethLab) -> Iterator[tuple[socket.socket, ring.RxRing]]:
    """A block timeout no host preemption inside a burst reaches: blocks fill
    (a short one retired each tick of a stalled sender fills the ring, and
    the kernel drops frames), and a short burst lands in one block."""
    yield from _receiving(lab, timeout_ms=250)


@pytest.fixture
def tx(lab: VethLab) -> Iterator[socket.socket]:
    sock = _packet_socket(lab.ns_b)
    sock.bind((lab.if_b, 0))
    yield sock
    sock.close()


def _drain(rx_ring: ring.RxRing, timeout: float = 0.5) -> list[ring.RingFrame]:
    out = []
    for block in rx_ring.blocks(timeout=timeout):
        out += [ring.RingFrame(memoryview(bytes(r.data)), r.sec, r.nsec, r.wire_len, r.ifindex,
                               r.protocol, r.pkttype) for r in block.records()]
    return out


def test_ring_receives_every_frame_sent_in_batches(
        impl: str, lab: VethLab, rx: tuple[socket.socket, ring.RxRing],
        tx: socket.socket) -> None:
    _, rx_ring = rx
    frames = _frames(lab, 1000)
    sender = ring.BatchSender(tx)
    assert sender.send(frames) == 1000
    assert sender.sent == 1000
    got = _drain(rx_ring)
    assert [bytes(r.data) for r in got] == frames
    with inside(lab.ns_a):
        index = socket.if_nametoindex(lab.if_a)
    assert {(r.ifindex, r.protocol, r.pkttype) for r in got} == {(index, 0x88B5, 0)}
    assert all(r.wire_len == len(r.data) for r in got)
    stamps = [r.timestamp for r in got]
    assert stamps == sorted(stamps)
    assert rx_ring.stats() == ring.RingStats(1000, 0)


def test_block_frames_are_views_into_the_ring(
        lab: VethLab, rx: tuple[socket.socket, ring.RxRing], tx: socket.socket) -> None:
    _, rx_ring = rx
    frames = _frames(lab, 5)
    ring.BatchSender(tx).send(frames)
    block = rx_ring.next_block(timeout=5)
    assert block is not None
    with block:
        views = block.frames()
        assert all(isinstance(v, memoryview) and v.obj is block.view.obj for v in views)
        assert [bytes(v) for v in views] == frames[: len(views)]
        assert list(map(bytes, block)) == [bytes(v) for v in views]
        assert len(block) == len(views)
        assert block.wire_bytes() == sum(len(f) for f in frames[: len(views)])
        del views
    assert block.released
    _drain(rx_ring)


def test_iterating_a_block_yields_every_frame_as_a_view(
        impl: str, lab: VethLab, tx: socket.socket) -> None:
    # A long block timeout keeps the whole burst in few blocks, each with more
    # frames than one iteration slice: iteration must stitch the slices.
    sock = _packet_socket(lab.ns_a)
    rx_ring = ring.RxRing(sock, block_size=1 << 16, block_count=8, timeout_ms=100)
    sock.bind((lab.if_a, 3))
    frames = _frames(lab, 600)
    try:
        ring.BatchSender(tx).send(frames)
        got, largest = _iterate_blocks(rx_ring)
        assert got == frames
        assert largest > ring._ITER_SLICE
    finally:
        rx_ring.close()
        sock.close()


def _iterate_blocks(rx_ring: ring.RxRing) -> tuple[list[bytes], int]:
    """Every frame by iterating each block, and the most frames one block held.

    In its own function so that no view outlives it (the ring can then close).
    """
    got: list[bytes] = []
    largest = 0
    for block in rx_ring.blocks(timeout=0.5):
        views = list(block)
        assert all(v.obj is block.view.obj for v in views)
        assert [bytes(v) for v in views] == [bytes(v) for v in block.frames()]
        got += [bytes(v) for v in views]
        largest = max(largest, len(views))
    return got, largest


def test_records_after_release_are_refused(
        lab: VethLab, rx: tuple[socket.socket, ring.RxRing], tx: socket.socket) -> None:
    _, rx_ring = rx
    ring.BatchSender(tx).send(_frames(lab, 3))
    block = rx_ring.next_block(timeout=5)
    assert block is not None
    block.release()
    with pytest.raises(ValueError, match="already released"):
        block.records()
    with pytest.raises(ValueError, match="already released"):
        block.wire_bytes()
    _drain(rx_ring)


def test_pcap_records_equal_the_writer(
        impl: str, lab: VethLab, rx: tuple[socket.socket, ring.RxRing], tx: socket.socket,
        tmp_path: pytest.TempPathFactory) -> None:
    _, rx_ring = rx
    frames = _frames(lab, 20)
    ring.BatchSender(tx).send(frames)
    block = rx_ring.next_block(timeout=5)
    assert block is not None
    with block:
        for nano in (False, True):
            raw = block.pcap_records(40, nano)
            _, records = pcap.read_pcap(
                struct.pack("=IHHiIII", pcap.MAGIC_NSEC if nano else pcap.MAGIC_USEC, 2, 4, 0,
                            0, 40, 1) + raw)
            assert [r.data for r in records] == [f[:40] for f in frames[: block.count]]
            assert [r.orig_len for r in records] == [len(f) for f in frames[: block.count]]
            stamps = [(r.sec, r.frac) for r in records]
            metas = [(r.sec, r.nsec if nano else r.nsec // 1000) for r in block.records()]
            assert stamps == metas
    _drain(rx_ring)


def _per_frame_pcap(path: Path, block: ring.Block, snaplen: int, nano: bool,
                    limit: int | None) -> bytes:
    """The file PcapWriter.write makes from the block's records, one call per frame."""
    with pcap.PcapWriter(path, snaplen=snaplen, nanosecond=nano) as writer:
        for r in block.records()[:limit]:
            writer.write(r.data, r.sec, r.nsec if nano else r.nsec // 1000, r.wire_len)
    return path.read_bytes()


@pytest.fixture(params=[ring._PCAP_WRITE, 1024])
def write_size(request: pytest.FixtureRequest, impl: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Bytes of records per writev, with each implementation."""
    monkeypatch.setattr(ring, "_PCAP_WRITE", request.param)
    return int(request.param)


def test_write_block_makes_the_file_per_frame_writes_make(
        write_size: int, lab: VethLab, rx: tuple[socket.socket, ring.RxRing],
        tx: socket.socket, tmp_path: Path) -> None:
    """A block written straight from the ring (compiled: short frames staged
    beside their headers, long ones gathered from the ring, one writev per
    write_size bytes: with 1024 a block takes many, and the longest frames
    go alone) is byte for byte the file of one PcapWriter.write per frame:
    every snap length (none cut, long ones cut, all cut), both timestamp
    units, whole blocks and a count that ends inside one; also into a file
    object."""
    _, rx_ring = rx
    # 14 + 4 * (1 .. 360) bytes (within the MTU): both sides of the 256-byte staging limit.
    frames = [ether_frame(lab.mac_a, lab.mac_b, 0x88B5, struct.pack("!I", i) * (1 + i * 37 % 360))
              for i in range(40)]
    ring.BatchSender(tx).send(frames)
    block = rx_ring.next_block(timeout=5)
    assert block is not None
    with block:
        assert block.count == len(frames)
        for snaplen in (262144, 300, 40):
            for nano in (False, True):
                for limit in (None, 3):
                    want = _per_frame_pcap(tmp_path / "want.pcap", block, snaplen, nano, limit)
                    with pcap.PcapWriter(tmp_path / "got.pcap", snaplen=snaplen,
                                         nanosecond=nano) as writer:
                        wrote = writer.write_block(block, limit)
                    assert wrote == (block.count if limit is None else limit)
                    assert writer.count == wrote
                    assert (tmp_path / "got.pcap").read_bytes() == want
                    memory = io.BytesIO()
                    with pcap.PcapWriter(memory, snaplen=snaplen, nanosecond=nano) as writer:
                        assert writer.write_block(block, limit) == wrote
                    assert memory.getvalue() == want
    with pytest.raises(ValueError, match="already released"):
        block.write_pcap(0, 100)
    _drain(rx_ring)


def test_next_block_waits_cooperatively(rx: tuple[socket.socket, ring.RxRing]) -> None:
    _, rx_ring = rx
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            gevent.sleep(0.001)

    greenlet = gevent.spawn(ticker)
    assert rx_ring.next_block(timeout=0.1) is None
    greenlet.kill()
    assert ticks > 0
    assert rx_ring.poll_block() is None


def test_full_ring_counts_kernel_drops(lab: VethLab, tx: socket.socket) -> None:
    sock = _packet_socket(lab.ns_a)
    small = ring.RxRing(sock, block_size=4096, block_count=2, frame_size=2048, timeout_ms=1)
    sock.bind((lab.if_a, 3))
    try:
        ring.BatchSender(tx).send(_frames(lab, 300))
        got = len(_drain(small, timeout=0.3))
        stats = small.stats()
        assert stats.dropped > 0
        assert stats.received == got
        assert stats.received + stats.dropped == 300
    finally:
        small.close()
        sock.close()


def test_close_refuses_while_frames_are_held(
        lab: VethLab, tx: socket.socket) -> None:
    sock = _packet_socket(lab.ns_a)
    rx_ring = ring.RxRing(sock, block_size=1 << 16, block_count=2, timeout_ms=2)
    sock.bind((lab.if_a, 3))
    ring.BatchSender(tx).send(_frames(lab, 3))
    block = rx_ring.next_block(timeout=5)
    assert block is not None
    held = block.frames()
    with pytest.raises(BufferError, match="still referenced"):
        rx_ring.close()
    assert not rx_ring.closed
    block.release()
    with pytest.raises(BufferError, match="still referenced"):  # the frames still do
        rx_ring.close()
    # Its frames were found before release; they are not handed out after it.
    with pytest.raises(ValueError, match="already released"):
        block.frames()
    with pytest.raises(ValueError, match="already released"):
        list(block)
    with pytest.raises(ValueError, match="already released"):
        block.pcap_records(100)
    del held
    rx_ring.close()  # a released Block kept around does not hold the ring
    assert rx_ring.closed
    with pytest.raises(ValueError, match="closed"):
        rx_ring.next_block(0)
    sock.close()


def test_ring_size_errors(lab: VethLab) -> None:
    sock = _packet_socket(lab.ns_a)
    try:
        with pytest.raises(ValueError, match="multiple of the page size"):
            ring.RxRing(sock, block_size=5000)
        first = ring.RxRing(sock, block_size=1 << 16, block_count=2)
        with pytest.raises(OSError, match=r"PACKET_VERSION|PACKET_RX_RING"):
            ring.RxRing(sock, block_size=1 << 16, block_count=2)
        first.close()
    finally:
        sock.close()


def test_batch_sender_errors_keep_errno(impl: str, lab: VethLab) -> None:
    unbound = _packet_socket(lab.ns_b)
    try:
        with pytest.raises(OSError) as info:
            ring.BatchSender(unbound).send([b"\0" * 60])
        assert info.value.errno == 6  # ENXIO: no interface to send on
        assert ring.BatchSender(unbound).send([]) == 0
    finally:
        unbound.close()


def test_qdisc_bypass_still_delivers(lab: VethLab, rx: tuple[socket.socket, ring.RxRing],
                                     tx: socket.socket) -> None:
    _, rx_ring = rx
    frames = _frames(lab, 100)
    assert ring.BatchSender(tx, qdisc_bypass=True).send(frames) == 100
    assert [bytes(r.data) for r in _drain(rx_ring)] == frames


def test_tx_ring_sends_every_frame_identical(
        impl: str, lab: VethLab, rx: tuple[socket.socket, ring.RxRing]) -> None:
    _, rx_ring = rx
    sock = _packet_socket(lab.ns_b)
    sock.bind((lab.if_b, 0))
    tx_ring = ring.TxRing(sock, frame_size=512, frame_count=64)
    frames = _frames(lab, 300)
    try:
        # More frames than the ring holds: it must wrap around and wait.
        assert tx_ring.send(frames) == 300
        assert tx_ring.sent == 300
        assert [bytes(r.data) for r in _drain(rx_ring)] == frames
        # 512-byte slots less the 48-byte header, less the 10-byte virtio_net_hdr
        # the compiled filler puts first (so the kernel copies frames linearly).
        assert tx_ring.max_frame == (454 if impl == "speedups" else 464)
        with pytest.raises(ValueError, match=f"slots hold {tx_ring.max_frame}"):
            tx_ring.send([b"\0" * (tx_ring.max_frame + 1)])
        assert tx_ring.send([]) == 0
    finally:
        tx_ring.close()
        sock.close()
    with pytest.raises(ValueError, match="closed"):
        tx_ring.send(frames)
    with pytest.raises(ValueError, match="multiple of 16"):
        ring.TxRing(sock, frame_size=100)


def test_tx_ring_without_whole_frame_copy(
        lab: VethLab, rx: tuple[socket.socket, ring.RxRing]) -> None:
    _, rx_ring = rx
    sock = _packet_socket(lab.ns_b)
    sock.bind((lab.if_b, 0))
    tx_ring = ring.TxRing(sock, frame_size=512, frame_count=64, copy_whole=False)
    frames = _frames(lab, 100)
    try:
        assert tx_ring.max_frame == 464
        assert tx_ring.send(frames) == 100
        assert [bytes(r.data) for r in _drain(rx_ring)] == frames
    finally:
        tx_ring.close()
        sock.close()
