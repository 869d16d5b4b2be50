"""The broker channel's compiled receive (gprocket/_channel/_fdpass_speed.c) and its standard.

It parses what the helper sends, so it is tested as the helper's parsers
are: the walk of the control messages against hand-made buffers, the reply
fuzzer (helper/fuzz/fuzz_reply.c, ASan/UBSan, seeded with the helper's
replies to helper/vectors.txt) run for a bounded time, and the whole module
rebuilt under ASan/UBSan receiving real descriptors and checking real
sockets. Runs as any user.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.helper_build import HELPER_DIR, make
from support.sanitized import build_sanitized, sanitized_env

from gprocket._channel import fdpass
from gprocket._channel import fdpass_build as _fdpass_build

FUZZ_SECONDS = int(os.environ.get("GPROCKET_FUZZ_SECONDS", "20"))
DOTTED = _fdpass_build.ffibuilder._assigned_source[0]  # cffi keeps set_source's arguments
needs_clang = pytest.mark.skipif(shutil.which("clang") is None,
                                 reason="clang is part of the CI image")


@pytest.fixture(scope="module")
def speed() -> Any:
    try:
        return importlib.import_module(DOTTED)
    except ImportError as err:  # a test of the compiled module: not built is a failure
        raise AssertionError(
            f"{DOTTED} is not built: python -m gprocket._channel.fdpass_build") from err


def cmsg(level: int, kind: int, payload: bytes, length: int | None = None) -> bytes:
    """One control message as the kernel lays it out (length field overridable), padded."""
    size = 16 + len(payload) if length is None else length
    return (struct.pack("=Qii", size, level, kind) + payload).ljust(
        socket.CMSG_SPACE(len(payload)), b"\0")


def walk(speed: Any, control: bytes) -> tuple[list[int], int]:
    """gpf_parse_control's descriptors and odd flag for ``control``, in a buffer its size."""
    ffi = speed.ffi
    buf = ffi.new("uint8_t[]", max(1, len(control)))
    ffi.memmove(buf, control, len(control))
    fds, meta = ffi.new("int[]", speed.lib.GPF_MAXFDS), ffi.new("int[4]", [-1, 7, -1, 9])
    speed.lib.gpf_parse_control(buf, len(control), fds, meta)
    assert (meta[1], meta[3]) == (7, 9)  # the walk sets only the count and the flag
    return ffi.unpack(fds, meta[0]), meta[2]


def ints(*values: int) -> bytes:
    return struct.pack(f"={len(values)}i", *values)


RIGHTS = (socket.SOL_SOCKET, socket.SCM_RIGHTS)


def test_control_walk_takes_every_descriptor_and_flags_the_rest(speed: Any) -> None:
    assert walk(speed, b"") == ([], 0)
    assert walk(speed, cmsg(*RIGHTS, ints(5))) == ([5], 0)
    assert walk(speed, cmsg(*RIGHTS, ints(5, 6)) + cmsg(*RIGHTS, ints(7))) == ([5, 6, 7], 0)
    # More than it has room for: the first 16 (the caller closes what it gets).
    assert walk(speed, cmsg(*RIGHTS, ints(*range(10, 20))) + cmsg(*RIGHTS, ints(
        *range(20, 30)))) == (list(range(10, 26)), 0)
    # Another type, before or after: flagged, the descriptors still taken (to be closed).
    creds = cmsg(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, ints(1, 2, 3))
    assert walk(speed, creds + cmsg(*RIGHTS, ints(5))) == ([5], 1)
    assert walk(speed, cmsg(*RIGHTS, ints(5)) + creds) == ([5], 1)


def test_control_walk_reads_only_inside_the_buffer(speed: Any) -> None:
    # A length past the end, or shorter than the header: malformed, nothing taken
    # from it and the walk ends; a header cut short is not read.
    one, two = cmsg(*RIGHTS, ints(5)), cmsg(*RIGHTS, ints(5, 6))
    assert walk(speed, cmsg(*RIGHTS, ints(5, 6), length=16 + 4 * 40)) == ([], 1)
    assert walk(speed, one[:20]) == ([5], 0)  # only the padding cut: the message is whole
    assert walk(speed, two[:20]) == ([], 1)
    assert walk(speed, cmsg(*RIGHTS, ints(5), length=3)) == ([], 1)
    assert walk(speed, cmsg(*RIGHTS, ints(5)) + cmsg(*RIGHTS, ints(6), length=15)) == ([5], 1)
    assert walk(speed, two[:15]) == ([], 0)
    # Ints that do not fill a whole descriptor are not one.
    assert walk(speed, cmsg(*RIGHTS, ints(5) + b"\1\2", length=22)) == ([5], 0)


@needs_clang
def test_reply_fuzzer_runs_clean_from_the_vectors_replies(tmp_path: Path) -> None:
    make("fuzz")
    seeds = HELPER_DIR / "build" / "corpus" / "reply"
    vectors = [line.split()[0] for line in (HELPER_DIR / "vectors.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    # One seed per vector (the helper's reply to it), and the hand-made control data.
    names = {p.name for p in seeds.iterdir()}
    assert set(vectors) <= names and len(names - set(vectors)) >= 5
    granted = (seeds / "socket_udp_inet_port53").read_bytes()
    assert granted[:2] == bytes([1, 96]) and granted[2:6] == b"GPRP"
    corpus = tmp_path / "corpus"
    shutil.copytree(seeds, corpus)
    proc = subprocess.run(
        [str(HELPER_DIR / "build" / "fuzz_reply"), f"-max_total_time={FUZZ_SECONDS}",
         "-max_len=1024", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/",
         str(corpus)], capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    assert runs and int(runs[1]) > 10_000, proc.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("leak-*"))


CHILD = """
import array, importlib, json, os, socket, struct, subprocess, sys, time
speed = importlib.import_module(sys.argv[2])
assert speed.__file__.startswith(sys.argv[1]), speed.__file__
ffi, lib = speed.ffi, speed.lib
out = {}
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
buf, fds, meta = ffi.new("uint8_t[]", 97), ffi.new("int[]", lib.GPF_MAXFDS), ffi.new("int[4]")
# How a poll gives up. A 1 us window passes between two tries (unless the host
# preempts this thread right then: five tries). Stopped for 20 ms inside a 10 s
# window, the poll notices the gap and returns long before the window ends.
kinds = set()
for _ in range(5):
    lib.gpf_receive(b.fileno(), buf, 97, 1000, fds, meta)
    kinds.add(meta[3])
out["short window"] = sorted(kinds)
out["kinds"] = [lib.GPF_LOST_CPU, lib.GPF_EXPIRED]
me = os.getpid()
stopper = subprocess.Popen(["sh", "-c",
                            f"sleep 0.05; kill -STOP {me}; sleep 0.02; kill -CONT {me}"])
started = time.monotonic()
out["stopped"] = [lib.gpf_receive(b.fileno(), buf, 97, 10_000_000_000, fds, meta), meta[3],
                  time.monotonic() - started < 5]
stopper.wait()
before = len(os.listdir("/proc/self/fd"))
out["empty"] = [lib.gpf_receive(b.fileno(), buf, 97, 0, fds, meta), meta[3]]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
port = udp.getsockname()[1]
for k, size in ((0, 96), (1, 96), (3, 200), (20, 96)):
    sent = bytes(i % 251 for i in range(size))
    extra = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [udp.fileno()] * k))]
    a.sendmsg([sent], extra if k else [])
    n = lib.gpf_receive(b.fileno(), buf, 97, 0, fds, meta)
    got = ffi.unpack(fds, meta[0])
    out[f"{k}x{size}"] = [n, ffi.buffer(buf, max(n, 0))[:] == sent[:97], meta[0],
                          bool(meta[1] & socket.MSG_TRUNC), bool(meta[1] & socket.MSG_CTRUNC),
                          meta[2], meta[3], all(not os.get_inheritable(fd) for fd in got),
                          [lib.gpf_check_inet(fd, socket.AF_INET, socket.SOCK_DGRAM, 17,
                                              socket.inet_aton("127.0.0.1"), port, -1,
                                              ffi.NULL, 0) for fd in got]]
    for fd in got:
        os.close(fd)
out["no descriptor left"] = len(os.listdir("/proc/self/fd")) == before + 1  # udp
# Malformed control data (never the kernel's) in buffers of exactly its size:
# lengths past the end (a little, a lot), inside the header, and one whole message.
out["walks"] = []
for length, body in ((60, 8), (176, 8), (3, 8), (20, 4)):
    raw = struct.pack("=Qii", length, socket.SOL_SOCKET, socket.SCM_RIGHTS) + bytes(body)
    control = ffi.new("uint8_t[]", len(raw))
    ffi.memmove(control, raw, len(raw))
    lib.gpf_parse_control(control, len(raw), fds, meta)
    out["walks"].append([meta[0], meta[2]])


def check(fd, family, kind, proto, addr, port, v6only=-1, ifname=None, listening=0):
    return lib.gpf_check_inet(fd, family, kind, proto, addr, port, v6only,
                              ifname.encode() if ifname else ffi.NULL, listening)


loop4 = socket.inet_aton("127.0.0.1")
tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
tcp6.bind(("::1", 0))
tcp6.listen(1)
port6 = tcp6.getsockname()[1]
loop6 = socket.inet_pton(socket.AF_INET6, "::1")
r, w = os.pipe()
inheritable = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
inheritable.set_inheritable(True)
out["checks"] = [
    check(udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 17, loop4, port),
    check(udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 17, ffi.NULL, 0),
    check(udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 17, loop4, port + 1),
    check(udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 6, loop4, port),
    check(udp.fileno(), socket.AF_INET6, socket.SOCK_DGRAM, 17, loop6, port),
    check(udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 17, loop4, port, ifname="lo"),
    check(tcp6.fileno(), socket.AF_INET6, socket.SOCK_STREAM, 6, loop6, port6, 1, None, 1),
    check(tcp6.fileno(), socket.AF_INET6, socket.SOCK_STREAM, 6, loop6, port6, 0, None, 1),
    check(tcp6.fileno(), socket.AF_INET6, socket.SOCK_STREAM, 6, loop4 * 4, port6, 1),
    check(r, socket.AF_INET, socket.SOCK_DGRAM, 17, ffi.NULL, 0),
    check(inheritable.fileno(), socket.AF_INET, socket.SOCK_DGRAM, 17, ffi.NULL, 0),
    check(12345, socket.AF_INET, socket.SOCK_DGRAM, 17, ffi.NULL, 0),
]
print(json.dumps(out))
"""


@needs_clang
def test_compiled_receive_and_check_run_clean_under_asan_and_ubsan(tmp_path: Path) -> None:
    build_sanitized(_fdpass_build, tmp_path)
    proc = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(CHILD), str(tmp_path),
                           DOTTED], env=sanitized_env(str(tmp_path)), capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    got = json.loads(proc.stdout)
    eagain = -11
    assert got["empty"] == [eagain, 0]  # nothing queued, no poll: at once
    lost_cpu, expired = got["kinds"]
    assert (lost_cpu, expired) == (fdpass._LOST_CPU, fdpass._EXPIRED)
    assert expired in got["short window"] and set(got["short window"]) <= {lost_cpu, expired}
    assert got["stopped"] == [eagain, lost_cpu, True]
    # [length, bytes as sent, descriptors, MSG_TRUNC, MSG_CTRUNC, other messages,
    #  poll outcome, all close-on-exec, each the bound UDP socket]
    assert got["0x96"] == [96, True, 0, False, False, 0, 0, True, []]
    assert got["1x96"] == [96, True, 1, False, False, 0, 0, True, [1]]
    assert got["3x200"] == [97, True, 3, True, False, 0, 0, True, [1, 1, 1]]
    assert got["20x96"] == [96, True, 16, False, True, 0, 0, True, [1] * 16]
    assert got["no descriptor left"] is True
    assert got["walks"] == [[0, 1], [0, 1], [0, 1], [1, 0]]
    assert got["checks"] == [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
