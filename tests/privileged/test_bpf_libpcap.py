"""BPF against libpcap on live interfaces (root).

tcpdump -dd on lo, and the ready filters on real frames of a veth pair; the
builders, validator and offline compilation are in tests/packet/test_bpf.py.
"""

from __future__ import annotations

import socket
import subprocess

import gevent.socket
import pytest
from support.bpf_check import kernel_accepts
from support.lab import VethLab, ether_frame, inside, veth_lab

from gprocket.packet import bpf
from gprocket.packet.ring import BatchSender, RxRing


@pytest.mark.parametrize("expression", [
    "udp port 53", "tcp", "ip6 and icmp6", "arp or rarp", "ether proto 0x88b5",
    "tcp[tcpflags] & tcp-syn != 0", "net 10.0.0.0/8 and not port 22", "greater 100",
])
def test_compile_expression_equals_tcpdump_dd(expression: str) -> None:
    dd = subprocess.run(["tcpdump", "-dd", "-i", "lo", expression], check=True,
                        capture_output=True, text=True).stdout
    compiled = bpf.compile_expression(expression)
    assert compiled == bpf.parse_dd(dd)
    assert kernel_accepts(compiled)


def _ipv4_udp(lab: VethLab, sport: int, dport: int, proto: int = 17,
              frag: int = 0) -> bytes:
    ip = bytes([0x45, 0, 0, 28, 0, 0]) + frag.to_bytes(2, "big") + bytes([64, proto, 0, 0])
    ip += bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return ether_frame(lab.mac_a, lab.mac_b, 0x0800,
                       ip + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0" * 4)


def _ipv6_udp(lab: VethLab, sport: int, dport: int, proto: int = 17) -> bytes:
    ip = bytes([0x60, 0, 0, 0, 0, 8, proto, 64]) + b"\0" * 15 + b"\1" + b"\0" * 15 + b"\2"
    return ether_frame(lab.mac_a, lab.mac_b, 0x86DD,
                       ip + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0" * 4)


def test_ready_filters_match_libpcap_on_real_frames() -> None:
    with veth_lab("gpk") as lab:
        frames = {
            "v4 udp dst 53": _ipv4_udp(lab, 1000, 53),
            "v4 udp src 53": _ipv4_udp(lab, 53, 1000),
            "v4 udp other": _ipv4_udp(lab, 1000, 54),
            "v4 tcp 53": _ipv4_udp(lab, 1000, 53, proto=6),
            "v4 later fragment": _ipv4_udp(lab, 1000, 53, frag=5),
            "v6 udp dst 53": _ipv6_udp(lab, 1000, 53),
            "v6 tcp 53": _ipv6_udp(lab, 53, 9, proto=6),
            "arp": ether_frame(lab.mac_a, lab.mac_b, 0x0806, b"\0" * 28),
        }
        cases = [(bpf.udp_port(53), "udp port 53"), (bpf.tcp_port(53), "tcp port 53"),
                 (bpf.ethertype(0x0806), "arp"), (bpf.ip_protocol(6), "tcp")]
        for ours, expression in cases:
            passed = []
            for program in (ours, bpf.compile_expression(expression)):
                with inside(lab.ns_a):
                    rx = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                ring = RxRing(rx, block_size=1 << 16, block_count=4, timeout_ms=2)
                bpf.attach(rx, program)
                rx.bind((lab.if_a, 3))
                with inside(lab.ns_b):
                    tx = gevent.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                tx.bind((lab.if_b, 0))
                BatchSender(tx).send(list(frames.values()))
                got = []
                first = ring.next_block(timeout=5)  # each program passes a frame: wait for it
                if first is not None:
                    with first:
                        got += [bytes(f) for f in first.frames()]
                got += [bytes(f) for b in ring.blocks(timeout=0.3) for f in b.frames()]
                passed.append({name for name, f in frames.items() if f in got})
                ring.close()
                rx.close()
                tx.close()
            assert passed[0] == passed[1], expression
            assert passed[0], expression
