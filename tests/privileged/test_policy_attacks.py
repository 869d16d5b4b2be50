"""The policy grants exactly what it names: issue 12's findings 1, 3, 4 and 5, as attacks,
and what a raw rule's holder really can do (finding 2: why the defaults grant none).

Each attack runs as uid 65534 (nobody, allowed to run the helper through its
group) against a really installed helper, inside a namespace made for the test,
with root's own processes and the system's ip as the witnesses. Each failed on
the helper before these rules existed (docs/SECURITY.md, findings table).
"""

from __future__ import annotations

import contextlib
import json
import pwd
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

# nobody's own primary group: the helper is installed root:nogroup 0750 for it.
ATTACKER_GROUP = "nogroup"

# One call's outcome as JSON: what was opened, or the error with every rung's errno.
ATTEMPT = priv.OUTCOME_PRELUDE + """
import fcntl, socket, struct, sys
import gprocket
from gprocket import tuntap

def attempt(call):
    try:
        got = call()
    except Exception as err:
        return None, failure(err)
    name = getattr(got, "name", None)
    return got, {"name": name if isinstance(name, str) else None, "rung": got.rung}
"""
refused_with = priv.refused_with


def fill(template: str, **values: object) -> str:
    """The program with each @NAME@ replaced by the Python literal of its value."""
    for name, value in values.items():
        template = template.replace(f"@{name}@", repr(value))
    return template


@pytest.fixture(scope="module")
def nobody() -> priv.User:
    entry = pwd.getpwnam("nobody")
    user = priv.User(entry.pw_name, entry.pw_uid, entry.pw_gid)
    proc = priv.run_python(user, "import gprocket")
    assert proc.returncode == 0, f"nobody cannot import gprocket from {priv.VENV_PYTHON}"
    return user


@pytest.fixture
def install(installed_helper: Callable[..., Path]) -> Callable[[str], Path]:
    """A caps helper that nobody may run, with this policy."""
    def make(policy: str) -> Path:
        return installed_helper("caps", policy, group=ATTACKER_GROUP)
    return make


@contextlib.contextmanager
def holding(user: priv.User, code: str) -> Iterator[Any]:
    """Run `code` as `user`; yield the JSON line it prints while it still holds what it
    got (until its stdin ends); then check it ended well."""
    proc = priv.popen_argv(user, [priv.VENV_PYTHON, "-c", code], stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the attacker exited with {proc.returncode} before reporting:\n{err}")
        yield json.loads(line)
        out, err = proc.communicate(input="", timeout=60)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def route_dev(netns: priv.Netns, *argv: str) -> str | None:
    """The device root's packet to this destination would leave by (None: unreachable)."""
    proc = netns.exec(["ip", "-j", *argv], check=False)
    if proc.returncode != 0:
        return None
    routes = json.loads(proc.stdout)
    return str(routes[0].get("dev")) if routes else None


def link(netns: priv.Netns, name: str) -> dict[str, Any] | None:
    proc = netns.exec(["ip", "-d", "-j", "link", "show", "dev", name], check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


# ---------------------------------------------------------------- finding 1: route hijack

# Open one device per case (name, options), report every outcome, hold them until stdin ends.
OPEN_HELD = ATTEMPT + """
held, outcomes = [], {}
for case, (name, kw) in @CASES@.items():
    dev, outcomes[case] = attempt(lambda: tuntap.open(name, up=True, namespace=@NS@,
                                                     helper=@HELPER@, **kw))
    held.append(dev)
print(json.dumps(outcomes), flush=True)
sys.stdin.read()
"""


def test_tun_rule_without_networks_configures_no_address(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    helper = install(f"allow * tun gp*\nallow * netns {netns.name}\n")
    cases = {"gp1": ("gp1", {"address": "128.0.0.1/1"}),
             "gp0": ("gp0", {"address6": "2000::1/3"})}
    with holding(nobody, fill(OPEN_HELD, CASES=cases, NS=netns.name,
                              HELPER=str(helper))) as outcomes:
        for name in ("gp1", "gp0"):
            assert refused_with(outcomes[name], "EPERM"), outcomes[name]
            assert "address" in outcomes[name]["message"], outcomes[name]
            assert link(netns, name) is None
        # Root's traffic to the world is not routed into the attacker's device.
        assert route_dev(netns, "route", "get", "198.51.100.7") in (None, "lo")
        assert route_dev(netns, "-6", "route", "get", "2606:4700::1111") in (None, "lo")


def test_tun_grant_bounds_addresses_prefixes_and_mtu(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    helper = install(f"allow * tun gp* net 10.9.0.0/24,fd00:9::/64 mtu 1280-1500\n"
                     f"allow * netns {netns.name}\n")
    cases = {
        "inside": ("gp0", {"address": "10.9.0.1/24", "address6": "fd00:9::1/64", "mtu": 1400}),
        "narrower": ("gp1", {"address": "10.9.0.77/32"}),
        "outside": ("gp2", {"address": "10.9.1.1/24"}),
        "wider": ("gp3", {"address": "10.9.0.1/23"}),
        "wider6": ("gp4", {"address6": "fd00:9::1/48"}),
        "hijack6": ("gp5", {"address6": "2000::1/3"}),
        "mtu": ("gp6", {"mtu": 9000}),
    }
    with holding(nobody, fill(OPEN_HELD, CASES=cases, NS=netns.name,
                              HELPER=str(helper))) as outcomes:
        assert outcomes["inside"] == {"name": "gp0", "rung": "broker"}, outcomes
        assert outcomes["narrower"]["name"] == "gp1", outcomes
        for case in ("outside", "wider", "wider6", "hijack6", "mtu"):
            assert refused_with(outcomes[case], "EPERM"), (case, outcomes[case])
        state = link(netns, "gp0")
        assert state is not None and state["mtu"] == 1400
        # Every route through the attacker's devices lies inside the grant.
        routes = json.loads(netns.exec(["ip", "-j", "route", "show", "table", "all"]).stdout)
        theirs = {r["dst"] for r in routes if str(r.get("dev", "")).startswith("gp")
                  and r.get("type", "unicast") == "unicast" and r["dst"] != "multicast"}
        assert theirs <= {"10.9.0.0/24", "10.9.0.77", "fd00:9::/64", "fd00:9::1", "fe80::/64"}, \
            theirs
        assert route_dev(netns, "route", "get", "10.9.0.2") == "gp0"
        assert route_dev(netns, "route", "get", "10.9.1.2") is None


# The holder writes a router advertisement into its own device: an on-link 2000::/3 and a
# default route via the device, were the kernel to process it (accept_ra is 1 by default).
ROUTER_AD = ATTEMPT + """
import time

def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

src = socket.inet_pton(socket.AF_INET6, "fe80::2")
dst = socket.inet_pton(socket.AF_INET6, "ff02::1")
prefix = struct.pack("!BBBBIII16s", 3, 4, 3, 0xC0, 86400, 14400, 0,
                     socket.inet_pton(socket.AF_INET6, "2000::"))
body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + prefix
body = body[:2] + struct.pack("!H", checksum(src + dst + struct.pack("!I3xB", len(body), 58)
                                             + body)) + body[4:]
packet = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 255, src, dst) + body
dev, outcome = attempt(lambda: tuntap.open("gp0", up=True, address6="fd00:9::1/64",
                                           namespace=@NS@, helper=@HELPER@))
if dev is not None:
    time.sleep(2.5)  # until the link-local address has passed duplicate detection
    for _ in range(3):
        dev.write(packet)
        time.sleep(0.2)
print(json.dumps(outcome), flush=True)
sys.stdin.read()
"""


def test_router_advertisement_into_the_device_adds_no_route(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    helper = install(f"allow * tun gp* net fd00:9::/64\nallow * netns {netns.name}\n")
    with holding(nobody, fill(ROUTER_AD, NS=netns.name, HELPER=str(helper))) as outcome:
        assert outcome == {"name": "gp0", "rung": "broker"}, outcome
        routes = json.loads(netns.exec(["ip", "-j", "-6", "route", "show"]).stdout)
        assert {r["dst"] for r in routes} == {"fd00:9::/64", "fe80::/64"}, routes
        assert route_dev(netns, "-6", "route", "get", "2606:4700::1111") is None
        accept_ra = netns.exec(["sysctl", "-n", "net.ipv6.conf.gp0.accept_ra"]).stdout
        assert accept_ra.strip() == "0"


# ---------------------------------------------------------------- finding 3: what a holder can do

HOLDER = ATTEMPT + """
TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CB, 0x400454CC, 0x400454CE
dev, outcome = attempt(lambda: tuntap.open("gp0", up=True, address="10.9.0.1/24",
                                           namespace=@NS@, helper=@HELPER@))
if dev is not None:
    # No capability needed: the kernel lets the holder of the queue do all three.
    fcntl.ioctl(dev.fileno(), TUNSETPERSIST, 1)
    fcntl.ioctl(dev.fileno(), TUNSETGROUP, @GID@)
    fcntl.ioctl(dev.fileno(), TUNSETOWNER, @UID@)
    dev.close()
print(json.dumps(outcome), flush=True)
"""


def test_holder_sets_persist_owner_and_group_and_the_device_keeps_only_granted_routes(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
    other_user: priv.User,
) -> None:
    helper = install(f"allow * tun gp* net 10.9.0.0/24\nallow * netns {netns.name}\n")
    code = fill(HOLDER, NS=netns.name, HELPER=str(helper), UID=other_user.uid,
                GID=other_user.gid)
    outcome = priv.run_json(nobody, code)
    assert outcome == {"name": "gp0", "rung": "broker"}, outcome
    # The attacker is gone; its device stays, given to another user, as POLICY.md says.
    state = link(netns, "gp0")
    assert state is not None, "the holder made the device persistent"
    info = state["linkinfo"]["info_data"]
    assert info["persist"] is True
    assert info["user"] == other_user.name
    assert info["group"] == str(other_user.gid) or info["group"] == other_user.name
    # ... and it routes what the grant allowed, nothing more.
    routes = json.loads(netns.exec(["ip", "-j", "-4", "route", "show", "dev", "gp0"]).stdout)
    assert {r["dst"] for r in routes} == {"10.9.0.0/24"}
    assert route_dev(netns, "route", "get", "198.51.100.7") is None


# ---------------------------------------------------------------- finding 4: attach

ATTACH = ATTEMPT + """
outcomes = {}
for name in @NAMES@:
    dev, outcomes[name] = attempt(lambda: tuntap.attach(name, namespace=@NS@, helper=@HELPER@,
                                                        strategies="helper"))
    if dev is not None:
        dev.close()
print(json.dumps(outcomes), flush=True)
"""


def test_attach_only_to_the_callers_own_device(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
    other_user: priv.User,
) -> None:
    add = ["ip", "tuntap", "add", "mode", "tun", "dev"]
    netns.exec([*add, "gpr0"])  # root's, no owner
    netns.exec([*add, "gpr1", "user", str(nobody.uid)])
    netns.exec([*add, "gpr2", "user", other_user.name])
    netns.exec([*add, "gpr3", "group", str(nobody.gid)])
    netns.exec([*add, "gpr4", "group", str(other_user.gid)])
    helper = install(f"allow * tun gp*\nallow * netns {netns.name}\n")
    names = ["gpr0", "gpr1", "gpr2", "gpr3", "gpr4", "gpr9"]
    code = fill(ATTACH, NAMES=names, NS=netns.name, HELPER=str(helper))
    outcomes = priv.run_json(nobody, code)
    assert outcomes["gpr1"] == {"name": "gpr1", "rung": "helper"}, outcomes
    assert outcomes["gpr3"] == {"name": "gpr3", "rung": "helper"}, outcomes
    for name in ("gpr0", "gpr2", "gpr4"):
        assert refused_with(outcomes[name], "EPERM"), (name, outcomes[name])
        assert "not the caller's" in outcomes[name]["message"], outcomes[name]
    assert refused_with(outcomes["gpr9"], "ENODEV"), outcomes["gpr9"]
    assert link(netns, "gpr9") is None, "attach never creates"


RAW_CLONE = ATTEMPT + """
TUNSETIFF = 0x400454CA
clone, outcome = attempt(lambda: tuntap.open_device("net/tun", helper=@HELPER@))
if clone is not None:
    try:
        fcntl.ioctl(clone.fileno(), TUNSETIFF, struct.pack("16sH22x", b"gpr0", 0x1001))
        outcome["attached"] = True
    except OSError as err:
        outcome["attached"] = code(err.errno)
print(json.dumps(outcome), flush=True)
"""


def test_device_net_tun_attaches_to_every_ownerless_device_as_documented(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    """What POLICY.md says of `device net/tun`, shown: no owner check is possible."""
    netns.exec(["ip", "tuntap", "add", "mode", "tun", "dev", "gpr0"])
    helper = install("allow * device net/tun\n")
    outcome = priv.run_json(nobody, fill(RAW_CLONE, HELPER=str(helper)), netns=netns)
    assert outcome.get("attached") is True, outcome


# ---------------------------------------------------------------- finding 5: UDP reuse

ROOT_UDP = textwrap.dedent("""
    import json, socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 80))
    s.settimeout(5)
    print("ready", flush=True)
    try:
        data = s.recvfrom(100)[0].decode()
    except TimeoutError:
        data = None
    print(json.dumps({"root_got": data}), flush=True)
""")

STEAL = ATTEMPT + """
sock, outcome = attempt(lambda: gprocket.open(80, protocol="udp", ip="127.0.0.1", reuseaddr=True,
                                              namespace=@NS@, helper=@HELPER@))
if sock is not None:
    sock.settimeout(0)
print(json.dumps(outcome), flush=True)
sys.stdin.read()
if sock is not None:
    try:
        outcome["stolen"] = sock.recv(100).decode()
    except BlockingIOError:
        outcome["stolen"] = None
print(json.dumps(outcome), flush=True)
"""


def test_udp_reuseaddr_cannot_steal_roots_datagrams(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    helper = install(f"allow * bind udp 80\nallow * netns {netns.name}\n")
    root = netns.popen([priv.VENV_PYTHON, "-c", ROOT_UDP])
    try:
        assert root.stdout is not None
        assert root.stdout.readline().strip() == "ready"
        with holding(nobody, fill(STEAL, NS=netns.name, HELPER=str(helper))) as outcome:
            assert refused_with(outcome, "EPERM"), outcome
            assert "reuse" in outcome["message"], outcome
            send = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    ".sendto(b'for-root', ('127.0.0.1', 80))")
            netns.exec([priv.VENV_PYTHON, "-c", send])
            out, err = root.communicate(timeout=30)
            assert json.loads(out.splitlines()[-1]) == {"root_got": "for-root"}, err
    finally:
        if root.poll() is None:
            root.kill()
        root.communicate(timeout=30)


ROOT_TCP = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", 80))
    s.listen(5)
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_tcp_reuseport_cannot_join_roots_listener(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    """Stream sockets keep their reuse flags without a grant: the kernel lets a
    SO_REUSEPORT group take only sockets of the same uid."""
    helper = install(f"allow * bind tcp 80\nallow * netns {netns.name}\n")
    root = netns.popen([priv.VENV_PYTHON, "-c", ROOT_TCP], stdin=subprocess.PIPE)
    try:
        assert root.stdout is not None
        assert root.stdout.readline().strip() == "ready"
        code = ATTEMPT + textwrap.dedent(f"""
            sock, outcome = attempt(lambda: gprocket.open(80, protocol="tcp", reuseport=True,
                                                          namespace={netns.name!r},
                                                          helper={str(helper)!r}))
            print(json.dumps(outcome))
        """)
        outcome = priv.run_json(nobody, code)
        assert refused_with(outcome, "EADDRINUSE"), outcome
    finally:
        root.communicate(input="", timeout=30)


def test_udp_reuse_with_a_reuse_grant(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    helper = install(f"allow * bind udp 80 127.0.0.1 reuse\nallow * netns {netns.name}\n")
    code = ATTEMPT + textwrap.dedent(f"""
        sock, outcome = attempt(lambda: gprocket.open(80, protocol="udp", ip="127.0.0.1",
                                                      reuseaddr=True, namespace={netns.name!r},
                                                      helper={str(helper)!r}))
        if sock is not None:
            outcome["reuseaddr"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        print(json.dumps(outcome))
    """)
    outcome = priv.run_json(nobody, code)
    assert outcome == {"name": None, "rung": "broker", "reuseaddr": 1}, outcome


PATCHED = textwrap.dedent("""
    import json, socket
    import gprocket.monkey
    gprocket.monkey.patch()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 53))
    print(json.dumps({"address": list(s.getsockname()),
                      "reuseaddr": s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)}))
""")


def test_patched_program_setting_reuseaddr_on_udp_still_gets_its_port(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User,
) -> None:
    """gevent's DatagramServer sets SO_REUSEADDR: the port comes, the shared port does not."""
    helper = install("allow * bind udp 53\n")
    proc = priv.run_argv(nobody, [priv.VENV_PYTHON, "-c", PATCHED], netns=netns,
                         env={"GPROCKET_HELPER": str(helper)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"address": ["127.0.0.1", 53],
                                                        "reuseaddr": 0}


# ---------------------------------------------------------------- finding 2: what a raw rule gives

ROOT_UDP_SOURCE = textwrap.dedent("""
    import json, socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 5300))
    s.settimeout(5)
    print("ready", flush=True)
    try:
        data, source = s.recvfrom(100)
        got = {"data": data.decode(), "source": list(source)}
    except TimeoutError:
        got = None
    print(json.dumps({"root_got": got}), flush=True)
""")

# A raw ICMP socket from the helper, IP_HDRINCL set without any capability, and
# a whole UDP datagram written "from 127.0.0.53:53" (the local resolver).
FORGE = priv.OUTCOME_PRELUDE + """
import socket, struct
import gprocket
try:
    raw = gprocket.open(0, family="inet", type="raw", protocol="icmp", helper=@HELPER@)
except Exception as err:
    print(json.dumps(failure(err)), flush=True)
    raise SystemExit(0)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
payload = b"forged answer"
udp = struct.pack("!HHHH", 53, 5300, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                 socket.inet_aton("127.0.0.53"), socket.inet_aton("127.0.0.1"))
raw.sendto(ip + udp, ("127.0.0.1", 0))
print(json.dumps({"rung": raw.rung}), flush=True)
"""


DEFAULTS = "allow * bind any 1-1023\n"  # helper/gp.c gp_default_policy


@pytest.mark.parametrize("policy", [DEFAULTS + "allow * raw icmp\n", DEFAULTS],
                         ids=["raw-rule", "defaults"])
def test_raw_rule_sends_any_packet_from_any_source_as_documented(
    netns: priv.Netns, install: Callable[[str], Path], nobody: priv.User, policy: str,
) -> None:
    # POLICY.md: a raw rule's holder "may send any IP packet with any source
    # address"; the defaults grant no raw socket.
    helper = install(policy)
    root = netns.popen([priv.VENV_PYTHON, "-c", ROOT_UDP_SOURCE])
    try:
        assert root.stdout is not None
        assert root.stdout.readline().strip() == "ready"
        proc = priv.run_python(nobody, fill(FORGE, HELPER=str(helper)), netns=netns)
        assert proc.returncode == 0, proc.stderr
        outcome = json.loads(proc.stdout.splitlines()[-1])
        out, err = root.communicate(timeout=30)
        got = json.loads(out.splitlines()[-1])["root_got"]
        if "raw" in policy:
            assert outcome == {"rung": "broker"}, outcome
            assert got == {"data": "forged answer", "source": ["127.0.0.53", 53]}, err
        else:
            assert refused_with(outcome, "EPERM"), outcome
            assert got is None
    finally:
        if root.poll() is None:
            root.kill()
        root.communicate(timeout=30)
