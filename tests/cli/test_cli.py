"""The `gprocket` dispatcher: usage, unknown commands, delegation."""

from __future__ import annotations

import importlib

import pytest

from gprocket.cli.__main__ import SUBCOMMANDS, main


def test_no_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: gprocket COMMAND" in capsys.readouterr().out


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name} " in out


def test_unknown_command_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_module_has_main(name: str) -> None:
    module = importlib.import_module(SUBCOMMANDS[name][0])
    assert callable(module.main)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help_exits_zero(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse exits from inside a subcommand; a subcommand may also return 0.
    try:
        code = main([name, "--help"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out
