"""What the client accepts from a helper: replies and descriptors, checked.

A real socketpair stands in for the channel and this test plays a hostile
or broken helper on the other end (crafted replies, extra or missing
descriptors, the wrong kind of socket). Every refusal must close every
descriptor it received; everything accepted is close-on-exec. Every test
runs twice: with the compiled receive and check (gprocket._channel._fdpass_speed)
and with the pure-Python ones.
"""

from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from gprocket._channel import fdpass
from gprocket._channel.fdpass import receive, verify
from gprocket._channel.spawn import spawn
from gprocket._channel.wire import REPLY_SIZE, Reply, Stage, encode_reply
from gprocket._errors import HelperError
from gprocket._spec import SocketRequest

OK = encode_reply(Reply(1, 0, Stage.NONE, "", "ok"))


@pytest.fixture(autouse=True, params=["compiled", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "compiled":
        assert fdpass._speed is not None, "build it: python -m gprocket._channel.fdpass_build"
    else:
        monkeypatch.setattr(fdpass, "_speed", None)
    return str(request.param)


@pytest.fixture
def channel() -> Iterator[tuple[gevent.socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client = gevent.socket.socket(fileno=ours.detach())
    client.settimeout(10)
    yield client, theirs
    client.close()
    theirs.close()


def _send(peer: socket.socket, data: bytes, fds: list[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    peer.sendmsg([data], anc)


def _fds() -> set[str]:
    """Our open descriptors, leaving out the one listing them."""
    names = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("/proc/"):
                names.add(name)
        except FileNotFoundError:
            pass  # the listing's own descriptor, closed already
    return names


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_one_descriptor_is_kept_close_on_exec_and_extras_closed(channel) -> None:  # type: ignore[no-untyped-def]
    client, peer = channel
    socks = [_udp() for _ in range(3)]
    for sock in socks:
        sock.set_inheritable(True)  # the client must not trust the sender's flags
    before = _fds()
    _send(peer, OK, [s.fileno() for s in socks])
    got = receive(client)
    assert got is not None
    reply, fd = got
    assert reply.ok and fd is not None
    assert os.get_inheritable(fd) is False
    assert _fds() - before == {str(fd)}
    os.close(fd)
    for sock in socks:
        sock.close()


def test_truncated_control_data_is_refused_and_nothing_leaks(channel) -> None:  # type: ignore[no-untyped-def]
    client, peer = channel
    socks = [_udp() for _ in range(40)]  # more than the client's control buffer holds
    before = _fds()
    _send(peer, OK, [s.fileno() for s in socks])
    with pytest.raises(HelperError, match="truncated control data"):
        receive(client)
    assert _fds() == before
    for sock in socks:
        sock.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (OK + b"x", "97 bytes"),
        (OK[:50], "50 bytes"),
        (b"GPRQ" + OK[4:], "magic"),
        (encode_reply(Reply(1, 1, Stage.POLICY, "", "no")), "error reply .* carried a descriptor"),
    ],
)
def test_malformed_replies_close_their_descriptor(channel, data: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    client, peer = channel
    sock = _udp()
    before = _fds()
    _send(peer, data, [sock.fileno()])
    with pytest.raises(HelperError, match=message):
        receive(client)
    assert _fds() == before
    sock.close()


def test_end_of_file_is_none(channel) -> None:  # type: ignore[no-untyped-def]
    client, peer = channel
    peer.shutdown(socket.SHUT_WR)
    assert receive(client, spin=50e-6) is None


def _late_reply(client: gevent.socket.socket, peer: socket.socket,
                poll: fdpass.Poll | None = None) -> int:
    """One receive (polling 50 µs, or as ``poll`` says) whose reply is sent
    only after the hub has run a ticker greenlet ten times: a receive that
    kept the hub (polling on) would never get it and would fail on the
    channel's timeout. Returns how many times the ticker ran."""
    sock = _udp()
    ticks = []

    def ticker() -> None:
        while True:
            ticks.append(1)
            if len(ticks) == 10:
                _send(peer, OK, [sock.fileno()])
            gevent.sleep(0.001)

    beat = gevent.spawn(ticker)
    try:
        got = receive(client, spin=50e-6, poll=poll)
    finally:
        beat.kill()
    assert got is not None and got[0].ok and got[1] is not None
    os.close(got[1])
    sock.close()
    return len(ticks)


def test_a_reply_later_than_the_poll_window_is_waited_for_cooperatively(channel) -> None:  # type: ignore[no-untyped-def]
    assert _late_reply(*channel) >= 10


@pytest.mark.parametrize("socket_wait", [True, False], ids=["socket-wait", "wait_read"])
def test_a_waiting_receive_keeps_the_channels_timeout(  # type: ignore[no-untyped-def]
        channel, monkeypatch: pytest.MonkeyPatch, socket_wait: bool) -> None:
    """With gevent's own socket wait and with the public wait_read it falls
    back to: a late reply is waited for cooperatively, and a reply that never
    comes raises TimeoutError after the channel's timeout, leaking nothing."""
    monkeypatch.setattr(fdpass, "_SOCKET_WAIT", socket_wait)
    client, peer = channel
    assert _late_reply(client, peer) >= 10
    client.settimeout(0.05)
    before = _fds()
    with pytest.raises(TimeoutError, match="timed out"):
        receive(client)
    assert _fds() == before


def _busy(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_the_peer_on_this_cpu_is_seen_as_such(channel) -> None:  # type: ignore[no-untyped-def]
    """_peer_elsewhere reads the peer's CPU from /proc/PID/stat and compares it with
    this thread's: a peer pinned to this thread's CPU is not elsewhere, one pinned
    to another CPU is; an unknown peer never is, nor any peer without the
    compiled module (this thread's CPU is then unknown)."""
    assert len(os.sched_getaffinity(0)) >= 2, "this test needs a machine with two CPUs"
    here, there = sorted(os.sched_getaffinity(0))[:2]
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {here})
    try:
        for cpu, elsewhere in ((here, False), (there, True)):
            # Busy, so that the kernel really moves it (a sleeper's recorded CPU
            # changes only when it next wakes).
            peer = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                os.sched_setaffinity(peer.pid, {cpu})
                time.sleep(0.05)
                assert fdpass._peer_elsewhere(peer.pid) is (elsewhere and fdpass._speed is not None)
            finally:
                peer.kill()
                peer.wait()
        assert fdpass._peer_elsewhere(None) is False
        assert fdpass._peer_elsewhere(peer.pid) is False  # gone: unknown
    finally:
        os.sched_setaffinity(0, saved)


def test_late_replies_on_a_crowded_machine_suspend_polling_for_longer_and_longer(channel) -> None:  # type: ignore[no-untyped-def]
    """With more tasks running than CPUs (one busy process per CPU, and one
    more), a poll whose reply came after the window did not pay: the next
    receives wait at once, 1, then 2, then 4 of them; a reply already queued
    when the receive starts proves nothing and changes nothing."""
    client, peer = channel
    poll = fdpass.Poll(50e-6)
    sock = _udp()
    _send(peer, OK, [sock.fileno()])
    got = receive(client, poll=poll)
    assert got is not None and got[1] is not None
    os.close(got[1])
    assert (poll.skip, poll.backoff) == (0, 0)
    hogs = _busy((os.cpu_count() or 1) + 1)
    try:
        # The kernel's own count, as the rule reads it.
        assert not fdpass._cpus_to_spare()
        poll.peer = hogs[0].pid  # somewhere, maybe elsewhere: the count decides
        for backoff in (1, 2, 4):
            _late_reply(client, peer, poll)
            assert (poll.skip, poll.backoff) == (backoff, backoff)
            for left in range(backoff, 0, -1):
                # Suspended: no poll, so even a late reply leaves the rule as it was.
                assert poll.next_window() == 0.0
                assert poll.skip == left - 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert poll.next_window() == 50e-6
    sock.close()


@pytest.mark.parametrize(
    ("make", "request_", "message"),
    [
        (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
         SocketRequest(0, protocol="udp"), "type 1, requested 2"),
        (lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
         SocketRequest(0, protocol="udp"), "family 10, requested 2"),
        (_udp, SocketRequest(53, protocol="udp", ip="127.0.0.1"), "port"),
        (_udp, SocketRequest(0, protocol="udp", ip="127.0.0.2"), "address"),
        (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
         SocketRequest(0, protocol="tcp"), "not listening"),
        (lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
         SocketRequest(0, family="unspec", protocol="udp"), "IPV6_V6ONLY"),
        (_udp, SocketRequest(0, protocol="udp", interface="lo"), "SO_BINDTODEVICE"),
    ],
)
def test_verify_refuses_the_wrong_descriptor_and_closes_it(make, request_, message) -> None:  # type: ignore[no-untyped-def]
    sock = make()
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    fd = os.dup(sock.fileno())
    os.set_inheritable(fd, False)
    sock.close()
    with pytest.raises(HelperError, match=message):
        verify(fd, request_, Reply(1, 0, Stage.NONE, "", "ok"))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_verify_refuses_a_missing_or_inheritable_descriptor() -> None:
    request = SocketRequest(0, protocol="udp", ip="127.0.0.1")
    reply = Reply(7, 0, Stage.NONE, "", "ok")
    with pytest.raises(HelperError, match="carried no descriptor"):
        verify(None, request, reply)
    sock = _udp()
    fd = sock.detach()
    os.set_inheritable(fd, True)
    with pytest.raises(HelperError, match="not close-on-exec"):
        verify(fd, request, reply)
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(HelperError, match="unusable descriptor"):
        verify(r, request, reply)


def test_spawn_failure_and_timeout_leave_no_process_or_descriptor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = _fds()
    with pytest.raises(FileNotFoundError):
        spawn([str(tmp_path / "missing-helper")])
    assert _fds() == before
    child = spawn(["/bin/sleep", "30"])
    with pytest.raises(TimeoutError):
        child.wait(0.2)
    assert child.status == -9
    child.close()
    assert _fds() == before
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)
    assert REPLY_SIZE == 96
