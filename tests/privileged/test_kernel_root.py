"""In-process socket and TUN creation that needs root.

Interface binding, packet sockets and a TUN device in a namespace; the rest of
the plain rung's code is in tests/ladder/test_plain.py.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from gprocket._channel.fdpass import tun_name
from gprocket._ladder.netns import in_namespace
from gprocket._ladder.plain import open_socket, open_tun
from gprocket._spec import SocketRequest, TunRequest


def test_interface_binding_and_packet_socket() -> None:
    req = SocketRequest(0, protocol="udp", interface="lo")
    with socket.socket(fileno=open_socket(req)) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
    req = SocketRequest(family="packet", protocol=0x0003, interface="lo")
    with socket.socket(fileno=open_socket(req)) as packet:
        assert packet.getsockname()[:2] == ("lo", 3)


def test_tun_created_configured_inside_a_namespace(netns) -> None:  # type: ignore[no-untyped-def]
    req = TunRequest("gpcore0", addr4="10.99.0.1/24", addr6="fd00:99::1/64", mtu=1300, up=True)
    fd = in_namespace(netns.name, lambda: open_tun(req))
    try:
        assert tun_name(fd) == "gpcore0"
        shown = netns.exec(["ip", "addr", "show", "gpcore0"]).stdout
        assert "mtu 1300" in shown and "10.99.0.1/24" in shown and "fd00:99::1/64" in shown
        assert ",UP" in shown
        assert "gpcore0" not in Path("/proc/net/dev").read_text()
    finally:
        os.close(fd)
    assert netns.exec(["ip", "link", "show", "gpcore0"], check=False).returncode != 0


def test_packet_socket_on_a_missing_interface_keeps_enodev_and_closes() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as info:
        open_socket(SocketRequest(family="packet", interface="gpnosuch0"))
    assert info.value.errno == errno.ENODEV
    assert set(os.listdir("/proc/self/fd")) == before
