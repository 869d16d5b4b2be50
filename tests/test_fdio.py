"""gprocket._fdio: cooperative I/O on plain descriptors (pipes, socketpairs)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

import gevent
import pytest

from gprocket import _fdio
from gprocket._fdio import FdIO


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def seqpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def _ticker(events: list[str], n: int) -> None:
    for _ in range(n):
        events.append("tick")
        gevent.sleep(0)


def test_make_nonblocking_reports_previous_mode(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    assert os.get_blocking(r)
    assert _fdio.make_nonblocking(r) is True
    assert not os.get_blocking(r)
    assert _fdio.make_nonblocking(r) is False


def test_read_parks_only_the_calling_greenlet(pipe: tuple[int, int]) -> None:
    r, w = pipe
    events: list[str] = []

    def reader() -> None:
        events.append("read-start")
        events.append(_fdio.read(r, 100).decode())

    def writer() -> None:
        _ticker(events, 3)
        os.write(w, b"hello")

    gevent.joinall([gevent.spawn(reader), gevent.spawn(writer)], raise_error=True)
    assert events == ["read-start", "tick", "tick", "tick", "hello"]


def test_read_timeout_keeps_errno(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    with pytest.raises(TimeoutError) as info:
        _fdio.read(r, 10, timeout=0.01)
    assert info.value.errno == errno.ETIMEDOUT


def test_wait_readable_timeout(pipe: tuple[int, int]) -> None:
    r, w = pipe
    with pytest.raises(TimeoutError):
        _fdio.wait_readable(r, timeout=0.01)
    os.write(w, b"x")
    _fdio.wait_readable(r, timeout=5)
    assert os.read(r, 1) == b"x"


def test_write_waits_for_room_in_a_full_pipe(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.set_blocking(w, False)
    filled = 0
    try:
        while True:
            filled += os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    events: list[str] = []

    def writer() -> None:
        events.append("write-start")
        _fdio.write(w, b"last")
        events.append("written")

    def drainer() -> None:
        events.append("drain")
        left = filled
        while left:
            left -= len(os.read(r, left))

    gevent.joinall([gevent.spawn(writer), gevent.spawn(drainer)], raise_error=True)
    assert events == ["write-start", "drain", "written"]
    assert os.read(r, 10) == b"last"


def test_readv_writev_keep_one_message(seqpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = seqpair
    assert _fdio.writev(a.fileno(), [b"head", b"-", b"payload"]) == 12
    first, second = bytearray(4), bytearray(20)
    n = _fdio.readv(b.fileno(), [first, second])
    assert n == 12
    assert bytes(first) == b"head"
    assert bytes(second[: n - 4]) == b"-payload"


def test_fdio_read_write_roundtrip(seqpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = seqpair
    left, right = FdIO(a.fileno(), own=False), FdIO(b.fileno(), own=False)
    assert left.write(b"ping") == 4
    assert right.read(100) == b"ping"
    assert right.writev([b"po", b"ng"]) == 4
    buf = bytearray(10)
    assert left.readinto(buf) == 4
    assert bytes(buf[:4]) == b"pong"
    left.close()
    right.close()


def test_read_batch_takes_what_is_queued(seqpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = seqpair
    for i in range(5):
        a.send(b"m%d" % i)
    io = FdIO(b.fileno(), own=False)
    assert io.read_batch(64, max_count=3) == [b"m0", b"m1", b"m2"]
    assert io.read_batch(64) == [b"m3", b"m4"]
    with pytest.raises(ValueError, match="max_count"):
        io.read_batch(64, max_count=0)
    io.close()


def test_write_batch_counts_messages(seqpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = seqpair
    io = FdIO(a.fileno(), own=False)
    assert io.write_batch([b"a", bytearray(b"bb"), memoryview(b"ccc")]) == 3
    assert [b.recv(10) for _ in range(3)] == [b"a", b"bb", b"ccc"]
    io.close()


def test_read_batch_waits_for_the_first(seqpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = seqpair
    io = FdIO(b.fileno(), own=False)
    sender = gevent.spawn_later(0, lambda: [a.send(b"x"), a.send(b"y")])
    assert io.read_batch(64) == [b"x", b"y"]
    sender.join()
    io.close()


def test_eof_returns_empty(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"z")
    os.close(w)
    io = FdIO(r, own=False)
    assert io.read_batch(10) == [b"z", b""]
    assert io.read(10) == b""
    io.close()


def test_close_wakes_parked_reader_with_ebadf(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    dup = os.dup(r)
    io = FdIO(dup)
    reader = gevent.spawn(io.read, 10)
    gevent.sleep(0)
    io.close()
    reader.join()
    assert isinstance(reader.exception, OSError)
    assert reader.exception.errno == errno.EBADF
    gevent.sleep(0)
    with pytest.raises(OSError) as info:
        os.fstat(dup)
    assert info.value.errno == errno.EBADF


def test_close_is_idempotent_and_fileno_fails_after(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    with FdIO(os.dup(r)) as io:
        assert io.fileno() >= 0
        assert not io.closed
    assert io.closed
    io.close()
    with pytest.raises(OSError) as info:
        io.fileno()
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        io.read(1)
    assert "closed" in repr(io)


def test_not_owned_descriptor_stays_open(pipe: tuple[int, int]) -> None:
    r, w = pipe
    io = FdIO(r, own=False)
    io.close()
    os.write(w, b"still")
    assert os.read(r, 10) == b"still"


def test_rejects_non_int_descriptor() -> None:
    with pytest.raises(TypeError, match="int descriptor"):
        FdIO("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FdIO(True)


def test_rejects_closed_descriptor(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    dup = os.dup(r)
    os.close(dup)
    with pytest.raises(OSError) as info:
        FdIO(dup)
    assert info.value.errno == errno.EBADF
