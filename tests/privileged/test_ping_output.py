"""`gprocket ping` against the real iputils `ping` and `fping`, line by line.

Both tools run as the same unprivileged user in a namespace made here, on
the same targets: loopback (127.0.0.1, ::1, the names "localhost" and
"six" from the namespace's own hosts file), dead addresses on a veth whose
far end answers nothing (10.9.0.2, 2001:db8:9::2), a route that does not
exist, a name that does not resolve. Their stdout, stderr and exit codes
must be equal once the numbers that measure time are masked: RTTs, "time
N ms" and fping's elapsed seconds. Nothing else is masked.

gprocket runs over a datagram socket (ping_group_range open) and over a
raw socket from the installed helper (closed), on both engines.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv
from support.ping_output import mask

pytestmark = pytest.mark.privileged

OPEN_RANGE = "0 2147483647"
HOSTS = "127.0.0.1 localhost\n::1 six\n"
DEAD4, DEAD6 = "10.9.0.2", "2001:db8:9::2"


@pytest.fixture
def out_ns() -> Iterator[priv.Netns]:
    with priv.make_netns("gpo") as ns:
        # `ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts for
        # this namespace only: an IPv6 name ("six") and a fixed "localhost".
        etc = Path("/etc/netns") / ns.name
        made_parent = not etc.parent.exists()
        etc.mkdir(parents=True)
        try:
            (etc / "hosts").write_text(HOSTS)
            near, far = f"gpov{secrets.token_hex(3)}", f"gpow{secrets.token_hex(3)}"
            ns.exec(["ip", "link", "add", near, "type", "veth", "peer", "name", far])
            ns.exec(["ip", "addr", "add", "10.9.0.1/24", "dev", near])
            ns.exec(["ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", near, "nodad"])
            # Known neighbours with a MAC nobody has: requests leave, nothing answers.
            for dead in (DEAD4, DEAD6):
                ns.exec(["ip", "neigh", "add", dead, "lladdr", "02:00:00:00:00:02", "dev",
                         near, "nud", "permanent"])
            ns.exec(["ip", "link", "set", near, "up"])
            ns.exec(["ip", "link", "set", far, "up"])
            yield ns
        finally:
            shutil.rmtree(etc, ignore_errors=True)
            if made_parent:
                with contextlib.suppress(OSError):  # another namespace's file is there
                    etc.parent.rmdir()


@pytest.fixture(params=[("datagram", "c"), ("raw", "c"), ("raw", "python")],
                ids=["datagram", "raw-helper", "raw-helper-python-engine"])
def gp_env(request: pytest.FixtureRequest, out_ns: priv.Netns,
           installed_helper: Callable[..., Path]) -> dict[str, str]:
    transport, engine = request.param
    out_ns.sysctl("net.ipv4.ping_group_range", OPEN_RANGE if transport == "datagram" else "1 0")
    # The defaults grant no raw socket: the raw runs name the grant they use.
    helper = installed_helper(policy="allow * raw icmp,icmpv6\n")
    return {"GPROCKET_HELPER": str(helper), "GPROCKET_ICMP_ENGINE": engine}


Result = tuple[int, str, str]


def both(user: priv.User, ns: priv.Netns, env: dict[str, str], tool: str,
         argv: list[str], *, stdin: str | None = None) -> tuple[Result, Result]:
    """(the real tool's, gprocket's) exit code, stdout and stderr for the same argv."""
    real = priv.run_argv(user, [tool, *argv], netns=ns, input=stdin, timeout=120)
    mode = ["--many"] if tool == "fping" else []
    ours = priv.run_argv(user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping", *mode, *argv],
                         netns=ns, env=env, input=stdin, timeout=120)
    return ((real.returncode, real.stdout, real.stderr),
            (ours.returncode, ours.stdout, ours.stderr))


def assert_same(real: Result, ours: Result, *, any_order: bool = False) -> None:
    def shape(result: Result) -> tuple[int, str, str]:
        code, out, err = result
        out, err = mask(out), mask(err)
        if any_order:  # two families answer concurrently: their lines may interleave
            out = "\n".join(sorted(out.split("\n")))
        return code, out, err

    assert shape(ours) == shape(real), (
        f"--- real\n{real[1]}{real[2]}exit {real[0]}\n"
        f"--- gprocket\n{ours[1]}{ours[2]}exit {ours[0]}")


PING_CASES = [
    ["-c", "3", "-i", "0.2", "127.0.0.1"],
    ["-c", "3", "-i", "0.2", "::1"],
    ["-c", "2", "-i", "0.2", "localhost"],          # "from localhost (127.0.0.1)"
    ["-c", "2", "-i", "0.2", "six"],                # "PING six(six (::1)) 56 data bytes"
    ["-c", "2", "-i", "0.2", "-n", "localhost"],
    ["-c", "2", "-i", "0.2", "-q", "::1"],
    ["-c", "2", "-i", "0.2", "-s", "8", "127.0.0.1"],     # too small to be timed
    ["-c", "2", "-i", "0.2", "-s", "1000", "-t", "9", "::1"],
    ["-c", "3", "-i", "0.2", "-W", "1", DEAD4],     # dead: the blank line, time to last send
    ["-c", "2", "-i", "0.2", "-W", "1", "-q", DEAD6],
    ["-c", "1", "192.0.2.1"],                       # no route: connect fails, exit 2
    ["-c", "1", "-i", "0.001", "127.0.0.1"],        # too fast for a user
    ["-c", "1", "-i", "0.2x", "127.0.0.1"],         # garbage warned about, then it runs
    ["-c", "1", "-6", "localhost"],
    ["-c", "1", "-4", "six"],
    ["-c", "1", "nosuch.invalid"],
    ["-c", "1", "bad..host"],
    ["-c", "0", "127.0.0.1"],
    ["-c", "1", "-t", "0", "127.0.0.1"],
    ["-c", "1", "-W", "-1", "127.0.0.1"],
    ["-c", "1", "-4", "-6", "::1"],
    [],
]


@pytest.mark.parametrize("argv", PING_CASES, ids=" ".join)
def test_ping_prints_what_iputils_prints(unpriv_user: priv.User, out_ns: priv.Netns,
                                         gp_env: dict[str, str], argv: list[str]) -> None:
    assert_same(*both(unpriv_user, out_ns, gp_env, "ping", argv))


@pytest.mark.parametrize("argv", [["-z", "127.0.0.1"], ["-c"], ["127.0.0.1", "::1"]],
                         ids=" ".join)
def test_usage_errors_start_like_iputils(unpriv_user: priv.User, out_ns: priv.Netns,
                                         gp_env: dict[str, str], argv: list[str]) -> None:
    # The usage text that follows lists gprocket's options, not iputils'.
    (real_code, real_out, real_err), (code, out, err) = both(unpriv_user, out_ns, gp_env,
                                                            "ping", argv)
    assert (code, out, err.split("\n")[:2]) == (real_code, real_out,
                                                real_err.split("\n")[:2])


@pytest.mark.parametrize("target", ["127.0.0.1", "six"])
def test_ctrl_c_prints_the_statistics_like_iputils(unpriv_user: priv.User,
                                                   out_ns: priv.Netns,
                                                   gp_env: dict[str, str],
                                                   target: str) -> None:
    def interrupted(argv: list[str], env: dict[str, str] | None) -> Result:
        proc = priv.popen_argv(unpriv_user, argv, netns=out_ns, env=env)
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            while sum(" bytes from " in line for line in lines) < 3:
                line = proc.stdout.readline()
                assert line, "".join(lines) + proc.communicate()[1]
                lines.append(line)
            proc.send_signal(signal.SIGINT)  # a whole interval before the 4th request
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, "".join(lines) + out, err

    # No -c: both ping until interrupted.
    real = interrupted(["ping", "-i", "1", target], None)
    ours = interrupted([priv.VENV_PYTHON, "-m", "gprocket.cli", "ping", "-i", "1", target],
                       gp_env)
    assert_same(real, ours)
    assert "3 packets transmitted, 3 received, 0% packet loss" in ours[1]


FPING_CASES: list[tuple[list[str], bool]] = [
    (["-t", "300", "127.0.0.1", "::1", "localhost", DEAD4, DEAD6], True),
    (["-a", "-t", "300", "127.0.0.1", DEAD4, "localhost"], False),
    (["-u", "-t", "300", "127.0.0.1", DEAD4, "localhost"], False),
    (["-q", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-r", "1", "-t", "200", DEAD4], False),
    (["-s", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-x", "2", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-c", "3", "-p", "200", "-t", "300", "127.0.0.1", DEAD4, "localhost"], False),
    (["-C", "2", "-p", "200", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-q", "-c", "2", "-p", "200", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-s", "-c", "2", "-p", "200", "-t", "300", "127.0.0.1", "::1", DEAD6], True),
    (["-a", "-c", "2", "-p", "200", "-t", "300", "127.0.0.1", DEAD4], False),
    (["-c", "1", "-b", "100", "-t", "300", "::1", "six"], False),
    (["-g", "-t", "300", "10.9.0.0/30"], False),
    (["-g", "-t", "300", "10.9.0.1", "10.9.0.2"], False),
    (["-t", "300", "nosuch.invalid", "127.0.0.1"], False),     # exit 2
    (["-t", "300", "192.0.2.1", "127.0.0.1"], False),          # no route: send fails
    (["-c", "0", "127.0.0.1"], False),
    (["-a", "-u", "127.0.0.1"], False),
]


@pytest.mark.parametrize(("argv", "any_order"), FPING_CASES,
                         ids=[" ".join(case[0]) for case in FPING_CASES])
def test_many_prints_what_fping_prints(unpriv_user: priv.User, out_ns: priv.Netns,
                                       gp_env: dict[str, str], argv: list[str],
                                       any_order: bool) -> None:
    (real, ours) = both(unpriv_user, out_ns, gp_env, "fping", argv)
    if argv[:2] == ["-c", "0"]:
        # usage(1): both print their own usage text on stderr
        assert (ours[0], ours[1], ours[2].split(" ")[0]) == (real[0], real[1], "Usage:")
        return
    assert_same(real, ours, any_order=any_order)


def test_many_reads_targets_from_a_file_and_stdin(unpriv_user: priv.User, out_ns: priv.Netns,
                                                  gp_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    text = f"127.0.0.1\n# a comment\n::1 trailing words\n\n{DEAD4}\nlocalhost\n"
    hosts = priv.INSTALL_ROOT / f"hosts-{secrets.token_hex(4)}"
    priv.install_root()
    hosts.write_text(text)
    hosts.chmod(0o644)
    try:
        for argv, stdin in ((["-t", "300", "-f", str(hosts)], None),
                            (["-t", "300", "-f", "-"], text),
                            (["-t", "300"], text)):
            real, ours = both(unpriv_user, out_ns, gp_env, "fping", argv, stdin=stdin)
            assert_same(real, ours, any_order=True)
            assert ours[0] == 1
    finally:
        hosts.unlink()


def test_masks_hide_only_times() -> None:
    # The comparison would catch a wrong address, count, size or percentage.
    line = "64 bytes from 10.9.0.2: icmp_seq=1 ttl=64 time=0.045 ms"
    assert mask(line) == "64 bytes from 10.9.0.2: icmp_seq=1 ttl=64 time=N ms"
    assert mask("127.0.0.1 : [0], 64 bytes, 0.045 ms (0.045 avg, 0% loss)") == \
        "127.0.0.1 : [0], 64 bytes, N ms (N avg, 0% loss)"
    assert mask("3 packets transmitted, 2 received, 33.3333% packet loss, time 203ms") == \
        "3 packets transmitted, 2 received, 33.3333% packet loss, time Nms"
    assert mask("        2.441 sec (elapsed real time)") == " N sec (elapsed real time)"
    assert subprocess.run(["ping", "-V"], capture_output=True, text=True,
                          check=True).stdout.startswith("ping from iputils")
