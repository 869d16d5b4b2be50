"""examples/async_server.py: asyncio on port 443 (start_server) and 53
(create_datagram_endpoint) as an unprivileged user, both ways: sockets from
``gprocket.open_fd()`` passed as ``sock=``, and an asyncio program binding by
address under ``gprocket run``. curl and a plain UDP client are the peers."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

EXAMPLE = str(priv.EXAMPLES / "async_server.py")
UDP_CLIENT = (
    "import socket, sys\n"
    "host = sys.argv[1]\n"
    "family = socket.AF_INET6 if ':' in host else socket.AF_INET\n"
    "s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(10)\n"
    "s.sendto(b'over udp', (host, 53))\n"
    "sys.stdout.write(s.recv(100).decode())\n"
)


def start(user: priv.User, netns: priv.Netns, helper: Path,
          argv: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Start the example; return it once it printed where it serves."""
    proc = priv.popen_argv(user, argv, netns=netns, stderr=subprocess.STDOUT,
                           env={"GPROCKET_HELPER": str(helper), "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(2)]
    if proc.poll() is not None or not all(lines):
        proc.kill()
        pytest.fail(f"exited {proc.poll()}:\n{lines}\n{proc.communicate()[0]}")
    return proc, lines


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    return proc.communicate(timeout=30)[0] or ""


def curl(netns: priv.Netns, url: str) -> str:
    got = netns.exec(["curl", "-sS", "-g", "--max-time", "10", url], check=False)
    assert got.returncode == 0, got.stderr
    return got.stdout


def udp(netns: priv.Netns, host: str) -> str:
    got = netns.exec([priv.VENV_PYTHON, "-c", UDP_CLIENT, host], env=priv.user_env(),
                     check=False)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_ladder_sockets_passed_as_sock_serve_ipv4_and_ipv6(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc, lines = start(unpriv_user, netns, helper, [priv.VENV_PYTHON, EXAMPLE])
    try:
        assert lines == ["http tcp on :: port 443", "echo udp on :: port 53"]
        # "::" from family="unspec" is dual-stack: IPv4 clients reach it too.
        assert curl(netns, "http://[::1]:443/") == "hello from asyncio on ::1\n"
        assert curl(netns, "http://127.0.0.1:443/") == "hello from asyncio on ::ffff:127.0.0.1\n"
        assert udp(netns, "::1") == "echo: over udp"
        assert udp(netns, "127.0.0.1") == "echo: over udp"
        for flags, port in (("ltnp", 443), ("lunp", 53)):
            owner = netns.exec(["ss", f"-H{flags}", f"sport = :{port}"]).stdout
            assert f"pid={proc.pid}," in owner, owner
    finally:
        stop(proc)


def test_asyncio_binding_by_address_works_under_gprocket_run(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    argv = [EXAMPLE, "--bind-yourself", "--ip", "::1"]
    # Unprivileged without gprocket: the kernel refuses port 443.
    direct = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, *argv], netns=netns, timeout=30)
    assert direct.returncode != 0
    assert "PermissionError: [Errno 13]" in direct.stderr

    proc, lines = start(unpriv_user, netns, helper,
                        [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", *argv])
    try:
        assert lines == ["http tcp on ::1 port 443", "echo udp on ::1 port 53"]
        assert curl(netns, "http://[::1]:443/") == "hello from asyncio on ::1\n"
        assert udp(netns, "::1") == "echo: over udp"
        owner = netns.exec(["ss", "-Hltnp", "sport = :443"]).stdout
        assert f"pid={proc.pid}," in owner, owner
    finally:
        log = stop(proc)
    assert "Traceback" not in log
