"""gprocket.tuntap: real devices created in-process (root).

Argument validation, which needs no privilege, is in tests/test_tuntap.py.
The device tests run a root child process inside a namespace made for the
test (the plain rung: root holds CAP_NET_ADMIN), so the kernel, not a mock,
takes every packet. Unprivileged creation through the helper is in
tests/privileged/test_tuntap_helper.py.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from support import privileged as priv

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Shared by every child: packet builders for the kernel to receive, and a
# filter that skips what the kernel itself sends into a new link (IPv6
# router solicitations, MLD reports).
PRELUDE = f"""
import errno, json, os, socket, struct, subprocess, sys
import gevent
sys.path.insert(0, {str(EXAMPLES)!r})
from tun_echo import checksum, echo_reply
from gprocket import tuntap

def out(**values):
    print(json.dumps(values))

def udp4(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + udp

def next_udp4(device, offset=0):
    while True:
        packet = device.read(timeout=10)
        if packet[offset] >> 4 == 4 and packet[offset + 9] == 17:
            return packet

def receiver(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("10.9.0.1", port))
    sock.settimeout(10)
    return sock

def link(name):
    proc = subprocess.run(["ip", "-d", "-j", "addr", "show", "dev", name],
                          capture_output=True, text=True)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None
"""


def run_root(netns: priv.Netns, code: str) -> Any:
    """Run PRELUDE + code as root inside netns; return its last JSON line."""
    env = {"PATH": priv.SAFE_PATH, "PYTHONPATH": priv.python_path(), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "GPROCKET_STRATEGIES": "plain"}
    proc = netns.exec([priv.VENV_PYTHON, "-c", PRELUDE + textwrap.dedent(code)], check=False,
                      env=env, timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------
# Real devices, in-process (root, plain rung) inside a fresh namespace.


def test_tun_reads_and_writes_whole_packets(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0", up=True, mtu=1400, address="10.9.0.1/24",
                         address6="fd00:9::1/64") as dev:
            rx = receiver(5000)
            rx.sendto(b"to-the-tun", ("10.9.0.2", 9))
            packet = next_udp4(dev)
            written = dev.write(udp4("10.9.0.2", "10.9.0.1", 9, 5000, b"from-the-tun"))
            data, peer = rx.recvfrom(100)
            state = dict(name=dev.name, mode=dev.mode, mtu=dev.mtu, rung=dev.rung,
                         pi=dev.packet_info, src=socket.inet_ntoa(packet[12:16]),
                         dst=socket.inet_ntoa(packet[16:20]), payload=packet[28:].decode(),
                         written=written, data=data.decode(), peer=list(peer), link=link("gpt0"))
        out(after=link("gpt0"), closed=dev.closed, **state)
    """)
    assert (got["name"], got["mode"], got["mtu"], got["pi"]) == ("gpt0", "tun", 1400, False)
    assert got["rung"] == "plain"
    assert (got["src"], got["dst"], got["payload"]) == ("10.9.0.1", "10.9.0.2", "to-the-tun")
    assert got["written"] == 20 + 8 + len("from-the-tun")
    assert (got["data"], got["peer"]) == ("from-the-tun", ["10.9.0.2", 9])
    link = got["link"]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"]}
    assert {("10.9.0.1", 24), ("fd00:9::1", 64)} <= addrs
    assert got["after"] is None, "a non-persistent device must vanish with its descriptor"
    assert got["closed"] is True


def test_packet_info_header_is_parsed_and_built(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0", packet_info=True, up=True, address="10.9.0.1/24") as dev:
            rx = receiver(5000)
            rx.sendto(b"a", ("10.9.0.2", 9))
            while True:
                info, packet = dev.read_with_info(timeout=10)
                if packet[0] >> 4 == 4 and packet[9] == 17:
                    break
            rx.sendto(b"b", ("10.9.0.2", 9))
            stripped = next_udp4(dev)
            dev.write(udp4("10.9.0.2", "10.9.0.1", 9, 5000, b"default-proto"))
            dev.write(udp4("10.9.0.2", "10.9.0.1", 9, 5000, b"given-proto"), proto=0x0800)
            n = dev.write_batch([udp4("10.9.0.2", "10.9.0.1", 9, 5000, b"batch")])
            got = [rx.recv(100).decode() for _ in range(3)]
            out(pi=dev.packet_info, proto=info.proto, truncated=info.truncated,
                payload=packet[28:].decode(), stripped=stripped[28:].decode(), got=got, n=n,
                bufsize=dev.bufsize, mtu=dev.mtu)
    """)
    assert got["pi"] is True
    assert (got["proto"], got["truncated"]) == (0x0800, False)
    assert (got["payload"], got["stripped"]) == ("a", "b")
    assert got["got"] == ["default-proto", "given-proto", "batch"]
    assert got["n"] == 1
    assert got["bufsize"] == got["mtu"] + 4


def test_read_with_info_needs_packet_info(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0") as dev:
            try:
                dev.read_with_info(timeout=1)
            except ValueError as err:
                out(error=str(err))
    """)
    assert "packet_info" in got["error"]


def test_batches_take_every_queued_packet(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0", up=True, address="10.9.0.1/24") as dev:
            subprocess.run(["sysctl", "-qw", "net.ipv6.conf.gpt0.disable_ipv6=1"], check=True)
            rx = receiver(5000)
            for i in range(5):
                rx.sendto(b"%d" % i, ("10.9.0.2", 9))
            batch = dev.read_batch(max_count=64, timeout=10)
            udp = [p[28:].decode() for p in batch if p[0] >> 4 == 4 and p[9] == 17]
            n = dev.write_batch(udp4("10.9.0.2", "10.9.0.1", 9, 5000, b"w%d" % i)
                                for i in range(4))
            written = [rx.recv(100).decode() for _ in range(n)]
            out(udp=udp, n=n, written=written)
    """)
    assert got["udp"] == ["0", "1", "2", "3", "4"]
    assert got["n"] == 4
    assert got["written"] == ["w0", "w1", "w2", "w3"]


def test_read_waits_cooperatively_and_close_ends_iteration(netns: priv.Netns) -> None:
    got = run_root(netns, """
        dev = tuntap.open("gpt0", up=True, address="10.9.0.1/24")
        ticks = []
        seen = []
        def ticker():
            while not dev.closed:
                ticks.append(1)
                gevent.sleep(0.001)
        def reader():
            for packet in dev:
                if packet[0] >> 4 == 4 and packet[9] == 17:
                    seen.append((len(ticks), packet[28:].decode()))
        def sender():
            while len(ticks) < 20:
                gevent.sleep(0.001)
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"late", ("10.9.0.2", 9))
            while not seen:
                gevent.sleep(0.001)
            dev.close()
        jobs = [gevent.spawn(f) for f in (ticker, reader, sender)]
        gevent.joinall(jobs, raise_error=True, timeout=20)
        dev.close()
        try:
            dev.read()
        except OSError as err:
            after = errno.errorcode[err.errno]
        out(seen=seen, dead=all(j.dead for j in jobs), after=after, link=link("gpt0"))
    """)
    (ticks_at_receipt, payload), = got["seen"]
    assert payload == "late"
    assert ticks_at_receipt >= 20, "the ticker must run while the reader is parked"
    assert got["dead"], "closing must end the iteration in the reader greenlet"
    assert got["after"] == "EBADF"
    assert got["link"] is None


def test_tap_carries_ethernet_frames(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gptap0", "tap", up=True, mtu=1280, address="10.8.0.1/24") as dev:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"x", ("10.8.0.2", 9))  # the kernel must ARP for it first
            while True:
                frame = dev.read(timeout=10)
                if frame[12:14] == b"\x08\x06":
                    break
            out(mode=dev.mode, mtu=dev.mtu, bufsize=dev.bufsize, dst=frame[:6].hex(),
                op=frame[20:22].hex(), target=socket.inet_ntoa(frame[38:42]),
                kind=link("gptap0")["link_type"])
    """)
    assert (got["mode"], got["mtu"], got["bufsize"]) == ("tap", 1280, 1280 + 18)
    assert got["dst"] == "ffffffffffff" and got["op"] == "0001"
    assert got["target"] == "10.8.0.2"
    assert got["kind"] == "ether"


def test_existing_name_is_never_attached(netns: priv.Netns) -> None:
    got = run_root(netns, """
        subprocess.run(["ip", "tuntap", "add", "dev", "gpt0", "mode", "tun"], check=True)
        try:
            tuntap.open("gpt0")
        except OSError as err:
            out(errno=errno.errorcode[err.errno], message=str(err))
    """)
    assert got["errno"] == "EBUSY"


def test_persistent_device_can_be_reattached(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0", persist=True) as dev:
            persist = dev.persist
        survived = link("gpt0") is not None
        with tuntap.attach("gpt0") as again:
            state = (again.name, again.persist, again.rung)
        try:
            tuntap.attach("gpt0", "tap")
        except OSError as err:
            wrong_mode = errno.errorcode[err.errno]
        subprocess.run(["ip", "link", "del", "gpt0"], check=True)
        out(persist=persist, survived=survived, state=state, wrong_mode=wrong_mode)
    """)
    assert got["persist"] is True and got["survived"] is True
    assert got["state"] == ["gpt0", True, "plain"]
    assert got["wrong_mode"] == "EINVAL"


def test_multiqueue_queues_share_one_device(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open("gpt0", multiqueue=True) as first:
            with tuntap.attach("gpt0", multiqueue=True) as second:
                out(names=[first.name, second.name], mq=[first.multiqueue, second.multiqueue],
                    fds_differ=first.fileno() != second.fileno())
    """)
    assert got == {"names": ["gpt0", "gpt0"], "mq": [True, True], "fds_differ": True}


def test_open_device_gives_the_clone_device(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open_device("net/tun") as dev:
            st = os.fstat(dev.fileno())
            out(name=dev.name, rung=dev.rung, rdev=[os.major(st.st_rdev), os.minor(st.st_rdev)],
                inheritable=os.get_inheritable(dev.fileno()),
                blocking=os.get_blocking(dev.fileno()))
    """)
    assert got == {"name": "net/tun", "rung": "plain", "rdev": [10, 200], "inheritable": False,
                   "blocking": False}


def test_root_creates_a_device_inside_a_named_namespace(netns: priv.Netns) -> None:
    code = PRELUDE + textwrap.dedent(f"""
        with tuntap.open("gpt0", up=True, namespace={netns.name!r}) as dev:
            inside = subprocess.run(["ip", "-n", {netns.name!r}, "link", "show", "gpt0"],
                                    capture_output=True).returncode
            out(name=dev.name, namespace=dev.namespace, mtu=dev.mtu, here=link("gpt0"),
                inside=inside, rung=dev.rung)
    """)
    env = {"PATH": priv.SAFE_PATH, "PYTHONPATH": priv.python_path(), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "GPROCKET_STRATEGIES": "plain"}
    proc = subprocess.run([priv.VENV_PYTHON, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"name": "gpt0", "namespace": netns.name, "mtu": 1500, "here": None,
                   "inside": 0, "rung": "plain"}


def test_kernel_chooses_the_name_when_none_is_given(netns: priv.Netns) -> None:
    got = run_root(netns, """
        with tuntap.open(mode="tap") as dev:
            exists = link(dev.name) is not None
        try:
            dev.fileno()
        except OSError as err:
            closed = errno.errorcode[err.errno]
        out(name=dev.name, exists=exists, closed=closed, repr=repr(dev))
    """)
    assert got["name"].startswith("tap")
    assert got["exists"] is True
    assert got["closed"] == "EBADF"
    assert got["repr"].endswith("closed>")
