"""The packet layer: packet sockets, their filters, rings and files.

``lowlevel`` (options by name, sockaddr codecs, recvmsg/sendmsg with cmsgs,
ioctl), ``interfaces`` (list, index/name, MAC, MTU, flags, membership),
``bpf`` (classic BPF: build, validate, attach, libpcap expressions), ``ring``
(TPACKET_V3 receive ring, TX ring, sendmmsg), ``pcap`` (classic pcap files),
``rawsock`` (a stateful raw socket) and ``summary`` (tcpdump-like one-line
summaries). Each is imported on first use: ``gprocket.packet.bpf``.
"""

import importlib
from types import ModuleType

_SUBMODULES = frozenset({"bpf", "interfaces", "lowlevel", "pcap", "rawsock", "ring", "summary"})

__all__ = ["bpf", "interfaces", "lowlevel", "pcap", "rawsock", "ring", "summary"]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
