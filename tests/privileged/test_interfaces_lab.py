"""Interfaces on a veth pair in a namespace (root).

Lookups, ioctls, membership, routes, ARP and a kernel-made checksum; the pure
parts (unknown names, route parsing, checksums) are in tests/packet/test_interfaces.py.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import gevent.socket
import pytest
from support.lab import VethLab, inside, veth_lab

from gprocket.packet import interfaces


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    with veth_lab("gpk", addresses=True) as made:
        yield made


def test_list_and_lookups_match_ip_link(lab: VethLab) -> None:
    lab.run_a(["ip", "link", "set", lab.if_a, "mtu", "1400"])
    with inside(lab.ns_a):
        found = {i.name: i for i in interfaces.list_interfaces()}
        index = interfaces.index_of(lab.if_a)
        assert interfaces.name_of(index) == lab.if_a
    assert set(found) == {"lo", lab.if_a}
    veth = found[lab.if_a]
    assert (veth.index, veth.mac, veth.mtu) == (index, lab.mac_a, 1400)
    assert veth.is_up and veth.is_running and not veth.is_loopback
    assert "UP" in veth.flag_names and "BROADCAST" in veth.flag_names
    assert found["lo"].is_loopback
    link = lab.run_a(["ip", "-o", "link", "show", lab.if_a]).stdout
    assert f"{index}: {lab.if_a}@" in link
    assert f"link/ether {lab.mac_a}" in link


def test_driver_through_pointer_holding_ioctl(lab: VethLab) -> None:
    with inside(lab.ns_a):
        assert interfaces.driver(lab.if_a) == "veth"
        with pytest.raises(OSError) as info:
            interfaces.driver("lo")
        assert info.value.errno == errno.EOPNOTSUPP


def test_addresses_through_ifconf(lab: VethLab) -> None:
    with inside(lab.ns_a):
        assert interfaces.interface_addresses() == {"lo": "127.0.0.1", lab.if_a: lab.ip_a}


def test_promiscuous_membership_lasts_while_the_socket_holds_it(lab: VethLab) -> None:
    def promiscuity() -> int:
        detail = lab.run_a(["ip", "-d", "link", "show", lab.if_a]).stdout
        return int(detail.split("promiscuity", 1)[1].split()[0])

    with inside(lab.ns_a):
        sock = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        index = interfaces.index_of(lab.if_a)
    try:
        interfaces.set_promiscuous(sock, index)
        assert promiscuity() == 1
        interfaces.set_promiscuous(sock, index, on=False)
        assert promiscuity() == 0
        interfaces.set_promiscuous(sock, index)
        assert promiscuity() == 1
    finally:
        sock.close()
    assert promiscuity() == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(OSError, match="PACKET_ADD_MEMBERSHIP"):
        interfaces.set_promiscuous(udp, 1)


def test_bind_to_interface(lab: VethLab) -> None:
    with inside(lab.ns_a):
        sock = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            interfaces.bind(sock, lab.if_a, 0x88B5)
            assert sock.getsockname()[:2] == (lab.if_a, 0x88B5)
            with pytest.raises(OSError) as info:
                interfaces.bind(sock, 999_999)
            assert info.value.errno == errno.ENODEV
        finally:
            sock.close()


def test_default_route_and_gateway(lab: VethLab) -> None:
    with inside(lab.ns_a):
        assert interfaces.default_route() is None
    lab.run_a(["ip", "route", "add", "default", "via", str(lab.ip_b), "metric", "7"])
    try:
        with inside(lab.ns_a):
            route = interfaces.default_route()
        assert route == interfaces.Route(socket.AF_INET, lab.if_a, lab.ip_b, 7)
    finally:
        lab.run_a(["ip", "route", "del", "default"])


def test_arp_lookup_after_traffic(lab: VethLab) -> None:
    lab.run_a(["ping", "-c", "1", "-W", "5", str(lab.ip_b)])
    with inside(lab.ns_a):
        assert interfaces.arp_lookup(str(lab.ip_b)) == lab.mac_b
        assert interfaces.arp_lookup("10.254.254.254") is None
        with pytest.raises(ValueError, match="not an IPv4 address"):
            interfaces.arp_lookup("fe80::1")
        entries = interfaces.arp_table()
    assert any(e.interface == lab.if_a and e.complete for e in entries)


def test_checksum_of_a_kernel_made_packet(lab: VethLab) -> None:
    # An ICMP echo the kernel built: its IP header must verify to 0.
    with inside(lab.ns_b):
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    try:
        sniffer.bind((lab.if_b, 0x0800))
        sniffer.settimeout(5)
        lab.run_a(["ping", "-c", "1", "-W", "5", str(lab.ip_b)])
        packet = sniffer.recv(2000)
        assert interfaces.checksum(packet[:20]) == 0
        assert interfaces.checksum(packet[20:]) == 0
    finally:
        sniffer.close()
    assert os.path.exists("/proc/thread-self/net/route")
