"""gprocket.scapy: what install() changes and undoes, filters compiled as scapy compiles them.

Sockets as an unprivileged user are in tests/privileged/test_scapy.py (hence this
file's name: pytest needs distinct basenames).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import scapy.supersocket
from scapy.arch.common import compile_filter as scapy_compile_filter
from scapy.config import conf
from scapy.error import Scapy_Exception

import gprocket
import gprocket.scapy
from gprocket.packet import bpf
from gprocket.scapy import compile_filter

SLOTS = ((conf, "L2socket"), (conf, "L2listen"), (conf, "L3socket"), (conf, "L3socket6"),
         (scapy.supersocket, "L3RawSocket"), (scapy.supersocket, "L3RawSocket6"))


@pytest.fixture
def restored() -> Iterator[list[object]]:
    """scapy's classes before the test; put back whatever the test did."""
    before = [getattr(owner, attr) for owner, attr in SLOTS]
    yield before
    gprocket.scapy.uninstall()
    for (owner, attr), value in zip(SLOTS, before, strict=True):
        setattr(owner, attr, value)


def test_install_replaces_every_socket_class_and_uninstall_restores(
        restored: list[object]) -> None:
    assert not gprocket.scapy.is_installed()
    gprocket.scapy.install()
    gprocket.scapy.install(strategies="plain,helper")  # again: only the options change
    assert gprocket.scapy.is_installed()
    assert conf.L2socket is gprocket.scapy.L2Socket
    assert conf.L2listen is gprocket.scapy.L2ListenSocket
    assert conf.L3socket is gprocket.scapy.L3PacketSocket
    assert conf.L3socket6.func is gprocket.scapy.L3PacketSocket  # type: ignore[attr-defined]
    assert conf.L3socket6.keywords == {"filter": "ip6"}  # type: ignore[attr-defined]
    assert scapy.supersocket.L3RawSocket is gprocket.scapy.L3RawSocket
    assert scapy.supersocket.L3RawSocket6 is gprocket.scapy.L3RawSocket6
    gprocket.scapy.uninstall()
    gprocket.scapy.uninstall()
    assert not gprocket.scapy.is_installed()
    assert [getattr(owner, attr) for owner, attr in SLOTS] == restored


def test_classes_are_scapys_own_kinds() -> None:
    """sndrcv, sniff and L3PacketSocket.select decide by isinstance on scapy's classes."""
    from scapy.arch import linux
    assert issubclass(gprocket.scapy.L2ListenSocket, linux.L2ListenSocket)
    assert issubclass(gprocket.scapy.L3PacketSocket, linux.L3PacketSocket)
    assert issubclass(gprocket.scapy.L3RawSocket6, scapy.supersocket.L3RawSocket6)
    assert gprocket.scapy.L3PacketSocket.select is linux.L3PacketSocket.select


def test_lazy_submodule() -> None:
    code = ("import sys, gprocket\n"
            "assert 'gprocket.scapy' not in sys.modules\n"
            "print(gprocket.scapy.install.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "gprocket.scapy"
    assert "scapy" not in gprocket.__all__  # `import *` must work without scapy


@pytest.mark.parametrize("expression", [
    "udp and dst port 9999", "arp or icmp", "ether proto 0x88b5",
    "(tcp port 80) and not (host 10.0.0.1)", "vlan and ip",
])
def test_filters_compile_as_scapys_own(expression: str) -> None:
    ours = compile_filter(expression, "lo")
    program = scapy_compile_filter(expression, "lo")
    scapys = tuple(bpf.Insn(program.bf_insns[i].code, program.bf_insns[i].jt,
                            program.bf_insns[i].jf, program.bf_insns[i].k)
                   for i in range(program.bf_len))
    assert ours == scapys


def test_bad_filter_is_scapys_error_with_libpcaps_reason() -> None:
    with pytest.raises(Scapy_Exception, match=r"Cannot set filter: cannot compile filter "
                                              r"'udp and nonsense\(': .*syntax error"):
        compile_filter("udp and nonsense(", "lo")


def test_unknown_interface_is_named() -> None:
    with pytest.raises(Scapy_Exception, match="link type of interface 'gp-none0' is unknown"):
        compile_filter("udp", "gp-none0")


def test_without_scapy_the_import_error_says_how_to_install() -> None:
    code = ("import sys; sys.modules['scapy'] = None\n"
            "try:\n    import gprocket.scapy\n"
            "except ImportError as err:\n    print(err.name, '|', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "scapy | gprocket.scapy needs scapy, which is not installed: pip install scapy"
