"""gprocket.tuntap: argument validation, refused before any rung runs, so no privilege is needed."""

from __future__ import annotations

import os

import pytest

from gprocket import tuntap
from gprocket._errors import GprocketError


@pytest.mark.parametrize("name", ["../x", "a/b", "-x", ".hidden", "x" * 16, "", "tun%d"])
def test_open_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        tuntap.open(name)


@pytest.mark.parametrize("namespace", ["../x", "/proc/1/ns/net", "/run/netns/lab", "..", ".",
                                       "-lab", "x" * 32, ""])
def test_open_refuses_namespace_paths(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        tuntap.open("gpt0", namespace=namespace)


def test_open_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="mode"):
        tuntap.open("gpt0", "tan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mtu"):
        tuntap.open("gpt0", mtu=10)
    with pytest.raises(ValueError, match="addr4"):
        tuntap.open("gpt0", address="fd00::1/64")
    with pytest.raises(ValueError, match="addr6"):
        tuntap.open("gpt0", address6="10.0.0.1/24")
    with pytest.raises(TypeError, match="packet_info"):
        tuntap.open("gpt0", packet_info="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        tuntap.open(7)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../mem", "/dev/mem", "mem", "kvm", "net/../mem", "net/tun/",
                                  "net//tun", "./net/tun"])
def test_open_device_allows_only_the_allowlist(name: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        tuntap.open_device(name)
    assert name not in tuntap.DEVICE_ALLOWLIST


def test_attach_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="name"):
        tuntap.attach("../gpt0")


def test_device_refuses_a_descriptor_that_is_not_tun() -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        with pytest.raises(GprocketError, match="10:200"):
            tuntap.TunTapDevice(fd, packet_info=False)
    finally:
        os.close(fd)


def test_packet_info_flags() -> None:
    assert tuntap.PacketInfo(0x0001, 0x0800).truncated
    assert not tuntap.PacketInfo(0, 0x86DD).truncated
