"""Receive the helper's reply and its descriptor, and check the descriptor.

A reply arrives as one SEQPACKET message with at most one SCM_RIGHTS
descriptor. Received descriptors are close-on-exec from the first instant
(MSG_CMSG_CLOEXEC); truncated data or control data is an error; descriptors
beyond the first are closed. The descriptor kept is checked against the
request (family, type, protocol, bound address; a TUN descriptor must be the
character device 10:200 attached to the named interface) before anyone sees
it: trust the descriptor, not the peer.

With ``gprocket._channel._fdpass_speed`` built (``fdpass_build.py``) the read and
the check of an inet socket run in C; the rules applied to what was read,
and every refusal, stay here in Python, shared by both paths.
"""

from __future__ import annotations

import _socket  # noqa: PLC2701 - the C socket type, without socket.socket's wrapper
import array
import errno
import fcntl
import importlib
import os
import select
import socket
import stat
import threading
import time
from typing import Any, NamedTuple

import gevent.socket
from gevent.monkey import get_original

from .._errors import HelperError
from .._socket import disown
from .._spec import DeviceRequest, Request, SocketRequest, TunRequest
from .wire import REPLY_SIZE, Reply, decode_reply

__all__ = ["Poll", "close_fds", "receive", "receive_now", "tun_name", "verify"]

# Room for more descriptors than the protocol allows, so extras are seen and closed.
_MAX_FDS = 16
_ANCBUF = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
MSG_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000)
# Plain ints: the socket module's flag enums cost a Python call per test.
_MSG_TRUNC = int(socket.MSG_TRUNC)
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_SO_DOMAIN = int(socket.SO_DOMAIN)
_SO_TYPE = int(socket.SO_TYPE)
_SO_PROTOCOL = int(socket.SO_PROTOCOL)
_SO_BINDTODEVICE = int(socket.SO_BINDTODEVICE)
_SO_ACCEPTCONN = int(socket.SO_ACCEPTCONN)
_IPPROTO_IPV6 = int(socket.IPPROTO_IPV6)
_IPV6_V6ONLY = int(socket.IPV6_V6ONLY)
_poll = get_original("select", "poll")
_new_socket = _socket.socket.__new__
_init_socket = _socket.socket.__init__

# How a poll went (gpf_receive's meta[3]; the Python poll says the same): the
# message was queued at once, came while polling, or the poll gave up having
# lost its CPU on the way, or when its window passed.
_AT_ONCE, _POLLED, _LOST_CPU, _EXPIRED = 0, 1, 2, 3
# A longer gap between two tries of a poll: this thread lost its CPU meanwhile.
_GAP_SECONDS = 20e-6
_BACKOFF_MAX = 1024

_speed: Any
try:
    _speed = importlib.import_module("gprocket._channel._fdpass_speed")
except ImportError:  # not built: the same receive and checks in Python, slower
    _speed = None
_buffers = threading.local()


def close_fds(fds: list[int]) -> None:
    """Close every descriptor in ``fds``."""
    for fd in fds:
        os.close(fd)


TUNGETIFF = 0x800454D2


def tun_name(fd: int) -> str:
    """The interface name a TUN/TAP descriptor is attached to (TUNGETIFF)."""
    ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    return ifr[:16].split(b"\0", 1)[0].decode()


class Poll:
    """Whether the next receive polls before it waits, and for how long.

    Polling pays while the peer has a CPU of its own to answer on: a reply
    that comes within the window is read without the hub's wait and a
    thread's wake-up. A poll that lost its CPU on the way (another process
    wants it) did not pay, nor did one that outlasted its window while the
    peer (``peer``, a pid) sat on this very CPU or more tasks were running
    than the machine has CPUs (the peer was waiting for a CPU): the next 1,
    2, 4 ... 1024 receives wait at once. A poll that outlasted its window
    with the peer on another CPU and CPUs to spare met a slow or sleeping
    peer, not a crowded CPU: only the next receive waits. A poll that finds
    its reply ends the suspension; a reply already queued says nothing
    either way. See docs/ARCHITECTURE.md "Polling only while it pays".
    """

    __slots__ = ("backoff", "peer", "skip", "window")

    def __init__(self, window: float, peer: int | None = None) -> None:
        self.window = window  # seconds; 0: never poll
        self.peer = peer
        self.skip = 0  # receives still to wait for without polling
        self.backoff = 0  # the suspension after the next poll that does not pay

    def next_window(self) -> float:
        """How long the next receive polls (0: it waits at once)."""
        if self.skip:
            self.skip -= 1
            return 0.0
        return self.window

    def record(self, outcome: int) -> None:
        """Learn from one poll's outcome (_AT_ONCE, _POLLED, _LOST_CPU or _EXPIRED)."""
        if outcome == _POLLED:
            self.backoff = self.skip = 0
        elif outcome == _EXPIRED and _peer_elsewhere(self.peer) and _cpus_to_spare():
            self.skip = 1
        elif outcome in (_LOST_CPU, _EXPIRED):
            self.backoff = min(self.backoff * 2 or 1, _BACKOFF_MAX)
            self.skip = self.backoff


def _peer_elsewhere(peer: int | None) -> bool:
    """Whether process ``peer`` is known to be on another CPU than this thread
    (its /proc/PID/stat, readable by anyone: read only when a poll outlasts
    its window). Unknown counts as no."""
    if peer is None or _speed is None:
        return False
    try:
        with open(f"/proc/{peer}/stat", "rb") as stat:
            # Field 39, "processor", counted after the parenthesised name.
            peer_cpu = int(stat.read().rpartition(b")")[2].split()[36])
    except (OSError, ValueError, IndexError):
        return False
    here: int = _speed.lib.gpf_cpu()
    return here >= 0 and peer_cpu != here


def _cpus_to_spare() -> bool:
    """Whether no more tasks are running than there are CPUs (this one and
    its peer included): the kernel's count in /proc/loadavg, read only when
    a poll outlasts its window."""
    try:
        with open("/proc/loadavg", "rb") as loadavg:
            running = int(loadavg.read().split()[3].partition(b"/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return running <= (os.cpu_count() or 1)


def receive(channel: gevent.socket.socket, spin: float = 0.0,
            poll: Poll | None = None) -> tuple[Reply, int | None] | None:
    """One reply and its descriptor (if any) from ``channel``; None at end of file.

    Polls for up to ``spin`` seconds (with ``poll``: as long as it says, and
    tells it how the poll went) before it waits cooperatively (the
    channel's own timeout applies). Raises HelperError for a malformed,
    truncated or over-furnished message, having closed every descriptor it
    carried.
    """
    if poll is not None:
        spin = poll.next_window()
    if _speed is not None:
        fd = channel.fileno()
        got, outcome = _receive_compiled(fd, spin)
        if poll is not None and spin:
            poll.record(outcome)
        while got is None:
            # Wait, then one compiled read: no second failed read before the
            # wait, as the gevent socket's recvmsg would make.
            _wait_readable(channel)
            got, _ = _receive_compiled(fd, 0.0)
        return _judge(*got)
    if spin:
        outcome = _poll_readable(channel.fileno(), spin)
        if poll is not None:
            poll.record(outcome)
    data, ancdata, flags, _ = channel.recvmsg(REPLY_SIZE + 1, _ANCBUF, MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    foreign = []
    for level, kind, payload in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            ints = array.array("i")
            ints.frombytes(payload[: len(payload) - len(payload) % ints.itemsize])
            fds.extend(ints)
        else:
            foreign.append((level, kind))
    return _judge(data, fds, flags, foreign)


# gevent's own wait on a socket's watcher, as its recvmsg does (private: a
# gevent without it gets the public wait_read, one new watcher per wait).
_SOCKET_WAIT = callable(getattr(gevent.socket.socket, "_wait", None))


def _wait_readable(channel: gevent.socket.socket) -> None:
    """Until ``channel`` is readable; TimeoutError after its own timeout."""
    if _SOCKET_WAIT:
        channel._wait(channel._read_event)
    else:
        gevent.socket.wait_read(channel.fileno(), channel.gettimeout(),
                                TimeoutError("timed out"))


def receive_now(channel: socket.socket, poll: Poll | None = None
                ) -> tuple[Reply, int | None] | None:
    """``receive`` for a non-blocking channel that is never waited on here
    (asyncio's): BlockingIOError when no reply came at once (with ``poll``:
    within its window), from the one read that found none."""
    if _speed is None:
        return receive(channel, poll=poll)  # its recvmsg raises BlockingIOError
    spin = poll.next_window() if poll is not None else 0.0
    got, outcome = _receive_compiled(channel.fileno(), spin)
    if poll is not None and spin:
        poll.record(outcome)
    if got is None:
        raise BlockingIOError(errno.EAGAIN, "no reply queued")
    return _judge(*got)


def _receive_compiled(fd: int, spin: float
                      ) -> tuple[tuple[bytes, list[int], int, list[Any]] | None, int]:
    """What gpf_receive read (None when nothing came within ``spin``), and how the poll went."""
    buf, fds, meta = _scratch()
    size = _speed.lib.gpf_receive(fd, buf, REPLY_SIZE + 1, int(spin * 1e9), fds, meta)
    if size == -errno.EAGAIN:
        return None, meta[3]
    if size < 0:
        raise OSError(-size, os.strerror(-size))
    foreign = [("unknown", "not SCM_RIGHTS")] if meta[2] else []
    return (_speed.ffi.buffer(buf, size)[:], _speed.ffi.unpack(fds, meta[0]), meta[1],
            foreign), meta[3]


def _scratch() -> tuple[Any, Any, Any]:
    """This thread's buffers for gpf_receive, allocated once."""
    found: tuple[Any, Any, Any] | None = getattr(_buffers, "scratch", None)
    if found is None:
        ffi = _speed.ffi
        found = (ffi.new("uint8_t[]", REPLY_SIZE + 1), ffi.new("int[]", _MAX_FDS),
                 ffi.new("int[4]"))
        _buffers.scratch = found
    return found


def _poll_readable(fd: int, spin: float) -> int:
    """Without the compiled module: poll until ``fd`` is readable, ``spin`` has
    passed or this thread lost its CPU; how the poll went."""
    poller = _poll()
    poller.register(fd, select.POLLIN)
    poll, clock = poller.poll, time.perf_counter
    if poll(0):
        return _AT_ONCE
    last = clock()
    deadline = last + spin
    while not poll(0):
        now = clock()
        if now - last > _GAP_SECONDS:
            return _LOST_CPU
        if now >= deadline:
            return _EXPIRED
        last = now
    return _POLLED


def _judge(data: bytes, fds: list[int], flags: int,
           foreign: list[Any]) -> tuple[Reply, int | None] | None:
    """The reply in ``data`` with the one descriptor it may carry, or None at end of file."""
    if len(fds) == 1 and not foreign and not flags & (_MSG_TRUNC | _MSG_CTRUNC) \
            and len(data) == REPLY_SIZE:
        # The common case, kept short: one reply carrying one descriptor.
        try:
            reply = decode_reply(data)
            if not reply.ok:
                raise HelperError(f"the helper's error reply (id {reply.id}) carried a descriptor")
        except BaseException:
            os.close(fds[0])
            raise
        return reply, fds[0]
    try:
        if not data and not fds and not foreign:
            return None
        if flags & _MSG_CTRUNC:
            raise HelperError("the helper's reply had truncated control data (MSG_CTRUNC)")
        if flags & _MSG_TRUNC or len(data) != REPLY_SIZE:
            raise HelperError(f"the helper's reply is {len(data)} bytes, expected {REPLY_SIZE}")
        if foreign:
            raise HelperError(f"the helper's reply carried unexpected control messages {foreign}")
        reply = decode_reply(data)
        if not reply.ok and fds:
            raise HelperError(f"the helper's error reply (id {reply.id}) carried a descriptor")
    except BaseException:
        close_fds(fds)
        raise
    # The protocol allows one descriptor: any other is closed unseen.
    close_fds(fds[1:])
    return reply, (fds[0] if fds else None)


def verify(fd: int | None, request: Request, reply: Reply) -> int:
    """Check that ``fd`` is what ``request`` asked for and return it.

    Raises HelperError (the descriptor closed) when it is missing or differs.
    """
    if fd is None:
        raise HelperError(f"the helper's reply (id {reply.id}) carried no descriptor")
    try:
        _verify(fd, request, reply)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _verify(fd: int, request: Request, reply: Reply) -> None:
    if isinstance(request, SocketRequest):
        if _speed is not None and _compiled_check(fd, _expect(request)):
            return  # close-on-exec included
        _verify_socket(fd, request)
    elif isinstance(request, TunRequest):
        _verify_tun(fd, request, reply)
    elif isinstance(request, DeviceRequest):
        _verify_device(fd, request)
    if os.get_inheritable(fd):
        raise HelperError("the received descriptor is not close-on-exec")


def _mismatch(what: str, got: object, wanted: object) -> HelperError:
    return HelperError(
        f"the helper returned a descriptor with {what} {got!r}, requested {wanted!r}"
    )


class _Expect(NamedTuple):
    """What a descriptor for one SocketRequest must show, worked out once."""

    family: int
    type: int
    protocol: int
    packet: bool
    address: bytes | None  # packed bound address; None: not bound
    port: int  # bound port to check; 0: none (raw sockets have no port)
    v6only: int | None  # IPV6_V6ONLY to expect; None: not an IPv6 datagram/stream
    interface: str | None
    listening: bool
    compiled: tuple[Any, ...] | None = None  # gpf_check_inet's arguments after fd


def _expect(request: SocketRequest) -> _Expect:
    # Requests are frozen: the expectation is kept on the request object
    # itself (as _spec keeps its hash), so a broker serving the same request
    # again pays one dict lookup instead of a hash and a cache probe.
    found: _Expect | None = request.__dict__.get("_gprocket_expect")
    if found is None:
        bound = request.needs_bind and request.family != socket.AF_PACKET
        found = _Expect(
            family=request.family,
            type=request.type,
            protocol=request.protocol,
            packet=request.family == socket.AF_PACKET,
            address=socket.inet_pton(request.family, request.bind_ip) if bound else None,
            port=request.port if request.type != socket.SOCK_RAW else 0,
            v6only=(
                int(not request.dualstack)
                if request.family == socket.AF_INET6 and request.type != socket.SOCK_RAW
                else None
            ),
            interface=request.interface,
            listening=bool(request.backlog),
        )
        if _speed is not None and not found.packet:
            found = found._replace(compiled=(
                found.family, found.type, found.protocol,
                found.address if found.address is not None else _speed.ffi.NULL,
                found.port, -1 if found.v6only is None else found.v6only,
                found.interface.encode() if found.interface else _speed.ffi.NULL,
                int(found.listening),
            ))
        request.__dict__["_gprocket_expect"] = found
    return found


def _compiled_check(fd: int, expect: _Expect) -> bool:
    """gpf_check_inet's yes. Its no (and every packet socket) goes to the
    Python checks, which decide and name what differs: the compiled check
    can only shorten the way to an acceptance the Python one would give."""
    return expect.compiled is not None and bool(_speed.lib.gpf_check_inet(fd, *expect.compiled))


def _verify_socket(fd: int, request: SocketRequest) -> None:
    # Explicit family/type/proto: no autodetection, the checks below read
    # them. The C type, not socket.socket: the same calls without the
    # Python-level wrapper around each one.
    expect = _expect(request)
    sock = _new_socket(_socket.socket)
    try:
        _init_socket(sock, expect.family, expect.type, expect.protocol, fd)
    except OSError as err:
        # It may have taken fd before failing: verify closes it, once.
        disown(sock, fd)
        raise HelperError(f"the helper returned an unusable descriptor: {err}") from err
    try:
        _check_socket(sock, expect, request)
    except OSError as err:
        raise HelperError(f"the helper returned an unusable descriptor: {err}") from err
    finally:
        sock.detach()


def _check_socket(sock: _socket.socket, expect: _Expect, request: SocketRequest) -> None:
    domain = sock.getsockopt(_SOL_SOCKET, _SO_DOMAIN)
    kind = sock.getsockopt(_SOL_SOCKET, _SO_TYPE)
    if domain != expect.family:
        raise _mismatch("family", domain, expect.family)
    if kind != expect.type:
        raise _mismatch("type", kind, expect.type)
    if expect.packet:
        # SO_PROTOCOL reads 0 on packet sockets: the bound ethertype
        # (sll_protocol, which Python turns to host order) is the check.
        ifname, ethertype = sock.getsockname()[:2]
        if ethertype != expect.protocol:
            raise _mismatch("ethertype", ethertype, expect.protocol)
        if (ifname or None) != expect.interface:
            raise _mismatch("interface", ifname, expect.interface)
        return
    proto = sock.getsockopt(_SOL_SOCKET, _SO_PROTOCOL)
    if proto != expect.protocol:
        raise _mismatch("protocol", proto, expect.protocol)
    if expect.address is not None:
        name = sock.getsockname()
        if expect.port and name[1] != expect.port:
            raise _mismatch("port", name[1], expect.port)
        if socket.inet_pton(expect.family, name[0]) != expect.address:
            raise _mismatch("address", name[0], request.bind_ip)
    if expect.v6only is not None:
        v6only = sock.getsockopt(_IPPROTO_IPV6, _IPV6_V6ONLY)
        if v6only != expect.v6only:
            raise _mismatch("IPV6_V6ONLY", v6only, expect.v6only)
    if expect.interface:
        bound = sock.getsockopt(_SOL_SOCKET, _SO_BINDTODEVICE, 16).split(b"\0", 1)[0]
        if bound.decode() != expect.interface:
            raise _mismatch("SO_BINDTODEVICE", bound.decode(), expect.interface)
    if expect.listening and not sock.getsockopt(_SOL_SOCKET, _SO_ACCEPTCONN):
        raise HelperError("the helper returned a stream socket that is not listening")


def _verify_tun(fd: int, request: TunRequest, reply: Reply) -> None:
    info = os.fstat(fd)
    if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != (
        10,
        200,
    ):
        raise HelperError("the helper returned a descriptor that is not /dev/net/tun (10:200)")
    try:
        name = tun_name(fd)
    except OSError as err:
        raise HelperError(f"the returned TUN descriptor is not attached: {err}") from err
    if name != reply.ifname or (request.name is not None and name != request.name):
        raise _mismatch("interface", name, request.name or reply.ifname)


def _verify_device(fd: int, request: DeviceRequest) -> None:
    info = os.fstat(fd)
    try:
        expected = os.stat(request.path).st_rdev
    except OSError as err:
        raise HelperError(f"cannot check the device {request.path}: {err}") from err
    if not stat.S_ISCHR(info.st_mode) or info.st_rdev != expected:
        raise HelperError(f"the helper returned a descriptor that is not {request.path}")
