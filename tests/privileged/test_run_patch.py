"""gprocket.monkey in real unprivileged processes: privileged binds and raw
sockets refused by the kernel come from the ladder, the program keeps its
socket object and options, unpatch puts everything back, binds the kernel
allows see no difference, and it composes with gevent.monkey.patch_all()."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

RUN = [priv.VENV_PYTHON, "-m", "gprocket.cli", "run"]


def run_json(user: priv.User, netns: priv.Netns, helper: Path, argv: list[str]) -> Any:
    proc = priv.run_argv(user, argv, netns=netns, env={"GPROCKET_HELPER": str(helper)},
                         timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.splitlines()[-1])


# A blocking program (no gevent) that describes the socket it bound.
DESCRIBE = textwrap.dedent("""
    import fcntl, json, os, socket, sys
    port = int(sys.argv[1])
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(7.5)
    ident = id(s); fd = s.fileno()
    s.bind(("::", port))
    s.listen(5)
    twin = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    twin.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    try:
        twin.bind(("::", port)); reuseport_shared = True
    except OSError:
        reuseport_shared = False
    opt = lambda level, name, size=0: (s.getsockopt(level, name, size) if size
                                       else s.getsockopt(level, name))
    pid = os.getpid()
    print(json.dumps({
        "same_object": id(s) == ident, "same_fd": s.fileno() == fd,
        "address": list(s.getsockname()[:2]), "timeout": s.gettimeout(),
        "nonblocking_fd": bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK),
        "inheritable": os.get_inheritable(fd),
        "listening": bool(opt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
        "reuseaddr": opt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
        "reuseport": opt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
        "v6only": opt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
        "device": opt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\\0").decode(),
        "nodelay": opt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "reuseport_shared": reuseport_shared,
        "children": open(f"/proc/{pid}/task/{pid}/children").read().split(),
    }))
""")


def test_privileged_bind_keeps_the_programs_socket_and_options(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    refused = priv.run_python(unpriv_user, DESCRIBE.replace("sys.argv[1]", "'80'"),
                              netns=netns)
    assert "Permission denied" in refused.stderr
    got = run_json(unpriv_user, netns, helper, [*RUN, "-c", DESCRIBE, "80"])
    # The one-shot helper that served the bind may not be reaped yet.
    del got["children"]
    assert got == {
        "same_object": True, "same_fd": True, "address": ["::", 80], "timeout": 7.5,
        "nonblocking_fd": True, "inheritable": False, "listening": True,
        "reuseaddr": 1, "reuseport": 1, "v6only": 1, "device": "lo", "nodelay": 1,
        "reuseport_shared": True,
    }


def test_port_8080_sees_no_difference(unpriv_user: priv.User, netns: priv.Netns,
                                      installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    direct = run_json(unpriv_user, netns, helper, [priv.VENV_PYTHON, "-c", DESCRIBE, "8080"])
    patched = run_json(unpriv_user, netns, helper, [*RUN, "-c", DESCRIBE, "8080"])
    assert patched == direct
    assert direct["address"] == ["::", 8080]


RAW_PING = textwrap.dedent("""
    import json, socket, struct
    def checksum(data):
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        total = (total >> 16) + (total & 0xFFFF); total += total >> 16
        return ~total & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(10)
    body = struct.pack("!BBHHH", 8, 0, 0, 0x6770, 1) + b"gprocket"
    packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    s.sendto(packet, ("127.0.0.1", 0))
    while True:
        data, peer = s.recvfrom(2048)
        icmp = data[(data[0] & 0x0F) * 4:]
        if icmp[0] == 0:
            break
    print(json.dumps({"type": icmp[0], "id": struct.unpack("!H", icmp[4:6])[0],
                      "payload": icmp[8:].decode(), "family": int(s.family),
                      "proto": s.proto}))
""")


def test_raw_icmp_socket_created_through_the_ladder(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy="allow * raw icmp,icmpv6\n")
    refused = priv.run_python(unpriv_user, RAW_PING, netns=netns)
    assert "PermissionError" in refused.stderr
    got = run_json(unpriv_user, netns, helper, [*RUN, "-c", RAW_PING])
    assert got == {"type": 0, "id": 0x6770, "payload": "gprocket", "family": 2, "proto": 1}


PACKET = textwrap.dedent("""
    import json, socket
    from gprocket import PrivilegeError
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except PrivilegeError as err:
        print(json.dumps({"error": err.errno, "permission": isinstance(err, PermissionError),
                          "rungs": [a.rung for a in err.attempts]}))
    else:
        print(json.dumps({"type": s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                          "family": int(s.family)}))
""")


def test_packet_socket_follows_the_policy(unpriv_user: priv.User, netns: priv.Netns,
                                          installed_helper: Callable[..., Path]) -> None:
    default = installed_helper(mode="caps")
    denied = run_json(unpriv_user, netns, default, [*RUN, "-c", PACKET])
    # Refused by the default policy: still a PermissionError, now with the story.
    assert denied["permission"] is True
    assert "helper" in denied["rungs"]
    allowed = installed_helper(mode="caps", policy="allow group:gprocket packet\n")
    assert run_json(unpriv_user, netns, allowed, [*RUN, "-c", PACKET]) == {
        "type": 3, "family": 17}


UNPATCH = textwrap.dedent("""
    import errno, json, socket, _socket
    import gevent.socket
    from gprocket import monkey
    before = (socket.socket.__dict__.copy(), dict(gevent.socket.socket.__dict__))
    monkey.patch()
    a = socket.socket(); a.bind(("127.0.0.1", 80))
    monkey.unpatch()
    after = (socket.socket.__dict__.copy(), dict(gevent.socket.socket.__dict__))
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", 81)); refused = None
    except PermissionError as err:
        refused = errno.errorcode[err.errno]
    print(json.dumps({"bound": a.getsockname()[1], "restored": before == after,
                      "refused_after": refused, "patched": monkey.is_patched()}))
""")


def test_unpatch_restores_everything(unpriv_user: priv.User, netns: priv.Netns,
                                     installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    got = run_json(unpriv_user, netns, helper, [priv.VENV_PYTHON, "-c", UNPATCH])
    assert got == {"bound": 80, "restored": True, "refused_after": "EACCES", "patched": False}


@pytest.mark.parametrize("order", ["gevent-first", "gprocket-first"])
def test_gevent_patch_all_in_either_order(order: str, unpriv_user: priv.User,
                                          netns: priv.Netns,
                                          installed_helper: Callable[..., Path]) -> None:
    first, second = (("gevent.monkey.patch_all()", "monkey.patch()") if order == "gevent-first"
                     else ("monkey.patch()", "gevent.monkey.patch_all()"))
    code = textwrap.dedent(f"""
        import gevent.monkey
        from gprocket import monkey
        {first}
        {second}
        import json, socket, gevent
        from gevent.server import DatagramServer
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fd = udp.fileno()
        udp.bind(("127.0.0.1", 53))
        server = DatagramServer(udp, lambda data, peer: server.sendto(data.upper(), peer))
        server.start()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(10)
        client.sendto(b"cooperative", ("127.0.0.1", 53))
        answer = client.recv(100).decode()
        print(json.dumps({{"gevent_socket": type(udp).__module__, "same_fd": fd == udp.fileno(),
                          "answer": answer}}))
    """)
    helper = installed_helper(mode="caps")
    got = run_json(unpriv_user, netns, helper, [priv.VENV_PYTHON, "-c", code])
    assert got == {"gevent_socket": "gevent._socket3", "same_fd": True, "answer": "COOPERATIVE"}


THREADS = textwrap.dedent("""
    import json, socket, threading
    bound = {}
    def bind(port):
        s = socket.socket(); s.bind(("127.0.0.1", port)); bound[port] = s.getsockname()[1]
    bind(80)
    for port in (81, 82):
        t = threading.Thread(target=bind, args=(port,)); t.start(); t.join()
    print(json.dumps(sorted(bound.values())))
""")


def test_blocking_program_binds_from_any_native_thread(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    assert run_json(unpriv_user, netns, helper, [*RUN, "-c", THREADS]) == [80, 81, 82]


SIGNALS = textwrap.dedent("""
    import json, signal, socket, subprocess, sys, threading
    s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))
    names = ["SIGINT", "SIGTERM", "SIGCHLD", "SIGPIPE", "SIGHUP", "SIGUSR1"]
    print(json.dumps({"signals": {n: str(signal.getsignal(getattr(signal, n))) for n in names},
                      "subprocess": subprocess.run(["true"], check=False).returncode,
                      "threads": threading.active_count()}))
""")


def test_helper_served_bind_leaves_signals_and_children_alone(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    direct = run_json(unpriv_user, netns, helper, [priv.VENV_PYTHON, "-c", SIGNALS, "8080"])
    served = run_json(unpriv_user, netns, helper, [*RUN, "-c", SIGNALS, "80"])
    assert served == direct
    assert direct["subprocess"] == 0


GEVENT_SERVERS = textwrap.dedent("""
    import json
    import gevent, gevent.socket, socket
    from gevent.server import DatagramServer, StreamServer
    # gevent makes and binds these sockets itself, from plain addresses.
    tcp = StreamServer(("127.0.0.1", 80), lambda c, a: (c.sendall(b"tcp"), c.close()))
    udp = DatagramServer(":53", lambda d, a: udp.sendto(b"udp", a))
    tcp.start(); udp.start()
    c = gevent.socket.create_connection(("127.0.0.1", 80)); got = [c.recv(3).decode()]
    u = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"?", ("127.0.0.1", 53)); got.append(u.recv(3).decode())
    print(json.dumps(got))
""")


def test_gevent_servers_given_addresses_run_unmodified(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    refused = priv.run_python(unpriv_user, GEVENT_SERVERS, netns=netns)
    assert "Permission denied" in refused.stderr
    assert run_json(unpriv_user, netns, helper, [*RUN, "-c", GEVENT_SERVERS]) == ["tcp", "udp"]
