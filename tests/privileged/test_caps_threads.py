"""Capability sets raised around one call and left as found (root).

Capabilities are per thread, so these tests change them on a throwaway
native thread of the (root) test process; the unprivileged scenarios (ambient
capabilities, a file-capability interpreter) are beside this file; reading the
sets without privilege is in tests/ladder/test_caps.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import _prctl
import pytest

from gprocket._ladder.caps import (
    CAP_NET_BIND_SERVICE,
    CAP_NET_RAW,
    MissingCapability,
    drop_effective,
    effective_among,
    raised,
    read_sets,
)


def on_thread(work: Callable[[], Any]) -> Any:
    """Run `work` on a fresh native thread whose capabilities die with it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed back to the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]






def test_drop_effective_empties_the_set_and_raised_still_binds_low_ports() -> None:
    def work() -> tuple[int, int, int, int]:
        drop_effective()
        empty = read_sets().effective
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(PermissionError):
                sock.bind(("127.0.0.1", 1))
            with raised([CAP_NET_BIND_SERVICE]):
                during = read_sets().effective
                sock.bind(("127.0.0.1", 1))
            port = sock.getsockname()[1]
        finally:
            sock.close()
        return empty, during, read_sets().effective, port

    empty, during, after, port = on_thread(work)
    assert empty == 0
    assert during == 1 << CAP_NET_BIND_SERVICE
    assert after == 0
    assert port == 1


def test_raised_leaves_an_already_effective_capability_effective() -> None:
    def work() -> tuple[int, int]:
        drop_effective()
        _prctl.set_caps([CAP_NET_RAW], [], [], [], [], [])
        before = read_sets().effective
        with raised([CAP_NET_RAW, CAP_NET_BIND_SERVICE]):
            pass
        return before, read_sets().effective

    before, after = on_thread(work)
    assert before == after == 1 << CAP_NET_RAW


def test_raised_lowers_even_when_the_call_fails() -> None:
    def work() -> int:
        drop_effective()
        with pytest.raises(OSError), raised([CAP_NET_BIND_SERVICE]):
            socket.getaddrinfo("", None, family=12345)
        return read_sets().effective

    assert on_thread(work) == 0


def test_missing_capability_changes_nothing() -> None:
    def work() -> tuple[tuple[int, ...], int, int]:
        drop_effective()
        _prctl.set_caps([], [], [], [], [CAP_NET_RAW], [])  # gone from permitted for good
        before = read_sets()
        try:
            with raised([CAP_NET_BIND_SERVICE, CAP_NET_RAW]):
                raise AssertionError("must not run")
        except MissingCapability as err:
            missing = err.missing
        after = read_sets()
        return missing, before.effective ^ after.effective, before.permitted ^ after.permitted

    missing, eff_changed, prm_changed = on_thread(work)
    assert missing == (CAP_NET_RAW,)
    assert eff_changed == prm_changed == 0


def test_capabilities_are_per_thread() -> None:
    main_before = read_sets().effective
    on_thread(drop_effective)
    assert read_sets().effective == main_before != 0




def test_effective_among_reports_only_effective_ones() -> None:
    def work() -> tuple[tuple[int, ...], tuple[int, ...]]:
        drop_effective()
        empty = effective_among([CAP_NET_RAW, CAP_NET_BIND_SERVICE])
        _prctl.set_caps([CAP_NET_RAW], [], [], [], [], [])
        return empty, effective_among([CAP_NET_RAW, CAP_NET_BIND_SERVICE])

    assert on_thread(work) == ((), (CAP_NET_RAW,))
