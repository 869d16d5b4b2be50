"""multiping's compiled loop (gprocket/icmp/_loop.c) under ASan/UBSan, pinging for real.

The loop is rebuilt with clang's address and undefined-behaviour sanitizers
into a copy of the installed package, and the compiled engine runs through it
as root in a throwaway network namespace: raw and datagram sockets, IPv4 and
IPv6, replies, requests that time out (a blackhole route) and sends that fail
(no route). Any sanitizer report aborts the child. Root: raw sockets and a
namespace whose ping_group_range the test sets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from support import privileged as priv

import gprocket
from gprocket.icmp import _build

SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all", "-shared-libsan"]
COUNT = 40
TARGETS = {
    "127.0.0.1": "answers",
    "::1": "answers",
    "192.0.2.1": "times out",     # blackhole route: sent, never answered
    "198.51.100.1": "fails",      # no route: the send itself fails
    "2001:db8::1": "fails",
}

CHILD = """
import json, sys
import gprocket.icmp._speed as speed
from gprocket import icmp
assert speed.__file__.startswith(sys.argv[1]), speed.__file__
out = {}
for kind in ("raw", "datagram"):
    hosts = icmp.multiping(sys.argv[3:], count=int(sys.argv[2]), interval=0.002, timeout=0.3,
                           socket_kind=kind)
    out[kind] = {h.address: [h.sent, h.received, h.transport] for h in hosts}
print(json.dumps(out))
"""


def build_sanitized(into: Path) -> Path:
    """The loop's cffi module, built by clang under ASan/UBSan, in a copy of the package."""
    installed = Path(gprocket.__file__).resolve().parent
    package = into / "gprocket"
    shutil.copytree(installed, package,
                    ignore=shutil.ignore_patterns("_speed*.so", "__pycache__"))
    wrapper = into / "_icmp_speed.c"
    _build.make_builder().emit_c_code(str(wrapper))
    target = package / "icmp" / f"_speed{sysconfig.get_config_var('EXT_SUFFIX')}"
    proc = subprocess.run(
        ["clang", "-shared", "-fPIC", *(f for f in _build.CFLAGS if not f.startswith("-O")),
         *SANITIZE,
         f"-I{sysconfig.get_path('include')}", f"-I{_build.HERE}",
         str(wrapper), "-o", str(target)],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is part of the CI image")
def test_compiled_loop_runs_clean_under_asan_and_ubsan(tmp_path: Path,
                                                       netns: priv.Netns) -> None:
    build_sanitized(tmp_path)
    runtime = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.isfile(runtime), runtime
    netns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
    netns.exec(["ip", "route", "add", "blackhole", "192.0.2.0/24"])
    env = {
        "PATH": priv.SAFE_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(tmp_path), "GPROCKET_ICMP_ENGINE": "c",
        "GPROCKET_STRATEGIES": "plain",
        # The interpreter is not instrumented: the runtime comes first, and
        # Python's own allocator steps aside so ASan sees every block.
        "LD_PRELOAD": runtime, "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    proc = netns.exec([sys.executable, "-P", "-c", textwrap.dedent(CHILD), str(tmp_path),
                       str(COUNT), *TARGETS], check=False, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    got = json.loads(proc.stdout)
    for kind in ("raw", "datagram"):
        for address, fate in TARGETS.items():
            sent, received, transport = got[kind][address]
            assert transport == kind, (kind, address)
            expected = COUNT if fate == "answers" else 0
            assert (sent, received) == (COUNT, expected), (kind, address, fate)
