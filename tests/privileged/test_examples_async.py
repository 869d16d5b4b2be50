"""examples/async_dns.py and examples/async_ping.py as an unprivileged user.

The DNS server binds port 53 (UDP and TCP, dual-stack) through gprocket.aio's
broker; dig answers from both families and a concurrent load gets every
answer. The ping example pings over raw sockets from the helper (ping sockets
are closed in the namespace) while its heartbeat task keeps printing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

DNS = str(priv.EXAMPLES / "async_dns.py")
PING = str(priv.EXAMPLES / "async_ping.py")

LOAD = r"""
import asyncio, json, random, socket
from dnslib import DNSRecord
EXPECTED = {("www.gprocket.test", "A"): ["192.0.2.80", "192.0.2.81"],
            ("www.gprocket.test", "AAAA"): ["2001:db8::80"],
            ("gprocket.test", "AAAA"): ["2001:db8::53"]}

async def client(number, results):
    loop = asyncio.get_running_loop()
    family, server = (socket.AF_INET, "127.0.0.1") if number % 2 else (socket.AF_INET6, "::1")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for _ in range(20):
        name, qtype = random.choice(list(EXPECTED))
        query = DNSRecord.question(name, qtype)
        await loop.sock_sendto(sock, query.pack(), (server, 53))
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        except TimeoutError:
            results["lost"] += 1
            continue
        reply = DNSRecord.parse(data)
        got = sorted(str(rr.rdata) for rr in reply.rr)
        ok = reply.header.id == query.header.id and got == EXPECTED[(name, qtype)]
        results["answered" if ok else "wrong"] += 1
    sock.close()

async def main():
    results = {"answered": 0, "wrong": 0, "lost": 0}
    await asyncio.gather(*(client(n, results) for n in range(50)))
    print(json.dumps(results))

asyncio.run(main())
"""


def _lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for _ in range(count):
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            pytest.fail(f"example exited {proc.returncode}:\n{''.join(lines)}"
                        f"{proc.stdout.read()}")
        lines.append(line.strip())
    return lines


def test_async_dns_example_on_port_53(unpriv_user: priv.User, netns: priv.Netns,
                                      installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, DNS], netns=netns,
                           stderr=subprocess.STDOUT, env={"GPROCKET_HELPER": str(helper)})
    try:
        assert _lines(proc, 2) == ["dns udp on [::]:53 via broker",
                                   "dns tcp on [::]:53 via broker"]
        for server in ("127.0.0.1", "::1"):
            for args, expected in ((["www.gprocket.test", "A"], "192.0.2.80\n192.0.2.81"),
                                   (["v6.gprocket.test", "AAAA"], "2001:db8::6"),
                                   (["+tcp", "gprocket.test", "AAAA"], "2001:db8::53")):
                got = netns.exec(["dig", f"@{server}", "-p", "53", "+short", "+tries=1",
                                  *args], check=False)
                assert sorted(got.stdout.split()) == sorted(expected.split()), (server, args)
        outside = netns.exec(["dig", "@127.0.0.1", "-p", "53", "example.com", "A"])
        assert "status: REFUSED" in outside.stdout
        load = netns.exec([priv.VENV_PYTHON, "-c", LOAD], timeout=120, env=priv.user_env())
        assert load.stdout.splitlines()[-1] == '{"answered": 1000, "wrong": 0, "lost": 0}'
        owner = netns.exec(["ss", "-Hlnup", "sport = :53"]).stdout
        assert f"pid={proc.pid}," in owner
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_async_ping_example(unpriv_user: priv.User, netns: priv.Netns,
                            installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy="allow group:gprocket raw icmp,icmpv6\n")
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, PING], netns=netns,
                         env={"GPROCKET_HELPER": str(helper)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("127.0.0.1: 3/3 replies via raw (broker)") for line in lines), lines
    assert any(line.startswith("::1: 3/3 replies via raw (broker)") for line in lines), lines
    assert "127.0.0.0/24: 254 of 254 alive" in lines
    assert sum("heartbeat" in line for line in lines) >= 2
