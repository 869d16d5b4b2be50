"""`gprocket run`: start an unmodified Python program with privileged binds.

Like authbind, without LD_PRELOAD: the program runs in this interpreter after
:func:`gprocket.monkey.patch`, exactly as ``python -m MODULE``, ``python
SCRIPT`` or ``python -c CODE`` would run it — same ``sys.argv``, a real
``__main__``, ``sys.path[0]`` where Python puts it, the exit status Python
would give (SystemExit, an uncaught exception = 1, an uncaught
KeyboardInterrupt = killed by SIGINT) and untouched signal dispositions.
"""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import signal
import sys
import types
from dataclasses import dataclass

import gevent.monkey

from . import monkey

__all__ = ["Program", "UsageError", "exit_status", "parse_python_argv", "run_program"]

# Interpreter options that change nothing we could honour at this point, or
# that the running interpreter already reflects: accepted and ignored.
_IGNORED_FLAGS = frozenset("BEsIqbdv")
_PYTHON_NAME = re.compile(r"python(\d+(\.\d+)?)?$")


class UsageError(ValueError):
    """The command line does not name a Python program we can run."""


@dataclass(frozen=True)
class Program:
    """What to run: ``kind`` is "module", "script" or "code"; ``args`` follow it."""

    kind: str
    target: str
    args: tuple[str, ...] = ()
    unbuffered: bool = False

    @property
    def argv(self) -> list[str]:
        """sys.argv as Python sets it before the program starts.

        For a module runpy replaces argv[0] with the module's file, as
        ``python -m`` does.
        """
        first = {"module": "-m", "code": "-c"}.get(self.kind, self.target)
        return [first, *self.args]


def parse_python_argv(argv: list[str], *, interpreter: bool = False) -> Program:
    """Read a Python command line: ``[python] [options] (-m MOD | -c CODE | SCRIPT) ARGS``.

    With `interpreter` the first item must name a Python interpreter
    (``python3``, ``/usr/bin/python3.11``, ``sys.executable``). Supported
    options: ``-u`` and the flags -B -E -s -I -q -b -d -v (accepted, no
    effect here). Raises UsageError naming what is wrong.
    """
    rest = list(argv)
    if interpreter:
        if not rest:
            raise UsageError("nothing to run after '--'")
        exe = rest.pop(0)
        if not (_PYTHON_NAME.match(os.path.basename(exe)) or exe == sys.executable):
            raise UsageError(
                f"{exe!r} is not a Python interpreter: gprocket run patches Python programs "
                "in this process; give other programs the capability instead "
                "(capsetup, or AmbientCapabilities= in a systemd unit)")
    unbuffered = False
    while rest:
        arg = rest.pop(0)
        if arg in {"-m", "-c"}:
            if not rest:
                raise UsageError(f"option {arg} needs an argument")
            kind = "module" if arg == "-m" else "code"
            return Program(kind, rest[0], tuple(rest[1:]), unbuffered)
        if arg.startswith("-m") or arg.startswith("-c"):
            kind = "module" if arg[1] == "m" else "code"
            return Program(kind, arg[2:], tuple(rest), unbuffered)
        if arg == "--":
            if not rest:
                raise UsageError("no script given after '--'")
            return Program("script", rest[0], tuple(rest[1:]), unbuffered)
        if arg.startswith("-") and arg != "-":
            flags = arg[1:]
            unknown = set(flags) - _IGNORED_FLAGS - {"u"}
            if unknown:
                raise UsageError(f"unsupported Python option {arg!r} for gprocket run")
            unbuffered = unbuffered or "u" in flags
            continue
        if arg == "-":
            raise UsageError("a program on standard input cannot be run: give a file or -m")
        return Program("script", arg, tuple(rest), unbuffered)
    raise UsageError("no program given: use -m MODULE, -c CODE or SCRIPT")


def exit_status(exc: SystemExit) -> int:
    """The process exit status Python gives for `exc` (printing a message code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _prepare(program: Program) -> None:
    sys.argv[:] = program.argv
    if program.kind == "module":
        sys.path[0:1] = [os.getcwd()]
    elif program.kind == "script":
        sys.path[0:1] = [os.path.dirname(os.path.abspath(program.target))]
    else:
        sys.path[0:1] = [""]
    if program.unbuffered:
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(write_through=True)


def _missing(program: Program) -> int | None:
    """Python's message and status when the module or script does not exist."""
    if program.kind == "module":
        try:
            found = importlib.util.find_spec(program.target) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            print(f"{sys.executable}: No module named {program.target}", file=sys.stderr)
            return 1
    elif program.kind == "script" and not os.path.exists(program.target):
        print(f"{sys.executable}: can't open file {os.path.abspath(program.target)!r}: "
              "[Errno 2] No such file or directory", file=sys.stderr)
        return 2
    return None


def _execute(program: Program) -> None:
    if program.kind == "module":
        runpy.run_module(program.target, run_name="__main__", alter_sys=True)
    elif program.kind == "script":
        runpy.run_path(program.target, run_name="__main__")
    else:
        # python -c runs in a real __main__ module (pickle and friends look it up).
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        exec(compile(program.target, "<string>", "exec"), main.__dict__)  # noqa: S102


def _report(exc: BaseException) -> None:
    """Print `exc` as Python's top level would: the program's frames only."""
    tb = exc.__traceback__
    ours = (__file__, runpy.__file__, "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def run_program(program: Program, *, gevent_patch_all: bool = False) -> int:
    """Patch, then run `program` as Python would; return its exit status.

    With `gevent_patch_all`, ``gevent.monkey.patch_all()`` runs first, for
    blocking programs that should become cooperative. A missing module or
    script gives Python's message and status (1 and 2).
    """
    if gevent_patch_all:
        gevent.monkey.patch_all()
    monkey.patch()
    _prepare(program)
    status = _missing(program)
    if status is not None:
        return status
    try:
        _execute(program)
    except SystemExit as exc:
        return exit_status(exc)
    except KeyboardInterrupt as exc:
        _report(exc)
        # What Python does for an uncaught KeyboardInterrupt: die by SIGINT,
        # so the parent (a shell) sees the signal and not a plain exit 1.
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _report(exc)
        return 1
    return 0
