"""gprocket.packet.rawsock: the stateful raw socket (passive, active, send, filters, stats),
on a real veth pair (root)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import gevent
import gevent.queue
import pytest
from support.lab import VethLab, ether_frame, inside, veth_lab

from gprocket.packet import bpf, rawsock
from gprocket.packet.rawsock import Frame, LinuxPacketBackend, RawSocket


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    with veth_lab("gpk") as made:
        yield made


@pytest.fixture
def pair(lab: VethLab) -> Iterator[tuple[RawSocket, RawSocket]]:
    with inside(lab.ns_a):
        a = RawSocket(lab.if_a)
    with inside(lab.ns_b):
        b = RawSocket(lab.if_b, protocol=0x88B5)
    yield a, b
    a.close()
    b.close()


def _frames(lab: VethLab, count: int, ethertype: int = 0x88B5) -> list[bytes]:
    return [ether_frame(lab.mac_a, lab.mac_b, ethertype, f"frame {i}".encode())
            for i in range(count)]


def test_holds_interface_state(lab: VethLab, pair: tuple[RawSocket, RawSocket]) -> None:
    a, _ = pair
    with inside(lab.ns_a):
        index = socket.if_nametoindex(lab.if_a)
    assert (a.interface, a.ifindex, a.mac, a.mtu) == (lab.if_a, index, lab.mac_a, 1500)
    backend = a.backend
    assert isinstance(backend, LinuxPacketBackend)
    assert backend.sock.rung == "plain"
    assert a.fileno() == backend.sock.fileno()


def test_passive_recv_and_iteration(lab: VethLab, pair: tuple[RawSocket, RawSocket]) -> None:
    a, b = pair
    frames = _frames(lab, 10)
    assert b.send(frames[0]) == len(frames[0])
    assert b.send_many(frames[1:]) == 9
    first = a.recv(timeout=5)
    assert isinstance(first, Frame)
    assert first.data == frames[0]
    assert (first.ifindex, first.protocol, first.pkttype) == (a.ifindex, 0x88B5, 0)
    assert not first.truncated and not first.outgoing
    rest = list(a.frames(count=9, timeout=5))
    assert [f.data for f in rest] == frames[1:]
    assert a.recv(timeout=0.05) is None
    assert a.stats() == rawsock.Stats(10, 0)


def test_active_mode_with_callback_and_queue(lab: VethLab,
                                             pair: tuple[RawSocket, RawSocket]) -> None:
    a, b = pair
    got: list[bytes] = []
    a.start(lambda frame: got.append(frame.data))
    assert a.active
    with pytest.raises(RuntimeError, match="already started"):
        a.start()
    with pytest.raises(RuntimeError, match="active mode"):
        a.recv(0)
    frames = _frames(lab, 20)
    b.send_many(frames)
    while len(got) < 20:
        gevent.sleep(0.01)
    a.stop()
    assert not a.active
    assert got == frames
    queue = a.start()
    assert isinstance(queue, gevent.queue.Queue)
    b.send_many(frames[:3])
    assert [queue.get(timeout=5).data for _ in range(3)] == frames[:3]
    a.stop()
    mine: gevent.queue.Queue = gevent.queue.Queue()
    assert a.start(queue=mine) is mine
    with pytest.raises(RuntimeError, match="not both"):
        a.stop()
        a.start(lambda f: None, mine)


def test_filters_expression_and_lock(lab: VethLab, pair: tuple[RawSocket, RawSocket]) -> None:
    a, b = pair
    a.set_filter("ether proto 0x88b6")
    b.send_many(_frames(lab, 5, 0x88B5) + _frames(lab, 2, 0x88B6))
    got = list(a.frames(count=2, timeout=5))
    assert [int.from_bytes(f.data[12:14], "big") for f in got] == [0x88B6, 0x88B6]
    assert a.recv(timeout=0.05) is None  # and none of the five others
    a.set_filter(bpf.ethertype(0x88B5))
    a.lock_filter()
    with pytest.raises(OSError) as info:
        a.set_filter(bpf.accept_all())
    assert info.value.errno == errno.EPERM


def test_snaplen_truncates(lab: VethLab) -> None:
    with inside(lab.ns_a):
        small = RawSocket(lab.if_a, snaplen=20)
    with inside(lab.ns_b):
        sender = RawSocket(lab.if_b)
    try:
        frame = ether_frame(lab.mac_a, lab.mac_b, 0x88B5, b"x" * 100)
        sender.send(frame)
        got = small.recv(timeout=5)
        assert got is not None
        assert got.data == frame[:20]
        assert got.truncated
    finally:
        small.close()
        sender.close()


def test_errors_and_close(lab: VethLab) -> None:
    with inside(lab.ns_a), pytest.raises(OSError) as info:
        RawSocket("gpk-missing")
    assert info.value.errno == errno.ENODEV
    with inside(lab.ns_a):
        sock = RawSocket(lab.if_a, promiscuous=True)
    detail = lab.run_a(["ip", "-d", "link", "show", lab.if_a]).stdout
    assert "promiscuity 1" in detail
    with sock:
        sock.start()
    assert sock.closed and not sock.active
    sock.close()
    detail = lab.run_a(["ip", "-d", "link", "show", lab.if_a]).stdout
    assert "promiscuity 0" in detail
