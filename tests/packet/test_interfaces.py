"""gprocket.packet.interfaces: unknown names, route parsing and the checksum (any user).

State from a real veth pair (promiscuity, routes, ARP) is in
tests/privileged/test_interfaces_lab.py.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gprocket.packet import interfaces


def test_unknown_interface_is_enodev() -> None:
    for call in (interfaces.index_of, interfaces.mac_address, interfaces.mtu, interfaces.flags):
        with pytest.raises(OSError, match="gpk-none") as info:
            call("gpk-none")
        assert info.value.errno == errno.ENODEV
    with pytest.raises(OSError) as info:
        interfaces.name_of(999_999)
    assert info.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match=r"1\.\.15 bytes"):
        interfaces.index_of("x" * 16)












def test_ipv6_default_route_parsing(tmp_path: Path) -> None:
    # The kernel's format, as /proc/net/ipv6_route prints it.
    (tmp_path / "ipv6_route").write_text(
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
    route = interfaces.default_route(socket.AF_INET6, tmp_path)
    assert route == interfaces.Route(socket.AF_INET6, "eth0", "fd00::1", 0x400)
    with pytest.raises(ValueError, match="neither"):
        interfaces.default_route(socket.AF_PACKET, tmp_path)




def test_checksum_known_vector() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert interfaces.checksum(header) == 0xB861
    fixed = header[:10] + (0xB861).to_bytes(2, "big") + header[12:]
    assert interfaces.checksum(fixed) == 0
    assert interfaces.checksum(b"\x01") == 0xFEFF


@given(st.binary(max_size=300))
def test_checksum_agrees_with_scapy(data: bytes) -> None:
    from scapy.utils import checksum
    assert interfaces.checksum(data) == checksum(data)


