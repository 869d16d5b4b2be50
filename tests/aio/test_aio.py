"""gprocket.aio without root: the loop's waits, the ladder's walk and errors,
a broker session driven by a real peer process, ICMP argument checks."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from typing import Any

import pytest

import gprocket
from gprocket import _ladder, aio
from gprocket._errors import HelperError, RungUnavailable
from gprocket.aio import _broker, _wait
from gprocket.aio._icmp import _is_literal
from gprocket.aio._spawn import spawn


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settled(ready: Any, seconds: float = 10.0) -> None:
    """Wait until ready() (the loop turning meanwhile); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"not settled within {seconds} s"
        await asyncio.sleep(0.01)


def fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"), key=int)


def test_public_surface() -> None:
    assert set(aio.__all__) == {name for name in dir(aio) if not name.startswith("_")} - {
        "annotations"}
    for name in ("open", "open_fd", "acquire", "ping", "multiping", "multiping_iter",
                 "traceroute", "ring", "open_tun"):
        assert name in aio.__all__


def test_readable_wakes_times_out_and_never_leaves_a_reader() -> None:
    async def main() -> tuple[bool, bool, bool, bool]:
        a, b = socket.socketpair()
        loop = asyncio.get_running_loop()
        try:
            timed_out = await _wait.readable(a.fileno(), 0.02)
            loop.call_later(0.02, b.send, b"x")
            woke = await _wait.readable(a.fileno(), 5)
            waiter = loop.create_task(_wait.readable(b.fileno()))
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            # No reader stays registered: a new one may be added, then removed.
            removed = loop.remove_reader(a.fileno()) or loop.remove_reader(b.fileno())
            writable = await _wait.writable(a.fileno(), 1)
            return timed_out, woke, removed, writable
        finally:
            a.close()
            b.close()

    assert run(main()) == (False, True, False, True)


class _Refuses:
    name = "first"

    def acquire(self, request: gprocket.SocketRequest) -> int:
        raise RungUnavailable("not here", "do something else")


class _Awaitable:
    name = "awaitable"

    async def acquire(self, request: gprocket.SocketRequest) -> int:
        await asyncio.sleep(0)
        return os.dup(0)


def test_the_walk_awaits_async_strategies_and_records_failures_like_the_gevent_one() -> None:
    async def main() -> gprocket.Acquired:
        return await aio.acquire(gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1"),
                                 strategies=[_Refuses(), _Awaitable()])

    got = run(main())
    os.close(got.fd)
    assert got.rung == "awaitable"
    assert [(a.rung, a.reason) for a in got.attempts] == [("first", "not here")]

    request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
    with pytest.raises(gprocket.PrivilegeError) as sync_err:
        _ladder.run(request, [_Refuses()])
    with pytest.raises(gprocket.PrivilegeError) as async_err:
        run(aio.acquire(request, strategies=[_Refuses()]))
    assert async_err.value.attempts == sync_err.value.attempts
    assert async_err.value.fix == sync_err.value.fix == "do something else"


def test_a_strategy_returning_no_descriptor_is_a_type_error() -> None:
    class Wrong:
        name = "wrong"

        def acquire(self, request: object) -> str:
            return "nope"

    with pytest.raises(TypeError, match="not a descriptor"):
        run(aio.open(0, protocol="udp", ip="127.0.0.1", strategies=[Wrong()]))  # type: ignore[list-item]


def test_open_plain_gives_a_non_blocking_socket_with_its_rung() -> None:
    async def main() -> tuple[str, bool, int, str]:
        sock = await aio.open(0, protocol="udp", ip="127.0.0.1", strategies="plain")
        with sock:
            return sock.rung, sock.getblocking(), sock.type, repr(sock)

    rung, blocking, kind, text = run(main())
    assert (rung, blocking, kind) == ("plain", False, socket.SOCK_DGRAM)
    assert "rung='plain'" in text


def test_bad_arguments_fail_before_any_rung() -> None:
    with pytest.raises(ValueError):
        run(aio.open(70000, protocol="udp"))
    with pytest.raises(TypeError):
        run(aio.acquire("udp:53"))  # type: ignore[arg-type]
    for call in (aio.open, aio.open_fd):
        with pytest.raises(TypeError, match="unexpected keyword argument 'protcol'"):
            run(call(53, protcol="udp", strategies="sudo"))  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'dualstack'"):
            run(call(53, family="inet6", dualstack=True))  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        aio.multiping_iter(["127.0.0.1"], count=0)
    with pytest.raises(TypeError):
        aio.multiping_iter("127.0.0.1")


def test_literals_skip_the_resolver() -> None:
    assert _is_literal("127.0.0.1") and _is_literal("::1")
    assert not _is_literal("localhost") and not _is_literal("fe80::1%lo")


# A stand-in broker that speaks the real protocol: for each request it
# replies (after DELAY) with a fresh UDP socket, like the helper would.
PEER = r"""
import os, socket, sys, time
from gprocket._channel.wire import Reply, Stage, decode_request, encode_reply
channel = socket.socket(fileno=0)
delay = float(sys.argv[1])
# With "stray": each reply is followed by one for an id nobody asked for.
ids = [0, 1000] if sys.argv[2:] == ["stray"] else [0]
while True:
    data = channel.recv(4096)
    if not data:
        break
    msg = decode_request(data)
    time.sleep(delay)
    for offset in ids:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        channel.sendmsg([encode_reply(Reply(msg.id + offset, 0, Stage.NONE, "", ""))],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(
                            __import__("array").array("i", [sock.fileno()]))))])
        sock.close()
"""


def _peer_session(loop: asyncio.AbstractEventLoop, delay: float,
                  timeout: float = 5.0, *extra: str) -> _broker._Session:
    child = spawn([sys.executable, "-c", PEER, str(delay), *extra],
                  {"PYTHONPATH": os.pathsep.join(sys.path)})
    return _broker._Session(child, loop, timeout)


def test_replies_of_cancelled_requests_are_read_and_closed() -> None:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        before = fds()
        session = _peer_session(loop, 0.05)
        request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
        from gprocket._channel.wire import encode_request

        async def one() -> int | None:
            rid = session.next_id()
            _reply, fd = await session.call(encode_request(request, rid), rid)
            return fd

        first = await one()
        assert first is not None
        os.close(first)
        with_session = fds()
        tasks = [loop.create_task(one()) for _ in range(5)]
        await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.6)  # every reply has come (five, 50 ms apart)
        await settled(lambda: fds() == with_session)  # and been closed
        after_cancel = fds()
        kept = await one()
        session.fail("closed")
        assert session.reaper is not None
        await session.reaper
        if kept is not None:
            os.close(kept)
        return {"before": before, "with": with_session, "after": after_cancel,
                "pending": len(session.pending), "end": fds()}

    out = run(main())
    assert out["after"] == out["with"]
    assert out["pending"] == 0
    assert out["end"] == out["before"]


def test_a_reply_queued_behind_the_last_due_one_is_still_closed() -> None:
    """The reader stops at the last reply a request waits for (no read on to
    EAGAIN); a reply queued behind it that nobody asked for (as a cancelled
    request's is) keeps the channel readable, and its descriptor is closed
    on the loop's next turns, not held until the next request."""
    async def main() -> tuple[list[str], list[str], list[str], bool, list[str]]:
        loop = asyncio.get_running_loop()
        before = fds()
        session = _peer_session(loop, 0.0, 5.0, "stray")
        request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
        from gprocket._channel.wire import encode_request

        with_session = fds()
        for _ in range(3):
            rid = session.next_id()
            _reply, fd = await session.call(encode_request(request, rid), rid)
            assert fd is not None
            os.close(fd)
        await asyncio.sleep(0.3)  # the last stray has come (the peer sends it at once)
        await settled(lambda: fds() == with_session)  # and is closed
        after = fds()
        alive = session.dead is None
        session.fail("closed")
        assert session.reaper is not None
        await session.reaper
        return before, with_session, after, alive, fds()

    before, with_session, after, alive, end = run(main())
    assert alive
    assert after == with_session
    assert end == before


def test_late_replies_suspend_polling_as_in_the_gevent_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The aio session polls by the same rule as the gevent client
    (_fdpass.Poll, docs/ARCHITECTURE.md "Polling only while it pays"): on a
    crowded machine a reply later than the 50 µs window suspends polling for
    1, then 2 requests; with one CPU there is no polling at all."""
    from gprocket._channel import fdpass as _fdpass

    monkeypatch.setattr(_fdpass, "_cpus_to_spare", lambda: False)
    async def main() -> tuple[float, list[tuple[int, int]]]:
        loop = asyncio.get_running_loop()
        # Late enough that no preemption between request and poll lets the
        # reply be there at the first try.
        session = _peer_session(loop, 0.2)
        request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
        from gprocket._channel.wire import encode_request

        states = []
        for _ in range(3):
            rid = session.next_id()
            _reply, fd = await session.call(encode_request(request, rid), rid)
            assert fd is not None
            os.close(fd)
            states.append((session.poll.skip, session.poll.backoff))
        session.fail("closed")
        assert session.reaper is not None
        await session.reaper
        return session.poll.window, states

    window, states = run(main())
    if len(os.sched_getaffinity(0)) > 1:
        # Polled and gave up; waited at once (the suspension used); polled, gave up again.
        assert (window, states) == (50e-6, [(1, 1), (0, 1), (2, 2)])
    else:
        assert (window, states) == (0.0, [(0, 0)] * 3)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_receive_now_never_waits_and_reads_once(compiled: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The aio reader's receive (_channel.fdpass.receive_now): nothing queued is
    BlockingIOError at once (the loop's reader callback waits, not this),
    a queued reply comes with its descriptor, end of file is None."""
    import array

    from gprocket._channel import fdpass as _fdpass
    from gprocket._channel.wire import Reply, Stage, encode_reply

    if compiled and _fdpass._speed is None:
        pytest.skip("gprocket._channel._fdpass_speed is not built in this install")
    if not compiled:
        monkeypatch.setattr(_fdpass, "_speed", None)
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    with ours, peer:
        start = time.monotonic()
        with pytest.raises(BlockingIOError):
            _fdpass.receive_now(ours)
        with pytest.raises(BlockingIOError):  # a suspended poll reads once, at once
            _fdpass.receive_now(ours, _fdpass.Poll(0.0))
        assert time.monotonic() - start < 0.5
        payload = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with payload:
            peer.sendmsg([encode_reply(Reply(7, 0, Stage.NONE, "", ""))],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                           array.array("i", [payload.fileno()]))])
        got = _fdpass.receive_now(ours, _fdpass.Poll(50e-6))
        assert got is not None and got[0].id == 7 and got[1] is not None
        assert not os.get_inheritable(got[1])  # close-on-exec from the first instant
        os.close(got[1])
        peer.shutdown(socket.SHUT_WR)
        assert _fdpass.receive_now(ours) is None


def test_a_broker_that_stops_answering_fails_its_requests_in_time() -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        session = _peer_session(loop, 30.0, timeout=0.3)
        request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
        from gprocket._channel.wire import encode_request

        start = time.monotonic()
        with pytest.raises(HelperError) as err:
            await session.call(encode_request(request, 1), 1)
        return str(err.value), time.monotonic() - start

    message, took = run(main())
    assert "did not answer within 0.3 s" in message
    assert took < 2.0


# A stand-in one-shot helper that answers a UDP request with a TCP socket.
WRONG = r"""
import array, socket
from gprocket._channel.wire import Reply, Stage, decode_request, encode_reply
channel = socket.socket(fileno=0)
msg = decode_request(channel.recv(4096))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
channel.sendmsg([encode_reply(Reply(msg.id, 0, Stage.NONE, "", ""))],
               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))])
"""


def test_a_one_shot_reply_that_fails_the_checks_is_refused_and_closed_once(
        tmp_path: Any) -> None:
    from gprocket.aio._helper import one_shot

    helper = tmp_path / "wrong-helper"
    helper.write_text(f"#!{sys.executable}\n{WRONG}")
    helper.chmod(0o755)

    async def main() -> tuple[str, list[str], list[str]]:
        before = fds()
        request = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")
        with pytest.raises(HelperError) as err:
            await one_shot(str(helper), request, timeout=10)
        return str(err.value), before, fds()

    message, before, after = run(main())
    assert "type 1, requested 2" in message
    assert after == before
