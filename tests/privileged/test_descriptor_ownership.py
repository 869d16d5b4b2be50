"""Every failure path closes each received descriptor exactly once.

A second close of a descriptor number is harmless only while nothing took
that number again; in a threaded program another thread may have been given
it between the two closes, and the second close then shuts that thread's
file. The tests make that interleaving certain: a stand-in for "another
thread" takes every number the moment gprocket closes it (``dup2`` of
/dev/null onto it), and after the failed acquisition every number taken so
must still be open on /dev/null, and no close may have hit one of them.

The failures come from a real process: a misbehaving helper (a script the
test installs in a root-only prefix as the helper would be, so the client's
checks pass) that answers with the wrong kind of socket, a wrong request id,
an error reply carrying a descriptor, two descriptors, or no reply at all.
It runs as an unprivileged user through the one-shot helper, the broker and
``gprocket run``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

# The misbehaving helper: serves each request on its stdin channel (one, or
# until end of file with --broker) with what MODE says, never with privilege.
FAKE_HELPER = '''#!{python}
import array, errno, socket, sys
from gprocket._channel.wire import REQUEST_SIZE, Reply, Stage, decode_request, encode_reply

MODE = {mode!r}
channel = socket.socket(fileno=0)


def answer(rid):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never what was asked
    udp.bind(("127.0.0.1", 0))
    extra = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fds = [udp.fileno()]
    reply = Reply(rid, 0, Stage.NONE, "", "")
    if MODE == "wrong_id":
        reply = Reply(rid + 1, 0, Stage.NONE, "", "")
    elif MODE == "error_with_fd":
        reply = Reply(rid, errno.EACCES, Stage.BIND, "", "refused, yet a descriptor")
    elif MODE == "two_fds":
        fds.append(extra.fileno())
    if MODE == "silent":
        sys.exit(3)
    channel.sendmsg([encode_reply(reply)],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])


while True:
    data = channel.recv(REQUEST_SIZE + 1)
    if not data:
        break
    answer(decode_request(data).id)
    if "--broker" not in sys.argv:
        break
'''

# Run as the unprivileged user: the stand-in for another thread, then one
# failed acquisition, then the verdict as JSON.
CLIENT = '''
import errno, json, os, sys
import gevent
import gprocket

gevent.sleep(0)  # the hub's own descriptors (epoll, eventfd) exist before the count

null = os.stat("/dev/null")
taken = []   # numbers "another thread" was given right after gprocket closed them
hit = []     # closes that landed on such a number: a double close
_close = os.close

def close(fd):
    if fd in taken:
        hit.append(fd)  # another thread's descriptor: gone now, for good
        _close(fd)
        return
    _close(fd)
    try:
        os.fstat(fd)
    except OSError:
        spare = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        if spare != fd:  # usually the lowest free number is this one
            os.dup2(spare, fd, inheritable=False)
            _close(spare)
        taken.append(fd)

os.close = close
before = sorted(int(n) for n in os.listdir("/proc/self/fd"))
try:
    {acquire}
    error = None
except Exception as err:
    error = f"{{type(err).__name__}}: {{err}}"
os.close = _close
alive = []
for fd in taken:
    try:
        info = os.fstat(fd)
        alive.append((info.st_dev, info.st_ino) == (null.st_dev, null.st_ino))
    except OSError:
        alive.append(False)
for fd, ok in zip(taken, alive):
    if ok:
        _close(fd)
# A broker is persistent by design: stop it (and let a dead one be reaped)
# before counting what is left open.
from gprocket._ladder.broker import shutdown_all
shutdown_all()
gevent.wait(timeout=5)
after = sorted(int(n) for n in os.listdir("/proc/self/fd"))
print(json.dumps({{"error": error, "taken": taken, "hit": hit, "alive": alive,
                  "leaked": [(fd, os.readlink(f"/proc/self/fd/{{fd}}"))
                             for fd in sorted(set(after) - set(before))]}}))
'''

ONE_SHOT = 'gprocket.open(80, protocol="tcp", ip="127.0.0.1", strategies="helper")'
BROKER = 'gprocket.open(80, protocol="tcp", ip="127.0.0.1", strategies="broker")'


@contextlib.contextmanager
def fake_helper(mode: str) -> Iterator[Path]:
    """The misbehaving helper, installed as the real one is (root-only prefix, caps).

    The file capabilities only make the client take it for an installed
    helper: a script gains nothing from them (the kernel honours the
    interpreter's, not the script's), so it answers unprivileged.
    """
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "fake-helper"
        source.write_text(FAKE_HELPER.format(python=priv.VENV_PYTHON, mode=mode))
        with priv.install_helper("caps", source=source) as helper:
            yield helper


def attempt(user: priv.User, netns: priv.Netns, helper: Path, acquire: str) -> dict[str, object]:
    got: dict[str, object] = priv.run_json(user, CLIENT.format(acquire=acquire), netns=netns,
                                           env={"GPROCKET_HELPER": str(helper)})
    return got


def assert_closed_once(got: dict[str, object], error: str) -> None:
    assert got["error"] is not None and error in str(got["error"]), got
    assert got["taken"], f"the failure closed no descriptor: nothing was tested {got}"
    assert got["hit"] == [], f"closed twice: {got}"
    assert all(got["alive"]), f"another thread's descriptor was closed: {got}"
    assert got["leaked"] == [], f"descriptors left open: {got}"


MISMATCH = "HelperError: the helper returned a descriptor with type 2"
IN_REPLY = "the helper's error reply (id 1) carried a descriptor"


@pytest.mark.parametrize(
    ("acquire", "mode", "error"),
    [
        (ONE_SHOT, "mismatch", MISMATCH + ", requested 1"),
        (ONE_SHOT, "wrong_id", "HelperError: the helper answered request id 2, expected 1"),
        (ONE_SHOT, "error_with_fd", "HelperError: " + IN_REPLY),
        (ONE_SHOT, "two_fds", MISMATCH),
        (ONE_SHOT, "silent", "without replying"),
        # The broker fails the request with the reason the channel broke.
        (BROKER, "mismatch", MISMATCH + ", requested 1"),
        (BROKER, "error_with_fd", IN_REPLY),
        (BROKER, "two_fds", MISMATCH),
    ],
    ids=["one-shot-mismatch", "one-shot-wrong-id", "one-shot-error-with-fd",
         "one-shot-two-fds", "one-shot-silent", "broker-mismatch", "broker-error-with-fd",
         "broker-two-fds"],
)
def test_helper_failures_close_each_descriptor_once(
        unpriv_user: priv.User, netns: priv.Netns, acquire: str, mode: str,
        error: str) -> None:
    with fake_helper(mode) as helper:
        got = attempt(unpriv_user, netns, helper, acquire)
    assert_closed_once(got, error)


def test_patched_bind_failure_under_gprocket_run_closes_once(
        unpriv_user: priv.User, netns: priv.Netns) -> None:
    # The program's own bind(80), refused by the kernel, goes to the one-shot
    # helper; the helper's wrong socket is refused and the program's socket kept.
    program = CLIENT.format(acquire="""import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 80))
    finally:
        sock.close()""")
    with fake_helper("mismatch") as helper:
        proc = priv.run_argv(unpriv_user,
                             [priv.VENV_PYTHON, "-m", "gprocket.cli", "run", "-c", program],
                             netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_closed_once(got, MISMATCH)
