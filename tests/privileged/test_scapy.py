"""scapy as an unprivileged user: unmodified under `gprocket run`, and through gprocket.scapy.

A veth pair joins two fresh namespaces with addresses; scapy runs as the
unprivileged test user in namespace a with a helper installed with file
capabilities and a policy granting ``packet`` (and ``raw 255`` for IP to the
loopback interface) to the group. The kernel of namespace b answers echo
requests and ARP; trafgen (root, namespace b) sends what the sniffer must see
or must not; tcpdump (root, namespace b) witnesses what scapy sends. Each
scenario runs both ways: the script unmodified under ``gprocket run``, and
the same script after ``gprocket.scapy.install()``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv
from support.lab import VethLab, listening, trafgen_config, veth_lab

from gprocket.packet import pcap

pytestmark = pytest.mark.privileged

POLICY = "allow group:gprocket packet\nallow group:gprocket raw 255\n"
INSTALL = "import gprocket.scapy\ngprocket.scapy.install()\n"
MODES = ["run", "install"]

# The scapy script; parameters come as JSON in argv[1]; the last line is the result.
SCRIPT = r"""
import json, sys
from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, conf, sendp, sniff, sr1, srp1

p = json.loads(sys.argv[1])
out = {"L2socket": conf.L2socket.__module__}
if p["what"] == "sr1":
    ans = sr1(IP(dst=p["peer"]) / ICMP(id=0x4242, seq=7) / b"gprocket-scapy",
              timeout=5, verbose=0)
    out.update(src=ans[IP].src, type=ans[ICMP].type, id=ans[ICMP].id, seq=ans[ICMP].seq,
               load=bytes(ans[Raw].load).decode())
elif p["what"] == "sr1-v6":
    from scapy.all import IPv6, ICMPv6EchoReply, ICMPv6EchoRequest
    ans = sr1(IPv6(dst=p["peer"]) / ICMPv6EchoRequest(id=0x4242, seq=7, data=b"gprocket-scapy"),
              timeout=5, verbose=0)
    out.update(src=ans[IPv6].src, reply=ans.haslayer(ICMPv6EchoReply),
               id=ans[ICMPv6EchoReply].id, data=bytes(ans[ICMPv6EchoReply].data).decode())
elif p["what"] == "srp1":
    ans = srp1(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=p["peer"]), iface=p["iface"],
               timeout=5, verbose=0)
    out.update(op=ans[ARP].op, psrc=ans[ARP].psrc, hwsrc=ans[ARP].hwsrc)
elif p["what"] == "sniff":
    got = sniff(iface=p["iface"], filter="udp and dst port 9999", timeout=p["timeout"],
                started_callback=lambda: print("ready", flush=True))
    out.update(count=len(got), ports=sorted({q[UDP].dport for q in got}),
               seqs=[int(bytes(q[Raw].load)[:4].hex(), 16) for q in got])
elif p["what"] == "threads":
    import collections, os, threading
    from scapy.all import AsyncSniffer
    def fds():
        names = os.listdir("/proc/self/fd")  # its own descriptor is gone by the loop
        return sorted(os.readlink(f"/proc/self/fd/{n}") for n in names
                      if os.path.exists(f"/proc/self/fd/{n}"))
    conf.L2listen(iface=p["iface"]).close()  # the main thread's first ladder call makes its hub
    start = fds()
    for _ in range(3):
        # Stopped once its socket is open (stop() before that neither joins nor closes).
        sniffing = threading.Event()
        sniffer = AsyncSniffer(iface=p["iface"], filter="udp", started_callback=sniffing.set)
        sniffer.start()
        assert sniffing.wait(30), "the sniffer thread never opened its socket"
        sniffer.stop()
    left = collections.Counter(fds()) - collections.Counter(start)
    out.update(results=sniffer.results is not None, left=sorted(left.elements()),
               same=fds() == start)
elif p["what"] == "sendp":
    frames = [Ether(dst=p["dst"], src=p["src"], type=0x88B5) / Raw(i.to_bytes(4, "big") * 16)
              for i in range(p["count"])]
    sendp(frames, iface=p["iface"], verbose=0)
    out.update(sent=len(frames))
print(json.dumps(out))
"""


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with veth_lab("gps", addresses=True) as made:
        yield made


@pytest.fixture
def helper(installed_helper: Callable[..., Path]) -> Path:
    return installed_helper(mode="caps", policy=POLICY)


def _argv(mode: str, params: dict[str, Any], script: str = SCRIPT) -> list[str]:
    if mode == "run":
        return [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", "-c", script, json.dumps(params)]
    return [priv.VENV_PYTHON, "-c", INSTALL + script, json.dumps(params)]


def _start(user: priv.User, lab: VethLab, helper: Path, argv: list[str]
           ) -> subprocess.Popen[str]:
    # No HOME: the test user has none, as a service account would not.
    return priv.popen_argv(user, argv, netns=priv.Netns(lab.ns_a),
                           env={"GPROCKET_HELPER": str(helper)})


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n--- stderr\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _run(user: priv.User, lab: VethLab, helper: Path, mode: str,
         params: dict[str, Any]) -> dict[str, Any]:
    result = _finish(_start(user, lab, helper, _argv(mode, params)))
    # Under `gprocket run` scapy keeps its own classes (patching serves them);
    # install() replaces them.
    expected = "gprocket.scapy" if mode == "install" else "scapy.arch.linux"
    assert result.pop("L2socket") == expected
    return result


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"no 'ready' (exit {proc.returncode}):\n{line}{out}\n--- stderr\n{err}")


def test_plain_scapy_is_refused_for_this_user(lab: VethLab, helper: Path,
                                              unpriv_user: priv.User) -> None:
    """The baseline: without gprocket the same user cannot open scapy's socket."""
    proc = _start(unpriv_user, lab, helper,
                  [priv.VENV_PYTHON, "-c", SCRIPT, json.dumps({"what": "srp1",
                                                               "peer": lab.ip_b,
                                                               "iface": lab.if_a})])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "PermissionError: [Errno 1] Operation not permitted" in err


@pytest.mark.parametrize("mode", MODES)
def test_sr1_icmp_echo_to_the_peer_namespace(mode: str, lab: VethLab, helper: Path,
                                             unpriv_user: priv.User) -> None:
    result = _run(unpriv_user, lab, helper, mode, {"what": "sr1", "peer": lab.ip_b})
    assert result == {"src": lab.ip_b, "type": 0, "id": 0x4242, "seq": 7,
                      "load": "gprocket-scapy"}


@pytest.mark.parametrize("mode", MODES)
def test_sr1_icmp_echo_on_loopback(mode: str, lab: VethLab, helper: Path,
                                   unpriv_user: priv.User) -> None:
    """scapy's loopback path: an IPPROTO_RAW socket (policy raw 255) and a packet socket."""
    result = _run(unpriv_user, lab, helper, mode, {"what": "sr1", "peer": "127.0.0.1"})
    assert result == {"src": "127.0.0.1", "type": 0, "id": 0x4242, "seq": 7,
                      "load": "gprocket-scapy"}


@pytest.mark.parametrize("mode", MODES)
def test_sr1_icmpv6_echo_on_loopback(mode: str, netns: priv.Netns, helper: Path,
                                     unpriv_user: priv.User) -> None:
    """IPv6 to loopback: scapy's L3RawSocket6 (the lab's veth pair has no IPv6)."""
    proc = priv.popen_argv(unpriv_user, _argv(mode, {"what": "sr1-v6", "peer": "::1"}),
                           netns=netns, env={"GPROCKET_HELPER": str(helper)})
    result = _finish(proc)
    assert result == {"L2socket": "gprocket.scapy" if mode == "install" else "scapy.arch.linux",
                      "src": "::1", "reply": True, "id": 0x4242, "data": "gprocket-scapy"}


@pytest.mark.parametrize("mode", MODES)
def test_srp1_arp_who_has_across_the_veth(mode: str, lab: VethLab, helper: Path,
                                          unpriv_user: priv.User) -> None:
    result = _run(unpriv_user, lab, helper, mode,
                  {"what": "srp1", "peer": lab.ip_b, "iface": lab.if_a})
    assert result == {"op": 2, "psrc": lab.ip_b, "hwsrc": lab.mac_b}


@pytest.mark.parametrize("mode", MODES)
def test_sockets_from_threads_leave_nothing_behind(mode: str, lab: VethLab, helper: Path,
                                                   unpriv_user: priv.User) -> None:
    """AsyncSniffer opens its socket in a thread of its own: the ladder's gevent hub
    in that thread must end with it (it kept an epoll and an eventfd per thread)."""
    result = _run(unpriv_user, lab, helper, mode, {"what": "threads", "iface": lab.if_a})
    assert result == {"results": True, "left": [], "same": True}


def _udp_frame(lab: VethLab, dport: int, seq: int) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    return bytes(Ether(dst=lab.mac_a, src=lab.mac_b) / IP(src=lab.ip_b, dst=lab.ip_a)
                 / UDP(sport=4000, dport=dport) / seq.to_bytes(4, "big"))


def _trafgen(lab: VethLab, frame: bytes, count: int) -> None:
    lab.run_b(["trafgen", "-o", lab.if_b, "-P", "1", "-n", str(count), "-q", "-H",
               trafgen_config(frame)])


@pytest.mark.parametrize("mode", MODES)
def test_sniff_with_filter_sees_exactly_the_matching(mode: str, lab: VethLab, helper: Path,
                                                     unpriv_user: priv.User) -> None:
    proc = _start(unpriv_user, lab, helper,
                  _argv(mode, {"what": "sniff", "iface": lab.if_a, "timeout": 4}))
    try:
        _wait_ready(proc)
        _trafgen(lab, _udp_frame(lab, 9998, 1), 15)
        for seq in range(10):
            _trafgen(lab, _udp_frame(lab, 9999, seq), 1)
        _trafgen(lab, _udp_frame(lab, 53, 2), 5)
        result = _finish(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert result["L2socket"] == ("gprocket.scapy" if mode == "install" else "scapy.arch.linux")
    assert (result["count"], result["ports"], result["seqs"]) == (10, [9999], list(range(10)))


@pytest.mark.parametrize("mode", MODES)
def test_sendp_frames_arrive_identical_at_tcpdump(mode: str, lab: VethLab, helper: Path,
                                                  unpriv_user: priv.User,
                                                  tmp_path: Path) -> None:
    target = tmp_path / "peer.pcap"
    count = 20
    dump = listening(lab.argv_b(["tcpdump", "-i", lab.if_b, "-U", "-c", str(count), "-w",
                                 str(target), "ether proto 0x88b5"]))
    try:
        result = _run(unpriv_user, lab, helper, mode,
                      {"what": "sendp", "iface": lab.if_a, "dst": lab.mac_b,
                       "src": lab.mac_a, "count": count})
        assert result == {"sent": count}
        dump.wait(timeout=30)
    finally:
        dump.kill()
        dump.communicate()
    _, records = pcap.read_pcap(target)
    expected = [bytes.fromhex(lab.mac_b.replace(":", "") + lab.mac_a.replace(":", ""))
                + b"\x88\xb5" + i.to_bytes(4, "big") * 16 for i in range(count)]
    assert [r.data for r in records] == expected


# scapy's socket options through gprocket.scapy, as the unprivileged user in namespace a.
OPTIONS = r"""
import json, os, socket, sys
import gprocket.scapy
import scapy.supersocket
from scapy.all import ICMP, IP, Scapy_Exception, conf

p = json.loads(sys.argv[1])
iface = p["iface"]
SO_GET_FILTER = 26  # returns as many bytes as the attached program has instructions

def fds():
    names = os.listdir("/proc/self/fd")  # its own descriptor is gone by the loop
    return sorted(f"{n} {os.readlink('/proc/self/fd/' + n)}" for n in names
                  if os.path.exists("/proc/self/fd/" + n))

def filter_len(sock):
    return len(sock.ins.getsockopt(socket.SOL_SOCKET, SO_GET_FILTER, 1024))

def promiscuous():
    with open(f"/sys/class/net/{iface}/flags") as f:
        return bool(int(f.read(), 16) & 0x100)

def compiled(expression):
    return len(gprocket.scapy.compile_filter(expression, iface))

gprocket.scapy.install()
out = {}
conf.L2listen(iface=iface, nofilter=1).close()  # the first ladder call starts gevent's hub
start = fds()
try:
    conf.L2listen(iface=iface, filter="udp and nonsense(")
except Scapy_Exception as err:
    out["bad_filter"] = str(err).split(":")[0]
out["fds_after_bad_filter"] = fds() == start or [start, fds()]

with conf.L2listen(iface=iface, filter="udp") as s:
    out["filter"] = filter_len(s) == compiled("udp")
conf.except_filter = "arp"
with conf.L2listen(iface=iface, filter="udp") as s:
    out["except_filter"] = filter_len(s) == compiled("(udp) and not (arp)")
with conf.L2listen(iface=iface) as s:
    out["except_only"] = filter_len(s) == compiled("not (arp)")
with conf.L2listen(iface=iface, filter="udp", nofilter=1) as s:
    out["nofilter"] = filter_len(s)
conf.except_filter = ""

with conf.L2socket(iface=iface, type=0x88B5) as s:
    name = s.ins.getsockname()
    out["bound"] = [name[0], name[1]]
    out["can_send"] = s.outs is s.ins

out["promisc_before"] = promiscuous()
s = conf.L2listen(iface=iface, promisc=True)
out["promisc_held"] = promiscuous()
s.close()
out["promisc_after"] = promiscuous()

with conf.L3socket(iface="lo") as s:
    s.send(IP(dst=p["peer"]) / ICMP())
    out["send_sock"] = {k: type(v).__module__ for k, v in s.send_socks.items()}

gprocket.scapy.uninstall()
out["restored"] = [conf.L2socket.__module__, scapy.supersocket.L3RawSocket.__module__]
out["fds_at_end"] = fds() == start or [start, fds()]
print(json.dumps(out))
"""


def test_install_honours_scapys_socket_options(lab: VethLab, helper: Path,
                                               unpriv_user: priv.User) -> None:
    """filter, conf.except_filter, nofilter, type, promisc, L3 send sockets; no leaks."""
    argv = [priv.VENV_PYTHON, "-c", OPTIONS, json.dumps({"iface": lab.if_a,
                                                        "peer": lab.ip_b})]
    result = _finish(_start(unpriv_user, lab, helper, argv))
    assert result == {
        "bad_filter": "Cannot set filter",
        "fds_after_bad_filter": True,
        "filter": True, "except_filter": True, "except_only": True, "nofilter": 0,
        "bound": [lab.if_a, 0x88B5], "can_send": True,
        "promisc_before": False, "promisc_held": True, "promisc_after": False,
        "send_sock": {"lo": "gprocket.scapy", lab.if_a: "gprocket.scapy"},
        "restored": ["scapy.arch.linux", "scapy.supersocket"],
        "fds_at_end": True,
    }


DENIED = r"""
import json
import gprocket, gprocket.scapy
from scapy.sendrecv import sniff
gprocket.scapy.install()
try:
    sniff(iface="lo", count=1, timeout=1)
except gprocket.PrivilegeError as err:
    print(json.dumps({"error": type(err).__name__, "fix": err.fix,
                      "rungs": [a.rung for a in err.attempts]}))
"""


def test_install_without_a_packet_rule_explains_the_refusal(
        netns: priv.Netns, installed_helper: Callable[..., Path],
        unpriv_user: priv.User) -> None:
    helper = installed_helper(mode="caps", policy="allow group:gprocket raw icmp\n")
    result = priv.run_json(unpriv_user, DENIED, netns=netns,
                           env={"GPROCKET_HELPER": str(helper)})
    assert result["error"] == "PrivilegeError"
    assert "policy" in result["fix"]
    assert "helper" in result["rungs"]


@pytest.mark.parametrize(("target", "kind"), [("peer", "L3PacketSocket"),
                                              ("127.0.0.1", "L3RawSocket")])
def test_example_scapy_ping(target: str, kind: str, lab: VethLab, helper: Path,
                            unpriv_user: priv.User) -> None:
    host = str(lab.ip_b) if target == "peer" else target
    proc = _start(unpriv_user, lab, helper,
                  [priv.VENV_PYTHON, str(priv.EXAMPLES / "scapy_ping.py"), host, "3"])
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, f"{out}\n--- stderr\n{err}"
    lines = out.splitlines()
    iface = lab.if_a if target == "peer" else "lo"
    assert lines[0] == f"PING {host} on {iface}: {kind} from rung helper"
    assert [line.split(" time=")[0] for line in lines[1:4]] == [
        f"reply from {host}: icmp_seq={seq}" for seq in range(3)]
    assert lines[4:] == ["3 sent, 3 received"]
