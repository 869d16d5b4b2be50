"""gprocket.icmp: argument validation, resolution and the statistics of a result.

Pinging itself is shown for real, as an unprivileged user in a namespace, in
tests/privileged/test_ping_*.py.
"""

from __future__ import annotations

import gc
import math
import socket

import gevent
import pytest

from gprocket import icmp
from gprocket.icmp import _engine, _fast, _gc, _results, _state
from gprocket.icmp._socket import IcmpSocket


def _host(rtts: list[float], sent: int) -> icmp.Host:
    replies = tuple(icmp.Reply(i + 1, "192.0.2.1", 64, rtt, 64) for i, rtt in enumerate(rtts))
    return icmp.Host("192.0.2.1", "example", socket.AF_INET, sent, replies, 0, (), "raw",
                     "plain")


def test_statistics_match_iputils_formulas() -> None:
    host = _host([1.0, 2.0, 4.0], sent=4)
    assert host.received == 3
    assert host.is_alive
    assert host.packet_loss == 0.25
    assert (host.min_rtt, host.avg_rtt, host.max_rtt) == (1.0, 7.0 / 3, 4.0)
    mean = 7.0 / 3
    assert math.isclose(host.mdev, math.sqrt((1 + 4 + 16) / 3 - mean * mean))
    assert host.jitter == 1.5  # |2-1| and |4-2|, averaged
    assert host.rtts == (1.0, 2.0, 4.0)


def test_statistics_of_a_dead_host() -> None:
    host = _host([], sent=3)
    assert not host.is_alive
    assert host.packet_loss == 1.0
    assert (host.min_rtt, host.avg_rtt, host.max_rtt, host.mdev, host.jitter) == (0, 0, 0, 0, 0)


def test_results_are_frozen() -> None:
    host = _host([1.0], sent=1)
    with pytest.raises(AttributeError):
        host.sent = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        host.replies[0].rtt = 0.0  # type: ignore[misc]


def test_resolve_literals_without_the_resolver() -> None:
    assert icmp.resolve("127.000.0.1") == (socket.AF_INET, "127.0.0.1", ("127.0.0.1", 0))
    assert icmp.resolve("0:0::1") == (socket.AF_INET6, "::1", ("::1", 0, 0, 0))
    with pytest.raises(ValueError, match="IPv6"):
        icmp.resolve("127.0.0.1", socket.AF_INET6)


def test_resolve_scoped_link_local_keeps_the_interface() -> None:
    family, address, sockaddr = icmp.resolve("fe80::1%lo")
    assert family == socket.AF_INET6
    assert address == "fe80::1%lo"
    assert sockaddr[3] == socket.if_nametoindex("lo")


def test_resolve_names_cooperatively() -> None:
    ticks = []

    def ticker() -> None:
        while True:
            ticks.append(1)
            gevent.sleep(0)

    runner = gevent.spawn(ticker)
    try:
        family, address, _ = icmp.resolve("localhost", socket.AF_INET)
    finally:
        runner.kill()
    assert (family, address) == (socket.AF_INET, "127.0.0.1")
    assert ticks  # the hub ran the ticker while the resolver worked


def test_unknown_name_raises_gaierror() -> None:
    with pytest.raises(socket.gaierror):
        icmp.resolve("bad..host")  # refused locally (empty label): no DNS query leaves


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 0}, "count"),
    ({"count": True}, "count"),
    ({"interval": -1}, "interval"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": math.inf}, "timeout"),
    ({"size": 70000}, "size"),
    ({"ttl": 0}, "ttl"),
    ({"family": 5}, "family"),
    ({"socket_kind": "packet"}, "socket_kind"),
])
def test_bad_arguments_fail_before_any_socket(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        icmp.ping("127.0.0.1", **kwargs)  # type: ignore[arg-type]


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="str"):
        icmp.ping(b"127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        icmp.multiping("127.0.0.1")


def test_engine_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(icmp.ENGINE_ENV, "python")
    assert not _fast._fast_wanted()
    monkeypatch.setenv(icmp.ENGINE_ENV, "c")
    assert _fast._fast_wanted(), "build it: python -m gprocket.icmp._build"
    monkeypatch.setenv(icmp.ENGINE_ENV, "")
    assert _fast._fast_wanted()  # built: the compiled engine is the default
    monkeypatch.setenv(icmp.ENGINE_ENV, "fortran")
    with pytest.raises(ValueError, match="GPROCKET_ICMP_ENGINE"):
        _fast._fast_wanted()


def test_without_the_extension_python_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fast, "_speed", None)
    monkeypatch.delenv(icmp.ENGINE_ENV, raising=False)
    assert not _fast._fast_wanted()
    monkeypatch.setenv(icmp.ENGINE_ENV, "c")
    with pytest.raises(RuntimeError, match=r"python -m gprocket\.icmp\._build"):
        _fast._fast_wanted()


def test_per_target_ttl_stays_on_the_python_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(icmp.ENGINE_ENV, "c")
    isock = IcmpSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.AF_INET,
                            "raw", "plain", 1, 1 << 20)
    try:
        options = _state.Options(count=1, interval=0.0, timeout=1.0, size=56)
        plain = [_state.State(0, "127.0.0.1", "127.0.0.1", ("127.0.0.1", 0), 1)]
        traced = [_state.State(0, "127.0.0.1", "127.0.0.1", ("127.0.0.1", 0), 1, ttl=3)]
        assert type(_fast.choose_engine(isock, options, None, plain)) is _fast._FastEngine
        assert type(_fast.choose_engine(isock, options, None, traced)) is _engine.Engine
    finally:
        isock.close()


def test_gc_pause_restores_the_collector() -> None:
    assert gc.isenabled()
    with _gc.gc_paused():
        assert not gc.isenabled()
        with _gc.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause leaves the outer one alone
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc.gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller disabled stays disabled
    finally:
        gc.enable()


def test_hot_loop_constructors_build_the_same_frozen_results() -> None:
    fast = _results._reply(3, "192.0.2.1", None, 0.25, 64)
    assert fast == icmp.Reply(3, "192.0.2.1", None, 0.25, 64)
    assert repr(fast) == repr(icmp.Reply(3, "192.0.2.1", None, 0.25, 64))
    state = _state.State(0, "example", "192.0.2.1", ("192.0.2.1", 0), 2)
    state.sent, state.duplicates = 2, 1
    state.replies.append(fast)
    isock = IcmpSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.AF_INET,
                       "datagram", "plain", 1, 1 << 20)
    isock.close()
    host = _state.host_result(state, socket.AF_INET, isock)
    assert host == icmp.Host("192.0.2.1", "example", socket.AF_INET, 2, (fast,), 1, (),
                             "datagram", "plain")
    assert hash(host) == hash(icmp.Host("192.0.2.1", "example", socket.AF_INET, 2, (fast,),
                                        1, (), "datagram", "plain"))
    with pytest.raises(AttributeError):
        host.sent = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        fast.rtt = 1.0  # type: ignore[misc]
