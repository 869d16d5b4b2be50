"""Busy processes for the benches' ``--hog N``: a machine with N CPUs taken.

Each hog is ``python3 -c 'while True: pass'`` with PR_SET_PDEATHSIG, so it
dies with the process that started it even when that one is killed outright;
``Hogs`` also kills and reaps them on exit, error, Ctrl-C or SIGTERM (made
an exit, so the bench's own clean-up runs too). A bench that
compares quiet and loaded figures in one run pauses the hogs (SIGSTOP) for
its quiet rounds and resumes them (SIGCONT) for its loaded ones, so both
columns come from the same rounds of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType

# Dies with its parent (PR_SET_PDEATHSIG = 1), also when the parent died first.
_HOG = ("import ctypes, os, signal, sys\n"
        "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
        "os.getppid() == int(sys.argv[1]) or os._exit(0)\n"
        "while True: pass\n")

QUIET, LOADED = "quiet", "loaded"


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hog", type=int, default=0, metavar="N",
                        help="also measure with N busy processes running (quiet and loaded "
                             "columns side by side, from interleaved rounds)")


class Hogs:
    """``count`` busy processes, paused until :meth:`load` resumes them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.running = False
        if count and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and \
                threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            for _ in range(count):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _HOG, str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            self.pause()
        except BaseException:
            self.close()
            raise

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases a bench measures: quiet, and loaded when there are hogs."""
        return (QUIET, LOADED) if self.procs else (QUIET,)

    def _signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.running = False

    def load(self) -> None:
        self._signal(signal.SIGCONT)
        self.running = True
        # Let the scheduler spread them before anything is timed.
        time.sleep(0.05)

    def phase(self, name: str) -> None:
        """Enter phase ``name`` (QUIET or LOADED)."""
        if name == LOADED:
            self.load()
        else:
            self.pause()

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        self.load()
        try:
            yield
        finally:
            self.pause()

    def close(self) -> None:
        """Kill and reap every hog."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []

    def __enter__(self) -> Hogs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
