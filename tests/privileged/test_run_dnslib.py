"""A third-party DNS server written for the standard library (dnslib's
DNSServer on socketserver) runs unmodified under `gprocket run` on port 53
as an unprivileged user and answers dig over UDP and TCP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


def dig(netns: priv.Netns, *args: str) -> subprocess.CompletedProcess[str]:
    return netns.exec(["dig", "@127.0.0.1", "-p", "53", "+short", "+tries=1", "+timeout=2",
                       *args], check=False)


def wait_for_answer(netns: priv.Netns, proc: subprocess.Popen[str], *args: str) -> str:
    """dig until the server answers; fail with its output if it died first."""
    for _ in range(200):
        got = dig(netns, *args)
        if got.returncode == 0 and got.stdout.strip():
            return got.stdout.strip()
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{proc.communicate()[0]}")
        time.sleep(0.05)
    pytest.fail(f"no answer to dig {args}")


def test_dnslib_fixedresolver_answers_dig_on_port_53(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    argv = [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", "-m", "dnslib.fixedresolver",
            "--response", ". 60 IN A 192.0.2.53", "--port", "53", "--tcp"]
    proc = priv.popen_argv(unpriv_user, argv, netns=netns, stderr=subprocess.STDOUT,
                           env={"GPROCKET_HELPER": str(helper), "PYTHONUNBUFFERED": "1"})
    try:
        assert wait_for_answer(netns, proc, "anything.example", "A") == "192.0.2.53"
        # dnslib starts its UDP server's thread before it binds the TCP one.
        assert wait_for_answer(netns, proc, "+tcp", "other.example", "A") == "192.0.2.53"
        listening = netns.exec(["ss", "-Hlnup", "sport = :53"]).stdout
        assert f"pid={proc.pid}," in listening
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    assert "Starting Fixed Resolver" in log
