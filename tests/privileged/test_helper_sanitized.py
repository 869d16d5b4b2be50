"""The whole helper under ASan/UBSan serves every vector through a real broker.

Root: the broker runs in a throwaway network namespace. The parser alone, plain
and sanitized, is tested without privilege in tests/test_helper_build.py.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from pathlib import Path

from support.helper_build import HELPER_DIR, hello, make, runnable

ERRNOS = {"OK": 0, "EINVAL": 22, "EPROTO": 71, "EMSGSIZE": 90, "EPERM": 1, "EACCES": 13,
          "EAFNOSUPPORT": 97, "EPROTONOSUPPORT": 93}


STAGES = ("none", "parse", "policy", "open", "bind", "configure", "namespace", "internal")


def test_whole_helper_under_sanitizers_serves_every_vector() -> None:
    """The privileged half too runs under ASan/UBSan (any report aborts it): every vector
    through a real broker (as root, in a throwaway network namespace, default policy)."""
    make("san")
    vectors = [x.split() for x in (HELPER_DIR / "vectors.txt").read_text().splitlines()
               if x.strip() and not x.startswith("#")]
    with runnable(HELPER_DIR / "build" / "gprocket-helper-san") as sanitized:
        serve_every_vector(sanitized, vectors)


def serve_every_vector(sanitized: Path, vectors: list[list[str]]) -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(["unshare", "--net", str(sanitized), "--broker"],
                            stdin=theirs.fileno())
    theirs.close()
    try:
        mine.settimeout(30)
        served = 0
        for name, hexdata, err, stage in vectors:
            mine.send(bytes.fromhex(hexdata))
            msg, anc, _flags, _addr = mine.recvmsg(200, socket.CMSG_SPACE(4))
            assert len(msg) == 96, f"{name}: no reply, helper exit {proc.poll()}"
            got_err, got_stage = struct.unpack_from("<iI", msg, 12)
            if err == "OK" and got_err == 0:
                served += 1
            elif err == "OK":  # the kernel of an empty namespace may still say no
                assert STAGES[got_stage] in ("open", "bind"), (name, msg[36:])
            else:
                assert (got_err, STAGES[got_stage]) == (ERRNOS[err], stage), name
            for _level, _kind, data in anc:
                os.close(struct.unpack("i", data[:4])[0])
            mine.send(hello())  # keeps the malformed-in-a-row count low, shows it alive
            assert struct.unpack_from("<i", mine.recv(200), 12)[0] == 0, name
        assert served >= 10
        mine.close()
        assert proc.wait(timeout=30) == 0  # an ASan/UBSan report would abort instead
    finally:
        mine.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
