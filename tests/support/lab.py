"""A quiet veth pair between two fresh network namespaces (tests and bench/capture.py).

Not part of the installed package: tests import it as ``support.lab`` (the
suite's conftest puts tests/ on sys.path), bench/ scripts add tests/ first.

Needs root. IPv6 is disabled and no address is configured unless asked, so
the link carries only the frames a test or benchmark sends: counts can be
exact. Namespaces are named ``PREFIX-HEX-a``/``-b`` and always removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gprocket._ladder.netns import thread_in_namespace

__all__ = ["VethLab", "ether_frame", "inside", "listening", "trafgen_config", "veth_lab"]


@dataclass(frozen=True)
class VethLab:
    """Namespace ``ns_a`` holds ``if_a``, ``ns_b`` holds ``if_b``; they are one cable."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    mac_a: str
    mac_b: str
    ip_a: str | None
    ip_b: str | None

    def argv_a(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace a."""
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def argv_b(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace b."""
        return ["ip", "netns", "exec", self.ns_b, *argv]

    def run_a(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run in namespace a; raises CalledProcessError on failure."""
        return subprocess.run(self.argv_a(argv), check=True, capture_output=True, text=True,
                              timeout=timeout)

    def run_b(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run in namespace b; raises CalledProcessError on failure."""
        return subprocess.run(self.argv_b(argv), check=True, capture_output=True, text=True,
                              timeout=timeout)


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


def _mac(ns: str, ifname: str) -> str:
    return _run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/address"]).strip()


def _delete(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextlib.contextmanager
def veth_lab(prefix: str = "gpk", addresses: bool = False) -> Iterator[VethLab]:
    """Create the pair (with 10.201.x.1/.2 when ``addresses``); remove it after."""
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"{prefix}-{tag}-a", f"{prefix}-{tag}-b"
    if_a, if_b = f"{prefix}{tag}a", f"{prefix}{tag}b"
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            _run(["ip", "netns", "add", ns])
            made.append(ns)
            for key in ("all", "default"):
                _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                      f"net.ipv6.conf.{key}.disable_ipv6=1"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
              "netns", ns_b])
        ip_a = ip_b = None
        if addresses:
            net = 1 + secrets.randbelow(250)
            ip_a, ip_b = f"10.201.{net}.1", f"10.201.{net}.2"
            _run(["ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", if_a])
            _run(["ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", if_b])
        for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
            _run(["ip", "-n", ns, "link", "set", ifname, "up"])
        yield VethLab(ns_a, ns_b, if_a, if_b, _mac(ns_a, if_a), _mac(ns_b, if_b), ip_a, ip_b)
    finally:
        for ns in made:
            _delete(ns)


# This thread inside a namespace for a block (root), the library's own setns:
# sockets made inside stay there. sysfs is not remounted, so read interface
# state with ``ip -n`` instead.
inside = thread_in_namespace


def listening(argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start a capture tool (tcpdump, ``gprocket sniff``); return once it is listening.

    Its stdout is discarded; the rest of its stderr stays readable. Raises
    RuntimeError with what it printed if it exits before saying so.
    """
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    for line in proc.stderr or ():
        if "listening on" in line:
            return proc
        seen.append(line)
    proc.wait()
    raise RuntimeError(f"{argv[0]} exited {proc.returncode} before listening: {''.join(seen)}")


def ether_frame(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    """An Ethernet II frame (padded to the 60-byte minimum)."""
    frame = (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
             + struct.pack("!H", ethertype) + payload)
    return frame.ljust(60, b"\0")


def trafgen_config(frame: bytes) -> str:
    """A trafgen packet description that sends exactly ``frame``."""
    return "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }"
