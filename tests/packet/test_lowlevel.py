"""gprocket.packet.lowlevel: socket options by name, sockaddr, recvmsg/sendmsg, vectored
I/O, ioctl."""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from gprocket.packet import bpf, lowlevel
from gprocket.packet.lowlevel import Inet6Address, InetAddress, PacketAddress, UnixAddress


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    yield a, b
    a.close()
    b.close()


class Ticker:
    """A greenlet that counts while others wait: proof the hub is not blocked."""

    def __init__(self) -> None:
        self.ticks = 0
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.ticks += 1
            gevent.sleep(0.001)

    def stop(self) -> int:
        self.greenlet.kill()
        return self.ticks


def test_option_by_name_any_case() -> None:
    opt = lowlevel.option("so_reuseport")
    assert (opt.level, opt.number) == (socket.SOL_SOCKET, socket.SO_REUSEPORT)
    assert lowlevel.option("PACKET_ADD_MEMBERSHIP").level == 263


def test_option_table_agrees_with_python_socket_module() -> None:
    checked = 0
    for name, opt in lowlevel.OPTIONS.items():
        number = getattr(socket, name, None)
        if number is not None and name not in ("SO_RCVTIMEO", "SO_SNDTIMEO"):
            assert opt.number == number, name
            checked += 1
    assert checked > 40


def test_unknown_option_names_itself() -> None:
    with pytest.raises(ValueError, match=r"'SO_REUSEPROT'.*SO_REUSEPORT"):
        lowlevel.option("SO_REUSEPROT")
    with pytest.raises(TypeError, match="float"):
        lowlevel.option(1.5)  # type: ignore[arg-type]


def test_set_and_get_int_options_on_socket_and_fd(udp_pair: tuple[socket.socket, ...]) -> None:
    a, _ = udp_pair
    lowlevel.setsockopt(a, "SO_REUSEPORT", 1)
    assert lowlevel.getsockopt(a, "SO_REUSEPORT") == 1
    lowlevel.setsockopt(a.fileno(), "IP_TTL", 17)
    assert lowlevel.getsockopt(a.fileno(), "IP_TTL") == 17
    assert a.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 17
    assert lowlevel.getsockopt(a, "SO_DOMAIN") == socket.AF_INET
    assert lowlevel.getsockopt(a, "SO_TYPE") == socket.SOCK_DGRAM


def test_structure_and_bytes_options(udp_pair: tuple[socket.socket, ...]) -> None:
    a, _ = udp_pair
    lowlevel.setsockopt(a, "SO_LINGER", (1, 7))
    assert lowlevel.getsockopt(a, "SO_LINGER") == (1, 7)
    lowlevel.setsockopt(a, "SO_BINDTODEVICE", "lo")
    assert lowlevel.getsockopt(a, "SO_BINDTODEVICE").rstrip(b"\0") == b"lo"
    lowlevel.setsockopt(a, (socket.SOL_SOCKET, socket.SO_PRIORITY), struct.pack("i", 3))
    assert lowlevel.getsockopt(a, "SO_PRIORITY") == 3


def test_option_value_errors(udp_pair: tuple[socket.socket, ...]) -> None:
    a, _ = udp_pair
    with pytest.raises(TypeError, match="IP_TTL takes an int"):
        lowlevel.setsockopt(a, "IP_TTL", "64")
    with pytest.raises(TypeError, match="IP_TTL takes an int"):
        lowlevel.setsockopt(a, "IP_TTL", b"\0")
    with pytest.raises(ValueError, match="takes 8 bytes"):
        lowlevel.setsockopt(a, "SO_LINGER", b"\0")
    with pytest.raises(OSError, match="setsockopt PACKET_VERSION") as info:
        lowlevel.setsockopt(a, "PACKET_VERSION", 2)
    assert info.value.errno == errno.ENOPROTOOPT


def test_attach_filter_through_setsockopt_drops_datagrams(
        udp_pair: tuple[socket.socket, ...]) -> None:
    a, b = udp_pair
    lowlevel.setsockopt(a, "SO_ATTACH_FILTER", bpf.assemble(bpf.drop_all()))
    b.sendto(b"dropped", a.getsockname())
    with pytest.raises(TimeoutError):
        lowlevel.recvmsg(a, timeout=0.2)
    lowlevel.setsockopt(a, "SO_DETACH_FILTER", 0)
    b.sendto(b"kept", a.getsockname())
    assert lowlevel.recvmsg(a, timeout=5).data == b"kept"
    with pytest.raises(ValueError, match="multiple of 8"):
        lowlevel.setsockopt(a, "SO_ATTACH_FILTER", b"\0" * 5)


@pytest.mark.parametrize("addr", [
    InetAddress("192.0.2.7", 53),
    Inet6Address("fe80::1", 8080, 0x12345, 3),
    PacketAddress(4, 0x0800, 1, 3, bytes.fromhex("020000000001")),
    UnixAddress(b"/run/x.sock"),
    UnixAddress(b"\0abstract"),
])
def test_sockaddr_round_trip(addr: lowlevel.SockAddr) -> None:
    assert lowlevel.decode_sockaddr(lowlevel.encode_sockaddr(addr)) == addr


def test_sockaddr_layouts_match_the_kernel() -> None:
    raw = lowlevel.encode_sockaddr(InetAddress("127.0.0.1", 0x1234))
    assert raw == struct.pack("=H", 2) + b"\x12\x34" + bytes([127, 0, 0, 1]) + b"\0" * 8
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert len(lowlevel.encode_sockaddr(Inet6Address("::1", port))) == 28
    assert len(lowlevel.encode_sockaddr(PacketAddress(1))) == 20


def test_sockaddr_errors() -> None:
    with pytest.raises(ValueError, match="port 70000"):
        lowlevel.encode_sockaddr(InetAddress("127.0.0.1", 70000))
    with pytest.raises(ValueError, match="at most 8"):
        lowlevel.encode_sockaddr(PacketAddress(1, address=b"x" * 9))
    with pytest.raises(ValueError, match="family 16"):
        lowlevel.decode_sockaddr(struct.pack("=H", 16) + b"\0" * 14)
    with pytest.raises(ValueError, match="truncated"):
        lowlevel.decode_sockaddr(struct.pack("=H", 10) + b"\0" * 4)


def test_sendmsg_recvmsg_pass_a_descriptor() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        rights = array.array("i", [w]).tobytes()
        sent = lowlevel.sendmsg(left, [b"fd ", b"follows"],
                                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        assert sent == 10
        msg = lowlevel.recvmsg(right, 64, lowlevel.cmsg_space(4), timeout=5)
        assert msg.data == b"fd follows"
        assert not msg.truncated
        (level, kind, data), = msg.ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        passed = array.array("i", data)[0]
        os.write(passed, b"through the copy")
        os.close(passed)
        assert os.read(r, 100) == b"through the copy"
    finally:
        for fd in (r, w):
            os.close(fd)
        left.close()
        right.close()


def test_recvmsg_returns_pktinfo_and_decoded_address(udp_pair: tuple[socket.socket, ...]
                                                     ) -> None:
    a, b = udp_pair
    lowlevel.setsockopt(a, "IP_PKTINFO", 1)
    lowlevel.sendmsg(b, [b"hello"], address=InetAddress(*a.getsockname()))
    msg = lowlevel.recvmsg(a, 100, lowlevel.cmsg_space(12), timeout=5)
    assert msg.data == b"hello"
    assert msg.address == InetAddress("127.0.0.1", b.getsockname()[1])
    (level, kind, data), = msg.ancillary
    assert (level, kind) == (socket.IPPROTO_IP, lowlevel.option("IP_PKTINFO").number)
    assert data[8:12] == socket.inet_aton("127.0.0.1")


def test_recvmsg_truncation_flag(udp_pair: tuple[socket.socket, ...]) -> None:
    a, b = udp_pair
    b.sendto(b"x" * 100, a.getsockname())
    msg = lowlevel.recvmsg(a, 10, timeout=5)
    assert msg.truncated
    assert msg.data == b"x" * 10


def test_recvmsg_waits_cooperatively(udp_pair: tuple[socket.socket, ...]) -> None:
    a, b = udp_pair
    ticker = Ticker()
    sender = gevent.spawn_later(0.05, b.sendto, b"late", a.getsockname())
    msg = lowlevel.recvmsg(a.fileno(), timeout=5)
    sender.join()
    assert msg.data == b"late"
    assert ticker.stop() > 0


def test_recvmsg_timeout_names_errno(udp_pair: tuple[socket.socket, ...]) -> None:
    a, _ = udp_pair
    with pytest.raises(TimeoutError) as info:
        lowlevel.recvmsg(a, timeout=0.05)
    assert info.value.errno == errno.ETIMEDOUT


def test_readv_writev_on_a_pipe() -> None:
    r, w = os.pipe()
    try:
        assert lowlevel.writev(w, [b"abc", b"", b"defgh"]) == 8
        first, second = bytearray(3), bytearray(10)
        assert lowlevel.readv(r, [first, second]) == 8
        assert (bytes(first), bytes(second[:5])) == (b"abc", b"defgh")
        assert lowlevel.write(w, memoryview(b"xyz")) == 3
        assert lowlevel.read(r, 10) == b"xyz"
    finally:
        os.close(r)
        os.close(w)


def test_read_on_blocking_descriptor_does_not_block_the_hub() -> None:
    r, w = os.pipe()
    assert os.get_blocking(r)
    try:
        ticker = Ticker()
        writer = gevent.spawn_later(0.05, os.write, w, b"ready")
        assert lowlevel.read(r, 10, timeout=5) == b"ready"
        writer.join()
        assert ticker.stop() > 0
        with pytest.raises(TimeoutError):
            lowlevel.read(r, 10, timeout=0.05)
    finally:
        os.close(r)
        os.close(w)


def test_ioctl_with_pointer_and_buffer(udp_pair: tuple[socket.socket, ...]) -> None:
    a, b = udp_pair
    b.sendto(b"12345", a.getsockname())
    gevent.socket.wait_read(a.fileno(), timeout=5)
    pending = lowlevel.alloc("int *")
    assert lowlevel.ioctl(a, "FIONREAD", pending) == 0
    assert pending[0] == 5
    ifreq = b"lo".ljust(40, b"\0")
    out = lowlevel.ioctl_buffer(a, "SIOCGIFINDEX", ifreq)
    assert struct.unpack_from("i", out, 16)[0] == socket.if_nametoindex("lo")
    assert lowlevel.buf(pending) == struct.pack("i", 5)


def test_ioctl_errors_keep_errno_and_name(udp_pair: tuple[socket.socket, ...]) -> None:
    a, _ = udp_pair
    with pytest.raises(OSError, match="ioctl SIOCGIFINDEX") as info:
        lowlevel.ioctl_buffer(a, "SIOCGIFINDEX", b"gpk-nonexistent\0".ljust(40, b"\0"))
    assert info.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="unknown ioctl 'SIOCBOGUS'"):
        lowlevel.ioctl(a, "SIOCBOGUS")
    with pytest.raises(TypeError, match="ioctl_buffer"):
        lowlevel.ioctl(a, "FIONREAD", b"bytes")
    with pytest.raises(ValueError, match="invalid descriptor"):
        lowlevel.fileno(-1)


def test_recvmsg_on_a_socket_with_a_timeout_still_yields() -> None:
    # A stdlib socket with a timeout polls inside each call; recvmsg must not.
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    a.settimeout(30)
    try:
        ticker = Ticker()
        with pytest.raises(TimeoutError):
            lowlevel.recvmsg(a, timeout=0.05)
        assert ticker.stop() > 0
    finally:
        a.close()
