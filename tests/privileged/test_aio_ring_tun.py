"""gprocket.aio's capture ring and TUN device as an unprivileged user.

A veth pair joins two fresh namespaces: trafgen in one sends frames that an
``async for`` over the TPACKET_V3 ring receives in the other. A TUN device
made through the helper answers iputils ping from asyncio (read the echo
request, write the reply). The helper is slow to start: it waits, before it
execs, for the ticker task's 20th turn, which only a loop that kept turning reaches.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import privileged as priv
from support.lab import VethLab, ether_frame, trafgen_config, veth_lab

pytestmark = pytest.mark.privileged

TICKER = r"""
import asyncio, json, os, sys
from gprocket import aio
""" + priv.ASYNC_GATE_TICKER + r"""
def start_ticker():
    state = {"ticks": 0}
    return state, asyncio.get_running_loop().create_task(gate_ticker(state))

def opened(state):
    return {"open_ticks": state["ticks"]}
"""

RING = TICKER + r"""
async def count(ring, types):
    # Frames are views into the ring: they live only in this function.
    frames = 0
    async for block in ring:
        for frame in block:
            frames += 1
            types.add(bytes(frame[12:14]).hex())
    return frames

async def main():
    state, beat = start_ticker()
    sizes = set()
    async with await aio.ring(sys.argv[1], 0x88B5, idle=2.0, block_size=1 << 16,
                              block_count=8, timeout_ms=5) as ring:
        at_open = opened(state)
        print("ready", flush=True)
        at_ready = state["ticks"]
        frames = await count(ring, sizes)
        rung, stats = ring.sock.rung, ring.rx.stats()
    beat.cancel()
    print(json.dumps({"frames": frames, "types": sorted(sizes), "rung": rung,
                      "ticks": state["ticks"] - at_ready, "dropped": stats.dropped,
                      **at_open}))

asyncio.run(main())
"""


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with veth_lab("gpa") as made:
        yield made


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"not ready (exit {proc.returncode}): {line}{out}\n{err}")


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n--- stderr\n{err}"
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _loop_kept_turning(result: dict[str, Any]) -> None:
    """The helper waited for the loop's 20th turn, so the loop turned meanwhile."""
    assert result["open_ticks"] >= priv.GATE_OPENS_AT, result


def test_async_ring_receives_the_peers_frames(
        lab: VethLab, unpriv_user: priv.User,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy="allow group:gprocket packet\n")
    gate = priv.gated_wrapper(helper, unpriv_user)
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", RING, lab.if_a],
                           netns=priv.Netns(lab.ns_a),
                           env={"GPROCKET_HELPER": str(gate.wrapper), **gate.env})
    try:
        _ready(proc)
        frame = ether_frame(lab.mac_a, lab.mac_b, 0x88B5, b"async ring " * 8)
        other = ether_frame(lab.mac_a, lab.mac_b, 0x88B6, b"not for us")
        for sent in (frame, other):
            lab.run_b(["trafgen", "-o", lab.if_b, "-P", "1", "-n", "300", "-q", "-H",
                       trafgen_config(sent)])
        result = _result(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert result["rung"] == "broker"
    assert result["frames"] == 300
    assert result["types"] == ["88b5"]
    assert result["dropped"] == 0
    assert result["ticks"] > 0
    _loop_kept_turning(result)


TUN = TICKER + r"""
import struct

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def reply_to(packet):
    ihl = (packet[0] & 15) * 4
    header = bytearray(packet[:ihl])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    icmp = bytearray(packet[ihl:])
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    return bytes(header + icmp)

async def main():
    state, beat = start_ticker()
    async with await aio.open_tun(sys.argv[1]) as dev:
        at_open = opened(state)
        print("ready", flush=True)
        answered = 0
        while answered < 3:
            packet = await dev.read(timeout=10)
            if packet[0] >> 4 == 4 and packet[9] == 1 and packet[20] == 8:
                await dev.write(reply_to(packet))
                answered += 1
        info = [dev.name, dev.mode, dev.rung]
        closed_reader = asyncio.get_running_loop().create_task(dev.read())
        await asyncio.sleep(0.05)
    try:
        await closed_reader
        woke = "no"
    except OSError as err:
        woke = err.errno
    beat.cancel()
    print(json.dumps({"answered": answered, "info": info, "ticks": state["ticks"],
                      "woke": woke, **at_open}))

asyncio.run(main())
"""


def test_async_tun_answers_ping(unpriv_user: priv.User, netns: priv.Netns,
                                installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps", policy="allow group:gprocket tun gpt*\n")
    gate = priv.gated_wrapper(helper, unpriv_user)
    name = "gptaio0"
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", TUN, name], netns=netns,
                           env={"GPROCKET_HELPER": str(gate.wrapper), **gate.env})
    try:
        _ready(proc)
        netns.exec(["ip", "addr", "add", "10.77.0.1/24", "dev", name])
        netns.exec(["ip", "link", "set", name, "up"])
        ping = netns.exec(["ping", "-c", "3", "-i", "0.2", "-W", "5", "10.77.0.2"],
                          check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert " 0% packet loss" in ping.stdout
        result = _result(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert result["answered"] == 3
    assert result["info"] == [name, "tun", "broker"]
    assert result["ticks"] > 0
    assert result["woke"] == 9  # EBADF: closing woke the pending read
    _loop_kept_turning(result)
