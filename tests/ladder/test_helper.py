"""gprocket._channel.helper without root: the gevent one-shot judges a stand-in helper's
reply (the checks shared with gprocket.aio) and leaves no descriptor behind."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import gevent
import pytest

import gprocket
from gprocket._channel.helper import no_reply_error
from gprocket._errors import HelperError, RungRefused
from gprocket._ladder.helper import one_shot

# A stand-in one-shot helper: answers a UDP request with a TCP socket, under
# the request's id or (argv[1] == "id") another one.
ANSWER = r"""
import array, socket, sys
from gprocket._channel.wire import Reply, Stage, decode_request, encode_reply
channel = socket.socket(fileno=0)
msg = decode_request(channel.recv(4096))
rid = msg.id + 1 if sys.argv[1:] == ["id"] else msg.id
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
channel.sendmsg([encode_reply(Reply(rid, 0, Stage.NONE, "", ""))],
               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))])
"""
SILENT = "import sys\nsys.stderr.write('no policy here')\nsys.exit(3)\n"


def fds() -> list[str]:
    gevent.get_hub()  # made on first use: its own descriptors are no leak
    return sorted(os.listdir("/proc/self/fd"), key=int)


def stand_in(tmp_path: Path, text: str, *args: str) -> str:
    helper = tmp_path / "stand-in-helper"
    # helper_argv appends the helper's own options: the script ignores them.
    helper.write_text(f"#!{sys.executable}\nimport sys; sys.argv[1:] = {list(args)!r}\n{text}")
    helper.chmod(0o755)
    return str(helper)


REQUEST = gprocket.SocketRequest(0, protocol="udp", ip="127.0.0.1")


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "type 1, requested 2"), (("id",), "answered request id 2, expected 1")],
)
def test_a_reply_that_fails_the_checks_is_refused_and_closed_once(
        tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    # Before the checks were shared the gevent one-shot closed a descriptor
    # verify had refused (and closed) a second time: EBADF hid the HelperError.
    helper = stand_in(tmp_path, ANSWER, *args)
    before = fds()
    with pytest.raises(HelperError, match=message):
        one_shot(helper, REQUEST, timeout=10)
    assert fds() == before


def test_a_helper_that_exits_silently_is_a_helper_error_with_its_words(
        tmp_path: Path) -> None:
    before = fds()
    with pytest.raises(HelperError, match="exited with status 3 without replying: "
                                          "no policy here"):
        one_shot(stand_in(tmp_path, SILENT), REQUEST, timeout=10)
    assert fds() == before


def test_silence_through_sudo_is_sudos_refusal() -> None:
    plain = no_reply_error("/h", "/h", 1, "", sudo=False)
    assert type(plain) is HelperError
    assert str(plain) == "/h exited with status 1 without replying"
    refused = no_reply_error("/h", "/usr/bin/sudo", None, "a password is required", sudo=True)
    assert isinstance(refused, RungRefused)
    assert refused.errno == errno.EPERM
    assert refused.fix == "allow the helper in sudoers: capsetup sudoers"
    assert str(refused) == ("sudo -n /h refused: /usr/bin/sudo exited with status None "
                            "without replying: a password is required")
