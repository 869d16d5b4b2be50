"""Capability sets read from /proc, and their names: no capability needed."""

from __future__ import annotations

from gprocket._ladder.caps import (
    CAP_NET_RAW,
    MissingCapability,
    cap_name,
    read_sets,
)


def _proc_field(name: str) -> int:
    with open("/proc/thread-self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(name)


def test_read_sets_matches_proc() -> None:
    sets = read_sets()
    assert sets.effective == _proc_field("CapEff")
    assert sets.permitted == _proc_field("CapPrm")
    assert sets.ambient == _proc_field("CapAmb")


def test_cap_names() -> None:
    assert cap_name(CAP_NET_RAW) == "CAP_NET_RAW"
    assert str(MissingCapability((CAP_NET_RAW,))) == "CAP_NET_RAW not in the permitted set"
