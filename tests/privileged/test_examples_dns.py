"""examples/dns_server.py bound to port 53 as an unprivileged user: dig
answers A and AAAA over IPv4 and IPv6, and 1,000 queries from 50 concurrent
clients all get their answer (no retries)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

EXAMPLE = str(priv.EXAMPLES / "dns_server.py")

LOAD = textwrap.dedent("""
    import json, random
    import gevent, gevent.socket, socket
    from dnslib import DNSRecord, QTYPE
    EXPECTED = {("www.gprocket.test", "A"): ["192.0.2.80", "192.0.2.81"],
                ("www.gprocket.test", "AAAA"): ["2001:db8::80"],
                ("v4.gprocket.test", "A"): ["192.0.2.4"],
                ("gprocket.test", "AAAA"): ["2001:db8::53"]}
    results = {"answered": 0, "wrong": 0, "lost": 0}

    def client(number):
        family, server = ((socket.AF_INET, "127.0.0.1") if number % 2
                          else (socket.AF_INET6, "::1"))
        sock = gevent.socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(10)
        for _ in range(20):
            name, qtype = random.choice(list(EXPECTED))
            query = DNSRecord.question(name, qtype)
            sock.sendto(query.pack(), (server, 53))
            try:
                data = sock.recv(4096)
            except socket.timeout:
                results["lost"] += 1
                continue
            reply = DNSRecord.parse(data)
            got = sorted(str(rr.rdata) for rr in reply.rr)
            ok = reply.header.id == query.header.id and got == EXPECTED[(name, qtype)]
            results["answered" if ok else "wrong"] += 1
        sock.close()

    gevent.joinall([gevent.spawn(client, n) for n in range(50)], raise_error=True)
    print(json.dumps(results))
""")


def wait_for_line(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    for _ in range(count):
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            pytest.fail(f"example exited {proc.returncode}:\n{''.join(lines)}"
                        f"{proc.stdout.read()}")
        lines.append(line.strip())
    return lines


def test_dns_example_on_port_53(unpriv_user: priv.User, netns: priv.Netns,
                                installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, EXAMPLE], netns=netns,
                           stderr=subprocess.STDOUT, env={"GPROCKET_HELPER": str(helper)})
    try:
        started = wait_for_line(proc, 2)
        assert started == ["dns udp on [::]:53 via broker", "dns tcp on [::]:53 via broker"]
        for server in ("127.0.0.1", "::1"):
            for args, expected in ((["www.gprocket.test", "A"], "192.0.2.80\n192.0.2.81"),
                                   (["v6.gprocket.test", "AAAA"], "2001:db8::6"),
                                   (["+tcp", "gprocket.test", "AAAA"], "2001:db8::53")):
                got = netns.exec(["dig", f"@{server}", "-p", "53", "+short", "+tries=1",
                                  *args], check=False)
                assert sorted(got.stdout.split()) == sorted(expected.split()), (server, args)
        missing = netns.exec(["dig", "@127.0.0.1", "-p", "53", "nope.gprocket.test", "A"])
        assert "status: NXDOMAIN" in missing.stdout
        outside = netns.exec(["dig", "@127.0.0.1", "-p", "53", "example.com", "A"])
        assert "status: REFUSED" in outside.stdout

        load = netns.exec([priv.VENV_PYTHON, "-c", LOAD], timeout=120,
                          env=priv.user_env())
        assert json.loads(load.stdout.splitlines()[-1]) == {
            "answered": 1000, "wrong": 0, "lost": 0}
        owner = netns.exec(["ss", "-Hlnup", "sport = :53"]).stdout
        assert f"pid={proc.pid}," in owner
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
