"""gprocket: exactly the privileged socket or device an unprivileged gevent program needs.

The core (``open``, ``open_fd``, ``acquire`` and the request and error types) is
imported eagerly; the larger subsystems are submodules imported on first use,
so ``import gprocket`` stays cheap: ``gprocket.icmp``, ``gprocket.tuntap``,
``gprocket.servers``, ``gprocket.monkey``, ``gprocket.packet`` (lowlevel,
interfaces, bpf, ring, pcap, rawsock, summary), ``gprocket.admin`` (policy,
file capabilities, doctor: what judges an install), ``gprocket.aio`` (the same
for asyncio programs), and ``gprocket.scapy`` (needs scapy installed, so it is
left out of ``__all__``: ``from gprocket import *`` works without scapy).
"""

import importlib
from types import ModuleType

from ._api import Acquired, acquire, drop_effective, open, open_fd
from ._errors import Attempt, GprocketError, HelperError, PolicyDenied, PrivilegeError
from ._socket import Socket
from ._spec import DeviceRequest, SocketOptions, SocketRequest, TunRequest

_SUBMODULES = frozenset({
    "admin", "aio", "icmp", "monkey", "packet", "scapy", "servers", "tuntap",
})

__all__ = [
    "Acquired",
    "Attempt",
    "DeviceRequest",
    "GprocketError",
    "HelperError",
    "PolicyDenied",
    "PrivilegeError",
    "Socket",
    "SocketOptions",
    "SocketRequest",
    "TunRequest",
    "acquire",
    "admin",
    "aio",
    "drop_effective",
    "icmp",
    "monkey",
    "open",
    "open_fd",
    "packet",
    "servers",
    "tuntap",
]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
