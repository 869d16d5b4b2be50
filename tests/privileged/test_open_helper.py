"""Through the installed helper (setuid root, file capabilities) and through sudo.

The unprivileged user opens every kind of socket the issue names and a
second process really sends data through each: a datagram, a connection,
an echo request seen on the raw socket, frames seen on the packet socket.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

POLICY = """\
allow * bind any 1-1023
allow * raw icmp,icmpv6
allow * packet
"""

FLOWS = r"""
import json, os, socket, subprocess, sys, time
import gevent, gprocket
STRATEGY = sys.argv[1] if len(sys.argv) > 1 else os.environ['FLOW_STRATEGY']
py = sys.executable
def second(code):
    return subprocess.Popen([py, '-c', code])
out = {}
def check_udp(name, ip):
    s = gprocket.open(53, protocol='udp', ip=ip, strategies=STRATEGY)
    s.settimeout(10)
    fam = 'AF_INET6' if ':' in ip else 'AF_INET'
    p = second(f"import socket; c=socket.socket(socket.{fam}, socket.SOCK_DGRAM); "
               f"c.sendto(b'dgram', ({ip!r}, 53))")
    data, _ = s.recvfrom(100)
    p.wait()
    out[name] = [s.rung, data.decode()]
    s.close()
def check_tcp(name, ip):
    s = gprocket.open(53, protocol='tcp', ip=ip, strategies=STRATEGY)
    s.settimeout(10)
    fam = 'AF_INET6' if ':' in ip else 'AF_INET'
    p = second(f"import socket; c=socket.socket(socket.{fam}); c.connect(({ip!r}, 53)); "
               "c.sendall(b'stream'); c.close()")
    conn, _ = s.accept()
    data = conn.recv(100)
    conn.close(); p.wait()
    out[name] = [s.rung, data.decode()]
    s.close()
def check_ping(name, proto, target, want, offset):
    s = gprocket.open(0, protocol=proto, strategies=STRATEGY)
    s.settimeout(10)
    p = subprocess.Popen(['ping', '-c', '1', '-W', '5', target], stdout=subprocess.DEVNULL)
    seen = None
    while seen != want:
        seen = s.recv(2000)[offset]
    p.wait()
    out[name] = [s.rung, seen]
    s.close()
def check_packet():
    s = gprocket.open(0, family='packet', protocol=0x0800, interface='lo', strategies=STRATEGY)
    s.settimeout(10)
    p = subprocess.Popen(['ping', '-c', '1', '-W', '5', '127.0.0.1'], stdout=subprocess.DEVNULL)
    frame, addr = s.recvfrom(2000)
    p.wait()
    out['packet'] = [s.rung, addr[0], addr[1], frame[14 + 9]]
    s.close()
check_udp('udp4', '127.0.0.1'); check_udp('udp6', '::1')
check_tcp('tcp4', '127.0.0.1'); check_tcp('tcp6', '::1')
check_ping('icmp', 'icmp', '127.0.0.1', 8, 20)
check_ping('icmp6', 'icmp6', '::1', 128, 0)
check_packet()
print(json.dumps(out))
"""


def _expect(rung: str) -> dict[str, list[object]]:
    return {
        "udp4": [rung, "dgram"],
        "udp6": [rung, "dgram"],
        "tcp4": [rung, "stream"],
        "tcp6": [rung, "stream"],
        "icmp": [rung, 8],
        "icmp6": [rung, 128],
        "packet": [rung, "lo", 0x0800, 1],
    }


@pytest.mark.parametrize("mode", ["setuid", "caps"])
@pytest.mark.parametrize("strategy", ["helper", "broker"])
def test_every_socket_kind_opens_and_carries_data(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper, mode: str, strategy: str
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper(mode, policy=POLICY)
    out = priv.run_json(unpriv_user, FLOWS, netns=netns,
                        env={"GPROCKET_HELPER": str(helper), "FLOW_STRATEGY": strategy})
    assert out == _expect(strategy)


def test_default_ladder_reaches_the_broker_and_explains_the_plain_refusal(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps")
    code = """
import json, gprocket
got = gprocket.acquire(gprocket.SocketRequest(53, protocol='udp'))
print(json.dumps({'rung': got.rung, 'attempts': [[a.rung, a.errno] for a in got.attempts]}))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out["rung"] == "broker"
    assert [a[0] for a in out["attempts"]] == ["inherited", "plain", "capabilities"]
    assert out["attempts"][1] == ["plain", 13]


def test_user_outside_the_group_gets_the_join_group_fix(
    other_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps")
    code = """
import json, gprocket
try:
    gprocket.open(53, protocol='udp', strategies='broker,helper')
except gprocket.PrivilegeError as err:
    print(json.dumps({'fix': err.fix, 'reasons': [a.reason for a in err.attempts]}))
"""
    out = priv.run_json(other_user, code, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out["fix"] == "join group gprocket: the helper is root:gprocket 0750"
    assert all("not executable by this user" in reason for reason in out["reasons"])


def test_policy_refusal_is_reported_with_the_policy_fix(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("setuid")  # defaults: no packet sockets
    code = """
import json, gprocket
try:
    gprocket.open(0, family='packet', strategies='helper')
except gprocket.PrivilegeError as err:
    attempts = [[a.rung, a.reason, a.errno] for a in err.attempts]
    print(json.dumps({'fix': err.fix, 'attempts': attempts}))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out["attempts"][0][0] == "helper"
    assert out["attempts"][0][1].startswith("policy")
    assert out["attempts"][0][2] == 1
    assert "policy entry" in out["fix"]


@pytest.fixture
def sudoers_rule(unpriv_user: priv.User) -> Iterator[object]:
    rules: list[Path] = []

    def allow(helper: Path) -> None:
        rule = Path(f"/etc/sudoers.d/gprocket-core-test-{os.getpid()}")
        rule.write_text(f"{unpriv_user.name} ALL=(root) NOPASSWD: {helper}\n")
        rule.chmod(0o440)
        rules.append(rule)
        subprocess.run(["visudo", "-c", "-f", str(rule)], check=True, capture_output=True)

    yield allow
    for rule in rules:
        rule.unlink(missing_ok=True)


def test_sudo_with_a_rule_opens_and_without_fails_fast(
    unpriv_user: priv.User, netns: priv.Netns, sudoers_rule, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps", policy=POLICY)  # its policy travels with it
    env = {"GPROCKET_HELPER": str(helper), "FLOW_STRATEGY": "sudo"}
    refusal = """
import json, gprocket
try:
    gprocket.open(53, protocol='udp', strategies='sudo')
except gprocket.PrivilegeError as err:
    print(json.dumps([[a.rung, a.reason, a.errno] for a in err.attempts]))
"""
    out = priv.run_json(unpriv_user, refusal, netns=netns, env=env, timeout=20)
    assert out[0][0] == "sudo" and out[0][2] == 1
    assert "a password is required" in out[0][1]
    sudoers_rule(helper)
    out = priv.run_json(unpriv_user, FLOWS, netns=netns, env=env)
    assert out == _expect("sudo")


NAMESPACED = r"""
import json, socket, subprocess, sys, gprocket
ns = sys.argv[1] if len(sys.argv) > 1 else __import__('os').environ['TARGET_NS']
sock = gprocket.open(53, protocol='udp', ip='127.0.0.1', namespace=ns, strategies='broker')
sock.settimeout(10)
print(json.dumps({'rung': sock.rung, 'ready': True}), flush=True)
data = sock.recv(100)
print(json.dumps({'rung': sock.rung, 'data': data.decode()}), flush=True)
"""


def test_namespaced_request_goes_through_the_helper(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps", policy=POLICY + f"allow * netns {netns.name}\n")
    user = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", NAMESPACED],
                           env={"GPROCKET_HELPER": str(helper), "TARGET_NS": netns.name})
    try:
        assert user.stdout is not None
        first = user.stdout.readline()
        assert '"ready": true' in first, user.stderr.read() if user.stderr else first
        sender = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                  "s.sendto(b'inside', ('127.0.0.1', 53))")
        netns.exec([priv.VENV_PYTHON, "-c", sender])
        out, err = user.communicate(timeout=30)
    finally:
        if user.poll() is None:
            user.kill()
            user.communicate()
    assert user.returncode == 0, err
    assert out.strip().splitlines()[-1] == '{"rung": "broker", "data": "inside"}'


def test_namespace_without_a_policy_entry_is_refused(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps")
    code = f"""
import json, gprocket
try:
    gprocket.open(53, protocol='udp', namespace={netns.name!r}, strategies='plain,broker')
except gprocket.PrivilegeError as err:
    print(json.dumps([[a.rung, a.reason, a.errno] for a in err.attempts]))
"""
    out = priv.run_json(unpriv_user, code, env={"GPROCKET_HELPER": str(helper)})
    assert out[0][0] == "plain" and "CAP_SYS_ADMIN" in out[0][1]
    assert out[1][0] == "broker" and out[1][2] == 1 and "policy" in out[1][1]


def test_tun_and_device_through_the_helper(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps", policy="allow * tun gpc* net 10.77.0.0/24\n"
                                             "allow * device net/tun\n")
    code = """
import json, os, stat, gprocket
tun = gprocket.acquire(gprocket.TunRequest('gpc7', addr4='10.77.0.1/24', up=True))
dev = gprocket.acquire(gprocket.DeviceRequest('net/tun'))
info = os.fstat(dev.fd)
links = open('/proc/net/dev').read()
print(json.dumps({'rungs': [tun.rung, dev.rung], 'present': 'gpc7:' in links,
                  'chr': stat.S_ISCHR(info.st_mode), 'cloexec': [os.get_inheritable(tun.fd),
                  os.get_inheritable(dev.fd)]}))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out == {"rungs": ["broker", "broker"], "present": True, "chr": True,
                   "cloexec": [False, False]}
    # Not persistent: the device went away with the process that held it.
    assert "gpc7" not in netns.exec(["ip", "link"]).stdout


def test_helper_without_privilege_or_under_no_new_privs_is_unavailable(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    code = """
import json, gprocket
try:
    gprocket.open(53, protocol='udp', strategies='broker,helper')
except gprocket.PrivilegeError as err:
    print(json.dumps({'fix': err.fix, 'reasons': [a.reason for a in err.attempts]}))
"""
    plain_copy = priv.packaged_helper()  # no setuid bit, no file capability
    out = priv.run_json(unpriv_user, code, netns=netns, env={"GPROCKET_HELPER": str(plain_copy)})
    assert out["fix"] == "install the helper with: capsetup install"
    assert all("neither setuid root nor carries file capabilities" in r for r in out["reasons"])
    helper = installed_helper("setuid")
    argv = ["setpriv", "--no-new-privs", "--", priv.VENV_PYTHON, "-c", code]
    proc = priv.run_argv(unpriv_user, argv, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert all("no_new_privs" in reason for reason in out["reasons"])
    assert "NoNewPrivileges" in out["fix"]
