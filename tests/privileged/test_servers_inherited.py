"""Socket activation: under `systemd-socket-activate -l 53` an unprivileged
gprocket program gets port 53 through the inherited rung, and no helper runs
although one is installed and allowed (the process has no child)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

# Answers the connection that made systemd-socket-activate start it.
GPROCKET_PROGRAM = textwrap.dedent("""
    import json, os
    from gevent.server import StreamServer
    from gprocket.servers import listener
    sock = listener("[::]:53", "tcp")
    children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
    report = {"rung": sock.rung, "children": children,
              "env": sorted(k for k in os.environ if k.startswith("LISTEN_"))}
    def handle(conn, address):
        conn.sendall(json.dumps(report).encode())
        conn.close()
        server.stop(timeout=0)
    server = StreamServer(sock, handle)
    server.serve_forever()
""")

# A standard-library server that knows nothing of gprocket, for `gprocket run`.
STDLIB_PROGRAM = textwrap.dedent("""
    import json, os, socket, socketserver
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            pid = os.getpid()
            children = open(f"/proc/{pid}/task/{pid}/children").read().split()
            self.wfile.write(json.dumps({"children": children,
                                         "fd": self.server.socket.fileno()}).encode())
    class Server(socketserver.TCPServer):
        address_family = socket.AF_INET6
    with Server(("::", 53), Handler) as server:
        server.handle_request()
""")


def activate(netns: priv.Netns, user: priv.User, helper: Path,
             argv: list[str]) -> subprocess.Popen[str]:
    """systemd-socket-activate (root, binds 53) starting `argv` as `user`."""
    env = priv.user_env({"GPROCKET_HELPER": str(helper)})
    setenv = [f"--setenv={key}={env[key]}" for key in ("PYTHONPATH", "GPROCKET_HELPER")]
    command = ["systemd-socket-activate", "--listen=53", "--fdname=dns", *setenv, "--",
               *priv.as_user_argv(user, argv)]
    proc = netns.popen(command, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    ready = proc.stdout.readline()  # "Listening on [::]:53 as 3."
    assert "Listening on" in ready, ready
    return proc


def first_answer(netns: priv.Netns, proc: subprocess.Popen[str]) -> dict[str, object]:
    # The connection itself makes systemd-socket-activate start the program.
    got = netns.exec(["socat", "-t", "30", "-T", "30", "-", "TCP6:[::1]:53"], input="",
                     check=False, timeout=60)
    if got.returncode != 0 or not got.stdout:
        proc.kill()
        assert proc.stdout is not None
        pytest.fail(f"no answer ({got.stderr}):\n{proc.stdout.read()}")
    answer: dict[str, object] = json.loads(got.stdout)
    return answer


def test_gprocket_listener_takes_the_inherited_socket(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = activate(netns, unpriv_user, helper, [priv.VENV_PYTHON, "-c", GPROCKET_PROGRAM])
    try:
        answer = first_answer(netns, proc)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert answer == {"rung": "inherited", "children": [], "env": []}


def test_unmodified_program_under_gprocket_run_takes_it_too(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    argv = [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", "-c", STDLIB_PROGRAM]
    proc = activate(netns, unpriv_user, helper, argv)
    try:
        answer = first_answer(netns, proc)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.communicate()[0]
    assert status == 0, log
    # Plain, capabilities and broker would need a helper child: none ran.
    assert answer["children"] == []
    # The program's own descriptor, not the inherited fd 3, holds the socket.
    assert answer["fd"] != 3
