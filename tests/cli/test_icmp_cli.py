"""gprocket.cli.ping: iputils' and fping's words and exit codes for bad arguments, their numbers.

Nothing here opens a socket. The real tools' own output is the reference in
tests/privileged/test_ping_output.py (both tools run on the same targets).
"""

from __future__ import annotations

import pytest

from gprocket.cli import _fping, _iputils
from gprocket.cli import ping as cli

LONG_MAX = "9223372036854775807"


@pytest.mark.parametrize(("argv", "code", "first"), [
    # iputils 20221126's exact words and exit codes
    ([], 1, "ping: usage error: Destination address required"),
    (["-c", "0", "127.0.0.1"], 1,
     f"ping: invalid argument: '0': out of range: 1 <= value <= {LONG_MAX}"),
    (["-c", "x", "127.0.0.1"], 1, "ping: invalid argument: 'x'"),
    (["-c", "2x", "127.0.0.1"], 1, "ping: invalid argument: '2x'"),
    (["-s", "-1", "127.0.0.1"], 1,
     "ping: invalid argument: '-1': out of range: 0 <= value <= 2147483647"),
    (["-t", "256", "127.0.0.1"], 1,
     "ping: invalid argument: '256': out of range: 0 <= value <= 255"),
    (["-W", "-1", "127.0.0.1"], 2, "ping: bad linger time: -1"),
    (["-4", "-6", "::1"], 2, "ping: only one -4 or -6 option may be specified"),
    (["-z", "127.0.0.1"], 2, "ping: invalid option -- 'z'"),
    (["-c"], 2, "ping: option requires an argument -- 'c'"),
    (["-h"], 2, ""),                                # usage, after a blank line
    (["127.0.0.1", "::1"], 2, ""),                  # one destination only: usage
    (["bad..host"], 2, "ping: bad..host: Name or service not known"),
    (["-6", "127.0.0.1"], 2, "ping: 127.0.0.1: Address family for hostname not supported"),
    (["-4", "::1"], 2, "ping: ::1: Address family for hostname not supported"),
    (["-c", "1", "-t", "0", "127.0.0.1"], 2,
     "ping: cannot set unicast time-to-live: Invalid argument"),
    # fping 5.1's (exit 1 for a usage error, 2 for names that do not resolve, 4 fopen)
    (["--many", "-a", "-u", "127.0.0.1"], 1, "fping: specify only one of a, u"),
    (["--many", "-x"], 1, "fping: option requires an argument -- 'x'"),
    (["--many", "-z", "127.0.0.1"], 1, "fping: invalid option -- 'z'"),
    (["--many", "-c", "0", "127.0.0.1"], 1, "Usage: gprocket ping --many [options] [targets...]"),
    (["--many", "-f", "/dev/null", "127.0.0.1"], 1,
     "Usage: gprocket ping --many [options] [targets...]"),
    (["--many", "-4", "-6", "127.0.0.1"], 1, "fping: can't specify both -4 and -6"),
    (["--many", "-H", "300", "127.0.0.1"], 1, "fping: ttl 300 out of range"),
    (["--many", "-b", "70000", "127.0.0.1"], 1,
     "fping: data size 70000 not valid, must be lower than 65488"),
    (["--many", "-B", "9", "127.0.0.1"], 1,
     "fping: backoff factor 9.0 not valid, must be between 1.0 and 5.0"),
    (["--many", "-g", "10.0.0.0/33"], 1, "fping: netmask must be between 1 and 32 (is: 33)"),
    (["--many", "-g", "2001:db8::/64"], 1, "fping: -g works only with IPv4 addresses"),
    (["--many", "-g", "10.0.0.0/8"], 1, "fping: -g parameter generates too many addresses"),
    (["--many", "-f", "/nonexistent/gpi-hosts"], 4,
     "fping: fopen : No such file or directory"),
    (["--many", "bad..host"], 2, "bad..host: Name or service not known"),
    (["--many", "-q", "bad..host"], 2, None),       # -q: not even the warning
    # traceroute keeps argparse and gprocket's own words
    (["--traceroute", "127.0.0.1", "::1"], 2, "gprocket ping --traceroute: give exactly one HOST"),
    (["--traceroute", "--max-hops", "0", "127.0.0.1"], 2,
     "gprocket ping: --max-hops must be 1..255"),
    (["--traceroute", "bad..host"], 2, None),
])
def test_argument_errors_in_the_real_tools_words(argv: list[str], code: int,
                                                 first: str | None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    if first is None:
        assert "--traceroute" in argv or captured.err == ""
    else:
        assert captured.err.split("\n")[0] == first
    if first == "" and code == 2:
        assert captured.err.startswith("\nUsage\n  gprocket ping [options] <destination>\n")
    assert captured.out == ""


def test_garbage_after_an_interval_is_warned_about_like_iputils(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = _iputils._parse(["-i", "0.2abc", "-W", "1e0", "127.0.0.1"])
    assert (args.interval_ms, args.linger_ms) == (200, 1000)
    assert capsys.readouterr().err == ("ping: option argument contains garbage: abc\n"
                                       "ping: this will become fatal error in the future\n")


def test_iputils_defaults() -> None:
    args = _iputils._parse(["-c", " 010", "::1"])  # strtol: blanks first, base 10
    assert (args.count, args.interval_ms, args.linger_ms, args.size) == (10, 1000, 10000, 56)
    assert _iputils._parse(["::1"]).count == 0  # no -c: until interrupted, like iputils


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("-c", "-i", "-W", "-s", "-t", "-4", "-6", "-q", "-n", "--many",
                   "--traceroute", "--socket"):
        assert option in out
    assert cli.main(["--many", "-h"]) == 0
    out = capsys.readouterr().out
    for option in ("-a", "-u", "-c", "-C", "-q", "-s", "-i", "-p", "-t", "-r", "-f", "-g"):
        assert f"   {option} " in out


def test_reply_time_rounds_like_iputils() -> None:
    # gather_statistics(): microseconds, fewer decimals as the time grows
    assert [_iputils._time(us) for us in (45, 999, 1004, 1005, 9994, 9995, 12345, 99949,
                                          99950, 123456)] == \
        ["0.045", "0.999", "1.00", "1.01", "9.99", "10.0", "12.3", "99.9", "100", "123"]


def test_loss_is_printed_as_a_c_float_with_g() -> None:
    assert [_iputils._loss(3, 3), _iputils._loss(3, 0), _iputils._loss(3, 2),
            _iputils._loss(3, 1), _iputils._loss(7, 6)] == \
        ["0%", "100%", "33.3333%", "66.6667%", "14.2857%"]


def test_rtt_line_is_computed_in_integer_microseconds_like_iputils() -> None:
    # Both from real iputils runs: the same microseconds give the same line.
    stats = _iputils._Stats(times=[28, 36])
    assert stats.rtt_line() == "rtt min/avg/max/mdev = 0.028/0.032/0.036/0.004 ms"
    stats = _iputils._Stats(times=[50, 51])
    assert stats.rtt_line() == "rtt min/avg/max/mdev = 0.050/0.050/0.051/0.000 ms"
    # llsqrt() returns the iterate after the last decrease: 15 gives 4, as in iputils
    assert [_iputils._llsqrt(v) for v in (0, 1, 15, 16, 17, 10**12)] == [0, 1, 4, 4, 4, 10**6]


def test_elapsed_is_start_to_last_request_rounded_half_up() -> None:
    stats = _iputils._Stats(started=10**9, last_send=10**9 + 2_053_500_000)
    assert stats.elapsed_ms() == 2054
    assert _iputils._Stats(started=10**9).elapsed_ms() == 0


def test_fping_rtt_text() -> None:
    # sprint_tm(): nanoseconds in, three decimals below 1 ms, fewer as it grows
    assert [_fping.sprint_tm(ns) for ns in (45_000, 999_400, 1_234_000, 12_345_000,
                                            123_456_000)] == \
        ["0.045", "0.999", "1.23", "12.3", "123"]


def test_fping_count_mode_timeout_follows_the_period() -> None:
    assert _fping._parse(["-c", "2", "x"]).timeout_ms == 1000
    assert _fping._parse(["-c", "2", "-p", "5000", "x"]).timeout_ms == 2000
    assert _fping._parse(["-c", "2", "-p", "100", "-t", "300", "x"]).timeout_ms == 300
    assert _fping._parse(["x"]).timeout_ms == 500
    assert _fping._parse([]).file == "-"  # no targets: stdin, like fping


def test_fping_generate() -> None:
    assert _fping._generate(["10.9.0.0/30"], None) == ["10.9.0.1", "10.9.0.2"]
    assert _fping._generate(["10.9.0.0/31"], None) == ["10.9.0.0", "10.9.0.1"]
    assert _fping._generate(["10.9.0.254", "10.9.1.1"], None) == \
        ["10.9.0.254", "10.9.0.255", "10.9.1.0", "10.9.1.1"]
