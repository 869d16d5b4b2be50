"""Servers that bind one specific IPv6 address (::1) on a low port, as an
unprivileged user through an installed helper.

Unmodified third-party programs under `gprocket run` (http.server, dnslib's
resolver over UDP and TCP, gunicorn with gevent workers and a HUP) leave
IPV6_V6ONLY at 0 and bind ::1; the kernel then makes the socket IPv6-only,
and the ladder's socket must be what the kernel would have made (they used
to die with EBADF). ``gprocket.open(family="unspec", ip=...)`` follows the
address the same way. Peers nobody here wrote (curl, dig, ss) are the
witnesses; everything runs in a network namespace made for the test.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


def helper_env(helper: Path) -> dict[str, str]:
    return {"GPROCKET_HELPER": str(helper), "PYTHONUNBUFFERED": "1"}


def run_argv(*args: str) -> list[str]:
    return [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", *args]


def wait_for(probe: Callable[[], str | None], proc: subprocess.Popen[str], what: str,
             seconds: float = 30.0) -> str:
    """probe() until it returns text; fail with the server's output if it died first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"{what}: the server exited {proc.returncode}:\n{stop(proc)}")
        time.sleep(0.1)
    pytest.fail(f"{what}: no answer within {seconds} s:\n{stop(proc)}")


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def curl(netns: priv.Netns, url: str) -> str | None:
    got = netns.exec(["curl", "-sS", "-g", "--max-time", "5", url], check=False)
    return got.stdout if got.returncode == 0 else None


def listeners(netns: priv.Netns, flags: str, port: int) -> str:
    return netns.exec(["ss", f"-H{flags}", f"sport = :{port}"]).stdout


@pytest.fixture
def www() -> Iterator[Path]:
    """A directory the unprivileged user can read: a file to serve and a WSGI app."""
    root = Path(tempfile.mkdtemp(prefix="gps-v6-"))
    try:
        root.chmod(0o755)
        (root / "hello.txt").write_text("hello over ::1\n")
        (root / "v6app.py").write_text(textwrap.dedent("""\
            import os

            def app(environ, start_response):
                body = f"pid {os.getpid()} on {environ['SERVER_NAME']}\\n".encode()
                start_response("200 OK", [("Content-Type", "text/plain"),
                                          ("Content-Length", str(len(body)))])
                return [body]
        """))
        for child in root.iterdir():
            child.chmod(0o644)
        yield root
    finally:
        for child in root.iterdir():
            child.unlink()
        root.rmdir()


def test_open_unspec_follows_the_address_as_the_kernel_does(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    got = priv.run_json(unpriv_user, """
import json, socket
import gprocket

def show(sock):
    v6only = (sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
              if sock.family == socket.AF_INET6 else None)
    return [int(sock.family), sock.getsockname()[0], v6only, sock.rung]

specific = gprocket.open(443, protocol="tcp", family="unspec", ip="::1")
v4 = gprocket.open(443, protocol="tcp", family="unspec", ip="127.0.0.1")
mapped = gprocket.open(444, protocol="tcp", family="unspec", ip="::ffff:127.0.0.1")
# The v4-mapped listener is dual-stack: a plain IPv4 client reaches it.
client = socket.create_connection(("127.0.0.1", 444), timeout=5)
conn, peer = mapped.accept()
try:
    gprocket.SocketRequest(443, family="inet6", ip="::1", dualstack=True)
    refused = None
except ValueError as err:
    refused = str(err)
print(json.dumps({"specific": show(specific), "v4": show(v4), "mapped": show(mapped),
                  "peer": peer[0], "refused": refused}))
""", netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert got["specific"] == [10, "::1", 1, "broker"]
    assert got["v4"] == [2, "127.0.0.1", None, "broker"]
    assert got["mapped"] == [10, "::ffff:127.0.0.1", 0, "broker"]
    assert got["peer"] == "::ffff:127.0.0.1"
    assert "dualstack needs the wildcard" in got["refused"]


def test_http_server_bound_to_ipv6_loopback_on_port_80(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path], www: Path) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(unpriv_user, run_argv("-m", "http.server", "--bind", "::1",
                                                 "--directory", str(www), "80"),
                           netns=netns, env=helper_env(helper), stderr=subprocess.STDOUT)
    try:
        body = wait_for(lambda: curl(netns, "http://[::1]:80/hello.txt"), proc, "curl [::1]:80")
        assert body == "hello over ::1\n"
        owner = listeners(netns, "ltnp", 80)
        assert "[::1]:80" in owner
        assert f"pid={proc.pid}," in owner
        # Bound to ::1 only, as without gprocket: IPv4 loopback is not served.
        assert curl(netns, "http://127.0.0.1:80/hello.txt") is None
    finally:
        log = stop(proc)
    assert "Serving HTTP on ::1 port 80" in log
    assert "Bad file descriptor" not in log


def dig(netns: priv.Netns, *args: str) -> str | None:
    got = netns.exec(["dig", "@::1", "-p", "53", "+short", "+tries=1", "+timeout=2", *args],
                     check=False)
    return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else None


def test_dnslib_resolver_bound_to_ipv6_loopback_answers_udp_and_tcp(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(
        unpriv_user,
        run_argv("-m", "dnslib.fixedresolver", "--response", ". 60 IN AAAA 2001:db8::53",
                 "--address", "::1", "--port", "53", "--tcp"),
        netns=netns, env=helper_env(helper), stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: dig(netns, "any.example", "AAAA"), proc,
                        "dig @::1") == "2001:db8::53"
        # dnslib starts its UDP server's thread before it binds the TCP one.
        assert wait_for(lambda: dig(netns, "+tcp", "other.example", "AAAA"), proc,
                        "dig +tcp @::1") == "2001:db8::53"
        assert "[::1]:53" in listeners(netns, "lunp", 53)
        assert "[::1]:53" in listeners(netns, "ltnp", 53)
    finally:
        log = stop(proc)
    assert "Starting Fixed Resolver" in log
    assert "Bad file descriptor" not in log


def _pids(text: str) -> set[str]:
    return {line.split()[1] for line in text.splitlines() if line.startswith("pid ")}


def test_gunicorn_gevent_workers_on_ipv6_loopback_port_443_survive_hup(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path], www: Path) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is in requirements-dev.txt")
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(
        unpriv_user,
        run_argv("-m", "gunicorn", "-b", "[::1]:443", "-k", "gevent", "-w", "2",
                 "--chdir", str(www), "--graceful-timeout", "5", "v6app:app"),
        netns=netns, env=helper_env(helper), stderr=subprocess.STDOUT)
    url = "http://[::1]:443/"
    try:
        first = wait_for(lambda: curl(netns, url), proc, "curl [::1]:443")
        assert first.endswith("on ::1\n")
        owner = listeners(netns, "ltnp", 443)
        assert "[::1]:443" in owner
        assert f"pid={proc.pid}," in owner  # the master holds the privileged listener
        before = _pids("".join(curl(netns, url) or "" for _ in range(20)))

        # HUP: gunicorn starts new workers on the same listener and retires the old.
        proc.send_signal(signal.SIGHUP)

        def new_workers() -> str | None:
            answers = "".join(curl(netns, url) or "" for _ in range(10))
            return answers if _pids(answers) and not _pids(answers) & before else None

        after = _pids(wait_for(new_workers, proc, "new workers after HUP"))
        assert after and not after & before
        assert proc.poll() is None
        assert f"pid={proc.pid}," in listeners(netns, "ltnp", 443)
    finally:
        log = stop(proc)
    assert "Listening at: http://[::1]:443" in log
    assert "Handling signal: hup" in log
    assert "Bad file descriptor" not in log
    assert "Retrying" not in log
