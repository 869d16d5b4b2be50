"""The helper as an attack surface, exercised through real unprivileged processes.

Each test starts the installed helper (setuid root, file capabilities, or
through sudo) from a driver that runs as the unprivileged test user and talks
raw protocol bytes over a SOCK_SEQPACKET socketpair; the test itself, as
root, watches the helper from /proc. Every refusal here is a regression test:
see docs/SECURITY.md for the promise each one guards.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module", autouse=True)
def _built_helper() -> None:
    """The tests install copies of gprocket/_bin/gprocket-helper: build it from this tree."""
    subprocess.run(["make", "-s", "-C", str(priv.REPO / "helper")], check=True,
                   capture_output=True, timeout=300)

# The driver runs as the test user: it spawns the helper with the settings of
# its first input line, then executes one JSON command per line and answers
# one JSON line each. It speaks the wire format itself (no gprocket import),
# so these tests pin the helper, not the Python client.
DRIVER = r'''
import array, json, os, socket, struct, subprocess, sys, threading
cfg = json.loads(sys.stdin.readline())
chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
extra = [os.open("/dev/null", os.O_RDONLY) for _ in range(cfg.get("extra_fds", 0))]
odd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if cfg.get("odd_stdio") else None
if cfg.get("stdin_fd") is not None:
    theirs.close()
    theirs = socket.socket(fileno=cfg["stdin_fd"])
out = odd.fileno() if odd else subprocess.DEVNULL
proc = subprocess.Popen(cfg["argv"], stdin=theirs, stdout=out, stderr=out,
                        env=cfg.get("env", {}), pass_fds=extra, close_fds=True)
theirs.close()
for fd in extra:
    os.close(fd)
holder = None
if cfg.get("hold_channel"):
    holder = subprocess.Popen(["sleep", "120"], pass_fds=[chan.fileno()])
chan.settimeout(20)
kept = {}

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def describe(fd):
    st = os.fstat(fd)
    if (st.st_mode & 0o170000) == 0o140000:
        s = socket.socket(fileno=os.dup(fd))
        info = {"kind": "socket", "family": s.family, "type": s.type, "proto": s.proto,
                "name": repr(s.getsockname())}
        if s.family == socket.AF_INET6 and s.type != socket.SOCK_RAW:
            info["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        if s.family in (socket.AF_INET, socket.AF_INET6):
            dev = s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
            info["device"] = dev.rstrip(b"\0").decode()
        s.close()
        return info
    return {"kind": "char", "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)]}

def receive(keep=True):
    msg, anc, flags, _ = chan.recvmsg(4096, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", data[: len(data) - len(data) % 4])
    if len(msg) != 96:
        return {"size": len(msg), "fds": len(fds)}
    magic, ver, size, rid, err, stage, ifname, detail = struct.unpack("<4sHHIiI16s60s", msg)
    rep = {"magic": magic.decode(), "ver": ver, "size": size, "id": rid, "err": err,
           "stage": stage, "ifname": ifname.rstrip(b"\0").decode(),
           "detail": detail.rstrip(b"\0").decode(), "fds": len(fds), "flags": flags}
    if fds:
        rep["fd"] = describe(fds[0])
        rep["cloexec"] = bool(__import__("fcntl").fcntl(fds[0], 1) & 1)
        if keep:
            kept[rid] = fds.pop(0)
        for fd in fds:
            os.close(fd)
    return rep

emit({"pid": proc.pid, "driver": os.getpid(), "holder": holder.pid if holder else None})
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    try:
        if op == "req":
            data = bytes.fromhex(cmd["hex"])
            if cmd.get("with_fd"):
                chan.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [0]).tobytes())])
            else:
                chan.send(data)
            emit(receive())
        elif op == "flood":
            reqs = [bytes.fromhex(h) for h in cmd["hex"]] * cmd["times"]
            sender = threading.Thread(target=lambda: [chan.send(r) for r in reqs])
            sender.start()
            replies = [receive(keep=False) for _ in reqs]
            sender.join()
            errs = sorted({(r["err"], r["stage"]) for r in replies})
            emit({"count": len(replies), "errs": errs,
                  "ids": [r["id"] for r in replies]})
        elif op == "close_fd":
            os.close(kept.pop(cmd["id"]))
            emit({"ok": True})
        elif op == "recvfrom":
            s = socket.socket(fileno=kept.pop(cmd["id"]))
            s.settimeout(20)
            data, addr = s.recvfrom(2048)
            s.close()
            emit({"data": data.decode(), "addr": repr(addr)})
        elif op == "status":
            pid = proc.pid if cmd.get("pid") is None else cmd["pid"]
            tasks = sorted(os.listdir(f"/proc/{pid}/task"))
            emit({"status": open(f"/proc/{pid}/status").read(),
                  "tasks": [open(f"/proc/{pid}/task/{t}/status").read() for t in tasks]})
        elif op == "close":
            chan.close()
            emit({"rc": proc.wait(timeout=20)})
            break
        elif op == "wait":
            emit({"rc": proc.wait(timeout=20)})
            break
    except Exception as exc:
        emit({"exception": repr(exc)})
'''

# Request encoder (PROTOCOL.md, 192 bytes little-endian).
_REQ = struct.Struct("<4sHHIHHiiiHH16sIi16s32s32sIII4s16sBB22s")
SOCKET, TUN, DEVICE, HELLO = 1, 2, 3, 4
STAGES = ("none", "parse", "policy", "open", "bind", "configure", "namespace", "internal")


def req(op: int = SOCKET, *, rid: int = 1, flags: int = 0, family: int = 0, type: int = 0,
        protocol: int = 0, port: int = 0, addr: bytes = b"", scope: int = 0, backlog: int = 0,
        ifname: bytes = b"", netns: bytes = b"", device: bytes = b"", tun_flags: int = 0,
        mtu: int = 0, tun_options: int = 0, addr4: bytes = b"", addr6: bytes = b"",
        prefix4: int = 0, prefix6: int = 0, magic: bytes = b"GPRQ", version: int = 1,
        size: int = 192, reserved0: int = 0) -> bytes:
    """One request message; every field can be set to anything, hostile included."""
    return _REQ.pack(magic, version, size, rid, op, flags, family, type, protocol, port,
                     reserved0, addr.ljust(16, b"\0"), scope, backlog, ifname, netns, device,
                     tun_flags, mtu, tun_options, addr4.ljust(4, b"\0"),
                     addr6.ljust(16, b"\0"), prefix4, prefix6, b"")


def hello(rid: int = 1) -> bytes:
    return req(HELLO, rid=rid)


def udp(port: int, rid: int = 1, **kw: Any) -> bytes:
    return req(SOCKET, rid=rid, family=socket.AF_INET, type=socket.SOCK_DGRAM,
               protocol=socket.IPPROTO_UDP, port=port, **kw)


def ip4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def cap_mask(*names: str) -> int:
    numbers = {"dac_override": 1, "net_bind_service": 10, "net_admin": 12, "net_raw": 13,
               "sys_admin": 21}
    return sum(1 << numbers[name] for name in names)


def tun_needs_dac_override() -> bool:
    return (os.stat("/dev/net/tun").st_mode & 0o006) != 0o006


def status_field(status: str, key: str) -> str:
    match = re.search(rf"^{key}:[ \t]*(.*)$", status, re.MULTILINE)
    assert match, f"{key} missing from status"
    return match.group(1).strip()


@dataclass
class Broker:
    """The driver process (as the user) and the helper it started."""

    proc: subprocess.Popen[str]
    pid: int          # the helper's pid, or sudo's for sudo
    driver: int
    holder: int | None

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"driver died: {self.proc.stderr.read() if self.proc.stderr else ''}"
        result: dict[str, Any] = json.loads(line)
        assert "exception" not in result, result
        return result

    def send(self, data: bytes, **kw: Any) -> dict[str, Any]:
        return self.call(op="req", hex=data.hex(), **kw)

    def status(self, pid: int | None = None) -> dict[str, Any]:
        return self.call(op="status", pid=pid)

    def close(self) -> int:
        return int(self.call(op="close")["rc"])


@contextlib.contextmanager
def broker(user: priv.User, argv: list[str], *, netns: priv.Netns | None = None,
           **cfg: Any) -> Iterator[Broker]:
    proc = priv.popen_argv(user, [priv.VENV_PYTHON, "-c", DRIVER], netns=netns,
                           stdin=subprocess.PIPE, pass_fds=cfg.pop("pass_fds", ()))
    try:
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps({"argv": argv, **cfg}) + "\n")
        proc.stdin.flush()
        first = proc.stdout.readline()
        assert first, f"driver failed: {proc.stderr.read() if proc.stderr else ''}"
        info = json.loads(first)
        yield Broker(proc, info["pid"], info["driver"], info["holder"])
    finally:
        priv.stop(proc)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = priv.children_of(todo.pop())
        found += kids
        todo += kids
    return found


def helper_pid(b: Broker, helper: Path) -> int:
    """The helper process itself (under sudo it is a descendant of sudo)."""
    for pid in [b.pid, *descendants(b.pid)]:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/exe") == str(helper):
                return pid
    raise AssertionError(f"no helper process under {b.pid}")


def gone(pid: int) -> bool:
    try:
        return status_field(Path(f"/proc/{pid}/status").read_text(), "State").startswith("Z")
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def sudoers(user: priv.User, helper: Path, extra: str = "") -> Iterator[None]:
    """A sudoers drop-in for this helper, validated with visudo -cf, removed after."""
    path = Path(f"/etc/sudoers.d/gprocket-sec-{os.getpid()}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'{extra}{user.name} ALL=(root) NOPASSWD: {helper} "", {helper} --broker\n')
    os.chmod(tmp, 0o440)
    try:
        subprocess.run(["visudo", "-cf", str(tmp)], check=True, capture_output=True)
        tmp.rename(path)
        yield
    finally:
        for p in (tmp, path):
            p.unlink(missing_ok=True)


def sudo_helper(installed_helper: Any) -> Path:
    """A plain root-owned copy for sudo: no setuid bit, no file capabilities."""
    helper: Path = installed_helper("setuid")
    os.chmod(helper, 0o755)  # root-owned, read-only: what sudo runs
    return helper


def launch(mode: str, installed_helper: Any, policy: str | None = None) -> tuple[Path, list[str]]:
    if mode == "sudo":
        helper = sudo_helper(installed_helper)
        if policy is not None:
            (helper.parent / "policy").write_text(policy)
        return helper, ["sudo", "-n", str(helper), "--broker"]
    helper = installed_helper(mode, policy)
    return helper, [str(helper), "--broker"]


# ---------------------------------------------------------------- the three launch modes


@pytest.mark.parametrize("mode", ["setuid", "caps", "sudo"])
def test_launch_mode_serves_and_drops(mode: str, unpriv_user: priv.User,
                                      installed_helper: Any, netns: priv.Netns) -> None:
    # The defaults grant no raw socket; this test opens one, so its policy does.
    helper, argv = launch(mode, installed_helper, "allow * bind any 1-1023\nallow * raw icmp\n")
    ctx = sudoers(unpriv_user, helper) if mode == "sudo" else contextlib.nullcontext()
    with ctx, broker(unpriv_user, argv, netns=netns) as b:
        rep = b.send(hello(rid=77))
        assert (rep["magic"], rep["ver"], rep["size"], rep["id"], rep["err"], rep["fds"]) == (
            "GPRP", 1, 96, 77, 0, 0)
        assert rep["detail"] == f"gprocket-helper 1 mode={mode} uid={unpriv_user.uid}"
        rep = b.send(udp(53, rid=5))
        assert (rep["err"], rep["fds"], rep["cloexec"]) == (0, 1, True), rep
        assert rep["fd"]["name"] == "('0.0.0.0', 53)"
        # The kernel's own errno passes through, with the stage that met it.
        rep = b.send(udp(53, rid=50))
        assert (rep["err"], STAGES[rep["stage"]], rep["detail"]) == (
            errno.EADDRINUSE, "bind", "bind: EADDRINUSE"), rep
        rep = b.send(udp(54, rid=51, ifname=b"lo", addr=ip4("127.0.0.1")))
        assert (rep["err"], rep["fd"]["device"], rep["fd"]["name"]) == (
            0, "lo", "('127.0.0.1', 54)"), rep
        rep = b.send(req(SOCKET, rid=6, family=socket.AF_INET6, type=socket.SOCK_STREAM,
                         protocol=6, port=80, backlog=4, flags=1))
        assert (rep["err"], rep["fd"]["v6only"]) == (0, 0), rep
        rep = b.send(req(SOCKET, rid=7, family=socket.AF_INET6, type=socket.SOCK_DGRAM,
                         port=443))
        assert (rep["err"], rep["fd"]["v6only"]) == (0, 1), rep
        rep = b.send(req(SOCKET, rid=8, family=socket.AF_INET, type=socket.SOCK_RAW,
                         protocol=socket.IPPROTO_ICMP))
        assert (rep["err"], rep["fd"]["type"], rep["fd"]["proto"]) == (0, 3, 1), rep
        pid = helper_pid(b, helper)
        status = b.status(pid)
        for text in [status["status"], *status["tasks"]]:
            uid, gid = str(unpriv_user.uid), str(unpriv_user.gid)
            assert status_field(text, "Uid").split() == [uid] * 4
            assert status_field(text, "Gid").split() == [gid] * 4
            assert status_field(text, "Groups") == ""
            assert status_field(text, "NoNewPrivs") == "1"
            assert int(status_field(text, "CapEff"), 16) == 0
            assert int(status_field(text, "CapInh"), 16) == 0
            assert int(status_field(text, "CapAmb"), 16) == 0
            # Defaults: low ports and raw ICMP, so exactly these two.
            assert int(status_field(text, "CapPrm"), 16) == cap_mask("net_bind_service",
                                                                     "net_raw")
        assert b.close() == 0


TTY_CLIENT = r'''
import json, socket, struct, subprocess, sys
cfg = json.loads(bytes.fromhex(sys.argv[1]))
chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
proc = subprocess.Popen(cfg["argv"], stdin=theirs)
theirs.close()
chan.send(bytes.fromhex(cfg["hello"]))
chan.settimeout(20)
detail = struct.unpack("<4sHHIiI16s60s", chan.recv(200))[7].rstrip(b"\0").decode()
chan.close()
print(json.dumps({"detail": detail, "rc": proc.wait(timeout=20),
                  "tty": sys.stdin.isatty()}))
'''


def test_sudo_under_a_terminal(unpriv_user: priv.User, installed_helper: Any) -> None:
    """Debian's `Defaults use_pty`: with a controlling terminal sudo runs the helper in a
    pty, and a non-tty stdin (our socketpair) still reaches it unchanged."""
    helper = sudo_helper(installed_helper)
    cfg = json.dumps({"argv": ["sudo", "-n", str(helper), "--broker"],
                      "hello": hello(rid=3).hex()}).encode().hex()
    script = Path(f"/opt/gprocket/t/sec-{os.getpid()}.py")
    script.write_text(TTY_CLIENT)
    os.chmod(script, 0o644)
    try:
        with sudoers(unpriv_user, helper):
            # script(1) gives the client a controlling terminal, so sudo's use_pty applies.
            proc = priv.run_argv(unpriv_user, ["script", "-qec",
                                               f"{priv.VENV_PYTHON} {script} {cfg}",
                                               "/dev/null"], timeout=60)
    finally:
        script.unlink()
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines == [{"detail": f"gprocket-helper 1 mode=sudo uid={unpriv_user.uid}",
                      "rc": 0, "tty": True}], (proc.stdout, proc.stderr)


def test_sudo_refuses_a_borrowed_channel(unpriv_user: priv.User,
                                         installed_helper: Any) -> None:
    """Under sudo identity is the channel's peer; a channel created by another user
    (here root) must not make the helper act for that user: SUDO_UID disagrees, exit 3."""
    helper = sudo_helper(installed_helper)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with sudoers(unpriv_user, helper), broker(
                unpriv_user, ["sudo", "-n", str(helper), "--broker"],
                stdin_fd=theirs.fileno(), pass_fds=(theirs.fileno(),)) as b:
            theirs.close()
            assert b.call(op="wait")["rc"] == 3
            mine.settimeout(5)
            assert mine.recv(200) == b""  # nothing was served
    finally:
        mine.close()
        theirs.close()


# ---------------------------------------------------------------- hostile requests


def hostile_table(other_ns: str) -> list[tuple[str, bytes, int, str, dict[str, Any]]]:
    """(name, request, errno, stage, driver options) for the policy below."""
    inet, inet6, raw, dgram, stream = (socket.AF_INET, socket.AF_INET6, socket.SOCK_RAW,
                                       socket.SOCK_DGRAM, socket.SOCK_STREAM)
    good = udp(53)
    return [
        ("netlink", req(family=16, type=raw), errno.EAFNOSUPPORT, "policy", {}),
        ("netlink_route_dgram", req(family=16, type=dgram), errno.EAFNOSUPPORT, "policy", {}),
        ("unix_stream", req(family=1, type=stream), errno.EAFNOSUPPORT, "policy", {}),
        ("bluetooth", req(family=31, type=raw, protocol=1), errno.EAFNOSUPPORT, "policy", {}),
        ("packet_without_entry", req(family=17, type=raw, protocol=3), errno.EPERM, "policy", {}),
        ("raw_tcp", req(family=inet, type=raw, protocol=6), errno.EPERM, "policy", {}),
        ("raw_ipproto_raw", req(family=inet6, type=raw, protocol=255), errno.EPERM, "policy", {}),
        ("tcp_port_not_granted", req(family=inet, type=stream, port=80), errno.EPERM, "policy", {}),
        ("udp_port_not_granted", udp(54), errno.EPERM, "policy", {}),
        ("udp6_not_granted", req(family=inet6, type=dgram, port=53), errno.EPERM, "policy", {}),
        ("other_users_netns", udp(8053, netns=other_ns.encode()), errno.EPERM, "policy", {}),
        ("netns_dotdot", udp(8053, netns=b"../../proc/1/ns/net"), errno.EINVAL, "parse", {}),
        ("netns_absolute", udp(8053, netns=b"/proc/1/ns/net"), errno.EINVAL, "parse", {}),
        # Granted, but this broker serves its own namespace only (--netns: another broker;
        # test_helper_sandbox.py checks what --netns does with these entries).
        ("netns_missing", udp(8053, netns=b"gpsec-missing"), errno.EINVAL, "namespace", {}),
        ("netns_symlink", udp(8053, netns=b"gpsec-link"), errno.EINVAL, "namespace", {}),
        ("netns_not_nsfs", udp(8053, netns=b"gpsec-file"), errno.EINVAL, "namespace", {}),
        ("device_dotdot_mem", req(DEVICE, device=b"../../dev/mem"), errno.EINVAL, "parse", {}),
        ("device_absolute", req(DEVICE, device=b"/dev/mem"), errno.EPERM, "policy", {}),
        ("device_kmsg", req(DEVICE, device=b"kmsg"), errno.EPERM, "policy", {}),
        ("device_via_symlink_fd0", req(DEVICE, device=b"fd/0"), errno.EPERM, "policy", {}),
        ("device_net_dotdot", req(DEVICE, device=b"net/../kvm"), errno.EPERM, "policy", {}),
        ("tun_name_outside_policy", req(TUN, tun_flags=1, ifname=b"eth9"), errno.EPERM,
         "policy", {}),
        ("tun_route_hijack_v4", req(TUN, tun_flags=1, ifname=b"gpsec0", addr4=ip4("128.0.0.1"),
                                    prefix4=1), errno.EPERM, "policy", {}),
        ("tun_route_hijack_v6", req(TUN, tun_flags=1, ifname=b"gpsec0", addr6=ip6("2000::1"),
                                    prefix6=3), errno.EPERM, "policy", {}),
        ("tun_mtu_not_granted", req(TUN, tun_flags=1, ifname=b"gpsec0", mtu=1400),
         errno.EPERM, "policy", {}),
        ("tun_attach_configures_nothing", req(TUN, tun_flags=1, ifname=b"gpsec0",
                                              tun_options=6), errno.EINVAL, "parse", {}),
        ("udp_reuseaddr_not_granted", udp(53, flags=2), errno.EPERM, "policy", {}),
        ("udp_reuseport_not_granted", udp(53, flags=4), errno.EPERM, "policy", {}),
        ("tun_excl_flag_from_client", req(TUN, tun_flags=0x8001, ifname=b"gpsec0"),
         errno.EINVAL, "parse", {}),
        ("truncated", good[:100], errno.EMSGSIZE, "parse", {}),
        ("oversized", good + b"\0", errno.EMSGSIZE, "parse", {}),
        ("huge", good * 20, errno.EMSGSIZE, "parse", {}),
        ("wrong_version", req(HELLO, version=2), errno.EPROTO, "parse", {}),
        ("wrong_magic", req(HELLO, magic=b"GPRP"), errno.EINVAL, "parse", {}),
        ("wrong_length_field", req(HELLO, size=96), errno.EINVAL, "parse", {}),
        ("reserved_set", udp(53, reserved0=7), errno.EINVAL, "parse", {}),
        ("unknown_op", req(99), errno.EINVAL, "parse", {}),
        ("protocol_out_of_range", req(family=inet, type=raw, protocol=256), errno.EINVAL,
         "parse", {}),
        ("ethertype_out_of_range", req(family=17, type=raw, protocol=70000), errno.EINVAL,
         "parse", {}),
        ("backlog_negative", req(family=inet, type=stream, port=80, backlog=-1), errno.EINVAL,
         "parse", {}),
        ("type_with_flag_bits", req(family=inet, type=dgram | 0o4000), errno.EINVAL, "parse",
         {}),
        ("mtu_out_of_range", req(TUN, tun_flags=1, mtu=10), errno.EINVAL, "parse", {}),
        ("descriptor_attached", hello(), errno.EINVAL, "parse", {"with_fd": True}),
    ]


def test_hostile_requests_are_refused_and_broker_keeps_serving(
        unpriv_user: priv.User, other_user: priv.User, installed_helper: Any,
        netns: priv.Netns) -> None:
    other_ns = netns.name
    policy = (f"allow * bind udp 53 0.0.0.0/0\nallow * raw icmp\n"
              f"allow user:{other_user.name} netns {other_ns}\nallow * netns gpsec-missing\n"
              f"allow * netns gpsec-link\nallow * netns gpsec-file\nallow * tun gpsec*\n")
    helper = installed_helper("setuid", policy)
    link, plain = Path("/run/netns/gpsec-link"), Path("/run/netns/gpsec-file")
    table = hostile_table(other_ns)
    assert len(table) >= 25
    try:
        link.symlink_to("/proc/1/ns/net")
        plain.write_text("")
        with broker(unpriv_user, [str(helper), "--broker"]) as b:
            failures = []
            for i, (name, data, err, stage, opts) in enumerate(table, start=100):
                rep = b.send(data, **opts)
                got = (rep.get("err"), STAGES[rep.get("stage", 7)], rep.get("fds"))
                if got != (err, stage, 0):
                    failures.append(f"{name}: {got} {rep.get('detail')}, want "
                                    f"{errno.errorcode[err]} {stage}")
                # Still serving after every hostile request.
                alive = b.send(hello(rid=i))
                if (alive.get("err"), alive.get("id")) != (0, i):
                    failures.append(f"after {name}: {alive}")
            assert not failures, "\n".join(failures)
            assert b.send(udp(53, rid=9))["err"] == 0
            assert b.close() == 0
    finally:
        link.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)


def test_existing_device_of_another_user_is_never_attached(
        unpriv_user: priv.User, other_user: priv.User, installed_helper: Any,
        netns: priv.Netns) -> None:
    netns.exec(["ip", "tuntap", "add", "dev", "gpsec7", "mode", "tun", "user",
                str(other_user.uid)])
    helper = installed_helper("caps", "allow * tun gpsec*\n")
    with broker(unpriv_user, [str(helper), "--broker"], netns=netns) as b:
        rep = b.send(req(TUN, tun_flags=1, ifname=b"gpsec7"))
        assert (rep["err"], STAGES[rep["stage"]], rep["fds"]) == (errno.EBUSY, "open", 0), rep
        # Nor attached: it is not the caller's device.
        rep = b.send(req(TUN, tun_flags=1, ifname=b"gpsec7", tun_options=4))
        assert (rep["err"], STAGES[rep["stage"]], rep["fds"]) == (errno.EPERM, "policy", 0), rep
        # A create request never attaches, not even to our own existing device.
        rep = b.send(req(TUN, tun_flags=1, ifname=b"gpsec8", rid=2))
        assert rep["err"] == 0, rep
        rep2 = b.send(req(TUN, tun_flags=1, ifname=b"gpsec8", rid=3))
        assert rep2["err"] == errno.EBUSY, rep2
    owner = netns.exec(["cat", "/sys/class/net/gpsec7/owner"]).stdout.strip()
    assert owner == str(other_user.uid)


def test_request_flood_and_malformed_limit(unpriv_user: priv.User,
                                           installed_helper: Any) -> None:
    helper = installed_helper("caps")
    with broker(unpriv_user, [str(helper), "--broker"]) as b:
        # 3,000 pipelined requests: every one answered in order, no descriptor kept.
        flood = b.call(op="flood", hex=[hello(rid=1).hex(), udp(0, rid=2).hex(),
                                        b"junk".hex()], times=1000)
        assert flood["count"] == 3000
        assert flood["ids"] == [1, 2, 0] * 1000
        assert flood["errs"] == [[0, 0], [errno.EMSGSIZE, 1]]
        fds = priv.open_fds(b.pid)
        assert len(fds) == 3, fds
        # 63 malformed in a row are tolerated; a good request resets the count.
        assert b.send(hello(rid=4))["err"] == 0
        rep = b.call(op="flood", hex=[b"junk".hex()], times=63)
        assert rep["errs"] == [[errno.EMSGSIZE, 1]]
        assert b.send(hello(rid=5))["err"] == 0
        # The 64th in a row ends the broker (exit 7) after answering it.
        b.call(op="flood", hex=[b"junk".hex()], times=64)
        assert b.call(op="wait")["rc"] == 7


# ---------------------------------------------------------------- process state


@pytest.mark.parametrize("mode", ["setuid", "caps"])
@pytest.mark.parametrize(("policy", "caps"), [
    (None, ("net_bind_service",)),  # the defaults: low ports, no raw socket
    ("allow user:root packet\n", ()),
    ("allow * bind tcp 8000-9000\nallow * raw icmp\n", ("net_raw",)),
    ("allow * bind tcp 80\n", ("net_bind_service",)),
    # A netns rule needs no capability past start-up (--netns is entered before the drop).
    ("allow group:gprocket tun gp*\nallow * netns lab\n", ("net_admin",)),
    ("allow * bogus rule\n", ()),
])
def test_permitted_set_is_what_the_policy_needs(mode: str, policy: str | None,
                                                caps: tuple[str, ...], unpriv_user: priv.User,
                                                installed_helper: Any) -> None:
    expected = cap_mask(*caps)
    if "tun" in (policy or "") and tun_needs_dac_override():
        expected |= cap_mask("dac_override")
    helper = installed_helper(mode, policy)
    with broker(unpriv_user, [str(helper), "--broker"]) as b:
        assert b.send(hello())["err"] == 0
        text = b.status()["status"]
        assert int(status_field(text, "CapPrm"), 16) == expected
        assert int(status_field(text, "CapEff"), 16) == 0
        fds = priv.open_fds(b.pid)
        assert len(fds) == 3, fds  # no saved namespace: a broker never changes namespace


def test_unsafe_policy_denies_everything(unpriv_user: priv.User, installed_helper: Any) -> None:
    helper = installed_helper("setuid", "allow * packet\n")
    os.chmod(helper.parent / "policy", 0o666)  # the unsafe state under test
    with broker(unpriv_user, [str(helper), "--broker"]) as b:
        rep = b.send(udp(53))
        assert (rep["err"], STAGES[rep["stage"]]) == (errno.EACCES, "policy")
        assert "root-only" in rep["detail"]
        assert b.send(hello())["err"] == 0  # HELLO still answers
        assert int(status_field(b.status()["status"], "CapPrm"), 16) == 0
    os.chmod(helper.parent / "policy", 0o644)
    os.chmod(helper.parent, 0o775)  # the unsafe state under test
    with broker(unpriv_user, [str(helper), "--broker"]) as b:
        rep = b.send(udp(53))
        assert rep["err"] == errno.EACCES and "directory" in rep["detail"], rep


@pytest.mark.parametrize(("mode", "served"), [("setuid", True), ("caps", False)])
def test_root_only_policy_is_read_before_the_drop(mode: str, served: bool,
                                                  unpriv_user: priv.User,
                                                  installed_helper: Any) -> None:
    """A 0600 policy: setuid reads it as root before dropping; a caps helper runs as the
    caller from the start, cannot read it, and so refuses everything (fail closed)."""
    helper = installed_helper(mode, "allow * bind udp 53\n")
    os.chmod(helper.parent / "policy", 0o600)
    with broker(unpriv_user, [str(helper)]) as b:  # one-shot
        rep = b.send(udp(53))
        if served:
            assert (rep["err"], rep["fds"]) == (0, 1), rep
        else:
            assert (rep["err"], rep["detail"]) == (
                errno.EACCES, "policy: cannot open the policy file"), rep
        assert b.call(op="wait")["rc"] == 0  # one-shot: one answer, then exit


def test_inherited_descriptors_and_odd_stdio_are_closed(unpriv_user: priv.User,
                                                        installed_helper: Any) -> None:
    helper = installed_helper("setuid")
    with broker(unpriv_user, [str(helper), "--broker"], extra_fds=200, odd_stdio=True) as b:
        assert b.send(hello())["err"] == 0
        fds = dict(line.split(" -> ") for line in priv.open_fds(b.pid))
        assert set(fds) == {"0", "1", "2"}, fds
        assert fds["0"].startswith("socket:[")
        assert fds["1"] == fds["2"] == "/dev/null"
        # fd 0 is the channel: its inode is the helper end of our socketpair.
        assert b.send(udp(53))["err"] == 0


def test_poisoned_environment_changes_nothing(unpriv_user: priv.User, installed_helper: Any,
                                              tmp_path: Path) -> None:
    evil_dir = Path(f"/opt/gprocket/t/evil-{os.getpid()}")
    evil_dir.mkdir(mode=0o755)
    marker = evil_dir / "marker"
    try:
        src = evil_dir / "evil.c"
        src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void evil(void)'
                       f' {{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(evil_dir / "evil.so"), str(src)],
                       check=True)
        os.chmod(evil_dir, 0o777)  # the library may write its marker here
        # Positive control: the library does run in an ordinary program.
        priv.run_argv(unpriv_user, ["env", f"LD_PRELOAD={evil_dir / 'evil.so'}", "true"])
        assert marker.exists()
        marker.unlink()
        env = {"LD_PRELOAD": str(evil_dir / "evil.so"), "LD_LIBRARY_PATH": str(evil_dir),
               "GCONV_PATH": str(evil_dir), "PATH": str(evil_dir), "LC_ALL": "xx_XX.EVIL",
               "LANG": "xx_XX", "LOCPATH": str(evil_dir), "SUDO_UID": "0", "IFS": "x",
               "MALLOC_CHECK_": "3", "TZ": f"{evil_dir}/tz"}
        results = {}
        for mode in ("setuid", "caps"):
            helper = installed_helper(mode)
            with broker(unpriv_user, [str(helper), "--broker"], env=env) as b:
                results[mode] = (b.send(hello())["detail"], b.send(udp(53))["err"])
        assert results == {
            "setuid": (f"gprocket-helper 1 mode=setuid uid={unpriv_user.uid}", 0),
            "caps": (f"gprocket-helper 1 mode=caps uid={unpriv_user.uid}", 0)}
        assert not marker.exists(), "LD_PRELOAD ran inside the privileged helper"
    finally:
        subprocess.run(["rm", "-rf", str(evil_dir)], check=False)


def test_no_named_unix_socket_is_created(unpriv_user: priv.User, installed_helper: Any,
                                         netns: priv.Netns) -> None:
    helper = installed_helper("setuid", f"allow * netns {netns.name}\nallow * packet\n"
                                        "allow * bind udp 53\n")
    with broker(unpriv_user, [str(helper), "--broker"], netns=netns) as b:
        assert b.send(udp(53))["err"] == 0
        assert b.send(req(family=17, type=socket.SOCK_RAW, protocol=3))["err"] == 0
        table = netns.exec(["cat", "/proc/net/unix"]).stdout.splitlines()[1:]
        named = [line for line in table if len(line.split()) > 7]
        assert named == []
        fd0 = os.readlink(f"/proc/{b.pid}/fd/0")
        inode = fd0.removeprefix("socket:[").removesuffix("]")
        assert any(line.split()[6] == inode for line in table)


def test_client_killed_ends_broker(unpriv_user: priv.User, installed_helper: Any) -> None:
    helper = installed_helper("setuid")
    with broker(unpriv_user, [str(helper), "--broker"]) as b:
        assert b.send(hello())["err"] == 0
        os.kill(b.driver, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while not gone(b.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone(b.pid), "broker still alive 1 s after its client was killed"


def test_parent_death_signal_without_channel_eof(unpriv_user: priv.User,
                                                 installed_helper: Any) -> None:
    """Another process keeps the client end open: only PR_SET_PDEATHSIG can end it."""
    helper = installed_helper("caps")
    with broker(unpriv_user, [str(helper), "--broker"], hold_channel=True) as b:
        try:
            assert b.send(hello())["err"] == 0
            os.kill(b.driver, signal.SIGKILL)
            deadline = time.monotonic() + 1.0
            while not gone(b.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gone(b.pid)
        finally:
            if b.holder:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(b.holder, signal.SIGKILL)


# ---------------------------------------------------------------- namespaces, TUN, device


def test_netns_broker_serves_inside_its_namespace_only(unpriv_user: priv.User,
                                                      installed_helper: Any,
                                                      netns: priv.Netns) -> None:
    helper = installed_helper("setuid", f"allow group:gprocket netns {netns.name}\n")
    with broker(unpriv_user, [str(helper), "--broker", "--netns", netns.name]) as b:
        rep = b.send(udp(45353, rid=11, addr=ip4("127.0.0.1"), netns=netns.name.encode()))
        assert rep["err"] == 0, rep
        assert os.stat(f"/proc/{b.pid}/ns/net").st_ino == os.stat(netns.path).st_ino
        netns.exec(["python3", "-c", "import socket; socket.socket(socket.AF_INET, "
                    "socket.SOCK_DGRAM).sendto(b'inside', ('127.0.0.1', 45353))"])
        assert b.call(op="recvfrom", id=11)["data"] == "inside"
        # A request for another namespace (here: the helper's first one) is refused.
        rep = b.send(udp(45353, rid=12, addr=ip4("127.0.0.1")))
        assert (rep["err"], STAGES[rep["stage"]], rep["fds"]) == (
            errno.EINVAL, "namespace", 0), rep
        assert "served" in rep["detail"]


def test_tun_created_configured_and_owned(unpriv_user: priv.User, installed_helper: Any,
                                          netns: priv.Netns) -> None:
    helper = installed_helper("caps", "allow group:gprocket tun gpsec* net 10.77.0.0/24,fd77::/64"
                                      " mtu 1280-1500\nallow * device net/tun\n")
    with broker(unpriv_user, [str(helper), "--broker"], netns=netns) as b:
        rep = b.send(req(TUN, rid=1, tun_flags=0x1001, ifname=b"gpsec1", mtu=1400,
                         tun_options=2, addr4=ip4("10.77.0.1"), prefix4=24,
                         addr6=ip6("fd77::1"), prefix6=64))
        assert (rep["err"], rep["ifname"], rep["fd"]["rdev"]) == (0, "gpsec1", [10, 200]), rep
        link = json.loads(netns.exec(["ip", "-j", "addr", "show", "gpsec1"]).stdout)[0]
        assert link["mtu"] == 1400 and "UP" in link["flags"]
        addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"]}
        assert {("10.77.0.1", 24), ("fd77::1", 64)} <= addrs
        owner = netns.exec(["cat", "/sys/class/net/gpsec1/owner"]).stdout.strip()
        assert owner == str(unpriv_user.uid)
        # No name: the kernel numbers it from the rule's prefix.
        rep = b.send(req(TUN, rid=2, tun_flags=0x2))
        assert rep["err"] == 0 and re.fullmatch(r"gpsec\d+", rep["ifname"]), rep
        # Persist when asked (any holder could set it: POLICY.md); it outlives the descriptor.
        rep = b.send(req(TUN, rid=3, tun_flags=1, ifname=b"gpsec9", tun_options=1))
        assert rep["err"] == 0, rep
        b.call(op="close_fd", id=1)
        b.call(op="close_fd", id=3)
        rep = b.send(req(DEVICE, rid=4, device=b"net/tun"))
        assert (rep["err"], rep["fd"]["rdev"]) == (0, [10, 200]), rep
    names = netns.exec(["ls", "/sys/class/net"]).stdout.split()
    assert "gpsec9" in names and "gpsec1" not in names


def test_packet_socket_bound_to_interface(unpriv_user: priv.User, installed_helper: Any,
                                          netns: priv.Netns) -> None:
    helper = installed_helper("caps", "allow user:gprocket-test packet\n")
    with broker(unpriv_user, [str(helper), "--broker"], netns=netns) as b:
        rep = b.send(req(family=17, type=socket.SOCK_RAW, protocol=3, ifname=b"lo"))
        assert rep["err"] == 0, rep
        assert rep["fd"]["family"] == socket.AF_PACKET and "'lo'" in rep["fd"]["name"]
        rep = b.send(req(family=17, type=socket.SOCK_RAW, protocol=3, ifname=b"nosuch0"))
        assert (rep["err"], STAGES[rep["stage"]]) == (errno.ENODEV, "bind"), rep


def test_check_policy_and_version(installed_helper: Any, unpriv_user: priv.User) -> None:
    helper = installed_helper("setuid", "allow group:gprocket packet\n# c\n"
                                        "allow * bind udp,tcp 53 192.0.2.0/24\n")
    proc = priv.run_argv(unpriv_user, [str(helper), "--check-policy"])
    gid = priv.ensure_group(priv.TEST_GROUP)
    assert (proc.returncode, proc.stdout.splitlines()[1:]) == (0, [
        f"allow group:{gid} packet", "allow * bind tcp,udp 53-53 192.0.2.0/24"])
    (helper.parent / "policy").write_text("allow * packet\nallow everyone\n")
    proc = priv.run_argv(unpriv_user, [str(helper), "--check-policy"])
    assert (proc.returncode, proc.stdout) == (1, "refused: policy line 2: expected: allow "
                                                 "SUBJECT KIND ...\n")
    proc = priv.run_argv(unpriv_user, [str(helper), "--version"])
    assert (proc.returncode, proc.stdout) == (0, "gprocket-helper 1\n")
    assert priv.run_argv(unpriv_user, [str(helper), "--nope"]).returncode == 2
    assert priv.run_argv(unpriv_user, [str(helper), "--broker", "x"]).returncode == 2


NO_MALLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static int armed;
void *malloc(size_t n) { if (armed) abort(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (armed) abort(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (armed) abort(); return __libc_realloc(p, n); }
ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    static ssize_t (*real)(int, struct msghdr *, int);
    if (!real) real = (ssize_t (*)(int, struct msghdr *, int))dlsym(RTLD_NEXT, "recvmsg");
    armed = 1; /* from the first request on, any allocation aborts the helper */
    return real(fd, m, flags);
}
"""


def test_request_path_never_allocates(installed_helper: Any, netns: priv.Netns,
                                      tmp_path: Path) -> None:
    """Every kind of request, served and refused, with malloc/calloc/realloc made fatal
    from the first recvmsg on (a preload library: the helper runs as root here, where
    the loader honours LD_PRELOAD)."""
    (tmp_path / "nomalloc.c").write_text(NO_MALLOC)
    lib = tmp_path / "nomalloc.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "nomalloc.c")],
                   check=True)
    helper = installed_helper("setuid", f"allow * packet\nallow * tun gpsec* net 10.66.0.0/30,"
                                        f"fd66::/64 mtu 1300\n"
                                        f"allow * device net/tun\nallow * netns {netns.name}\n"
                                        "allow * bind any 1-1023\nallow * raw icmp\n")
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = netns.popen([str(helper), "--broker"], stdin=theirs.fileno(),
                       env={"LD_PRELOAD": str(lib)})
    theirs.close()
    received: list[int] = []  # kept open, so the second bind of port 53 meets the first
    requests = [
        (hello(), 0), (udp(53), 0), (udp(53), errno.EADDRINUSE),
        (req(family=10, type=1, port=80, backlog=3, flags=1), 0),
        (req(family=2, type=3, protocol=1), 0), (req(family=17, type=3, protocol=3), 0),
        (req(family=16, type=3), errno.EAFNOSUPPORT), (req(family=2, type=3, protocol=6),
                                                       errno.EPERM),
        (b"short", errno.EMSGSIZE), (req(HELLO, magic=b"GPRX"), errno.EINVAL),
        (req(TUN, tun_flags=1, ifname=b"gpsec3", mtu=1300, tun_options=2,
             addr4=ip4("10.66.0.1"), prefix4=30, addr6=ip6("fd66::1"), prefix6=64), 0),
        (req(TUN, tun_flags=2), 0), (req(TUN, tun_flags=1, ifname=b"gpsec3"), errno.EBUSY),
        # Attach: the caller's own device (root's here), checked over rtnetlink; its one
        # queue is held, so the kernel says EBUSY. An absent one: ENODEV.
        (req(TUN, tun_flags=1, ifname=b"gpsec3", tun_options=4), errno.EBUSY),
        (req(TUN, tun_flags=1, ifname=b"gpsec4", tun_options=4), errno.ENODEV),
        (udp(53, flags=2), errno.EPERM),
        # A broker serves the namespace it started in (--netns) only.
        (req(DEVICE, device=b"net/tun"), 0), (udp(8053, netns=netns.name.encode()),
                                              errno.EINVAL),
        (udp(8053, netns=b"absent"), errno.EPERM),
    ]
    try:
        mine.settimeout(20)
        for data, want in requests:
            mine.send(data)
            msg, anc, _flags, _addr = mine.recvmsg(200, socket.CMSG_SPACE(4))
            assert len(msg) == 96, f"no reply to {data[:16]!r}: {proc.poll()}"
            assert struct.unpack_from("<i", msg, 12)[0] == want, msg[36:].rstrip(b"\0")
            received += [struct.unpack("i", fds[:4])[0] for _level, _kind, fds in anc]
        # Positive control: the guard really is loaded into the helper.
        assert str(lib) in Path(f"/proc/{proc.pid}/maps").read_text()
        mine.close()
        assert proc.wait(timeout=20) == 0
    finally:
        mine.close()
        for fd in received:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
