"""The helper's containment past the privilege drop, seen from /proc and from inside.

Every helper here is really installed (setuid root, file capabilities, or run through
sudo) and started by a driver that runs as the unprivileged test user; the test, as
root, reads the idle helper's /proc/PID/status and /proc/PID/limits. A test build
(``make -C helper selftest``: build/, never installed by capsetup) shows the seccomp
filter killing a forbidden call and Landlock refusing a file outside its allowlist.
docs/SECURITY.md, "Containment", names the promise each test guards.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv

from capsetup.sudoers import render_sudoers
from gprocket._ladder.broker import Broker, get_broker
from gprocket._spec import SocketRequest

pytestmark = pytest.mark.privileged

HELPER_DIR = priv.REPO / "helper"
SELFTEST = HELPER_DIR / "build" / "gprocket-helper-selftest"
CAP_SYS_ADMIN = 21
STAGES = ("none", "parse", "policy", "open", "bind", "configure", "namespace", "internal")

# As the test user: start the helper on a socketpair, then one JSON command per line.
DRIVER = r'''
import array, json, socket, struct, subprocess, sys
argv = json.loads(sys.argv[1])
chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
proc = subprocess.Popen(argv, stdin=theirs, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
theirs.close()
chan.settimeout(20)
kept = []
print(json.dumps({"pid": proc.pid}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "close":
        chan.close()
        print(json.dumps({"rc": proc.wait(timeout=20)}), flush=True)
        break
    chan.send(bytes.fromhex(cmd["hex"]))
    msg, anc, _flags, _addr = chan.recvmsg(200, socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        kept += array.array("i", data[: len(data) - len(data) % 4])
    if len(msg) != 96:
        print(json.dumps({"size": len(msg), "rc": proc.poll()}), flush=True)
        continue
    err, stage = struct.unpack_from("<iI", msg, 12)
    print(json.dumps({"err": err, "stage": stage, "fds": len(anc),
                      "detail": msg[36:].rstrip(b"\0").decode()}), flush=True)
'''

_REQ = struct.Struct("<4sHHIHHiiiHH16sIi16s32s32sIII4s16sBB22s")


def req(op: int = 1, *, family: int = 0, type: int = 0, protocol: int = 0, port: int = 0,
        netns: str = "") -> bytes:
    """A request (PROTOCOL.md): SOCKET by default, HELLO with op=4."""
    return _REQ.pack(b"GPRQ", 1, 192, 1, op, 0, family, type, protocol, port, 0, b"", 0, 0,
                     b"", netns.encode(), b"", 0, 0, 0, b"", b"", 0, 0, b"")


def udp(port: int, netns: str = "") -> bytes:
    return req(family=socket.AF_INET, type=socket.SOCK_DGRAM, port=port, netns=netns)


HELLO = req(4)


class Driver:
    """The test user's driver process and the helper it started."""

    def __init__(self, proc: subprocess.Popen[str], pid: int) -> None:
        self.proc = proc
        self.pid = pid

    def call(self, **cmd: Any) -> dict[str, Any]:
        return priv.json_line(self.proc, cmd)

    def send(self, data: bytes) -> dict[str, Any]:
        return self.call(op="req", hex=data.hex())


@contextlib.contextmanager
def driven(user: priv.User, argv: list[str]) -> Iterator[Driver]:
    proc = priv.popen_argv(user, [priv.VENV_PYTHON, "-c", DRIVER, json.dumps(argv)],
                           stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first, f"driver failed: {proc.stderr.read() if proc.stderr else ''}"
        yield Driver(proc, json.loads(first)["pid"])
    finally:
        priv.stop(proc)


def helper_process(pid: int, helper: Path) -> int:
    """The helper itself: `pid`, or under sudo a descendant of it."""
    todo = [pid]
    while todo:
        candidate = todo.pop()
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{candidate}/exe") == str(helper):
                return candidate
        todo += priv.children_of(candidate)
    raise AssertionError(f"no helper process under {pid}")


def field(text: str, key: str) -> str:
    match = re.search(rf"^{key}:[ \t]*(.*)$", text, re.MULTILINE)
    assert match, f"{key} missing"
    return match.group(1).strip()


def limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {name: (soft, hard)}."""
    result = {}
    for row in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        soft, hard = row[26:].split()[:2]
        result[row[:26].strip()] = (soft, hard)
    return result


@contextlib.contextmanager
def sudo_rule(user: priv.User, helper: Path, text: str | None = None) -> Iterator[None]:
    """A sudoers drop-in: `text`, or the one `capsetup sudoers` writes."""
    path = Path(f"/etc/sudoers.d/gprocket-sandbox-{os.getpid()}")
    path.write_text(text or render_sudoers(helper, user=user.name))
    os.chmod(path, 0o440)
    try:
        subprocess.run(["visudo", "-cf", str(path)], check=True, capture_output=True)
        yield
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def selftest_build() -> Path:
    subprocess.run(["make", "-s", "-C", str(HELPER_DIR), "selftest"], check=True,
                   capture_output=True, timeout=300)
    return SELFTEST


@pytest.mark.parametrize("namespaced", [False, True], ids=["plain", "netns"])
@pytest.mark.parametrize("mode", ["setuid", "caps", "sudo"])
def test_idle_broker_is_confined_and_holds_no_sys_admin(
        mode: str, namespaced: bool, unpriv_user: priv.User,
        installed_helper: Callable[..., Path], netns: priv.Netns) -> None:
    """Every idle broker, plain or serving a namespace, in every install mode: no
    CAP_SYS_ADMIN in any set, the bounding set cut to the permitted one, securebits
    locked, seccomp filtering (mode 2), and OpenSSH's rlimits."""
    policy = (f"allow * netns {netns.name}\nallow group:gprocket tun gpsb*\n"
              "allow * bind any 1-1023\nallow * raw icmp\n")
    helper = installed_helper("setuid" if mode == "sudo" else mode, policy)
    argv = [str(helper), "--broker"]
    if mode == "sudo":
        os.chmod(helper, 0o755)  # a plain root-owned program for sudo
        argv = ["sudo", "-n", *argv]
    name = netns.name if namespaced else ""
    if namespaced:
        argv += ["--netns", name]
    # The library never starts a broker through sudo: this rule is the test's own.
    text = f"{unpriv_user.name} ALL=(root) NOPASSWD: {' '.join(argv[2:])}\n"
    rule = sudo_rule(unpriv_user, helper, text) if mode == "sudo" else contextlib.nullcontext()
    with rule, driven(unpriv_user, argv) as d:
        hello = d.send(HELLO)
        assert (hello["err"], hello["detail"]) == (
            0, f"gprocket-helper 1 mode={mode} uid={unpriv_user.uid}"), hello
        served = d.send(udp(53, netns=name))
        assert (served["err"], served["fds"]) == (0, 1), served
        pid = helper_process(d.pid, helper)
        if namespaced:
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.path).st_ino
        # Landlock's accept_ra rule is on this namespace's sysctl directory, pinned as the
        # working directory (procfs would give a re-looked-up one a new inode).
        conf = "/proc/sys/net/ipv6/conf"
        assert os.readlink(f"/proc/{pid}/cwd") == conf
        seen_inside = netns.exec(["stat", "-c", "%i", conf]).stdout if namespaced else None
        seen = int(seen_inside) if seen_inside else os.stat(conf).st_ino
        assert os.stat(f"/proc/{pid}/cwd").st_ino == seen
        if namespaced:
            assert seen != os.stat(conf).st_ino  # the host's is another directory
        status = Path(f"/proc/{pid}/status").read_text()
        sets = {key: int(field(status, key), 16)
                for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        assert not [key for key, value in sets.items() if value >> CAP_SYS_ADMIN & 1], sets
        assert sets["CapInh"] == sets["CapEff"] == sets["CapAmb"] == 0, sets
        assert sets["CapBnd"] == sets["CapPrm"] != 0, sets
        assert (field(status, "Seccomp"), field(status, "Seccomp_filters")) == ("2", "1")
        assert field(status, "NoNewPrivs") == "1"
        lim = limits(pid)
        assert lim["Max core file size"] == ("0", "0")
        assert lim["Max file size"] == ("0", "0")
        assert lim["Max processes"] == ("0", "0")
        soft, hard = lim["Max open files"]
        assert soft == hard and 3 < int(soft) <= 1024
        assert d.call(op="close")["rc"] == 0


@pytest.mark.parametrize("mode", ["setuid", "caps"])
def test_one_shot_is_confined_before_its_request(mode: str, unpriv_user: priv.User,
                                                 installed_helper: Callable[..., Path],
                                                 netns: priv.Netns) -> None:
    """A one-shot helper (here with --netns) is filtered and limited while it waits for
    its one request, then serves it and exits."""
    helper = installed_helper(mode, f"allow * netns {netns.name}\n")
    with driven(unpriv_user, [str(helper), "--netns", netns.name]) as d:
        deadline = time.monotonic() + 10
        status = ""
        while time.monotonic() < deadline:
            status = Path(f"/proc/{d.pid}/status").read_text()
            if field(status, "Seccomp") == "2":
                break
            time.sleep(0.01)
        assert field(status, "Seccomp") == "2", status
        assert not int(field(status, "CapBnd"), 16) >> CAP_SYS_ADMIN & 1
        assert limits(d.pid)["Max file size"] == ("0", "0")
        rep = d.send(udp(0, netns=netns.name))
        assert (rep["err"], rep["fds"]) == (0, 1), rep
        assert d.call(op="close")["rc"] == 0


def test_forbidden_system_call_kills_with_sigsys(selftest_build: Path, unpriv_user: priv.User,
                                                 installed_helper: Callable[..., Path]) -> None:
    """After the filter, a call outside the list (here execve) kills the process:
    SIGSYS, not the exit status of /bin/true."""
    for mode in ("setuid", "caps"):
        with priv.install_helper(mode, source=selftest_build) as helper:
            proc = priv.run_argv(unpriv_user, [str(helper), "--sandbox-report", "--selftest",
                                               "seccomp"])
        assert proc.returncode == -signal.SIGSYS, (mode, proc.returncode, proc.stdout)
        assert "seccomp: on kill-process" in proc.stdout
        assert proc.stdout.rstrip().endswith("selftest: execve /bin/true")


def test_netlink_is_open_for_rtnetlink_only(selftest_build: Path,
                                            unpriv_user: priv.User) -> None:
    """The TUN attach check needs socket(AF_NETLINK, .., NETLINK_ROUTE); any other
    netlink protocol (here sock_diag, which the test user may open outside the filter)
    kills the confined helper."""
    assert priv.run_argv(unpriv_user, ["python3", "-c", SOCK_DIAG]).returncode == 0
    with priv.install_helper("setuid", source=selftest_build) as helper:
        proc = priv.run_argv(unpriv_user, [str(helper), "--sandbox-report", "--selftest",
                                           "netlink"])
    assert proc.returncode == -signal.SIGSYS, (proc.returncode, proc.stdout)
    assert proc.stdout.splitlines()[-2:] == ["selftest: netlink route: ok",
                                             "selftest: netlink sock_diag"], proc.stdout


SOCK_DIAG = "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4).close()"


def test_landlock_refuses_a_file_outside_the_allowlist(
        selftest_build: Path, unpriv_user: priv.User) -> None:
    """/etc/passwd is world-readable, yet the confined helper (as the test user) gets
    EACCES; so does the world-readable accept_ra under /proc/sys/net/ipv6/conf (the rule
    there grants writing only). That the write itself gets through: every TUN test, e.g.
    test_policy_attacks.py::test_router_advertisement_into_the_device_adds_no_route."""
    with priv.install_helper("setuid", source=selftest_build) as helper:
        proc = priv.run_argv(unpriv_user, [str(helper), "--sandbox-report", "--selftest",
                                           "landlock"])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "selftest: open /etc/passwd: EACCES" in proc.stdout.splitlines()
    assert "selftest: open /proc/sys/net/ipv6/conf/lo/accept_ra: EACCES" in proc.stdout.splitlines()
    assert os.access("/proc/sys/net/ipv6/conf/lo/accept_ra", os.R_OK)  # 0644: Landlock's doing
    assert re.search(r"^landlock: on abi=\d+ fs=/dev/net/tun:rw,/proc/sys/net/ipv6/conf:w ",
                     proc.stdout, re.MULTILINE)


def test_sandbox_report_says_what_is_in_force(unpriv_user: priv.User,
                                              installed_helper: Callable[..., Path]) -> None:
    """The interface doctor reads: one `layer: state ...` line per layer."""
    helper = installed_helper("caps")
    proc = priv.run_argv(unpriv_user, [str(helper), "--sandbox-report"])
    assert proc.returncode == 0, proc.stderr
    report = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert set(report) == {"seccomp", "landlock", "capabilities", "rlimits"}
    assert re.fullmatch(r"on kill-process syscalls=\d+", report["seccomp"])
    abi = int(subprocess.run(["python3", "-c", LANDLOCK_ABI], capture_output=True,
                             text=True, check=True).stdout)
    if abi > 0:
        assert report["landlock"].startswith(f"on abi={abi} ")
        assert report["landlock"].endswith(
            "scope=abstract-unix-socket,signal" if abi >= 6 else "scope=none")
    else:
        assert report["landlock"].startswith("off (")
    assert report["capabilities"] == "bounding=kept-only securebits=0xef"
    assert report["rlimits"].startswith("core=0 fsize=0 nofile=")
    # A regular file as stdout would meet RLIMIT_FSIZE 0: refused up front, said why.
    with open(f"/opt/gprocket/t/report-{os.getpid()}", "w+") as out:
        try:
            rc = subprocess.run(priv.as_user_argv(unpriv_user, [str(helper),
                                                                "--sandbox-report"]),
                                stdout=out, stderr=subprocess.PIPE, check=False).returncode
            assert rc == 2
        finally:
            os.unlink(out.name)


LANDLOCK_ABI = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(max(libc.syscall(444, None, 0, 1), 0))  # landlock_create_ruleset(.., VERSION)
"""


@pytest.mark.parametrize(("entry", "err", "stage"), [
    ("missing", errno.ENOENT, "namespace"),
    ("link", errno.ELOOP, "namespace"),
    ("file", errno.EINVAL, "namespace"),
    ("ungranted", errno.EPERM, "policy"),
    ("../../proc/1/ns/net", errno.EINVAL, "parse"),
    ("x" * 32, errno.EINVAL, "parse"),
])
def test_netns_argument_is_checked_as_the_request_field(
        entry: str, err: int, stage: str, unpriv_user: priv.User,
        installed_helper: Callable[..., Path]) -> None:
    """--netns NAME: validated like the request's netns field, granted by a netns rule,
    and a /run/netns entry that is missing, a link or no namespace is refused; the
    reason answers every request (one-shot here), and no SYS_ADMIN is left either way."""
    tag = f"gpsb{os.getpid() % 100000}"
    name = {"missing": f"{tag}-missing", "link": f"{tag}-link", "file": f"{tag}-file",
            "ungranted": f"{tag}-other"}.get(entry, entry)
    policy = "".join(f"allow * netns {tag}-{kind}\n" for kind in ("missing", "link", "file"))
    helper = installed_helper("caps", policy + "allow * bind udp 53\n")
    link, plain = Path(f"/run/netns/{tag}-link"), Path(f"/run/netns/{tag}-file")
    try:
        link.symlink_to("/proc/1/ns/net")
        plain.write_text("")
        with driven(unpriv_user, [str(helper), "--broker", "--netns", name]) as d:
            for _ in range(2):
                rep = d.send(udp(53, netns=name if len(name) < 32 else ""))
                assert (rep["err"], STAGES[rep["stage"]], rep["fds"]) == (err, stage, 0), rep
            status = Path(f"/proc/{d.pid}/status").read_text()
            assert not int(field(status, "CapPrm"), 16) >> CAP_SYS_ADMIN & 1
            assert not int(field(status, "CapBnd"), 16) >> CAP_SYS_ADMIN & 1
            assert os.readlink(f"/proc/{d.pid}/ns/net") == os.readlink("/proc/self/ns/net")
    finally:
        link.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)


def test_sudoers_drop_in_admits_exactly_the_client_invocations(
        unpriv_user: priv.User, installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper("setuid")
    os.chmod(helper, 0o755)
    allowed = {"": True, "--broker": True, "--netns lab": True, "--netns a.b_c-1": True,
               "--netns ../x": False, "--netns -x": False, "--netns lab --broker": False,
               "--check-policy": False, "--netns": False}
    with sudo_rule(unpriv_user, helper):
        got = {args: priv.run_argv(unpriv_user, ["sudo", "-n", "-l", str(helper),
                                                 *args.split()]).returncode == 0
               for args in allowed}
    assert got == allowed


def test_python_client_starts_one_broker_per_namespace(
        unpriv_user: priv.User, installed_helper: Callable[..., Path],
        netns: priv.Netns) -> None:
    """gprocket keys brokers by namespace: each serves one, entered at its start."""
    helper = installed_helper("caps", f"allow * netns {netns.name}\n")
    code = f"""
import json, sys, gprocket
from gprocket._ladder.broker import get_broker
socks = [gprocket.open(0, protocol="udp", namespace=ns, helper={str(helper)!r},
                       strategies=["broker"]) for ns in (None, {netns.name!r}, None)]
pids = [get_broker({str(helper)!r}, ns).pid for ns in (None, {netns.name!r})]
print(json.dumps({{"pids": pids, "starts": [get_broker({str(helper)!r}, ns).starts
                                              for ns in (None, {netns.name!r})]}}), flush=True)
sys.stdin.readline()
"""
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", code], stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        out = json.loads(line)
        assert out["starts"] == [1, 1], out
        plain, inside = out["pids"]
        assert os.stat(f"/proc/{plain}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{inside}/ns/net").st_ino == os.stat(netns.path).st_ino
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        priv.stop(proc)


def test_a_broker_refuses_a_request_for_another_namespace_before_sending() -> None:
    """The client's own check: a request names the broker's namespace or is a misuse."""
    broker = Broker("/nonexistent/gprocket-helper", namespace="lab")
    with pytest.raises(ValueError, match="serves namespace 'lab', not None"):
        broker.request(SocketRequest(0, protocol="udp"))
    assert broker.starts == 0 and broker.pid is None
    assert get_broker("/x", "a") is get_broker("/x", "a") is not get_broker("/x", None)
