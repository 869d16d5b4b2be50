"""`gprocket run`: the program runs as if Python had started it directly.

Every scenario is a real `python -m gprocket.cli run ...` process, compared
with what the same program does under plain `python`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import privileged as priv

from gprocket._runner import Program, UsageError, exit_status, parse_python_argv
from gprocket.cli.run import split

PROBE = textwrap.dedent("""
    import json, sys
    import gprocket.monkey
    print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0],
                      "patched": gprocket.monkey.is_patched(),
                      "main": sys.modules["__main__"].__dict__ is globals()}))
""")


def gprocket(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=priv.python_path())
    return subprocess.run([sys.executable, "-m", "gprocket.cli", "run", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def python(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=priv.python_path())
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=60, check=False)


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probemod.py").write_text(PROBE)
    return tmp_path


def test_script_sees_what_python_gives_it(probe: Path) -> None:
    ours = json.loads(gprocket("probe.py", "-x", "--y", "z", cwd=probe).stdout)
    theirs = json.loads(python("probe.py", "-x", "--y", "z", cwd=probe).stdout)
    assert ours["patched"] is True
    assert theirs["patched"] is False
    for key in ("argv", "name", "path0", "main"):
        assert ours[key] == theirs[key], key


def test_module_sees_what_python_gives_it(probe: Path) -> None:
    ours = json.loads(gprocket("-m", "probemod", "80", "--bind", "::", cwd=probe).stdout)
    theirs = json.loads(python("-m", "probemod", "80", "--bind", "::", cwd=probe).stdout)
    assert ours["argv"] == theirs["argv"] == [str(probe / "probemod.py"), "80", "--bind", "::"]
    assert ours["name"] == "__main__"
    assert ours["path0"] == theirs["path0"] == str(probe)
    assert ours["main"] is True
    assert ours["patched"] is True


def test_python_command_after_double_dash(probe: Path) -> None:
    ours = json.loads(gprocket("--", "python3", "-u", "-m", "probemod", "a", cwd=probe).stdout)
    assert ours["argv"] == [str(probe / "probemod.py"), "a"]
    assert ours["patched"] is True
    code = gprocket("--", "/usr/bin/python3", "-c", PROBE, "b", cwd=probe)
    assert json.loads(code.stdout)["argv"] == ["-c", "b"]
    assert json.loads(code.stdout)["main"] is True


@pytest.mark.parametrize(("body", "status"), [
    ("import sys; sys.exit(3)", 3),
    ("raise SystemExit", 0),
    ("raise SystemExit('bye')", 1),
    ("raise RuntimeError('boom')", 1),
    ("pass", 0),
])
def test_exit_status_matches_python(tmp_path: Path, body: str, status: int) -> None:
    (tmp_path / "prog.py").write_text(body + "\n")
    ours = gprocket("prog.py", cwd=tmp_path)
    theirs = python("prog.py", cwd=tmp_path)
    assert ours.returncode == theirs.returncode == status
    if "boom" in body:
        # Python's report: the program's frames only, none of the runner's or runpy's
        # (runpy names the file by its absolute path, hence the last lines only).
        assert ours.stderr.splitlines()[-2:] == theirs.stderr.splitlines()[-2:]
        assert ours.stderr.count('  File "') == theirs.stderr.count('  File "') == 1
    if "bye" in body:
        assert ours.stderr.strip().endswith("bye")


@pytest.mark.parametrize(("body", "signum"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", signal.SIGTERM),
    ("raise KeyboardInterrupt", signal.SIGINT),
    ("import os, signal; os.kill(os.getpid(), signal.SIGINT)", signal.SIGINT),
])
def test_signals_end_the_program_as_they_would(tmp_path: Path, body: str, signum: int) -> None:
    (tmp_path / "prog.py").write_text(body + "\n")
    ours = gprocket("prog.py", cwd=tmp_path)
    theirs = python("prog.py", cwd=tmp_path)
    assert ours.returncode == theirs.returncode == -signum


def test_missing_programs_fail_like_python(tmp_path: Path) -> None:
    assert gprocket("-m", "no_such_module_gps", cwd=tmp_path).returncode == 1
    missing = gprocket("nothere.py", cwd=tmp_path)
    assert missing.returncode == 2
    assert "nothere.py" in missing.stderr


def test_program_calling_gevent_patch_all_stays_patched(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import gevent.monkey; gevent.monkey.patch_all()
        import json, socket, gevent.socket, gprocket.monkey
        print(json.dumps([socket.socket is gevent.socket.socket,
                          gprocket.monkey.is_patched(),
                          socket.socket.bind.__name__]))
    """))
    ours = gprocket("prog.py", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == [True, True, "bind"]
    assert "Warning" not in ours.stderr


def test_gevent_option_patches_all_first(tmp_path: Path) -> None:
    code = "import socket, gevent.socket; print(socket.socket is gevent.socket.socket)"
    assert gprocket("--gevent", "-c", code, cwd=tmp_path).stdout.strip() == "True"
    assert gprocket("-c", code, cwd=tmp_path).stdout.strip() == "False"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in ((), ("--", "/bin/nc", "-l", "80"), ("--", "python3", "-X", "dev", "x.py"),
                 ("--bogus", "-m", "x"), ("-m",), ("--", "python3", "-")):
        proc = gprocket(*args, cwd=tmp_path)
        assert proc.returncode == 2, args
        assert "usage" in proc.stderr or "gprocket run" in proc.stderr, args
    helped = gprocket("--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "--strategies" in helped.stdout


def test_options_reach_the_environment(tmp_path: Path) -> None:
    code = "import os; print(os.environ['GPROCKET_STRATEGIES'], os.environ['GPROCKET_HELPER'])"
    proc = gprocket("--strategies", "plain,broker", "--helper", "/x/h", "-c", code, cwd=tmp_path)
    assert proc.stdout.split() == ["plain,broker", "/x/h"]


def test_split_and_parse() -> None:
    assert split(["--gevent", "-m", "http.server", "-h"]) == (
        ["--gevent"], Program("module", "http.server", ("-h",)))
    assert split(["--helper", "/h", "s.py", "--helper"]) == (
        ["--helper", "/h"], Program("script", "s.py", ("--helper",)))
    assert split(["--gevent"]) == (["--gevent"], None)
    assert parse_python_argv(["python3.11", "-uB", "-mhttp.server", "80"],
                             interpreter=True) == Program("module", "http.server", ("80",), True)
    assert parse_python_argv(["-c", "pass", "x"]) == Program("code", "pass", ("x",))
    assert parse_python_argv(["--", "-weird.py"]) == Program("script", "-weird.py")
    with pytest.raises(UsageError, match="not a Python interpreter"):
        parse_python_argv(["bash", "-c", "x"], interpreter=True)
    with pytest.raises(UsageError, match="unsupported"):
        parse_python_argv(["-O", "x.py"])
    with pytest.raises(UsageError, match="no program"):
        parse_python_argv(["-u"])


def test_exit_status() -> None:
    assert exit_status(SystemExit()) == 0
    assert exit_status(SystemExit(256 + 4)) == 4
    assert exit_status(SystemExit(False)) == 0
