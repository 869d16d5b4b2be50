"""The packet layer as an unprivileged user, through the ladder's helper rung.

A veth pair joins two fresh namespaces (gpk-*-a, gpk-*-b). Peers nobody here
wrote (trafgen, tcpdump, ping, tshark) send and witness frames; gprocket
runs as the unprivileged test user with a helper installed with file
capabilities and a policy granting ``packet`` to the group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv
from support.lab import VethLab, ether_frame, inside, listening, trafgen_config, veth_lab

from gprocket.packet import pcap, ring

pytestmark = pytest.mark.privileged

POLICY = "allow group:gprocket packet\n"

# Runs as the unprivileged user inside namespace a; parameters come as JSON in argv[1].
RECEIVER = r"""
import json, sys, gevent
from gprocket.packet.rawsock import RawSocket
from gprocket.packet import bpf
p = json.loads(sys.argv[1])
ticks = [0]
def ticker():
    while True:
        ticks[0] += 1
        gevent.sleep(0.005)
gevent.spawn(ticker)
flt = None
if p.get("ethertype"):
    flt = bpf.ethertype(p["ethertype"])
if p.get("expression"):
    flt = bpf.compile_expression(p["expression"])
rs = RawSocket(p["interface"], filter=flt)
got = []
if p["mode"] == "active":
    q = rs.start()
print("ready", flush=True)
at_ready = ticks[0]
if p["mode"] == "passive":
    for frame in rs.frames(count=p["count"] + p.get("extra", 0), timeout=p["quiet"]):
        got.append(frame)
else:
    while True:
        try:
            got.append(q.get(timeout=p["quiet"]))
        except gevent.queue.Empty:
            break
    rs.stop()
stats = rs.stats()
rs.close()
print(json.dumps({"count": len(got), "bytes": sum(len(f.data) for f in got),
                  "ethertypes": sorted({int.from_bytes(f.data[12:14], "big") for f in got}),
                  "first": got[0].data.hex() if got else "",
                  "ticks_during": ticks[0] - at_ready, "rung": rs.backend.sock.rung,
                  "received": stats.received, "dropped": stats.dropped}))
"""


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with veth_lab("gpk") as made:
        yield made


@pytest.fixture
def helper(installed_helper: Callable[..., Path]) -> Path:
    return installed_helper(mode="caps", policy=POLICY)


def _start(user: priv.User, lab: VethLab, helper: Path, code: str,
           params: dict[str, Any] | None = None, *,
           argv: list[str] | None = None) -> subprocess.Popen[str]:
    args = argv if argv is not None else [priv.VENV_PYTHON, "-c", code, json.dumps(params)]
    proc = priv.popen_argv(user, args, netns=priv.Netns(lab.ns_a),
                           env={"GPROCKET_HELPER": str(helper),
                                "GPROCKET_STRATEGIES": "plain,helper"},
                           stdin=subprocess.PIPE)
    return proc


def _wait_line(proc: subprocess.Popen[str], stream: str = "stdout", text: str = "ready"
               ) -> str:
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    seen = []
    for line in pipe:
        seen.append(line)
        if text in line:
            return line
    out, err = proc.communicate(timeout=30)
    raise AssertionError(f"no {text!r} from the process (exit {proc.returncode}):\n"
                         f"{''.join(seen)}{out}\n--- stderr\n{err}")


def _finish(proc: subprocess.Popen[str], given: str | None = None) -> dict[str, Any]:
    out, err = proc.communicate(given, timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n--- stderr\n{err}"
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _trafgen(lab: VethLab, frame: bytes, count: int) -> None:
    lab.run_b(["trafgen", "-o", lab.if_b, "-P", "1", "-n", str(count), "-q", "-H",
               trafgen_config(frame)])


def _frame(lab: VethLab, ethertype: int = 0x88B5, payload: bytes = b"gprocket") -> bytes:
    return ether_frame(lab.mac_a, lab.mac_b, ethertype, payload)


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_receives_exactly_the_peers_frames(mode: str, lab: VethLab, helper: Path,
                                           unpriv_user: priv.User) -> None:
    proc = _start(unpriv_user, lab, helper, RECEIVER,
                  {"interface": lab.if_a, "mode": mode, "count": 500, "quiet": 2.0,
                   "extra": 1})
    _wait_line(proc)
    frame = _frame(lab, payload=b"frames from trafgen " * 4)
    _trafgen(lab, frame, 500)
    result = _finish(proc)
    assert result["rung"] == "helper"
    assert result["count"] == 500
    assert result["bytes"] == 500 * len(frame)
    assert result["first"] == frame.hex()
    assert result["ticks_during"] > 0
    assert result["dropped"] == 0


def test_bpf_filter_passes_only_matching(lab: VethLab, helper: Path,
                                         unpriv_user: priv.User) -> None:
    proc = _start(unpriv_user, lab, helper, RECEIVER,
                  {"interface": lab.if_a, "mode": "passive", "count": 50, "quiet": 1.5,
                   "extra": 1, "ethertype": 0x88B5})
    _wait_line(proc)
    _trafgen(lab, _frame(lab, 0x88B6), 70)
    _trafgen(lab, _frame(lab, 0x88B5), 50)
    _trafgen(lab, _frame(lab, 0x88B6), 30)
    result = _finish(proc)
    assert result["count"] == 50
    assert result["ethertypes"] == [0x88B5]


def test_tcpdump_expression_filter(lab: VethLab, helper: Path, unpriv_user: priv.User) -> None:
    proc = _start(unpriv_user, lab, helper, RECEIVER,
                  {"interface": lab.if_a, "mode": "active", "count": 20, "quiet": 1.5,
                   "expression": "ether proto 0x88b6"})
    _wait_line(proc)
    _trafgen(lab, _frame(lab, 0x88B5), 40)
    _trafgen(lab, _frame(lab, 0x88B6), 20)
    result = _finish(proc)
    assert (result["count"], result["ethertypes"]) == (20, [0x88B6])


LOCKER = r"""
import errno, json, sys
from gprocket.packet.rawsock import RawSocket
from gprocket.packet import bpf
rs = RawSocket(sys.argv[1], filter=bpf.ethertype(0x88b5))
rs.lock_filter()
out = {}
for name, op in (("detach", lambda: bpf.detach(rs.backend.sock)),
                 ("replace", lambda: rs.set_filter(bpf.accept_all()))):
    try:
        op()
        out[name] = 0
    except OSError as err:
        out[name] = errno.errorcode[err.errno]
print(json.dumps(out))
"""


def test_locked_filter_cannot_be_detached(lab: VethLab, helper: Path,
                                          unpriv_user: priv.User) -> None:
    proc = _start(unpriv_user, lab, helper, "",
                  argv=[priv.VENV_PYTHON, "-c", LOCKER, lab.if_a])
    assert _finish(proc) == {"detach": "EPERM", "replace": "EPERM"}


HOLDER = r"""
import sys
from gprocket.packet.rawsock import RawSocket
rs = RawSocket(sys.argv[1], promiscuous=True)
print("ready", flush=True)
sys.stdin.readline()
rs.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def _promiscuity(lab: VethLab) -> tuple[int, bool]:
    detail = lab.run_a(["ip", "-d", "link", "show", lab.if_a]).stdout
    count = int(detail.split("promiscuity", 1)[1].split()[0])
    flags = int(lab.run_a(["cat", f"/sys/class/net/{lab.if_a}/flags"]).stdout, 16)
    return count, bool(flags & 0x100)


@pytest.mark.parametrize("ending", ["close", "sigkill"])
def test_promiscuous_held_then_gone(ending: str, lab: VethLab, helper: Path,
                                    unpriv_user: priv.User) -> None:
    assert _promiscuity(lab) == (0, False)
    proc = _start(unpriv_user, lab, helper, "",
                  argv=[priv.VENV_PYTHON, "-c", HOLDER, lab.if_a])
    try:
        _wait_line(proc)
        assert _promiscuity(lab) == (1, True)
        assert proc.stdin is not None
        if ending == "close":
            proc.stdin.write("\n")
            proc.stdin.flush()
            _wait_line(proc, text="closed")
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
        assert _promiscuity(lab) == (0, False)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture
def user_dir(unpriv_user: priv.User) -> Iterator[Path]:
    """A directory the unprivileged user can write (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gpk-"))
    try:
        os.chmod(path, 0o755)  # the unprivileged user must reach it
        os.chown(path, unpriv_user.uid, unpriv_user.gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tcpdump_read(path: Path) -> list[int]:
    """Frame lengths as tcpdump -r reports them (-e prints 'length N')."""
    out = subprocess.run(["tcpdump", "-nn", "-e", "-r", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return [int(line.split("length ", 1)[1].split(":")[0]) for line in out.splitlines()
            if "length " in line]


def test_sniff_pcap_read_by_tcpdump_tshark_scapy(lab: VethLab, helper: Path,
                                                 unpriv_user: priv.User,
                                                 user_dir: Path) -> None:
    target = user_dir / "capture.pcap"
    proc = _start(unpriv_user, lab, helper, "",
                  argv=[priv.VENV_PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                        "-c", "300", "-w", str(target)])
    _wait_line(proc, "stderr", "listening on")
    frame = _frame(lab, payload=b"pcap" * 30)
    _trafgen(lab, frame, 300)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "300 packets captured" in err
    assert "0 packets dropped by kernel" in err
    assert _tcpdump_read(target) == [len(frame)] * 300
    tshark = subprocess.run(["tshark", "-r", str(target), "-T", "fields", "-e", "frame.len"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert [int(x) for x in tshark] == [len(frame)] * 300
    from scapy.utils import rdpcap
    packets = rdpcap(str(target))
    assert [bytes(p) for p in packets] == [frame] * 300


def test_sniff_snap_length_and_count_ending_inside_a_block(lab: VethLab, helper: Path,
                                                            unpriv_user: priv.User,
                                                            user_dir: Path) -> None:
    """-s and -c with frames on both sides of the compiled writer's staging
    limit (256 bytes) and of the snap length: the count ends inside a ring
    block, and tcpdump, tshark and our reader see the frames cut as asked."""
    target = user_dir / "cut.pcap"
    proc = _start(unpriv_user, lab, helper, "",
                  argv=[priv.VENV_PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                        "-c", "250", "-s", "300", "-w", str(target)])
    _wait_line(proc, "stderr", "listening on")
    frames = [_frame(lab, payload=i.to_bytes(4, "big") * (1 + i * 37 % 360)) for i in range(400)]
    with inside(lab.ns_b):
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sender:
        sender.bind((lab.if_b, 0))
        # One burst: the 400 frames fill one block, of which -c keeps 250.
        ring.BatchSender(sender).send(frames)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "250 packets captured" in err
    assert _tcpdump_read(target) == [len(f) for f in frames[:250]]
    tshark = subprocess.run(["tshark", "-r", str(target), "-T", "fields", "-e", "frame.cap_len"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert [int(x) for x in tshark] == [min(len(f), 300) for f in frames[:250]]
    header, records = pcap.read_pcap(target)
    assert header.snaplen == 300 and not header.nanosecond
    assert [r.data for r in records] == [f[:300] for f in frames[:250]]


def test_sniff_sigint_leaves_complete_pcap(lab: VethLab, helper: Path, unpriv_user: priv.User,
                                           user_dir: Path) -> None:
    target = user_dir / "interrupted.pcap"
    proc = _start(unpriv_user, lab, helper, "",
                  argv=[priv.VENV_PYTHON, "-m", "gprocket.cli", "sniff", "-i", lab.if_a,
                        "-w", str(target), "--nano"])
    _wait_line(proc, "stderr", "listening on")
    frame = _frame(lab)
    _trafgen(lab, frame, 1000)
    # The last block retires within the ring's timeout; the progress line follows it.
    _wait_line(proc, "stderr", "1000 packets captured")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "1000 packets captured" in err
    header, records = pcap.read_pcap(target)
    assert header.nanosecond
    assert [r.data for r in records] == [frame] * 1000
    assert _tcpdump_read(target) == [len(frame)] * 1000


def test_sniff_prints_summaries(lab: VethLab, helper: Path, unpriv_user: priv.User) -> None:
    with veth_lab("gpk", addresses=True) as net:
        proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "sniff",
                                             "-i", net.if_a, "-c", "4", "icmp"],
                               netns=priv.Netns(net.ns_a),
                               env={"GPROCKET_HELPER": str(helper)})
        _wait_line(proc, "stderr", "listening on")
        net.run_b(["ping", "-c", "2", "-i", "0.2", str(net.ip_a)])
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    assert f"IP {net.ip_b} > {net.ip_a}: ICMP echo request" in lines[0]
    assert f"IP {net.ip_a} > {net.ip_b}: ICMP echo reply" in lines[1]


# The frames come on stdin (too big for argv): the user runs no test code.
SENDER = r"""
import json, sys
from gprocket.packet.rawsock import RawSocket
p = json.loads(sys.argv[1])
frames = [bytes.fromhex(frame) for frame in json.load(sys.stdin)]
with RawSocket(p["interface"], protocol=0x88b5) as rs:
    rs.send(frames[0])
    sent = 1 + rs.send_many(frames[1:])
print(json.dumps({"sent": sent, "rung": rs.backend.sock.rung}))
"""


def test_frames_sent_arrive_identical_at_tcpdump(lab: VethLab, helper: Path,
                                                 unpriv_user: priv.User,
                                                 tmp_path: Path) -> None:
    target = tmp_path / "peer.pcap"
    frames = [ether_frame(lab.mac_b, lab.mac_a, 0x88B5, i.to_bytes(4, "big") * (i % 300 + 1))
              for i in range(200)]
    dump = listening(lab.argv_b(["tcpdump", "-i", lab.if_b, "-U", "-c", "200", "-w",
                                 str(target), "ether proto 0x88b5"]))
    try:
        proc = _start(unpriv_user, lab, helper, SENDER, {"interface": lab.if_a})
        result = _finish(proc, json.dumps([frame.hex() for frame in frames]))
        assert result == {"sent": 200, "rung": "helper"}
        dump.wait(timeout=30)
    finally:
        dump.kill()
        dump.communicate()
    _, records = pcap.read_pcap(target)
    assert [r.data for r in records] == frames
    assert all(r.orig_len == len(r.data) for r in records)


def test_tcpdump_pcap_read_back(lab: VethLab, tmp_path: Path) -> None:
    target = tmp_path / "tcpdump.pcap"
    dump = listening(lab.argv_a(["tcpdump", "-i", lab.if_a, "-U", "-c", "100", "-w",
                                 str(target)]))
    try:
        frame = _frame(lab, payload=b"from tcpdump" * 9)
        _trafgen(lab, frame, 100)
        dump.wait(timeout=30)
    finally:
        dump.kill()
        dump.communicate()
    header, records = pcap.read_pcap(target)
    assert header.linktype == pcap.LINKTYPE_ETHERNET
    assert [r.data for r in records] == [frame] * 100
    assert sum(r.orig_len for r in records) == 100 * len(frame)
