"""SocketRequest, TunRequest, DeviceRequest: names to numbers, and every refusal."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from pathlib import Path

import pytest

import gprocket
from gprocket._spec import (
    DEFAULT_BACKLOG,
    DeviceRequest,
    SocketOptions,
    SocketRequest,
    TunRequest,
)


def test_default_is_a_listening_tcp_socket() -> None:
    req = SocketRequest(8080)
    assert (req.family, req.type, req.protocol) == (socket.AF_INET, socket.SOCK_STREAM, 6)
    assert req.backlog == DEFAULT_BACKLOG
    assert req.reuseaddr is True
    assert req.bind_ip == "0.0.0.0"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"protocol": "udp"}, (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)),
        ({"protocol": "tcp"}, (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)),
        ({"protocol": "icmp"}, (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
        ({"protocol": "icmp6"}, (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
        ({"protocol": "ipv6-icmp"}, (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
        ({"protocol": "raw"}, (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)),
        ({"protocol": "ip", "type": "raw"}, (socket.AF_INET, socket.SOCK_RAW, 0)),
        ({"protocol": 47}, (socket.AF_INET, socket.SOCK_RAW, 47)),
        ({"type": "dgram"}, (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)),
        ({"type": socket.SOCK_STREAM, "family": "inet6"}, (socket.AF_INET6, 1, 6)),
        ({"protocol": "icmp", "type": "dgram"}, (socket.AF_INET, 2, socket.IPPROTO_ICMP)),
        ({"ip": "::1", "protocol": "udp"}, (socket.AF_INET6, 2, 17)),
        ({"family": socket.AF_INET, "protocol": "UDP"}, (socket.AF_INET, 2, 17)),
        ({"family": "packet"}, (socket.AF_PACKET, socket.SOCK_RAW, 0x0003)),
        ({"family": "packet", "type": "dgram", "protocol": 0x0800}, (17, 2, 0x0800)),
    ],
)
def test_names_become_numbers(options: dict[str, object], expected: tuple[int, int, int]) -> None:
    req = SocketRequest(0, **options)  # type: ignore[arg-type]
    assert (req.family, req.type, req.protocol) == expected


def test_unspec_is_dual_stack_ipv6_on_the_wildcard() -> None:
    req = SocketRequest(53, family="unspec", protocol="udp")
    assert req.family == socket.AF_INET6
    assert req.dualstack is True
    assert req.bind_ip == "::"


@pytest.mark.parametrize(
    ("ip", "family", "dualstack"),
    [
        (None, socket.AF_INET6, True),
        ("::", socket.AF_INET6, True),
        ("::ffff:127.0.0.1", socket.AF_INET6, True),  # the kernel binds it only dual-stack
        ("::1", socket.AF_INET6, False),  # the kernel makes it IPv6-only at bind()
        ("fe80::1", socket.AF_INET6, False),
        ("127.0.0.1", socket.AF_INET, False),
        ("0.0.0.0", socket.AF_INET, False),
    ],
)
def test_unspec_with_an_address_is_what_the_kernel_makes_of_it(
        ip: str | None, family: int, dualstack: bool) -> None:
    req = SocketRequest(443, family="unspec", ip=ip)
    assert (req.family, req.dualstack) == (family, dualstack)
    assert ipaddress.ip_address(req.bind_ip) == ipaddress.ip_address(ip or "::")


def test_dualstack_on_a_specific_ipv6_address_is_refused_before_any_rung() -> None:
    with pytest.raises(ValueError, match=r"dualstack needs the wildcard '::' or an IPv4-mapped"):
        SocketRequest(443, family="inet6", ip="::1", dualstack=True)
    assert SocketRequest(443, family="inet6", ip="::", dualstack=True).dualstack
    # A v4-mapped address is dual-stack whatever was asked: IPv6-only cannot bind it.
    assert SocketRequest(443, family="inet6", ip="::ffff:10.0.0.1").dualstack


def test_ip_accepts_ipaddress_objects_and_keeps_scope() -> None:
    req = SocketRequest(53, protocol="udp", ip=ipaddress.ip_address("fe80::1"), scope_id=2)
    assert req.ip == ipaddress.IPv6Address("fe80::1")
    assert req.scope_id == 2


def test_backlog_only_for_stream_and_default_none_for_datagram() -> None:
    assert SocketRequest(53, protocol="udp").backlog is None
    assert SocketRequest(80, backlog=5).backlog == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": -1}, "port -1 is out of range"),
        ({"port": 70000}, "port 70000 is out of range"),
        ({"protocol": "tpc"}, "unknown protocol 'tpc'"),
        ({"type": "datagram"}, "unknown type 'datagram'"),
        ({"family": "inet4"}, "unknown family 'inet4'"),
        ({"family": socket.AF_NETLINK}, "family 16 is not supported"),
        ({"family": socket.AF_UNIX}, "family 1 is not supported"),
        ({"interface": "a-very-long-ifname"}, "must be 1 to 15 bytes"),
        ({"interface": "eth0;rm"}, "may hold only"),
        ({"interface": "-eth0"}, "may hold only"),
        ({"ip": "300.1.1.1"}, "is not an IPv4 or IPv6 address"),
        ({"ip": "localhost"}, "is not an IPv4 or IPv6 address"),
        ({"namespace": "/run/netns/lab"}, "looks like a path"),
        ({"namespace": "../lab"}, "looks like a path"),
        ({"namespace": ".."}, "may hold only"),
        ({"namespace": "x" * 32}, "must be 1 to 31 bytes"),
        ({"ip": "::1", "family": "inet"}, "does not match family inet"),
        ({"protocol": "icmp", "family": "inet6"}, "icmp is IPv4's"),
        ({"protocol": "icmp6", "family": "inet"}, "icmp6 is IPv6's"),
        ({"protocol": "icmp", "port": 7}, "raw sockets have no port"),
        ({"protocol": "udp", "backlog": 5}, "backlog applies to stream"),
        ({"backlog": 70000}, "backlog 70000 is out of range"),
        ({"type": "stream", "protocol": "udp"}, "stream sockets carry tcp"),
        ({"type": "raw"}, "raw sockets need a protocol"),
        ({"protocol": 256}, "protocol 256 is out of range"),
        ({"family": "packet", "protocol": "tcp"}, "give the ethertype as an int"),
        ({"family": "packet", "protocol": 0x10000}, "ethertype 0x10000 is out of range"),
        ({"family": "packet", "ip": "10.0.0.1"}, "packet sockets have no IP address"),
        ({"family": "packet", "port": 5}, "packet sockets have no port"),
        ({"family": "packet", "type": "stream"}, "packet sockets are of type raw or dgram"),
        ({"family": "inet", "dualstack": True}, "dualstack applies to IPv6"),
        ({"scope_id": 3}, "scope_id applies to IPv6"),
    ],
)
def test_bad_options_raise_value_error_naming_the_problem(
    options: dict[str, object], message: str
) -> None:
    port = options.pop("port", 0)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SocketRequest(port, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": "53"}, "port must be an int, not str"),
        ({"port": True}, "port must be an int, not bool"),
        ({"ip": 0x7F000001}, "ip must be a str or an ipaddress object, not int"),
        ({"interface": b"lo"}, "interface must be a str, not bytes"),
        ({"reuseport": 1}, "reuseport must be a bool, not int"),
        ({"protocol": 6.0}, "protocol must be an int, not float"),
    ],
)
def test_wrong_types_raise_type_error(options: dict[str, object], message: str) -> None:
    port = options.pop("port", 0)
    with pytest.raises(TypeError, match=message):
        SocketRequest(port, **options)  # type: ignore[arg-type]


def test_requests_are_frozen_and_replace_revalidates() -> None:
    req = SocketRequest(53, protocol="udp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.port = 54  # type: ignore[misc]
    assert dataclasses.replace(req, port=54).port == 54
    with pytest.raises(ValueError, match="out of range"):
        dataclasses.replace(req, port=65536)


def test_open_rejects_bad_options_before_starting_any_process() -> None:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = children.read_text()
    with pytest.raises(ValueError, match="port 70000"):
        gprocket.open(70000, protocol="udp", strategies=["helper"], helper="/nonexistent")
    with pytest.raises(ValueError, match="unknown protocol"):
        gprocket.open_fd(53, protocol="bogus", strategies=["sudo"])
    assert children.read_text() == before


def test_the_options_are_defined_once_and_unknown_ones_refused() -> None:
    # SocketOptions is every field of a request but the port and SocketRequest's
    # own dualstack, in the same order: the one list open, open_fd and aio take.
    fields = [field.name for field in dataclasses.fields(SocketRequest)]
    options = [name for name in fields if name not in ("port", "dualstack")]
    assert [*SocketOptions.__annotations__] == options
    assert SocketOptions.__optional_keys__ == set(SocketOptions.__annotations__)
    with pytest.raises(TypeError, match=r"SocketRequest\(\) got an unexpected keyword argument "
                                        "'protcol'"):
        SocketRequest(53, protcol="udp")  # type: ignore[call-arg]
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = children.read_text()
    for call, name in ((gprocket.open, "open"), (gprocket.open_fd, "open_fd")):
        with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument "
                                            "'reuse_port'"):
            call(53, reuse_port=True, strategies=["sudo"])  # type: ignore[call-arg]
        # dualstack is SocketRequest's alone: open spells it family="unspec".
        with pytest.raises(TypeError, match="'dualstack'"):
            call(53, family="inet6", dualstack=True)  # type: ignore[call-arg]
    assert children.read_text() == before


def test_tun_request_flags_and_validation() -> None:
    req = TunRequest("gp0", mode="tap", multiqueue=True, addr4="10.0.0.1/24", mtu=1400)
    assert req.flags == 0x0002 | 0x1000 | 0x0100
    assert req.addr4 == ipaddress.IPv4Interface("10.0.0.1/24")
    assert TunRequest(packet_info=True).flags == 0x0001
    with pytest.raises(ValueError, match="mode 'tin'"):
        TunRequest("gp0", mode="tin")
    with pytest.raises(ValueError, match="mtu 20"):
        TunRequest("gp0", mtu=20)
    with pytest.raises(ValueError, match=r"addr6 '10\.0\.0\.1/24'"):
        TunRequest("gp0", addr6="10.0.0.1/24")
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        TunRequest("x" * 16)
    with pytest.raises(ValueError, match="looks like a path"):
        TunRequest("gp0", namespace="/proc/1/ns/net")


def test_tun_attach_takes_a_name_and_configures_nothing() -> None:
    req = TunRequest("gp0", mode="tap", attach=True)
    assert req.attach is True
    assert req.describe() == "existing TAP device gp0"
    with pytest.raises(ValueError, match="attach needs the name"):
        TunRequest(attach=True)
    for option in ({"persist": True}, {"up": True}, {"mtu": 1400}, {"addr4": "10.0.0.1/24"},
                   {"addr6": "fd00::1/64"}):
        with pytest.raises(ValueError, match="attach configures nothing"):
            TunRequest("gp0", attach=True, **option)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attach"):
        TunRequest("gp0", attach=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["mem", "../mem", "net/../mem", "/dev/net/tun", "net/tun/"])
def test_device_request_only_allowlisted_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not allowed"):
        DeviceRequest(name)
    assert DeviceRequest("net/tun").path == "/dev/net/tun"


def test_the_same_arguments_give_the_same_checked_request() -> None:
    """open/open_fd keep the request per argument list (its wire message and
    descriptor checks are worked out once), but never at the price of a check:
    a float or bool port, or an unhashable option, is refused as before, and
    the kept requests are bounded."""
    from gprocket import _spec

    first = _spec.socket_request(53, {"protocol": "udp", "ip": "127.0.0.1"}, "open_fd")
    again = _spec.socket_request(53, {"ip": "127.0.0.1", "protocol": "udp"}, "open")
    assert again is first
    assert _spec.socket_request(54, {"protocol": "udp", "ip": "127.0.0.1"}, "open_fd") != first
    for port in (53.0, True):
        with pytest.raises(TypeError, match="port must be an int"):
            _spec.socket_request(port, {"protocol": "udp", "ip": "127.0.0.1"}, "open_fd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="protocol must be an int"):
        _spec.socket_request(53, {"protocol": ["udp"]}, "open_fd")  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match="dualstack"):
        _spec.socket_request(53, {"dualstack": True}, "open_fd")  # type: ignore[typeddict-unknown-key]
    for port in range(1000, 1000 + 2 * _spec._REQUESTS_KEPT):
        _spec.socket_request(port, {"protocol": "udp"}, "open_fd")
    assert len(_spec._REQUESTS) <= _spec._REQUESTS_KEPT
