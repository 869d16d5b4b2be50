"""gprocket.icmp._wire: build, checksum, parse and validate, against scapy as a witness."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6TimeExceeded,
    IPv6,
)

from gprocket.icmp import _wire as wire


def _reference_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(max_size=300))
def test_checksum_matches_rfc1071_reference(data: bytes) -> None:
    assert wire.checksum(data) == _reference_checksum(data)


def test_echo_request_v4_is_what_scapy_builds() -> None:
    payload = wire.make_payload(b"COOKIE01", 56)
    packet = wire.build_echo(socket.AF_INET, 0x1234, 7, payload)
    reference = bytes(ICMP(type=8, code=0, id=0x1234, seq=7) / payload)
    assert packet == reference
    assert wire.checksum(packet) == 0


def test_echo_request_v6_leaves_checksum_to_the_kernel() -> None:
    packet = wire.build_echo(socket.AF_INET6, 1, 2, b"abc")
    assert packet == bytes([128, 0, 0, 0, 0, 1, 0, 2]) + b"abc"


def test_build_refuses_out_of_range_and_wrong_family() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        wire.build_echo(socket.AF_INET, 0x10000, 1, b"")
    with pytest.raises(ValueError, match="AF_INET"):
        wire.build_echo(socket.AF_UNIX, 1, 1, b"")


def test_payload_starts_with_cookie_and_has_requested_size() -> None:
    assert wire.make_payload(b"12345678", 56)[:8] == b"12345678"
    assert len(wire.make_payload(b"12345678", 56)) == 56
    assert wire.make_payload(b"12345678", 3) == b"123"
    assert wire.make_payload(b"12345678", 0) == b""
    with pytest.raises(ValueError):
        wire.make_payload(b"12345678", -1)


def test_parse_ipv4_echo_reply() -> None:
    packet = bytes(IP(src="192.0.2.9", dst="192.0.2.1", ttl=57) /
                   ICMP(type=0, id=77, seq=3) / b"COOKIE01payload")
    parsed = wire.parse_ipv4(packet)
    assert parsed == wire.Echo("192.0.2.9", 77, 3, b"COOKIE01payload", 57, False)


def test_parse_ipv4_own_request_is_flagged_not_a_reply() -> None:
    packet = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / ICMP(type=8, id=5, seq=1) / b"x")
    parsed = wire.parse_ipv4(packet)
    assert isinstance(parsed, wire.Echo)
    assert parsed.request


def test_parse_ipv4_rejects_corruption_and_truncation() -> None:
    good = bytes(IP(src="192.0.2.9", dst="192.0.2.1") / ICMP(type=0, id=1, seq=1) / b"abcdefgh")
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    assert isinstance(wire.parse_ipv4(bytes(flipped)), wire.Rejected)
    assert wire.parse_ipv4(bytes(flipped)).reason == "bad ICMP checksum"  # type: ignore[union-attr]
    assert isinstance(wire.parse_ipv4(good[:-3]), wire.Rejected)  # IPv4 length disagrees
    assert isinstance(wire.parse_ipv4(good[:24]), wire.Rejected)
    assert isinstance(wire.parse_ipv4(b"\x45"), wire.Rejected)
    udp = bytes(IP(src="192.0.2.9", dst="192.0.2.1") / UDP() / b"x")
    assert wire.parse_ipv4(udp) == wire.Rejected("not ICMP")


def test_parse_ipv4_destination_unreachable_quoting_our_request() -> None:
    original = IP(src="10.0.0.2", dst="203.0.113.5") / ICMP(type=8, id=99, seq=12) / b"COOKIE01"
    error = IP(src="10.0.0.1", dst="10.0.0.2", ttl=63) / ICMP(type=3, code=1) / bytes(original)
    parsed = wire.parse_ipv4(bytes(error))
    assert parsed == wire.Quoted("10.0.0.1", 3, 1, "203.0.113.5", 99, 12, b"COOKIE01", 63)
    assert wire.describe(socket.AF_INET, 3, 1) == "Destination Host Unreachable"


def test_parse_ipv4_error_about_other_traffic_is_rejected() -> None:
    original = IP(src="10.0.0.2", dst="203.0.113.5") / UDP(dport=53) / b"q"
    error = IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3, code=3) / bytes(original)
    assert isinstance(wire.parse_ipv4(bytes(error)), wire.Rejected)


def test_parse_icmp4_datagram_form() -> None:
    message = bytes(ICMP(type=0, id=4, seq=9) / b"COOKIE01")
    assert wire.parse_icmp4(message, "127.0.0.1", 64) == \
        wire.Echo("127.0.0.1", 4, 9, b"COOKIE01", 64, False)
    assert isinstance(wire.parse_icmp4(message[:7], "127.0.0.1", 64), wire.Rejected)


def test_parse_icmp6_reply_and_request() -> None:
    reply = bytes(ICMPv6EchoReply(id=3, seq=4, data=b"COOKIE01"))
    assert wire.parse_icmp6(reply, "::1", 64) == wire.Echo("::1", 3, 4, b"COOKIE01", 64, False)
    request = bytes(ICMPv6EchoRequest(id=3, seq=4, data=b"x"))
    parsed = wire.parse_icmp6(request, "::1", 64)
    assert isinstance(parsed, wire.Echo)
    assert parsed.request


@pytest.mark.parametrize("error_layer", [ICMPv6DestUnreach(code=0), ICMPv6TimeExceeded()])
def test_parse_icmp6_errors_quoting_our_request(error_layer: object) -> None:
    original = IPv6(src="2001:db8::2", dst="2001:db8:1::5") / \
        ICMPv6EchoRequest(id=8, seq=21, data=b"COOKIE01")
    message = bytes(error_layer / bytes(original))  # type: ignore[operator]
    parsed = wire.parse_icmp6(message, "2001:db8::1", 64)
    assert isinstance(parsed, wire.Quoted)
    assert (parsed.reporter, parsed.target, parsed.ident, parsed.seq) == \
        ("2001:db8::1", "2001:db8:1::5", 8, 21)
    assert parsed.payload == b"COOKIE01"


def test_parse_icmp6_error_truncated_quote_is_rejected() -> None:
    original = IPv6(src="2001:db8::2", dst="2001:db8:1::5") / ICMPv6EchoRequest(id=8, seq=21)
    message = bytes(ICMPv6DestUnreach() / bytes(original))[:8 + 44]
    assert isinstance(wire.parse_icmp6(message, "2001:db8::1", 64), wire.Rejected)


@given(st.binary(max_size=200))
def test_parsers_never_raise_on_garbage(data: bytes) -> None:
    for parsed in (wire.parse_ipv4(data), wire.parse_icmp4(data, "192.0.2.1", None),
                   wire.parse_icmp6(data, "::1", None)):
        assert isinstance(parsed, wire.Echo | wire.Quoted | wire.Rejected)


def test_icmp6_filter_passes_only_the_chosen_types() -> None:
    raw = wire.icmp6_filter({129, 1, 3})
    words = struct.unpack("=8I", raw)

    def passes(kind: int) -> bool:
        return not words[kind >> 5] & (1 << (kind & 31))

    assert [k for k in range(256) if passes(k)] == [1, 3, 129]
    with pytest.raises(ValueError):
        wire.icmp6_filter({256})


def test_extended_error_decodes_offender() -> None:
    offender = struct.pack("=H", socket.AF_INET) + b"\0\0" + socket.inet_aton("10.0.0.1") + \
        b"\0" * 8
    data = struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0) + offender
    ext = wire.parse_extended_error(data)
    assert (ext.errno, ext.origin, ext.type, ext.code, ext.offender) == \
        (113, wire.SO_EE_ORIGIN_ICMP, 3, 1, "10.0.0.1")
    with pytest.raises(ValueError):
        wire.parse_extended_error(data[:10])
