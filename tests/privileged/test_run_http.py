"""`gprocket run -m http.server 80` as an unprivileged user; curl is the witness."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


@pytest.fixture
def docroot() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gps-www-"))
    try:
        root.chmod(0o755)
        (root / "hello.txt").write_text("hello from port 80\n")
        (root / "hello.txt").chmod(0o644)
        yield root
    finally:
        for child in root.iterdir():
            child.unlink()
        root.rmdir()


def start(user: priv.User, netns: priv.Netns, helper: Path,
          argv: list[str]) -> subprocess.Popen[str]:
    """Start `argv` as `user` in `netns`; return once it printed its first line."""
    proc = priv.popen_argv(user, argv, netns=netns,
                           env={"GPROCKET_HELPER": str(helper), "PYTHONUNBUFFERED": "1"},
                           stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if proc.poll() is not None or not first:
        rest = proc.stdout.read()
        proc.wait()
        pytest.fail(f"exited {proc.returncode}:\n{first}{rest}")
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out or ""


def test_http_server_on_port_80_answers_curl_over_ipv4_and_ipv6(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path], docroot: Path) -> None:
    helper = installed_helper(mode="caps")
    # Unprivileged without gprocket: the same command is refused.
    direct = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "http.server", "80"],
                           netns=netns, timeout=30)
    assert direct.returncode != 0
    assert "Permission denied" in direct.stderr

    # '--bind ::' makes http.server's DualStackServer clear IPV6_V6ONLY before
    # bind (without it, getaddrinfo here picks 0.0.0.0, with or without
    # gprocket); the ladder's socket must carry that option over.
    proc = start(unpriv_user, netns, helper,
                 [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", "-m", "http.server",
                  "--bind", "::", "--directory", str(docroot), "80"])
    try:
        for flag, url in (("-4", "http://127.0.0.1:80/hello.txt"),
                          ("-6", "http://[::1]:80/hello.txt")):
            got = netns.exec(["curl", "-sS", "--max-time", "20", flag, url], check=False)
            assert got.returncode == 0, got.stderr
            assert got.stdout == "hello from port 80\n"
        owner = netns.exec(["ss", "-Hltnp", "sport = :80"]).stdout
        assert f"pid={proc.pid}," in owner  # the program itself holds port 80
    finally:
        log = stop(proc)
    assert "GET /hello.txt" in log
    assert os.path.exists(docroot / "hello.txt")
