"""gprocket.cli.ping: argument handling and exit code 2 for errors (no socket needed).

Real pings through the command are in tests/privileged/test_ping_*.py.
"""

from __future__ import annotations

import pytest

from gprocket.cli import ping as cli


@pytest.mark.parametrize("argv", [
    [],                                   # no host
    ["127.0.0.1", "::1"],                 # two hosts without --many
    ["-c", "0", "127.0.0.1"],             # count must be >= 1
    ["-f", "/dev/null", "127.0.0.1"],     # -f needs --many
    ["--many"],                           # nothing to ping
    ["--many", "-f", "/nonexistent/gpi-hosts"],
    ["-s", "70000", "127.0.0.1"],         # payload too large
    ["bad..host"],                        # not a valid name (no DNS query leaves)
    ["-6", "127.0.0.1"],                  # wrong family for the literal
    ["--traceroute", "--many", "127.0.0.1"],
    ["--traceroute", "127.0.0.1", "::1"],  # one HOST only
    ["--traceroute", "--max-hops", "0", "127.0.0.1"],
    ["--traceroute", "bad..host"],
])
def test_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "gprocket ping" in capsys.readouterr().err


def test_usage_errors_exit_2_like_argparse() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["-c", "many", "127.0.0.1"])
    assert exc.value.code == 2


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("-c", "-i", "-W", "-s", "-t", "-4", "-6", "--many", "-f", "--traceroute",
                   "--max-hops"):
        assert option in out


def test_rtt_and_loss_are_formatted_like_iputils() -> None:
    assert [cli._rtt(v) for v in (0.0456, 1.234, 12.34, 123.4)] == \
        ["0.046", "1.23", "12.3", "123"]
    assert [cli._loss(3, 3), cli._loss(3, 0), cli._loss(3, 2), cli._loss(0, 0)] == \
        ["0%", "100%", "33.3333%", "0%"]
