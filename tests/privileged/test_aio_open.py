"""gprocket.aio.open as an unprivileged user through an installed helper.

Servers on low ports for asyncio (start_server, create_datagram_endpoint,
loop.sock_*), a ticker task that keeps running while a slow helper answers
(the helper waits, before it execs, for the ticker's 20th turn: a loop that
waited for the helper would never get there), the same PrivilegeError as the
gevent front, and cancellations that leave no descriptor and no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

PRELUDE = r"""
import asyncio, json, os, socket, sys, time
import gprocket
from gprocket import aio
HELPER = os.environ['GPROCKET_HELPER']
SLOW = os.environ.get('SLOW_HELPER', HELPER)
GATE = os.environ.get('HELPER_GATE')

def open_gate():
    open(GATE, 'a').close()
""" + priv.ASYNC_GATE_TICKER + r"""

async def settled(ready, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"not settled within {seconds} s")
        await asyncio.sleep(0.01)

def fds():
    return sorted(os.listdir('/proc/self/fd'), key=int)

def children():
    me = os.getpid()
    with open(f'/proc/{me}/task/{me}/children') as f:
        return [int(p) for p in f.read().split()]
"""

SERVERS = PRELUDE + r"""
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)

async def handle(reader, writer):
    writer.write((await reader.readline()).upper())
    await writer.drain()
    writer.close()

async def main():
    strategy = sys.argv[1]
    loop = asyncio.get_running_loop()
    beat = {"ticks": 0}
    ticker = loop.create_task(gate_ticker(beat))
    udp, tcp = await asyncio.gather(
        aio.open(53, protocol='udp', ip='127.0.0.1', strategies=strategy, helper=SLOW),
        aio.open(80, protocol='tcp', ip='127.0.0.1', strategies=strategy, helper=SLOW))
    ticker.cancel()
    out = {**beat, "rungs": [udp.rung, tcp.rung],
           "blocking": [udp.getblocking(), tcp.getblocking()],
           "ports": [udp.getsockname()[1], tcp.getsockname()[1]]}
    transport, _ = await loop.create_datagram_endpoint(Echo, sock=udp)
    server = await asyncio.start_server(handle, sock=tcp)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    await loop.sock_sendto(client, b'ping', ('127.0.0.1', 53))
    out["udp"] = (await asyncio.wait_for(loop.sock_recv(client, 100), 5)).decode()
    client.close()
    reader, writer = await asyncio.open_connection('127.0.0.1', 80)
    writer.write(b'hello\n')
    out["tcp"] = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    writer.close()
    server.close()
    await server.wait_closed()
    transport.close()
    await aio.aclose_all()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.parametrize("strategy", ["broker", "helper"])
def test_udp_and_tcp_servers_on_low_ports_while_a_slow_helper_answers(
        strategy: str, unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    gate = priv.gated_wrapper(helper, unpriv_user)
    out = priv.run_json(unpriv_user, SERVERS.replace("sys.argv[1]", repr(strategy)),
                        netns=netns, env={"GPROCKET_HELPER": str(helper), **gate.env})
    assert out["rungs"] == [strategy, strategy]
    assert out["blocking"] == [False, False]
    assert out["ports"] == [53, 80]
    assert out["udp"] == "PING"
    assert out["tcp"] == "HELLO"
    # The helper waited for the loop's 20th turn, so the loop turned while it waited.
    assert out["ticks"] >= priv.GATE_OPENS_AT, out


ERRORS = PRELUDE + r"""
def attempts(err):
    return {"type": type(err).__name__, "fix": err.fix,
            "attempts": [[a.rung, a.reason, a.errno] for a in err.attempts]}

async def main():
    out = {}
    try:
        await aio.open(53, protocol='udp', ip='127.0.0.1')
    except gprocket.PrivilegeError as err:
        out["aio"] = attempts(err)
    try:
        gprocket.open(53, protocol='udp', ip='127.0.0.1')
    except gprocket.PrivilegeError as err:
        out["gevent"] = attempts(err)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_refusal_lists_every_rung_as_the_gevent_front_does(
        other_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    out = priv.run_json(other_user, ERRORS, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out["aio"] == out["gevent"]
    rungs = [rung for rung, _, _ in out["aio"]["attempts"]]
    assert rungs == ["inherited", "plain", "capabilities", "broker", "sudo"], out
    assert out["aio"]["fix"].startswith("join group"), out


CANCEL = PRELUDE + r"""
async def main():
    strategy = sys.argv[1]
    # Warm up: the broker (if any) runs, and the loop's own descriptors exist.
    open_gate()
    os.close(await aio.open_fd(53, protocol='udp', ip='127.0.0.1', strategies=strategy,
                               helper=SLOW))
    if strategy == 'broker':
        await aio.aclose_all()  # the next requests wait for a broker that cannot start yet
    await settled(lambda: not children())
    before, kids_before = fds(), children()
    os.unlink(GATE)  # shut: the helpers started next wait
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(aio.open_fd(53, protocol='udp', ip='127.0.0.1',
                                          strategies=strategy, helper=SLOW))
             for _ in range(3)]
    tasks += [loop.create_task(aio.open_fd(0, protocol='icmp', strategies=strategy,
                                           helper=SLOW)) for _ in range(10)]
    # Every request is with a helper waiting at the shut gate (13 one-shots, or one broker).
    expected = 13 if strategy == 'helper' else 1
    await settled(lambda: len(children()) >= expected)
    during = len(children())
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    # The helpers go on; replies still on their way are read and closed.
    open_gate()
    if strategy == 'helper':
        await settled(lambda: not children() and fds() == before)
    else:
        # The broker answers in order: once a later request is answered, every
        # cancelled one's reply has been read (and its descriptor closed).
        os.close(await aio.open_fd(54, protocol='udp', ip='127.0.0.1', strategies=strategy,
                                   helper=SLOW))
    after, kids_after = fds(), children()
    # Port 53 is free again: no cancelled request holds it.
    again = await aio.open(53, protocol='udp', ip='127.0.0.1', strategies=strategy,
                           helper=HELPER)
    again.close()
    await aio.aclose_all()
    print(json.dumps({"cancelled": cancelled, "during": during,
                      "fds_before": before, "fds_after": after,
                      "kids_before": len(kids_before), "kids_after": len(kids_after),
                      "kids_at_end": len(children())}))

asyncio.run(main())
"""


@pytest.mark.parametrize("strategy", ["broker", "helper"])
def test_cancelled_acquisitions_leak_no_descriptor_and_no_process(
        strategy: str, unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    gate = priv.gated_wrapper(helper, unpriv_user)
    out = priv.run_json(unpriv_user, CANCEL.replace("sys.argv[1]", repr(strategy)),
                        netns=netns, env={"GPROCKET_HELPER": str(helper), **gate.env})
    assert out["cancelled"] == 13
    # While the requests were pending, helpers were running (13 one-shots, or one broker).
    assert out["during"] == (13 if strategy == "helper" else 1), out
    if strategy == "helper":
        assert out["kids_after"] == 0
        assert out["fds_after"] == out["fds_before"]
    else:
        # The broker started for the cancelled requests stays, with its three
        # descriptors (channel, pidfd, stderr); nothing else remains.
        assert out["kids_after"] == 1
        assert len(out["fds_after"]) == len(out["fds_before"]) + 3, out
    assert out["kids_at_end"] == 0


NAMESPACES = PRELUDE + r"""
from gprocket.aio._broker import get_broker
NS = sys.argv[1]

async def main():
    socks = [await aio.open(0, protocol='udp', namespace=ns, strategies='broker')
             for ns in (None, NS, None, NS)]
    one = await aio.open_fd(0, protocol='udp', namespace=NS, strategies='helper')
    brokers = [get_broker(HELPER, ns) for ns in (None, NS)]
    out = {"rungs": [s.rung for s in socks], "starts": [b.starts for b in brokers],
           "pids": [b.pid for b in brokers]}
    try:
        await brokers[0].request(gprocket.SocketRequest(0, protocol='udp', namespace=NS))
    except ValueError as err:
        out["mismatch"] = str(err)
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    os.close(one)
    await aio.aclose_all()

asyncio.run(main())
"""


def test_one_async_broker_per_namespace_entered_at_its_start(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy=f"allow * netns {netns.name}\n")
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c",
                                         NAMESPACES.replace("sys.argv[1]", repr(netns.name))],
                           env={"GPROCKET_HELPER": str(helper)}, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        out = json.loads(line)
        assert out["rungs"] == ["broker"] * 4
        assert out["starts"] == [1, 1]
        plain, inside = out["pids"]
        assert os.stat(f"/proc/{plain}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{inside}/ns/net").st_ino == os.stat(netns.path).st_ino
        assert "serves namespace None" in out["mismatch"]
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        priv.stop(proc)
