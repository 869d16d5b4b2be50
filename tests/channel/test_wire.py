"""The helper protocol's Python side: exact bytes, strict decoding, fuzzing."""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gprocket._channel.wire import (
    FLAG_DUALSTACK,
    FLAG_REUSEADDR,
    REQUEST_SIZE,
    Op,
    ProtocolError,
    Reply,
    Stage,
    decode_reply,
    decode_request,
    encode_hello,
    encode_reply,
    encode_request,
)
from gprocket._spec import DeviceRequest, SocketRequest, TunRequest

VECTORS = Path(__file__).resolve().parents[2] / "helper" / "vectors.txt"


def test_socket_request_layout_field_by_field() -> None:
    req = SocketRequest(53, protocol="udp", ip="127.0.0.1", interface="lo", namespace="lab")
    data = encode_request(req, 0x01020304)
    assert len(data) == REQUEST_SIZE
    assert data[0:4] == b"GPRQ"
    assert struct.unpack_from("<HHIHH", data, 4) == (1, 192, 0x01020304, Op.SOCKET, 0)
    assert struct.unpack_from("<iiiHH", data, 16) == (socket.AF_INET, socket.SOCK_DGRAM, 17, 53, 0)
    assert data[32:48] == bytes([127, 0, 0, 1]) + bytes(12)
    assert data[56:72] == b"lo" + bytes(14)
    assert data[72:104] == b"lab" + bytes(29)
    assert data[104:] == bytes(88)


def test_flags_backlog_and_ipv6_address() -> None:
    req = SocketRequest(443, family="unspec", ip="::ffff:127.0.0.1", scope_id=0)
    fields = decode_request(encode_request(req, 9))
    assert fields.flags == FLAG_DUALSTACK | FLAG_REUSEADDR
    assert fields.backlog == 128
    assert fields.address == socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")
    # A specific IPv6 address: the kernel makes it IPv6-only, so no DUALSTACK.
    req = SocketRequest(443, family="unspec", ip="::1", scope_id=0)
    fields = decode_request(encode_request(req, 9))
    assert fields.flags == FLAG_REUSEADDR
    assert fields.backlog == 128
    assert fields.address == socket.inet_pton(socket.AF_INET6, "::1")


def test_packet_ethertype_is_host_order() -> None:
    fields = decode_request(encode_request(SocketRequest(family="packet", protocol=0x88CC), 1))
    assert (fields.family, fields.type, fields.protocol) == (socket.AF_PACKET, 3, 0x88CC)


def test_tun_and_device_requests() -> None:
    tun = TunRequest("gp0", mode="tap", persist=True, up=True, mtu=1400,
                     addr4="10.1.2.3/24", addr6="fd00::1/64")
    fields = decode_request(encode_request(tun, 2))
    assert fields.op == Op.TUN
    assert fields.ifname == b"gp0"
    assert fields.tun_flags == 0x0002 | 0x1000
    assert (fields.mtu, fields.tun_options) == (1400, 0b11)
    assert (fields.tun_addr4, fields.tun_prefix4) == (bytes([10, 1, 2, 3]), 24)
    assert fields.tun_prefix6 == 64
    device = decode_request(encode_request(DeviceRequest("net/tun"), 3))
    assert (device.op, device.device, device.family) == (Op.DEVICE, b"net/tun", 0)
    assert decode_request(encode_hello(4)).op == Op.HELLO


def test_request_id_range() -> None:
    with pytest.raises(ValueError, match="request id"):
        encode_request(SocketRequest(53, protocol="udp"), 1 << 32)


def _reply(**fields: object) -> bytes:
    values = {"magic": b"GPRP", "version": 1, "size": 96, "id": 7, "error": 0, "stage": 0,
              "ifname": b"", "detail": b""}
    values.update(fields)
    return struct.pack("<4sHHIII16s60s", *values.values())


def test_reply_decodes_and_round_trips() -> None:
    reply = decode_reply(_reply(error=errno.EPERM, stage=2, detail=b"policy: no entry"))
    assert reply == Reply(7, errno.EPERM, Stage.POLICY, "", "policy: no entry")
    assert reply.error_name == "EPERM"
    assert not reply.ok
    assert decode_reply(encode_reply(reply)) == reply


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_reply()[:95], "95 bytes"),
        (_reply() + b"\0", "97 bytes"),
        (_reply(magic=b"GPRQ"), "magic"),
        (_reply(version=2), "version is 2"),
        (_reply(size=95), "size field is 95"),
        (_reply(error=5000, stage=3), "errno 5000"),
        (_reply(stage=8, error=1), "stage 8"),
        (_reply(error=0, stage=2), "does not match stage POLICY"),
        (_reply(error=1, stage=0), "does not match stage NONE"),
        (_reply(ifname=b"tun0\0x"), "after its terminating NUL"),
        (_reply(ifname=b"a b"), "not an interface name"),
        (_reply(detail=b"bell\x07"), "not printable"),
    ],
)
def test_reply_validation_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_reply(data)


@given(st.binary(min_size=0, max_size=200))
@settings(max_examples=2000)
def test_fuzz_decode_reply_only_raises_protocol_error(data: bytes) -> None:
    try:
        reply = decode_reply(data)
    except ProtocolError:
        return
    assert encode_reply(reply)[:36] == data[:36]


@given(
    st.integers(0, 95).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, 255))),
)
def test_fuzz_single_byte_corruptions_are_caught_or_harmless(change: tuple[int, int]) -> None:
    offset, value = change
    good = bytearray(_reply(ifname=b"tun0", detail=b"ok"))
    good[offset] = value
    try:
        reply = decode_reply(bytes(good))
    except ProtocolError:
        return
    assert reply.id >= 0 and 0 <= reply.error < 4096


_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,14}", fullmatch=True)


@given(
    port=st.integers(0, 65535),
    protocol=st.sampled_from(["tcp", "udp"]),
    v6=st.booleans(),
    interface=st.none() | _names,
    namespace=st.none() | _names,
    reuseport=st.booleans(),
    rid=st.integers(0, 0xFFFFFFFF),
)
def test_fuzz_encode_decode_round_trip(*, port: int, protocol: str, v6: bool,
                                       interface: str | None, namespace: str | None,
                                       reuseport: bool, rid: int) -> None:
    req = SocketRequest(port, protocol=protocol, family="inet6" if v6 else "inet",
                        interface=interface, namespace=namespace, reuseport=reuseport)
    data = encode_request(req, rid)
    assert len(data) == REQUEST_SIZE
    fields = decode_request(data)
    assert (fields.id, fields.port, fields.family, fields.protocol) == (
        rid, port, req.family, req.protocol)
    assert fields.ifname == (interface or "").encode()
    assert fields.netns == (namespace or "").encode()
    assert bool(fields.flags & 4) == reuseport


def _load_vectors() -> dict[str, tuple[bytes, str, str]]:
    vectors = {}
    for line in VECTORS.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, hexdata, err, stage = line.split()
        vectors[name] = (bytes.fromhex(hexdata), err, stage)
    return vectors


# The vectors (helper/vectors.txt, written with the C parser) this encoder
# must reproduce byte for byte, id included.
ENCODED = {
    "socket_udp_inet_port53": SocketRequest(53, protocol="udp"),
    "socket_tcp_inet_port80_backlog128": SocketRequest(80, protocol="tcp", reuseaddr=False),
    "socket_tcp_inet6_port443_dualstack": SocketRequest(443, family="unspec", backlog=5,
                                                        reuseaddr=False),
    "socket_udp_inet_loopback_port53": SocketRequest(53, protocol="udp", ip="127.0.0.1"),
    "socket_udp_inet6_loopback_port53": SocketRequest(53, protocol="udp", ip="::1"),
    "socket_udp_inet6_linklocal_scope2_port547": SocketRequest(547, protocol="udp",
                                                               ip="fe80::1", scope_id=2),
    "socket_udp_inet_port53_ifname_lo": SocketRequest(53, protocol="udp", interface="lo"),
    "socket_raw_icmp_inet": SocketRequest(protocol="icmp"),
    "socket_raw_icmp6_inet6": SocketRequest(protocol="icmp6"),
    "socket_dgram_ping_inet": SocketRequest(protocol="icmp", type="dgram"),
    "socket_udp_inet_port8080": SocketRequest(8080, protocol="udp"),
    "socket_sctp_seqpacket_inet_port99": SocketRequest(99, protocol="sctp", type="seqpacket",
                                                       backlog=1),
    "socket_packet_all": SocketRequest(family="packet"),
    "socket_packet_dgram_ipv4_ifname_lo": SocketRequest(family="packet", type="dgram",
                                                        protocol=0x0800, interface="lo"),
    "socket_raw_tcp_inet": SocketRequest(protocol="tcp", type="raw"),
    "socket_raw_ipproto_raw_inet": SocketRequest(protocol="raw"),
    "socket_udp_inet_port53_netns_lab": SocketRequest(53, protocol="udp", namespace="lab"),
    "tun_default_name": TunRequest(),
    "tap_named_persist_up": TunRequest("gp0", mode="tap", packet_info=True, persist=True,
                                       up=True, mtu=1400),
    "tun_configured": TunRequest("gptun0", packet_info=True, up=True, addr4="10.9.0.1/24",
                                 addr6="fd00:9::1/64"),
    "device_net_tun": DeviceRequest("net/tun"),
    "socket_udp_inet_port53_reuseaddr": SocketRequest(53, protocol="udp", reuseaddr=True),
    "socket_udp_inet_port53_reuseport": SocketRequest(53, protocol="udp", reuseport=True),
    "tun_attach_named": TunRequest("gp0", attach=True),
}

# Vectors the helper refuses: the Python spec refuses the same request first.
REFUSED = {
    "socket_netlink": lambda: SocketRequest(family=16, type="raw"),
    "socket_unix_stream": lambda: SocketRequest(family=1, type="stream"),
    "socket_bluetooth": lambda: SocketRequest(family=31, type="raw", protocol=1),
    "socket_family_negative": lambda: SocketRequest(family=-1, type="dgram"),
    "socket_udp_proto255_inet": lambda: SocketRequest(53, type="dgram", protocol=255),
    "device_mem": lambda: DeviceRequest("mem"),
    "device_absolute_dev_mem": lambda: DeviceRequest("/dev/mem"),
    "device_net_dotdot_mem": lambda: DeviceRequest("net/../mem"),
    "device_dotdot": lambda: DeviceRequest("../../dev/mem"),
    "type_rdm": lambda: SocketRequest(type=4),
    "protocol_256_inet": lambda: SocketRequest(type="raw", protocol=256),
    "protocol_negative_inet6": lambda: SocketRequest(family="inet6", type="raw", protocol=-1),
    "ethertype_65536_packet": lambda: SocketRequest(family="packet", protocol=65536),
    "packet_stream": lambda: SocketRequest(family="packet", type="stream"),
    "packet_with_port": lambda: SocketRequest(80, family="packet"),
    "backlog_negative": lambda: SocketRequest(80, backlog=-1),
    "backlog_65536": lambda: SocketRequest(80, backlog=65536),
    "backlog_on_dgram": lambda: SocketRequest(53, type="dgram", backlog=5),
    "dualstack_on_inet": lambda: SocketRequest(80, family="inet", dualstack=True),
    "inet_scope_id_set": lambda: SocketRequest(53, protocol="udp", scope_id=1),
    "raw_with_port": lambda: SocketRequest(7, protocol="icmp"),
    "ifname_no_nul": lambda: SocketRequest(53, protocol="udp", interface="abcdefghijklmnop"),
    "ifname_slash": lambda: SocketRequest(53, protocol="udp", interface="lo/x"),
    "ifname_dotdot": lambda: SocketRequest(53, protocol="udp", interface=".."),
    "ifname_dash": lambda: SocketRequest(53, protocol="udp", interface="-lo"),
    "ifname_space": lambda: SocketRequest(53, protocol="udp", interface="l o"),
    "ifname_percent": lambda: TunRequest("tun%d"),
    "netns_dotdot_path": lambda: SocketRequest(53, namespace="../../proc/1/ns/net"),
    "netns_absolute_path": lambda: SocketRequest(53, namespace="/proc/1/ns/net"),
    "netns_dot": lambda: SocketRequest(53, namespace="."),
    "netns_high_byte": lambda: SocketRequest(53, namespace="lab\xff"),
    "tun_mtu_67": lambda: TunRequest(mtu=67),
    "tun_mtu_65536": lambda: TunRequest(mtu=65536),
    "tun_attach_without_name": lambda: TunRequest(attach=True),
    "tun_attach_with_address": lambda: TunRequest("gp0", attach=True, addr4="10.9.0.1/24"),
    "tun_attach_with_up": lambda: TunRequest("gp0", attach=True, up=True),
    "tun_attach_with_mtu": lambda: TunRequest("gp0", attach=True, mtu=1400),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_encoder_reproduces_the_shared_vectors(name: str) -> None:
    data, _, _ = _load_vectors()[name]
    request_id = struct.unpack_from("<I", data, 8)[0]
    assert encode_request(ENCODED[name], request_id).hex() == data.hex()


@pytest.mark.parametrize("name", ["hello", "hello_id_max"])
def test_hello_vectors(name: str) -> None:
    data, err, _ = _load_vectors()[name]
    assert err == "OK"
    assert encode_hello(struct.unpack_from("<I", data, 8)[0]) == data


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_helper_refuses_the_spec_refuses_first(name: str) -> None:
    _, err, _ = _load_vectors()[name]
    assert err != "OK"
    with pytest.raises((ValueError, TypeError)):
        REFUSED[name]()


def test_every_well_formed_vector_decodes_and_every_size_error_does_not() -> None:
    for name, (data, err, _) in _load_vectors().items():
        if err == "EMSGSIZE":
            with pytest.raises(ProtocolError, match="bytes, expected 192"):
                decode_request(data)
        elif err == "OK":
            assert decode_request(data).id == struct.unpack_from("<I", data, 8)[0], name
