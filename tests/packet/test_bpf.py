"""gprocket.packet.bpf: builders, the kernel's validation rules, attach/detach/lock,
libpcap offline.

Comparisons with libpcap on live interfaces are in tests/privileged/test_bpf_libpcap.py.
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gevent.socket
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bpf_check import kernel_accepts

from gprocket.packet import bpf, pcap
from gprocket.packet.bpf import Insn


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    s = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def validator_accepts(program: tuple[Insn, ...]) -> bool:
    try:
        bpf.validate(program)
    except bpf.FilterError:
        return False
    return True


def test_builders_encode_like_tcpdump_dd() -> None:
    assert bpf.ldh(12) == Insn(0x28, 0, 0, 12)
    assert bpf.jeq(0x800, 0, 3) == Insn(0x15, 0, 3, 0x800)
    assert bpf.ldx_msh(14) == Insn(0xB1, 0, 0, 14)
    assert bpf.ldh_ind(16) == Insn(0x48, 0, 0, 16)
    assert bpf.jset(0x1FFF, 4, 0) == Insn(0x45, 4, 0, 0x1FFF)
    assert bpf.ret(262144) == Insn(0x6, 0, 0, 262144)
    assert bpf.alu(bpf.BPF_AND, 0xF) == Insn(0x54, 0, 0, 0xF)
    assert bpf.alu(bpf.BPF_ADD) == Insn(0x0C, 0, 0, 0)
    assert bpf.ld_ancillary("pkttype") == Insn(0x20, 0, 0, 0xFFFFF004)
    with pytest.raises(ValueError, match="unknown ancillary field 'colour'"):
        bpf.ld_ancillary("colour")


def test_assemble_disassemble_and_parse_dd() -> None:
    program = bpf.udp_port(53)
    assert bpf.disassemble(bpf.assemble(program)) == program
    text = "{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 1, 0x00000806 },\n{ 0x6, 0, 0, 0x00040000 },"
    assert bpf.parse_dd(text) == (Insn(0x28, 0, 0, 12), Insn(0x15, 0, 1, 0x806),
                                  Insn(6, 0, 0, 0x40000))
    with pytest.raises(ValueError, match="whole number"):
        bpf.disassemble(b"\0" * 9)


INVALID = {
    "empty": (),
    "no return at the end": (bpf.ldh(12),),
    "ret x is not allowed": (Insn(bpf.BPF_RET | bpf.BPF_X, 0, 0, 0),),
    "unknown code": (Insn(0xFF, 0, 0, 0), bpf.ret(0)),
    "division by zero": (Insn(bpf.BPF_ALU | bpf.BPF_DIV | bpf.BPF_K, 0, 0, 0), bpf.ret(0)),
    "modulo by zero": (Insn(bpf.BPF_ALU | bpf.BPF_MOD | bpf.BPF_K, 0, 0, 0), bpf.ret(0)),
    "shift by 32": (bpf.alu(bpf.BPF_LSH, 32), bpf.ret(0)),
    "scratch index 16": (bpf.st(16), bpf.ret(0)),
    "read before write": (bpf.ld_mem(3), bpf.ret_a()),
    "written on one path only": (bpf.ldh(12), bpf.jeq(1, 0, 1), bpf.st(0), bpf.ld_mem(0),
                                 bpf.ret_a()),
    "jump past the end": (bpf.ja(1), bpf.ret(0)),
    "conditional past the end": (bpf.jeq(1, 0, 1), bpf.ret(0)),
    "unknown ancillary": (bpf.ld(bpf.SKF_AD_OFF + 200), bpf.ret(0)),
    "too long": (*[bpf.ld_imm(0)] * 4096, bpf.ret(0)),
}

VALID = {
    "accept": bpf.accept_all(),
    "ethertype": bpf.ethertype(0x0806),
    "udp port": bpf.udp_port(53),
    "tcp port": bpf.tcp_port(443),
    "ip protocol": bpf.ip_protocol(1),
    "memory written on both paths": (bpf.ldh(12), bpf.jeq(1, 0, 2), bpf.st(0), bpf.ja(1),
                                     bpf.st(0), bpf.ld_mem(0), bpf.ret_a()),
    "ancillary load": (bpf.ld_ancillary("pkttype"), bpf.ret_a()),
    "net offset load": (bpf.ldb(bpf.SKF_NET_OFF + 9), bpf.ret_a()),
    "longest": (*[bpf.ld_imm(0)] * 4095, bpf.ret(0)),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_validator_refuses_what_the_kernel_refuses(name: str) -> None:
    program = INVALID[name]
    with pytest.raises(bpf.FilterError):
        bpf.validate(program)
    if program:
        assert not kernel_accepts(program)


@pytest.mark.parametrize("name", sorted(VALID))
def test_validator_accepts_what_the_kernel_accepts(name: str) -> None:
    assert bpf.validate(VALID[name]) == VALID[name]
    assert kernel_accepts(VALID[name])


def test_filter_error_names_the_instruction() -> None:
    with pytest.raises(bpf.FilterError, match="instruction 1: division by constant zero") as e:
        bpf.validate((bpf.ld_imm(1), Insn(0x34, 0, 0, 0), bpf.ret_a()))
    assert e.value.pc == 1


CODES = [*sorted(bpf.ALLOWED_CODES), 0x07 | 0x08, 0x0E, 0x16 | 0x08, 0xFF]


@st.composite
def programs(draw: st.DrawFn) -> tuple[Insn, ...]:
    length = draw(st.integers(1, 8))
    insns = [Insn(draw(st.sampled_from(CODES)), draw(st.integers(0, 4)), draw(st.integers(0, 4)),
                  draw(st.sampled_from([0, 1, 2, 15, 16, 31, 32, 0xFFFFF004, 0xFFFFF0C8])))
             for _ in range(length)]
    if draw(st.booleans()):
        insns[-1] = bpf.ret(draw(st.sampled_from([0, 64])))
    return tuple(insns)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_validator_agrees_with_the_kernel_on_random_programs(program: tuple[Insn, ...]) -> None:
    assert validator_accepts(program) == kernel_accepts(program), program




def test_vlan_expression_equals_tcpdump_offline(tmp_path: Path) -> None:
    # Live Linux captures see VLAN tags stripped (tcpdump -i then tests the
    # ancillary tag); compiled without a live handle, tags are in the packet,
    # exactly as tcpdump compiles for a file.
    empty = tmp_path / "empty.pcap"
    pcap.PcapWriter(empty).close()
    dd = subprocess.run(["tcpdump", "-dd", "-r", str(empty), "vlan 7 and udp"], check=True,
                        capture_output=True, text=True).stdout
    assert bpf.compile_expression("vlan 7 and udp") == bpf.parse_dd(dd)


def test_compile_expression_reports_libpcap_errors() -> None:
    with pytest.raises(ValueError, match="cannot compile filter 'port banana'"):
        bpf.compile_expression("port banana")


def test_attach_detach_and_lock(udp: socket.socket) -> None:
    with pytest.raises(OSError) as info:
        bpf.detach(udp)
    assert info.value.errno == errno.ENOENT
    bpf.attach(udp, bpf.drop_all())
    bpf.detach(udp)
    bpf.attach(udp, bpf.accept_all())
    bpf.lock(udp)
    for op in (lambda: bpf.detach(udp), lambda: bpf.attach(udp, bpf.drop_all())):
        with pytest.raises(OSError) as info:
            op()
        assert info.value.errno == errno.EPERM
    with pytest.raises(bpf.FilterError):
        bpf.attach(udp, (bpf.ldh(12),))






