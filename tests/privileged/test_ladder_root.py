"""The ladder in-process as root: the capabilities rung, the helper rung and namespaces."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import gevent
import pytest
from support import privileged as priv

import gprocket


def test_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # A privileged process ignores GPROCKET_STRATEGIES (issue 12, finding 7; an
    # unprivileged one honours it: tests/privileged/test_environ_untrusted.py).
    monkeypatch.setenv("GPROCKET_STRATEGIES", "plain,teleport")
    with gprocket.open(53, protocol="udp", ip="127.0.0.1") as sock:
        assert sock.rung == "plain"  # the default ladder, not the unknown name
    with gprocket.open(53, protocol="udp", ip="127.0.0.1", strategies="capabilities") as sock:
        assert sock.rung == "capabilities"
    with pytest.raises(ValueError, match="unknown strategy 'teleport'"):
        gprocket.open(0, protocol="udp", strategies="plain,teleport")


def test_namespaced_request_in_process_for_root(netns) -> None:  # type: ignore[no-untyped-def]
    home = os.readlink("/proc/thread-self/ns/net")
    sock = gprocket.open(5353, protocol="udp", ip="127.0.0.1", namespace=netns.name)
    try:
        assert sock.rung == "plain"
        assert os.readlink("/proc/thread-self/ns/net") == home
        code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                "s.sendto(b'inside', ('127.0.0.1', 5353))")
        netns.exec([sys.executable, "-c", code])
        sock.settimeout(10)
        assert sock.recv(100) == b"inside"
        # The host's loopback port 5353 is not the namespace's.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 5353))
    finally:
        sock.close()
    with pytest.raises(OSError) as info:
        gprocket.open(53, protocol="udp", namespace="gprocket-core-none")
    assert info.value.errno == errno.ENOENT


def test_ticker_runs_while_a_slow_helper_is_awaited(tmp_path) -> None:  # type: ignore[no-untyped-def]
    real = Path(gprocket.__file__).parent / "_bin" / "gprocket-helper"
    gate = tmp_path / "gate"
    slow = tmp_path / "slow-helper"
    slow.write_text(priv.gate_script(gate, real))
    slow.chmod(0o755)
    ticks = []

    def ticker() -> None:
        # Turn GATE_OPENS_AT opens the gate the helper waits at: a hub blocked on
        # the helper never gets there, and the helper gives up.
        while True:
            ticks.append(1)
            if len(ticks) == priv.GATE_OPENS_AT:
                gate.touch()
            gevent.sleep(0.005)

    tick = gevent.spawn(ticker)
    try:
        gevent.sleep(0)
        sock = gprocket.open(0, protocol="udp", strategies="helper", helper=str(slow))
    finally:
        tick.kill()
    assert sock.rung == "helper"
    sock.close()
    assert len(ticks) >= priv.GATE_OPENS_AT
