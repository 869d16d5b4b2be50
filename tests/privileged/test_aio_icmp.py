"""gprocket.aio's ICMP as an unprivileged user: raw ICMP/ICMPv6 from the helper.

The namespace's ping_group_range is closed, so every socket is a raw one
from the broker (policy ``raw icmp,icmpv6``), which a gated wrapper starts
only once a ticker task has seen the loop turn 20 times; on the compiled engine and
on the pure-Python one (GPROCKET_ICMP_ENGINE). A cancelled sweep stops
sending at once: the namespace's own ICMP counters (/proc/net/snmp) do not
move after the cancellation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

POLICY = "allow group:gprocket raw icmp,icmpv6\n"

PINGS = r"""
import asyncio, json, os
from gprocket import aio
""" + priv.ASYNC_GATE_TICKER + r"""
async def main():
    state = {"ticks": 0}
    beat = asyncio.get_running_loop().create_task(gate_ticker(state))
    slow = os.environ["SLOW_HELPER"]
    one = await aio.ping("127.0.0.1", count=3, interval=0.02, timeout=1, helper=slow)
    beat.cancel()
    six = await aio.ping("::1", count=2, interval=0.02, timeout=1)
    targets = [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(400)] + ["::1"]
    hosts = await aio.multiping(targets, timeout=2)
    order = []
    async with aio.multiping_iter(["127.0.0.1", "::1", "127.0.0.9"], count=2,
                                  interval=0.01) as it:
        async for host in it:
            order.append(host.address)
    trace = await aio.traceroute("127.0.0.1", max_hops=4, count=1)
    await aio.aclose_all()
    print(json.dumps({
        "one": [one.is_alive, len(one.replies), one.transport, one.rung],
        "six": [six.is_alive, len(six.replies), six.transport, six.rung],
        "alive": sum(h.is_alive for h in hosts), "count": len(hosts),
        "in_order": [h.address for h in hosts] == targets,
        "iter": sorted(order), "trace": [len(trace.hops), trace.hops[-1].reached],
        "ticks": state["ticks"]}))

asyncio.run(main())
"""


@pytest.mark.parametrize("engine", ["c", "python"])
def test_raw_icmp_and_icmpv6_through_the_broker_while_it_starts_slowly(
        engine: str, unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy=POLICY)
    gate = priv.gated_wrapper(helper, unpriv_user)
    out = priv.run_json(unpriv_user, PINGS, netns=netns,
                        env={"GPROCKET_HELPER": str(helper), **gate.env,
                             "GPROCKET_ICMP_ENGINE": engine})
    assert out["one"] == [True, 3, "raw", "broker"]
    assert out["six"] == [True, 2, "raw", "broker"]
    assert out["count"] == 401 and out["alive"] == 401 and out["in_order"]
    assert out["iter"] == ["127.0.0.1", "127.0.0.9", "::1"]
    assert out["trace"] == [1, True]
    assert out["ticks"] >= priv.GATE_OPENS_AT, out  # the loop turned while the helper waited


CANCEL = r"""
import asyncio, json, os, time
from gprocket import aio

def out_echos():
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Icmp:")]
    return int(rows[1][rows[0].index("OutEchos")])

async def sent(count, since):
    # Counted, not timed: a host stall delays the sweep, it cannot shorten it.
    deadline = time.monotonic() + 30
    while out_echos() - since < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {count} echoes sent in 30 s")
        await asyncio.sleep(0.01)

async def main():
    targets = [f"127.0.1.{i}" for i in range(1, 21)]
    before_fds = len(os.listdir("/proc/self/fd"))
    start = out_echos()
    task = asyncio.get_running_loop().create_task(
        aio.multiping(targets, count=1000, interval=0.02, timeout=1))
    await sent(20 * 10, start)
    task.cancel()
    at_cancel = out_echos()
    try:
        await task
        outcome = "finished"
    except asyncio.CancelledError:
        outcome = "cancelled"
    await asyncio.sleep(0.5)
    after = out_echos()
    # The iterator form stops the same way when closed before it is done.
    it = aio.multiping_iter(targets, count=1000, interval=0.02, timeout=1)
    iter_start = out_echos()
    pending = asyncio.ensure_future(it.__anext__())
    await sent(20 * 10, iter_start)
    first = "a host" if pending.done() else "none yet"
    pending.cancel()
    try:
        await pending
    except asyncio.CancelledError:
        pass
    await it.aclose()
    closed_at = out_echos()
    await asyncio.sleep(0.5)
    await aio.aclose_all()
    print(json.dumps({"outcome": outcome, "sent_before": at_cancel - start,
                      "sent_after_cancel": after - at_cancel,
                      "first": first, "iter_sent": closed_at - iter_start,
                      "sent_after_close": out_echos() - closed_at,
                      "fds": len(os.listdir("/proc/self/fd")) - before_fds}))

asyncio.run(main())
"""


def test_a_cancelled_multiping_stops_sending_at_once(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy=POLICY)
    out = priv.run_json(unpriv_user, CANCEL, netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert out["outcome"] == "cancelled"
    assert out["sent_before"] >= 20 * 10  # it was sending every 20 ms to 20 targets
    assert out["sent_after_cancel"] == 0
    assert out["first"] == "none yet" and out["iter_sent"] >= 20 * 10
    assert out["sent_after_close"] == 0
    assert out["fds"] == 0
