"""Classic BPF: build, validate, attach, detach and lock socket filters.

* Opcodes by name (``BPF_LD | BPF_H | BPF_ABS``) and builders (``ldh(12)``,
  ``jeq(0x800, 0, 1)``, ``ret(0xFFFF)``) producing :class:`Insn` tuples, the
  same ``{code, jt, jf, k}`` quadruples ``tcpdump -dd`` prints.
* :func:`validate` applies the kernel's own rules (``bpf_check_classic`` in
  net/core/filter.c) so a bad program fails here with the instruction named,
  not as a bare EINVAL from setsockopt.
* :func:`attach`, :func:`detach`, :func:`lock` (SO_ATTACH_FILTER,
  SO_DETACH_FILTER, SO_LOCK_FILTER); a locked filter can no longer be
  replaced or removed by anyone holding the socket (EPERM).
* Ready filters for Ethernet frames: :func:`ethertype`, :func:`ip_protocol`,
  :func:`udp_port`, :func:`tcp_port`.
* :func:`compile_expression` compiles a tcpdump expression with libpcap
  (``pcap_compile`` through cffi, ABI mode, no compiler needed): the result
  equals ``tcpdump -dd`` for the same expression and link type.
"""

from __future__ import annotations

import ctypes.util
import re
import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import cffi

from gprocket.packet import lowlevel

__all__ = [
    "FilterError",
    "Insn",
    "PcapUnavailable",
    "Program",
    "accept_all",
    "assemble",
    "attach",
    "compile_expression",
    "detach",
    "disassemble",
    "drop_all",
    "ethertype",
    "ip_protocol",
    "lock",
    "parse_dd",
    "tcp_port",
    "udp_port",
    "validate",
]

# Instruction classes, sizes, modes, operations (linux/bpf_common.h).
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = 0x60, 0x70, 0x80, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MAXINSNS = 4096
BPF_MEMWORDS = 16

# Ancillary data loads: k = SKF_AD_OFF + field (linux/filter.h).
SKF_AD_OFF = 0xFFFFF000
SKF_NET_OFF = 0xFFF00000
SKF_LL_OFF = 0xFFE00000
SKF_AD = {
    "protocol": 0, "pkttype": 4, "ifindex": 8, "nlattr": 12, "nlattr_nest": 16,
    "mark": 20, "queue": 24, "hatype": 28, "rxhash": 32, "cpu": 36, "alu_xor_x": 40,
    "vlan_tag": 44, "vlan_tag_present": 48, "pay_offset": 52, "random": 56, "vlan_tpid": 60,
}

# Every code the kernel accepts (chk_code_allowed); note RET|X is not among them.
ALLOWED_CODES: frozenset[int] = frozenset(
    [BPF_ALU | op | src for op in (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND,
                                   BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH) for src in (BPF_K, BPF_X)]
    + [BPF_ALU | BPF_NEG]
    + [BPF_LD | size | mode for size in (BPF_W, BPF_H, BPF_B) for mode in (BPF_ABS, BPF_IND)]
    + [BPF_LD | BPF_W | BPF_LEN, BPF_LD | BPF_IMM, BPF_LD | BPF_MEM,
       BPF_LDX | BPF_W | BPF_LEN, BPF_LDX | BPF_B | BPF_MSH, BPF_LDX | BPF_IMM,
       BPF_LDX | BPF_MEM, BPF_ST, BPF_STX, BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA,
       BPF_RET | BPF_K, BPF_RET | BPF_A, BPF_JMP | BPF_JA]
    + [BPF_JMP | op | src for op in (BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET)
       for src in (BPF_K, BPF_X)]
)

# The snap length a ready filter accepts: all of the frame.
ACCEPT = 0x40000


class Insn(NamedTuple):
    """One ``struct sock_filter``: ``(code, jt, jf, k)``."""

    code: int
    jt: int
    jf: int
    k: int


Program = tuple[Insn, ...]


class FilterError(ValueError):
    """The program breaks one of the kernel's rules; ``pc`` is the instruction."""

    def __init__(self, pc: int, reason: str) -> None:
        super().__init__(f"BPF instruction {pc}: {reason}")
        self.pc = pc
        self.reason = reason


class PcapUnavailable(RuntimeError):
    """libpcap cannot be loaded (install the libpcap0.8 package)."""


# ---------------------------------------------------------------- builders

def stmt(code: int, k: int = 0) -> Insn:
    """A non-jump instruction (BPF_STMT)."""
    return Insn(code, 0, 0, k & 0xFFFFFFFF)


def jump(code: int, k: int, jt: int, jf: int) -> Insn:
    """A jump instruction (BPF_JUMP); offsets are relative to the next instruction."""
    return Insn(code, jt, jf, k & 0xFFFFFFFF)


def ld(k: int) -> Insn:
    """A = 32-bit word at packet offset k."""
    return stmt(BPF_LD | BPF_W | BPF_ABS, k)


def ldh(k: int) -> Insn:
    """A = 16-bit half-word at packet offset k."""
    return stmt(BPF_LD | BPF_H | BPF_ABS, k)


def ldb(k: int) -> Insn:
    """A = byte at packet offset k."""
    return stmt(BPF_LD | BPF_B | BPF_ABS, k)


def ldh_ind(k: int) -> Insn:
    """A = half-word at packet offset X + k."""
    return stmt(BPF_LD | BPF_H | BPF_IND, k)


def ldb_ind(k: int) -> Insn:
    """A = byte at packet offset X + k."""
    return stmt(BPF_LD | BPF_B | BPF_IND, k)


def ld_len() -> Insn:
    """A = packet length."""
    return stmt(BPF_LD | BPF_W | BPF_LEN)


def ld_imm(k: int) -> Insn:
    """A = k."""
    return stmt(BPF_LD | BPF_IMM, k)


def ldx_imm(k: int) -> Insn:
    """X = k."""
    return stmt(BPF_LDX | BPF_IMM, k)


def ldx_msh(k: int) -> Insn:
    """X = 4 * (byte at k & 0xf): the IPv4 header length idiom."""
    return stmt(BPF_LDX | BPF_B | BPF_MSH, k)


def ld_mem(k: int) -> Insn:
    """A = M[k]."""
    return stmt(BPF_LD | BPF_MEM, k)


def ldx_mem(k: int) -> Insn:
    """X = M[k]."""
    return stmt(BPF_LDX | BPF_MEM, k)


def st(k: int) -> Insn:
    """M[k] = A."""
    return stmt(BPF_ST, k)


def stx(k: int) -> Insn:
    """M[k] = X."""
    return stmt(BPF_STX, k)


def ld_ancillary(field: str) -> Insn:
    """A = ancillary field (``"protocol"``, ``"pkttype"``, ``"ifindex"``, ``"vlan_tag"`` ...)."""
    try:
        return stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD[field])
    except KeyError:
        raise ValueError(f"unknown ancillary field {field!r}; known: {sorted(SKF_AD)}") from None


def alu(op: int, k: int | None = None) -> Insn:
    """A = A op k (or A op X when k is None)."""
    return stmt(BPF_ALU | op | (BPF_X if k is None else BPF_K), k or 0)


def tax() -> Insn:
    """X = A."""
    return stmt(BPF_MISC | BPF_TAX)


def txa() -> Insn:
    """A = X."""
    return stmt(BPF_MISC | BPF_TXA)


def ja(k: int) -> Insn:
    """Jump forward k instructions."""
    return stmt(BPF_JMP | BPF_JA, k)


def jeq(k: int, jt: int, jf: int) -> Insn:
    """If A == k skip jt else skip jf."""
    return jump(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf)


def jgt(k: int, jt: int, jf: int) -> Insn:
    """If A > k skip jt else skip jf."""
    return jump(BPF_JMP | BPF_JGT | BPF_K, k, jt, jf)


def jge(k: int, jt: int, jf: int) -> Insn:
    """If A >= k skip jt else skip jf."""
    return jump(BPF_JMP | BPF_JGE | BPF_K, k, jt, jf)


def jset(k: int, jt: int, jf: int) -> Insn:
    """If A & k skip jt else skip jf."""
    return jump(BPF_JMP | BPF_JSET | BPF_K, k, jt, jf)


def ret(k: int) -> Insn:
    """Accept k bytes of the packet (0 drops it)."""
    return stmt(BPF_RET | BPF_K, k)


def ret_a() -> Insn:
    """Accept A bytes of the packet."""
    return stmt(BPF_RET | BPF_A)


# ---------------------------------------------------------------- encode / validate

def assemble(program: Iterable[Insn | tuple[int, int, int, int]]) -> bytes:
    """Encode instructions as ``struct sock_filter`` bytes (native order)."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def disassemble(data: bytes) -> Program:
    """Decode ``struct sock_filter`` bytes into instructions."""
    if len(data) % 8:
        raise ValueError(f"{len(data)} bytes is not a whole number of instructions")
    return tuple(Insn(*f) for f in struct.iter_unpack("=HBBI", data))


_DD_LINE = re.compile(r"\{\s*(0x[0-9a-fA-F]+|\d+),\s*(\d+),\s*(\d+),\s*(0x[0-9a-fA-F]+|\d+)\s*\}")


def parse_dd(text: str) -> Program:
    """Parse ``tcpdump -dd`` output (``{ 0x28, 0, 0, 0x0000000c },`` lines)."""
    return tuple(Insn(int(c, 0), int(t), int(f), int(k, 0)) for c, t, f, k in
                 _DD_LINE.findall(text))


def validate(program: Sequence[Insn | tuple[int, int, int, int]]) -> Program:
    """Check ``program`` with the kernel's rules and return it as a :data:`Program`.

    Raises FilterError naming the first bad instruction: empty or longer than
    4096, a code the kernel does not allow, division by constant zero, a
    shift by 32 or more, scratch memory index over 15 or read before written,
    a jump out of the program, an unknown ancillary load, or a last
    instruction that is not a return.
    """
    prog = tuple(Insn(*insn) for insn in program)
    flen = len(prog)
    if not 0 < flen <= BPF_MAXINSNS:
        raise FilterError(0, f"program length {flen} outside 1..{BPF_MAXINSNS}")
    known_anc = {SKF_AD_OFF + v for v in SKF_AD.values()}
    for pc, (code, jt, jf, k) in enumerate(prog):
        if not (0 <= k <= 0xFFFFFFFF and 0 <= jt <= 255 and 0 <= jf <= 255):
            raise FilterError(pc, "field out of range")
        if code not in ALLOWED_CODES:
            raise FilterError(pc, f"code {code:#06x} is not allowed by the kernel")
        if code in (BPF_ALU | BPF_DIV | BPF_K, BPF_ALU | BPF_MOD | BPF_K) and k == 0:
            raise FilterError(pc, "division by constant zero")
        if code in (BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K) and k >= 32:
            raise FilterError(pc, f"shift by {k} (at most 31)")
        if code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX) and k >= BPF_MEMWORDS:
            raise FilterError(pc, f"scratch memory index {k} (at most {BPF_MEMWORDS - 1})")
        if code == BPF_JMP | BPF_JA and k >= flen - pc - 1:
            raise FilterError(pc, f"jump of {k} leaves the program")
        if code & 0x07 == BPF_JMP and code & 0xF0 != BPF_JA and (
                pc + jt + 1 >= flen or pc + jf + 1 >= flen):
            raise FilterError(pc, f"conditional jump ({jt}, {jf}) leaves the program")
        if (code in (BPF_LD | BPF_W | BPF_ABS, BPF_LD | BPF_H | BPF_ABS, BPF_LD | BPF_B | BPF_ABS)
                and k >= SKF_AD_OFF and k not in known_anc):
            raise FilterError(pc, f"unknown ancillary load {k:#x}")
    if prog[-1].code not in (BPF_RET | BPF_K, BPF_RET | BPF_A):
        raise FilterError(flen - 1, "the last instruction must return (ret #k or ret a)")
    _check_memory(prog)
    return prog


def _check_memory(prog: Program) -> None:
    """Scratch memory must be written on every path before it is read."""
    flen = len(prog)
    masks = [0xFFFF] * flen
    valid = 0
    for pc, (code, jt, jf, k) in enumerate(prog):
        valid &= masks[pc]
        if code in (BPF_ST, BPF_STX):
            valid |= 1 << k
        elif code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM):
            if not valid & (1 << k):
                raise FilterError(pc, f"M[{k}] read before it is written")
        elif code == BPF_JMP | BPF_JA:
            masks[pc + 1 + k] &= valid
            valid = 0xFFFF
        elif code & 0x07 == BPF_JMP:
            masks[pc + 1 + jt] &= valid
            masks[pc + 1 + jf] &= valid
            valid = 0xFFFF


# ---------------------------------------------------------------- socket operations

def attach(sock: lowlevel.FileLike, program: Sequence[Insn | tuple[int, int, int, int]]) -> None:
    """Validate ``program`` and attach it to ``sock`` (replacing any unlocked filter).

    Raises FilterError for an invalid program, OSError(EPERM) when the socket's
    filter is locked.
    """
    lowlevel.setsockopt(sock, "SO_ATTACH_FILTER", assemble(validate(program)))


def detach(sock: lowlevel.FileLike) -> None:
    """Remove the filter; OSError(ENOENT) if none, OSError(EPERM) if locked."""
    lowlevel.setsockopt(sock, "SO_DETACH_FILTER", 0)


def lock(sock: lowlevel.FileLike) -> None:
    """Lock the attached filter: it can no longer be detached or replaced.

    The lock cannot be undone; use it before handing the socket to less
    trusted code.
    """
    lowlevel.setsockopt(sock, "SO_LOCK_FILTER", 1)


# ---------------------------------------------------------------- ready filters

def accept_all(snaplen: int = ACCEPT) -> Program:
    """Pass every frame (up to ``snaplen`` bytes)."""
    return (ret(snaplen),)


def drop_all() -> Program:
    """Pass nothing: useful to drain a socket before attaching the real filter."""
    return (ret(0),)


def ethertype(value: int, snaplen: int = ACCEPT) -> Program:
    """Ethernet frames whose ethertype is ``value`` (e.g. 0x0806 for ARP)."""
    return (ldh(12), jeq(value, 0, 1), ret(snaplen), ret(0))


def ip_protocol(protocol: int, snaplen: int = ACCEPT) -> Program:
    """IPv4 or IPv6 packets (no extension headers) carrying IP protocol ``protocol``."""
    return (
        ldh(12),
        jeq(0x0800, 0, 2),
        ldb(23),
        jeq(protocol, 3, 4),
        jeq(0x86DD, 0, 3),
        ldb(20),
        jeq(protocol, 0, 1),
        ret(snaplen),
        ret(0),
    )


def _port_filter(protocol: int, port: int, snaplen: int) -> Program:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0..65535")
    return (
        ldh(12),                       # 0
        jeq(0x86DD, 0, 6),             # 1: IPv6 -> 2, else 8
        ldb(20),                       # 2: next header
        jeq(protocol, 0, 15),          # 3: -> drop
        ldh(54),                       # 4: source port
        jeq(port, 12, 0),              # 5: -> accept
        ldh(56),                       # 6: destination port
        jeq(port, 10, 11),             # 7: -> accept / drop
        jeq(0x0800, 0, 10),            # 8: IPv4, else drop
        ldb(23),                       # 9
        jeq(protocol, 0, 8),           # 10
        ldh(20),                       # 11: fragment offset
        jset(0x1FFF, 6, 0),            # 12: later fragments carry no port -> drop
        ldx_msh(14),                   # 13: X = IP header length
        ldh_ind(14),                   # 14: source port
        jeq(port, 2, 0),               # 15 -> accept
        ldh_ind(16),                   # 16: destination port
        jeq(port, 0, 1),               # 17
        ret(snaplen),                  # 18 accept
        ret(0),                        # 19 drop
    )


def udp_port(port: int, snaplen: int = ACCEPT) -> Program:
    """UDP over IPv4 or IPv6 with source or destination port ``port``."""
    return _port_filter(17, port, snaplen)


def tcp_port(port: int, snaplen: int = ACCEPT) -> Program:
    """TCP over IPv4 or IPv6 with source or destination port ``port``."""
    return _port_filter(6, port, snaplen)


# ---------------------------------------------------------------- libpcap

_pcap_ffi = cffi.FFI()
_pcap_ffi.cdef(
    """
    typedef struct pcap pcap_t;
    struct bpf_insn { unsigned short code; unsigned char jt; unsigned char jf; uint32_t k; };
    struct bpf_program { unsigned int bf_len; struct bpf_insn *bf_insns; };
    pcap_t *pcap_open_dead(int linktype, int snaplen);
    int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize,
                     uint32_t netmask);
    void pcap_freecode(struct bpf_program *fp);
    char *pcap_geterr(pcap_t *p);
    void pcap_close(pcap_t *p);
    """
)
_pcap_lib: Any = None


def _libpcap() -> Any:
    global _pcap_lib  # noqa: PLW0603 - loaded once, on first use
    if _pcap_lib is None:
        names = ["libpcap.so.0.8", "libpcap.so.1", ctypes.util.find_library("pcap")]
        errors = []
        for name in names:
            if not name:
                continue
            try:
                _pcap_lib = _pcap_ffi.dlopen(name)
                break
            except OSError as err:
                errors.append(f"{name}: {err}")
        else:
            raise PcapUnavailable("cannot load libpcap (" + "; ".join(errors)
                                  + "); install libpcap0.8 to compile filter expressions")
    return _pcap_lib


def compile_expression(expression: str, linktype: int = 1, snaplen: int = 262144,
                       optimize: bool = True, netmask: int = 0) -> Program:
    """Compile a tcpdump filter expression with libpcap's ``pcap_compile``.

    ``linktype`` is a DLT number (1 = Ethernet); ``snaplen`` and ``optimize``
    match tcpdump's defaults, so the result equals ``tcpdump -dd EXPR`` for
    an Ethernet interface. One difference: without a live libpcap handle,
    ``vlan`` tests the tag inside the packet (as tcpdump does for a file);
    Linux strips tags on live capture, where tcpdump tests the ancillary
    VLAN fields instead. Raises ValueError with libpcap's message for a bad
    expression, PcapUnavailable without libpcap.
    """
    lib = _libpcap()
    handle = lib.pcap_open_dead(linktype, snaplen)
    if handle == _pcap_ffi.NULL:
        raise PcapUnavailable("pcap_open_dead failed")
    try:
        prog = _pcap_ffi.new("struct bpf_program *")
        if lib.pcap_compile(handle, prog, expression.encode(), int(optimize), netmask) != 0:
            message = _pcap_ffi.string(lib.pcap_geterr(handle)).decode(errors="replace")
            raise ValueError(f"cannot compile filter {expression!r}: {message}")
        try:
            return tuple(Insn(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf,
                              prog.bf_insns[i].k) for i in range(prog.bf_len))
        finally:
            lib.pcap_freecode(prog)
    finally:
        lib.pcap_close(handle)
