"""The kernel as the judge of a BPF program, for the BPF tests."""

from __future__ import annotations

import errno
import socket

from gprocket.packet import bpf, lowlevel
from gprocket.packet.bpf import Insn


def kernel_accepts(program: tuple[Insn, ...]) -> bool:
    """Ask the kernel itself, bypassing the validator."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            lowlevel.setsockopt(s, "SO_ATTACH_FILTER", bpf.assemble(program))
        except OSError as err:
            assert err.errno == errno.EINVAL, err
            return False
    return True
