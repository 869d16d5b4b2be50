"""The C helper: hardened build, the shared vectors through its pure parser (plain
and under ASan/UBSan), bounded fuzzing, and the behaviour that needs no other user.

Privilege scenarios (setuid, file capabilities, sudo, hostile requests) live in
tests/privileged/test_helper_security.py; the whole helper under sanitizers in
tests/privileged/test_helper_sanitized.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helper_build import BINARY, HELPER_DIR, REPO, hello, make, runnable

from gprocket._channel import wire

HARDENING = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-U_FORTIFY_SOURCE",
             "-D_FORTIFY_SOURCE=3", "-fstack-protector-strong", "-fstack-clash-protection",
             "-fcf-protection=full", "-ftrivial-auto-var-init=zero", "-fPIE", "-pie",
             "-Wl,-z,relro,-z,now")
# Per harness; two harnesses stay well inside CI's 60 s budget. The quick
# unprivileged run (tox -e unit) shortens it.
FUZZ_SECONDS = int(os.environ.get("GPROCKET_FUZZ_SECONDS", "20"))


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args, str(BINARY)], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def helper() -> Iterator[Path]:
    """The plain build, run from a root-only prefix."""
    make()
    with runnable(BINARY) as copy:
        yield copy


def compile_line(*args: str) -> list[str]:
    dry = make("-B", "-n", *args).stdout
    return next(x for x in dry.splitlines() if "-o ../gprocket/_bin/gprocket-helper" in x).split()


def test_build_uses_the_hardening_flags() -> None:
    line = compile_line()
    assert [flag for flag in HARDENING if flag not in line] == [], line
    make()
    assert BINARY.is_file() and os.access(BINARY, os.X_OK)


def test_distribution_flags_are_kept_and_ours_come_last() -> None:
    """CFLAGS/LDFLAGS of a distribution (command line or environment) are added to,
    never replaced; our FORTIFY level wins over the distribution's."""
    for args, env in ((["CFLAGS=-g -D_FORTIFY_SOURCE=2", "LDFLAGS=-Wl,--as-needed"], {}),
                      ([], {"CFLAGS": "-g -D_FORTIFY_SOURCE=2",
                            "LDFLAGS": "-Wl,--as-needed"})):
        proc = subprocess.run(["make", "-C", str(HELPER_DIR), "-B", "-n", *args],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        line = next(x for x in proc.stdout.splitlines()
                    if "-o ../gprocket/_bin/gprocket-helper" in x).split()
        assert {"-g", "-Wl,--as-needed"} <= set(line), line
        assert [flag for flag in HARDENING if flag not in line] == [], line
        assert line.index("-D_FORTIFY_SOURCE=2") < line.index("-U_FORTIFY_SOURCE") < \
            line.index("-D_FORTIFY_SOURCE=3"), line


def test_binary_is_pie_relro_now_with_canaries_and_fortify() -> None:
    make()
    assert "DYN (Position-Independent Executable file)" in readelf("-h")
    dynamic = readelf("-d")
    assert re.search(r"\(FLAGS\).*\bBIND_NOW\b", dynamic), dynamic
    assert re.search(r"FLAGS_1.*\bNOW\b.*\bPIE\b", dynamic), dynamic
    assert re.findall(r"Shared library: \[(.+?)\]", dynamic) == ["libc.so.6"]
    segments = readelf("-lW")
    assert "GNU_RELRO" in segments
    stack = next(x for x in segments.splitlines() if "GNU_STACK" in x)
    assert "RWE" not in stack
    symbols = readelf("--dyn-syms", "-W")
    assert "__stack_chk_fail" in symbols
    assert re.search(r"__\w+_chk\b", symbols.replace("__stack_chk_fail", "")), "no FORTIFY"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="CET notes are x86-64's")
def test_binary_carries_the_ibt_and_shstk_notes() -> None:
    """-fcf-protection=full: every object marks IBT and SHSTK, so the linked binary does
    (one object without them, e.g. a flag dropped by a rule, clears the note)."""
    make()
    notes = readelf("-n")
    feature = re.search(r"x86 feature: (.*)", notes)
    assert feature and {"IBT", "SHSTK"} <= {x.strip() for x in feature[1].split(",")}, notes


def test_gcc_knows_every_hardening_flag() -> None:
    """The compiler in use accepts each flag on its own (gcc 12 and later do)."""
    cc = os.environ.get("CC", "cc")
    for flag in ("-D_FORTIFY_SOURCE=3", "-fstack-clash-protection", "-fcf-protection=full",
                 "-ftrivial-auto-var-init=zero", "-fstack-protector-strong"):
        proc = subprocess.run([cc, "-O2", "-Werror", flag, "-x", "c", "-c", "-o", os.devnull,
                               "-"], input="int main(void) { return 0; }\n", text=True,
                              capture_output=True, check=False)
        assert proc.returncode == 0, (flag, proc.stderr)


def test_file_caps_are_published_for_capsetup() -> None:
    make()
    caps = (REPO / "gprocket" / "_bin" / "gprocket-helper.caps").read_text().strip()
    assert caps == make("-s", "print-file-caps").stdout.strip()
    assert caps.endswith("+p") and "cap_setgid" in caps and "cap_setuid" not in caps


def test_vectors_plain_and_under_asan_ubsan() -> None:
    out = make("test").stdout
    results = re.findall(r"test_parse: (\d+) vectors, (\d+) checks, (\d+) failures", out)
    assert len(results) == 2, out  # plain build, then the sanitizer build
    for vectors, checks, failures in results:
        assert int(vectors) >= 25 and int(checks) > 1000 and failures == "0"


def test_vectors_cover_every_errno_and_stage_the_parser_gives() -> None:
    lines = [x.split() for x in (HELPER_DIR / "vectors.txt").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert all(len(x) == 4 for x in lines)
    assert len({x[0] for x in lines}) == len(lines), "vector names must be unique"
    outcomes = {(x[2], x[3]) for x in lines}
    assert {("OK", "none"), ("EINVAL", "parse"), ("EPROTO", "parse"), ("EMSGSIZE", "parse"),
            ("EPERM", "policy"), ("EAFNOSUPPORT", "policy")} <= outcomes


def _table(source: str, name: str) -> str:
    """The body of the C array initializer `name[] = { ... };` in source."""
    match = re.search(rf"\b{name}\[\] = \{{(.*?)\n\}};", source, re.DOTALL)
    assert match is not None, f"no table {name}"
    return match.group(1)


def test_every_op_and_rule_kind_has_one_row_in_each_table() -> None:
    """Parse, authorize and open dispatch through tables (OpenSSH's mon_table): an op
    or a rule kind cannot be added without its row in each, and no row is twice."""
    header = (HELPER_DIR / "gp.h").read_text()
    ops = re.findall(r"\b(OP_[A-Z]+) = \d+", header)
    kinds = re.findall(r"\b(R_[A-Z]+)\b", header.split("enum { R_BIND", 1)[1].split("}", 1)[0])
    assert ops == ["OP_SOCKET", "OP_TUN", "OP_DEVICE", "OP_HELLO"]
    assert kinds == ["R_RAW", "R_PACKET", "R_TUN", "R_DEVICE", "R_NETNS"]
    pure = (HELPER_DIR / "gp.c").read_text()
    privileged = (HELPER_DIR / "helper.c").read_text()
    for source, table in ((pure, "parse_table"), (pure, "authorize_table"),
                          (privileged, "open_table")):
        rows = re.findall(r"\{ (OP_[A-Z]+),", _table(source, table))
        assert sorted(rows) == sorted(ops), (table, rows)
    rows = re.findall(r"\[(R_[A-Z]+)\] = \{", _table(pure, "kinds"))
    assert rows == ["R_BIND", *kinds], rows


def test_pure_half_makes_no_privileged_call() -> None:
    """The fuzzed half makes no system call that opens or changes anything."""
    pure = (HELPER_DIR / "gp.c").read_text()
    for call in ("socket", "ioctl", "open", "openat", "setns", "syscall", "setresuid", "read",
                 "malloc", "getenv", "fopen", "prctl", "capset"):
        assert not re.search(rf"\b{call}\(", pure), call


def _function(source: str, name: str) -> str:
    """The body of C function `name` (from its definition to the closing brace at col 0)."""
    start = re.search(rf"^\S[^;\n]*\b{name}\([^;]*?\)\n{{", source, re.MULTILINE)
    assert start, name
    return source[start.end():source.index("\n}", start.end())]


def test_sandbox_comes_after_the_drop_and_before_the_first_read() -> None:
    """main() drops, then confines, then serves; nothing reads the channel before."""
    main = _function((HELPER_DIR / "helper.c").read_text(), "main")
    order = [main.index(x) for x in ("enter_netns(", "drop(", "gp_sandbox_apply(", "serve(")]
    assert order == sorted(order), order
    assert "recvmsg" not in main and "next_request" not in main
    report = _function((HELPER_DIR / "helper.c").read_text(), "sandbox_report")
    assert report.index("drop(") < report.index("gp_sandbox_apply(") < report.index("write(1")


def test_every_allowed_system_call_says_why() -> None:
    """The seccomp allowlist is a table: each row names one call, once, with its reason;
    so does each extra argument pair (also_in) and each Landlock path (ll_paths)."""
    source = (HELPER_DIR / "sandbox.c").read_text()
    table = source[source.index("static const struct sc_rule allowlist[] = {"):]
    table = table[:table.index("\n};")]
    rows = re.findall(r"\{ __NR_(\w+), (ANY|ARG_IN|ARG_NONE_OF), [^\"]*\"([^\"]*)\"", table)
    assert len(rows) == table.count("{ __NR_") >= 15, rows
    names = [name for name, _how, _why in rows]
    assert len(names) == len(set(names)), names
    assert all(len(why.split()) >= 3 for _name, _how, why in rows), rows
    # Calls a confined helper must never make again.
    forbidden = {"execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "setns",
                 "unshare", "mount", "open", "connect", "sendto", "recvfrom", "setuid",
                 "setresuid", "prctl", "seccomp", "mmap", "mprotect", "write", "read"}
    assert forbidden.isdisjoint(names), forbidden & set(names)
    # The sockets it opens and the ioctls it makes are narrowed by argument.
    assert {name: how for name, how, _why in rows if how != "ANY"} == {
        "socket": "ARG_IN", "ioctl": "ARG_IN", "openat": "ARG_NONE_OF"}
    # Netlink only for rtnetlink (protocol, argument 2), with its reason too.
    also = source[source.index("} also_in[] = {"):]
    also = also[:also.index("\n};")]
    assert re.findall(r"\{ __NR_(\w+), (\w+), (\d), (\w+),\s*\"([^\"]+)\"", also) == [
        ("socket", "AF_NETLINK", "2", "NETLINK_ROUTE", also.split('"')[1])], also
    assert len(also.split('"')[1].split()) >= 3
    # So do the paths Landlock opens up.
    paths = source[source.index("} ll_paths[] = {"):]
    paths = paths[:paths.index("\n};")]
    assert paths.count("{ \"/") == len(re.findall(r"[01],\s+\"[^\"]{12,}\" \}", paths)) == 2, paths


def test_wire_offsets_agree_in_gp_h_the_python_encoder_and_protocol_md() -> None:
    """RQ_*/RP_* in gp.h (checked by _Static_assert there), the struct formats of
    gprocket._channel.wire and the tables of PROTOCOL.md name the same offsets."""
    header = (HELPER_DIR / "gp.h").read_text()
    doc = (HELPER_DIR / "PROTOCOL.md").read_text()
    for prefix, fmt, title in (("RQ", wire._REQUEST.format, "## Request"),
                               ("RP", wire._REPLY.format, "## Reply")):
        named = sorted(int(v) for v in re.findall(rf"\b{prefix}_\w+ = (\d+)", header))
        offsets, at = [], 0
        for count, code in re.findall(r"(\d*)([a-zA-Z])", fmt.lstrip("<")):
            offsets.append(at)
            at += struct.calcsize(f"<{count}{code}")
        section = doc[doc.index(title):]
        section = section[:section.index("\n## ", 1)]
        documented = [int(x) for x in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
        assert named == [*offsets, at] == [*documented, at], (prefix, named, offsets)


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is part of the CI image")
def test_fuzzers_run_clean(tmp_path: Path) -> None:
    make("fuzz")
    for harness, seeds in (("fuzz_request", "request"), ("fuzz_policy", "policy")):
        corpus = tmp_path / harness
        shutil.copytree(HELPER_DIR / "fuzz" / "corpus" / seeds, corpus)
        proc = subprocess.run(
            [str(HELPER_DIR / "build" / harness), f"-max_total_time={FUZZ_SECONDS}",
             "-max_len=1024", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/",
             str(corpus)], capture_output=True, text=True, timeout=FUZZ_SECONDS + 60,
            check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
        assert runs and int(runs[1]) > 10_000, proc.stderr[-2000:]
        assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("leak-*"))


def test_version_and_usage(helper: Path) -> None:
    run = subprocess.run([str(helper), "--version"], capture_output=True, text=True,
                         check=False)
    assert (run.returncode, run.stdout) == (0, "gprocket-helper 1\n")
    for argv in (["--help"], ["--broker", "--broker"], ["-"], [""]):
        rc = subprocess.run([str(helper), *argv], capture_output=True, check=False).returncode
        assert rc == 2


@pytest.mark.parametrize("kind", ["devnull", "pipe", "stream", "dgram", "udp", "closed"])
def test_channel_must_be_an_anonymous_seqpacket_pair(kind: str, helper: Path) -> None:
    keep: list[socket.socket] = []
    if kind == "devnull":
        stdin: int | None = os.open("/dev/null", os.O_RDONLY)
    elif kind == "pipe":
        stdin, wr = os.pipe()
        os.close(wr)
    elif kind == "udp":
        keep = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
        stdin = keep[0].fileno()
    elif kind == "closed":
        stdin = None
    else:
        keep = list(socket.socketpair(socket.AF_UNIX, getattr(socket, f"SOCK_{kind.upper()}")))
        stdin = keep[1].fileno()
    try:
        # fd 0 closed: the shell execs the helper with nothing on 0.
        argv = ["sh", "-c", f'exec "{helper}" <&-'] if stdin is None else [str(helper)]
        rc = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=20,
                            check=False).returncode
        assert rc == 3
    finally:
        if kind in ("devnull", "pipe") and stdin is not None:
            os.close(stdin)
        for s in keep:
            s.close()


def test_one_shot_serves_exactly_one_request(helper: Path) -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with mine:
        proc = subprocess.Popen([str(helper)], stdin=theirs.fileno())
        theirs.close()
        mine.settimeout(20)
        mine.send(hello())
        reply = mine.recv(200)
        assert reply[:4] == b"GPRP" and struct.unpack_from("<II", reply, 8) == (42, 0)
        assert reply[36:].rstrip(b"\0").startswith(b"gprocket-helper 1 mode=")
        assert proc.wait(timeout=20) == 0
        assert mine.recv(200) == b""  # the helper is gone: EOF, not a second answer
