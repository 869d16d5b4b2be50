"""TUN/TAP devices for an unprivileged user, through the installed helper.

A real other-uid process asks for a device inside a namespace made for the
test; the system's own ping and ip are the witnesses. Nothing here runs the
responder as root: root only sends pings and reads the link state.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

EXAMPLES = priv.EXAMPLES

# Outcome of one call as JSON: the device's name, or the error and its errnos.
ATTEMPT = priv.OUTCOME_PRELUDE + """
import sys
from gprocket import tuntap

def attempt(call):
    try:
        device = call()
    except Exception as err:
        return failure(err)
    with device:
        return {"name": device.name, "rung": device.rung, "persist": device.persist}
"""
refused_with = priv.refused_with


# The networks and MTUs the scenarios below configure, granted by name (POLICY.md).
TUN_GRANT = "tun gpt* net 10.9.0.0/24,10.8.0.0/24,fd00:9::/64 mtu 1280-1500"


def policy_for(netns: priv.Netns, *extra: str, tun: str = TUN_GRANT) -> str:
    lines = [f"allow group:{priv.TEST_GROUP} {tun}",
             f"allow group:{priv.TEST_GROUP} netns {netns.name}", *extra]
    return "\n".join(lines) + "\n"


def link(netns: priv.Netns, name: str) -> dict[str, Any] | None:
    proc = netns.exec(["ip", "-d", "-j", "link", "show", "dev", name], check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


@pytest.fixture
def responder(unpriv_user: priv.User) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start a driver program as the unprivileged user; stopped after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", textwrap.dedent(code)],
                               stdin=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def wait_ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the responder exited with {proc.returncode} before it was ready:\n{err}")
    ready: dict[str, Any] = json.loads(line)
    return ready


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(input="", timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


ECHO = f"""
import json, sys
import gevent
sys.path.insert(0, {str(EXAMPLES)!r})
import tun_echo
from gprocket import tuntap

ticks = []
def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0.005)
gevent.spawn(ticker)
device = tuntap.open("gpt0", up=True, address="10.9.0.1/24", address6="fd00:9::1/64",
                     namespace=NAMESPACE, helper=HELPER)
print(json.dumps({{"name": device.name, "rung": device.rung}}), flush=True)
before = len(ticks)
replies = tun_echo.serve(device, count=COUNT)
print(json.dumps({{"replies": replies, "ticks_while_serving": len(ticks) - before}}), flush=True)
sys.stdin.read()
device.close()
"""


@pytest.mark.parametrize("install", ["caps", "setuid"])
def test_unprivileged_tun_answers_system_ping_v4_and_v6(
    netns: priv.Netns, installed_helper: Callable[..., Path], responder: Any, install: str,
) -> None:
    helper = installed_helper(install, policy_for(netns))
    proc = responder(ECHO.replace("NAMESPACE", repr(netns.name))
                     .replace("HELPER", repr(str(helper))).replace("COUNT", "6"))
    ready = wait_ready(proc)
    assert ready["name"] == "gpt0"
    assert ready["rung"] in ("broker", "helper")
    state = link(netns, "gpt0")
    assert state is not None and "UP" in state["flags"]
    # A route of the system's own into the device, beside the connected one.
    netns.exec(["ip", "route", "add", "198.51.100.0/24", "dev", "gpt0"])
    ping4 = netns.exec(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "198.51.100.7"],
                       check=False)
    ping6 = netns.exec(["ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "5", "fd00:9::2"],
                       check=False)
    assert ping4.returncode == 0, ping4.stdout + ping4.stderr
    assert " 3 received" in ping4.stdout
    assert "from 198.51.100.7" in ping4.stdout
    assert ping6.returncode == 0, ping6.stdout + ping6.stderr
    assert " 3 received" in ping6.stdout
    result = finish(proc)
    assert result["replies"] == 6, "every reply ping saw was made by the Python responder"
    assert result["ticks_while_serving"] > 0, "the ticker greenlet must run while serving"


TAP = f"""
import json, sys
sys.path.insert(0, {str(EXAMPLES)!r})
import tap_arp
from gprocket import tuntap

device = tuntap.open("gptap0", "tap", up=True, address="10.8.0.1/24", namespace=NAMESPACE,
                     helper=HELPER)
print(json.dumps({{"name": device.name, "mode": device.mode, "rung": device.rung}}), flush=True)
replies = tap_arp.serve(device, "10.8.0.2", count=3)
print(json.dumps({{"replies": replies}}), flush=True)
sys.stdin.read()
device.close()
"""


def test_unprivileged_tap_answers_arp_and_ping(
    netns: priv.Netns, installed_helper: Callable[..., Path], responder: Any,
) -> None:
    helper = installed_helper("caps", policy_for(netns))
    proc = responder(TAP.replace("NAMESPACE", repr(netns.name))
                     .replace("HELPER", repr(str(helper))))
    ready = wait_ready(proc)
    assert ready == {"name": "gptap0", "mode": "tap", "rung": ready["rung"]}
    ping = netns.exec(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "10.8.0.2"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 2 received" in ping.stdout
    neigh = netns.exec(["ip", "-j", "neigh", "show", "10.8.0.2", "dev", "gptap0"]).stdout
    entries = json.loads(neigh)
    assert [e["lladdr"] for e in entries] == ["02:00:00:00:00:02"]
    assert finish(proc) == {"replies": 3}  # one ARP reply, two echo replies


def run_attempt(user: priv.User, call: str, **kwargs: Any) -> dict[str, Any]:
    outcome: dict[str, Any] = priv.run_json(
        user, ATTEMPT + f"print(json.dumps(attempt(lambda: {call})))", **kwargs)
    return outcome


def test_another_users_device_is_refused(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
    other_user: priv.User,
) -> None:
    helper = installed_helper("caps", policy_for(netns))
    netns.exec(["ip", "tuntap", "add", "dev", "gptother", "mode", "tun", "user", other_user.name])
    created = run_attempt(
        unpriv_user, f"tuntap.open('gptother', namespace={netns.name!r}, helper={str(helper)!r})")
    assert refused_with(created, "EBUSY"), created
    # Attaching: the helper reads the owner and refuses.
    attached = run_attempt(unpriv_user, f"tuntap.attach('gptother', namespace={netns.name!r}, "
                                        f"helper={str(helper)!r})")
    assert refused_with(attached, "EPERM"), attached
    state = link(netns, "gptother")
    assert state is not None
    assert state["linkinfo"]["info_data"]["user"] == other_user.name


@pytest.mark.parametrize("strategies", ["broker", "helper"])
def test_name_outside_the_policy_is_refused(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
    strategies: str,
) -> None:
    helper = installed_helper("caps", policy_for(netns))
    outcome = run_attempt(
        unpriv_user, f"tuntap.open('vpn0', namespace={netns.name!r}, helper={str(helper)!r}, "
                     f"strategies={strategies!r})")
    assert refused_with(outcome, "EPERM"), outcome
    assert "tun" in outcome["message"]
    assert link(netns, "vpn0") is None


def test_persist_survives_belongs_to_the_user_and_is_attached_through_the_helper(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
) -> None:
    # Any tun grant serves persist: the holder of the descriptor could set it itself.
    helper = installed_helper("caps", policy_for(netns, tun="tun gpt*"))
    outcome = run_attempt(unpriv_user, f"tuntap.open('gpt1', persist=True, "
                                       f"namespace={netns.name!r}, helper={str(helper)!r})")
    assert outcome.get("name") == "gpt1", outcome
    assert outcome["persist"] is True
    state = link(netns, "gpt1")
    assert state is not None, "a persistent device outlives its descriptor"
    assert state["linkinfo"]["info_data"]["user"] == unpriv_user.name
    again = run_attempt(unpriv_user, f"tuntap.attach('gpt1', namespace={netns.name!r}, "
                                     f"helper={str(helper)!r}, strategies='helper')")
    assert again == {"name": "gpt1", "rung": "helper", "persist": True}, again


def test_namespace_not_granted_is_refused(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
) -> None:
    with priv.make_netns("gpt") as elsewhere:
        helper = installed_helper("caps", policy_for(netns))
        outcome = run_attempt(unpriv_user, f"tuntap.open('gpt0', namespace={elsewhere.name!r}, "
                                           f"helper={str(helper)!r})")
        assert refused_with(outcome, "EPERM"), outcome
        assert elsewhere.name in outcome["message"]
        assert link(elsewhere, "gpt0") is None


@pytest.mark.parametrize("namespace", ["../x", "/proc/1/ns/net", "../../proc/1/ns/net", ".."])
def test_namespace_paths_are_refused_before_the_helper(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
    namespace: str,
) -> None:
    helper = installed_helper("caps", policy_for(netns))
    outcome = run_attempt(unpriv_user, f"tuntap.open('gpt0', namespace={namespace!r}, "
                                       f"helper={str(helper)!r})")
    assert outcome["error"] == "ValueError", outcome
    assert "namespace" in outcome["message"]


def test_clone_device_only_with_a_device_rule(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
) -> None:
    code = ATTEMPT + textwrap.dedent("""
        try:
            device = tuntap.open_device("net/tun", helper=HELPER)
        except Exception as err:
            print(json.dumps({"error": type(err).__name__, "message": str(err),
                              "attempts": [[a.rung, code(a.errno)] for a in err.attempts]}))
        else:
            with device:
                print(json.dumps({"name": device.name, "rung": device.rung}))
    """)
    denied_helper = installed_helper("caps", policy_for(netns))
    denied = priv.run_json(unpriv_user, code.replace("HELPER", repr(str(denied_helper))))
    assert refused_with(denied, "EPERM"), denied
    granted_helper = installed_helper(
        "caps", policy_for(netns, "allow group:gprocket device net/tun"))
    granted = priv.run_json(unpriv_user, code.replace("HELPER", repr(str(granted_helper))))
    assert granted.get("name") == "net/tun", granted
    assert granted["rung"] in ("broker", "helper")


PACKET_INFO = """
import json, sys
from gprocket import tuntap

device = tuntap.open("gpt0", packet_info=True, mtu=1400, up=True, address="10.9.0.1/24",
                     namespace=NAMESPACE, helper=HELPER)
print(json.dumps({"name": device.name}), flush=True)
while True:
    info, packet = device.read_with_info(timeout=30)
    if packet[0] >> 4 == 4 and packet[9] == 17:
        break
print(json.dumps({"proto": info.proto, "payload": packet[28:].decode(), "mtu": device.mtu,
                  "bufsize": device.bufsize}), flush=True)
sys.stdin.read()
device.close()
"""


def test_helper_honours_packet_info_and_mtu(
    netns: priv.Netns, installed_helper: Callable[..., Path], responder: Any,
) -> None:
    helper = installed_helper("caps", policy_for(netns))
    proc = responder(PACKET_INFO.replace("NAMESPACE", repr(netns.name))
                     .replace("HELPER", repr(str(helper))))
    assert wait_ready(proc) == {"name": "gpt0"}
    state = link(netns, "gpt0")
    assert state is not None and state["mtu"] == 1400
    send = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'with-info', ('10.9.0.2', 9))")
    netns.exec([priv.VENV_PYTHON, "-c", send])
    assert finish(proc) == {"proto": 0x0800, "payload": "with-info", "mtu": 1400,
                            "bufsize": 1404}
