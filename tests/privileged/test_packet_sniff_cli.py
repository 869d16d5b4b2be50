"""`gprocket sniff` exit codes and messages, and examples/sniff.py as an unprivileged user."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv
from support.lab import veth_lab

from gprocket.cli import sniff

pytestmark = pytest.mark.privileged
EXAMPLE = priv.EXAMPLES / "sniff.py"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert sniff.main([]) == 2
    assert "-i" in capsys.readouterr().err
    assert sniff.main(["-i", "lo", "-c", "0"]) == 2
    assert "-c must be positive" in capsys.readouterr().err
    assert sniff.main(["-i", "lo", "port", "banana"]) == 2
    assert "cannot compile filter 'port banana'" in capsys.readouterr().err


def test_unknown_interface_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert sniff.main(["-i", "gpk-missing", "-c", "1"]) == 1
    assert "no interface named 'gpk-missing'" in capsys.readouterr().err


def test_refused_without_policy_exits_1_with_fix(installed_helper: Callable[..., Path],
                                                 unpriv_user: priv.User) -> None:
    helper = installed_helper(mode="caps")  # defaults: packet sockets need an entry
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "sniff", "-i",
                                       "lo", "-c", "1"],
                         env={"GPROCKET_HELPER": str(helper),
                              "GPROCKET_STRATEGIES": "plain,helper"})
    assert proc.returncode == 1, proc.stderr
    assert "gprocket sniff:" in proc.stderr
    assert "fix:" in proc.stderr


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def test_example_watches_arp_as_unprivileged_user(installed_helper: Callable[..., Path],
                                                  unpriv_user: priv.User) -> None:
    helper = installed_helper(mode="caps", policy="allow group:gprocket packet\n")
    # A readable copy: the checkout may sit where other users cannot read it.
    folder = Path(tempfile.mkdtemp(prefix="gpk-"))
    example = folder / "sniff.py"
    shutil.copyfile(EXAMPLE, example)
    folder.chmod(0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, True)
        lab = stack.enter_context(veth_lab("gpk", addresses=True))
        proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, str(example), lab.if_a, "3"],
                               netns=priv.Netns(lab.ns_a),
                               env={"GPROCKET_HELPER": str(helper)})
        stack.callback(_reap, proc)
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "opened by rung 'broker'" in first, first  # the default ladder's helper rung
        lab.run_b(["ping", "-c", "1", "-W", "2", str(lab.ip_a)])
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"ARP, Request who-has {lab.ip_a} tell {lab.ip_b}" in out
    assert f"ARP, Reply {lab.ip_a} is-at {lab.mac_a}" in out
    assert "still listening" in err


def test_summaries_of_frames_scapy_builds() -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    from gprocket.packet.summary import summarize

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    cases = {
        bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5353, dport=53) / (b"q" * 12)):
            "IP 10.0.0.1.5353 > 10.0.0.2.53: UDP, length 12",
        bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=80, flags="S",
                                                             seq=7)):
            "IP 10.0.0.1.1 > 10.0.0.2.80: Flags [S], seq 7, length 0",
        bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=3, seq=4)):
            "IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 3, seq 4, length 8",
        bytes(eth / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest()):
            "IP6 fd00::1 > fd00::2: ICMP6, echo request, length 8",
        bytes(eth / Dot1Q(vlan=7) / ARP(psrc="10.0.0.1", pdst="10.0.0.9")):
            "vlan 7, ARP, Request who-has 10.0.0.9 tell 10.0.0.1, length 28",
        bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88B5)
              / (b"x" * 50)):
            "02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype 0x88b5, length 64",
        b"\x01\x02": "[|ether] length 2",
    }
    for frame, expected in cases.items():
        line = summarize(frame, 0.5)
        assert line.split(" ", 1)[1] == expected
        assert line.split(" ", 1)[0].endswith(".500000")
