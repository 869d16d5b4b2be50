"""gprocket.open as a real unprivileged user: nothing installed, capabilities, plain.

Each scenario runs a fresh Python process as another uid (setpriv), inside a
network namespace made for the test, and reports what it saw as JSON.
"""

from __future__ import annotations

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

NO_HELPER = {"GPROCKET_HELPER": "/opt/gprocket/t/none/libexec/gprocket/gprocket-helper"}

PRELUDE = """
import json, os, gevent, gprocket
gevent.sleep(0)  # the hub's own descriptors (epoll, eventfd) exist from here on
def caps():
    with open('/proc/self/status') as f:
        return {k: v.strip() for k, _, v in (l.partition(':') for l in f) if k.startswith('Cap')}
def fds():
    return sorted(os.listdir('/proc/self/fd'))
def children():
    with open(f'/proc/{os.getpid()}/task/{os.getpid()}/children') as f:
        return f.read().split()
import gprocket._ladder.broker as broker
"""


def test_nothing_installed_raises_privilege_error_naming_each_rung(
    unpriv_user: priv.User, netns: priv.Netns
) -> None:
    code = PRELUDE + """
before = fds()
try:
    gprocket.open(53, protocol='udp')
    out = {'opened': True}
except gprocket.PrivilegeError as err:
    out = {'attempts': [[a.rung, a.reason, a.errno] for a in err.attempts],
           'fix': err.fix, 'message': str(err), 'permission': isinstance(err, PermissionError)}
out.update(same_fds=before == fds(), children=children())
print(json.dumps(out))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, env=NO_HELPER)
    assert "opened" not in out
    rungs = [attempt[0] for attempt in out["attempts"]]
    assert rungs == ["inherited", "plain", "capabilities", "broker", "sudo"]
    reasons = dict((a[0], a[1]) for a in out["attempts"])
    assert "Permission denied" in reasons["plain"]
    assert "CAP_NET_BIND_SERVICE not in the permitted set" in reasons["capabilities"]
    assert "no helper at" in reasons["broker"]
    assert "sudo -n" in reasons["sudo"]
    assert out["permission"] is True
    assert out["fix"]
    assert out["message"].startswith("cannot open udp port 53")
    assert out["same_fds"] is True
    assert out["children"] == []


def test_ambient_capability_serves_through_the_capabilities_rung(
    unpriv_user: priv.User, netns: priv.Netns
) -> None:
    code = PRELUDE + """
first = caps()
sock = gprocket.open(53, protocol='udp')
out = {'rung': sock.rung, 'before': first, 'after': caps(), 'brokers': len(broker._REGISTRY),
       'children': children()}
sock.close()
gprocket.drop_effective()
out['dropped'] = caps()
sock = gprocket.open(53, protocol='udp', ip='127.0.0.1')
out.update(rung2=sock.rung, after_drop=caps(), port=sock.getsockname()[1])
print(json.dumps(out))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, ambient_caps=["CAP_NET_BIND_SERVICE"],
                        env=NO_HELPER)
    assert out["rung"] == "capabilities"
    assert out["before"] == out["after"]
    assert out["before"]["CapAmb"] == "0000000000000400"
    assert out["brokers"] == 0 and out["children"] == []
    assert out["dropped"]["CapEff"] == "0000000000000000"
    assert out["dropped"]["CapPrm"] == out["before"]["CapPrm"]
    assert out["rung2"] == "capabilities"
    assert out["after_drop"] == out["dropped"]
    assert out["port"] == 53


def test_permitted_only_file_caps_interpreter(
    unpriv_user: priv.User, netns: priv.Netns, caps_python
) -> None:  # type: ignore[no-untyped-def]
    python = caps_python("cap_net_bind_service,cap_net_raw+p")
    code = PRELUDE + """
first = caps()
udp = gprocket.open(53, protocol='udp', ip='127.0.0.1')
icmp = gprocket.open(0, protocol='icmp')
out = {'rungs': [udp.rung, icmp.rung], 'before': first, 'after': caps(),
       'plain': [[a.rung, a.errno] for a in gprocket.acquire(
           gprocket.SocketRequest(54, protocol='udp')).attempts],
       'children': children()}
print(json.dumps(out))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, python=python, env=NO_HELPER)
    assert out["rungs"] == ["capabilities", "capabilities"]
    assert out["before"]["CapEff"] == out["after"]["CapEff"] == "0000000000000000"
    assert out["before"]["CapPrm"] == "0000000000002400"
    assert ["plain", 13] in out["plain"]
    assert out["children"] == []


def test_lowered_unprivileged_port_start_serves_plain_without_helper(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("setuid")
    netns.sysctl("net.ipv4.ip_unprivileged_port_start", "0")
    code = PRELUDE + """
sock = gprocket.open(53, protocol='udp', ip='127.0.0.1')
tcp = gprocket.open(80, ip='127.0.0.1')
print(json.dumps({'rungs': [sock.rung, tcp.rung], 'brokers': len(broker._REGISTRY),
                  'children': children()}))
"""
    out = priv.run_json(unpriv_user, code, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out == {"rungs": ["plain", "plain"], "brokers": 0, "children": []}
