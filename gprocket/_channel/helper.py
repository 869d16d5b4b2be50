"""The helper client's pieces both fronts share: find it, judge it, start it, read its replies.

The helper is looked for at, in order: the ``helper=`` argument, the
GPROCKET_HELPER environment variable (ignored in a privileged process, see
_environ), /usr/local/libexec/gprocket/ then /usr/libexec/gprocket/. It can
only lift privilege when it is setuid root or carries file capabilities (or
when we are root already); otherwise the rung is unavailable with the reason
and the fix.
"""

from __future__ import annotations

import errno as _errno
import grp
import os
import shutil
import stat
from pathlib import Path

from .._environ import trusted_getenv
from .._errors import HelperError, PolicyDenied, RungRefused, RungUnavailable
from .._spec import Request
from .fdpass import verify
from .wire import Reply, Stage

__all__ = [
    "DEFAULT_TIMEOUT",
    "INSTALL_FIX",
    "PACKAGED",
    "SEARCH_PATH",
    "SPIN_SECONDS",
    "check_namespace",
    "check_runnable",
    "checked_descriptor",
    "helper_argv",
    "locate",
    "no_reply_error",
    "one_shot_command",
    "raise_for_reply",
    "sudo_path",
]

SEARCH_PATH = (
    "/usr/local/libexec/gprocket/gprocket-helper",
    "/usr/libexec/gprocket/gprocket-helper",
)
PACKAGED = Path(__file__).resolve().parent.parent / "_bin" / "gprocket-helper"
INSTALL_FIX = "install the helper with: capsetup install"
DEFAULT_TIMEOUT = 10.0
_SUDO_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# How long a reader polls the channel before it parks in the hub. A reply
# usually comes within ~10 µs, sooner than the hub's wait and the wake-up of a
# sleeping thread (bench/acquire.py); the hub is held no longer than this per
# reply, and only while polling pays (fdpass.Poll: a poll that gives up or
# loses the CPU suspends polling). Never with one CPU: the broker needs it.
SPIN_SECONDS = 50e-6


def locate(helper: str | os.PathLike[str] | None = None) -> str:
    """The helper's path; raises RungUnavailable naming every place looked at."""
    if helper is not None:
        return os.fspath(helper)
    env = trusted_getenv("GPROCKET_HELPER")
    if env:
        return env
    for candidate in SEARCH_PATH:
        if os.path.lexists(candidate):
            return candidate
    raise RungUnavailable(f"no helper installed (looked at {', '.join(SEARCH_PATH)})", INSTALL_FIX)


def _no_new_privs() -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("NoNewPrivs:"):
                return line.split()[1] == "1"
    return False


def check_runnable(path: str) -> str:
    """How the helper at ``path`` gets its privilege: "root", "setuid" or "caps".

    Raises RungUnavailable with the reason and the fix when it cannot run
    for this process or could not lift any privilege.
    """
    try:
        info = os.stat(path)
    except OSError as err:
        raise RungUnavailable(f"no helper at {path}: {err.strerror}", INSTALL_FIX) from err
    if not stat.S_ISREG(info.st_mode):
        raise RungUnavailable(f"{path} is not a regular file", INSTALL_FIX)
    if not os.access(path, os.X_OK):
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        mode = stat.S_IMODE(info.st_mode)
        owner = "root" if info.st_uid == 0 else str(info.st_uid)
        if mode & stat.S_IXGRP and not mode & stat.S_IXOTH:
            fix = f"join group {group}: the helper is {owner}:{group} {mode:04o}"
        else:
            fix = f"make the helper executable: it is {owner}:{group} {mode:04o}"
        raise RungUnavailable(f"the helper {path} is not executable by this user", fix)
    if os.geteuid() == 0:
        return "root"
    if _no_new_privs():
        raise RungUnavailable(
            "this process has no_new_privs set, so no helper can gain privilege",
            "start the program without NoNewPrivileges= (or give it capabilities)",
        )
    if info.st_mode & stat.S_ISUID and info.st_uid == 0:
        return "setuid"
    try:
        os.getxattr(path, "security.capability")
    except OSError:
        raise RungUnavailable(
            f"the helper {path} is neither setuid root nor carries file capabilities", INSTALL_FIX
        ) from None
    return "caps"


def helper_argv(path: str, *, broker: bool, namespace: str | None) -> list[str]:
    """The helper's command line: PROTOCOL.md's ``[--broker] [--netns NAME]``."""
    argv = [path, "--broker"] if broker else [path]
    if namespace is not None:
        argv += ["--netns", namespace]
    return argv


def sudo_path() -> str:
    """The sudo program; raises RungUnavailable when it is not installed."""
    found = shutil.which("sudo", path=_SUDO_ENV["PATH"])
    if found is None:
        raise RungUnavailable("sudo is not installed", INSTALL_FIX)
    return found


def raise_for_reply(reply: Reply, request: Request) -> None:
    """Turn an error reply into the exception that says whose fault it is.

    PolicyDenied for the policy stage; HelperError when the helper could not
    parse what we sent (a version mismatch, a bug) or failed internally;
    otherwise the kernel's refusal as OSError with its errno.
    """
    if reply.ok:
        return
    detail = f": {reply.detail}" if reply.detail else ""
    if reply.stage == Stage.POLICY:
        raise PolicyDenied(reply.error, reply.detail or reply.error_name)
    if reply.stage in (Stage.PARSE, Stage.INTERNAL):
        raise HelperError(
            f"the helper failed at stage {reply.stage.name.lower()} with {reply.error_name}{detail}"
        )
    raise OSError(
        reply.error,
        f"helper: cannot {reply.stage.name.lower()} {request.describe()}: "
        f"{os.strerror(reply.error)}{detail}",
    )


def checked_descriptor(request: Request, reply: Reply, fd: int | None,
                       rid: int | None = None) -> int:
    """The checked descriptor of ``reply`` to ``request``, or the error it means.

    The one place both fronts (gevent, gprocket.aio) and both helpers
    (broker, one-shot) judge a reply: the id when one is expected (``rid``),
    the error the reply reports (``raise_for_reply``), then ``verify``'s
    checks of the descriptor. Owns ``fd`` from the call: on any error it is
    closed here, once, so the caller must forget it before calling.
    """
    if rid is not None and reply.id != rid:
        if fd is not None:
            os.close(fd)
        raise HelperError(f"the helper answered request id {reply.id}, expected {rid}")
    if fd is not None and not reply.ok:
        os.close(fd)
    raise_for_reply(reply, request)
    return verify(fd, request, reply)


def no_reply_error(path: str, argv0: str, status: int | None, said: str,
                   *, sudo: bool) -> HelperError | RungRefused:
    """The error for a one-shot helper that exited (``status``, None if unknown)
    without replying, having written ``said`` to stderr: through sudo, sudo's
    refusal (the ladder goes on to the next rung); otherwise a HelperError."""
    failure = HelperError(
        f"{argv0} exited with status {status} without replying"
        + (f": {said}" if said else "")
    )
    if sudo:
        return RungRefused(f"sudo -n {path} refused: {failure}", _errno.EPERM,
                           "allow the helper in sudoers: capsetup sudoers")
    return failure


def one_shot_command(
    path: str, request: Request, *, sudo: bool = False
) -> tuple[list[str], dict[str, str] | None]:
    """The argument vector and environment of a one-shot helper for ``request``.

    The one place both fronts (gevent, gprocket.aio) build them: a
    namespaced request starts the helper with ``--netns NAME``, sudo gets
    ``-n`` and a fixed environment. Raises RungUnavailable when ``sudo`` is
    asked for and not installed.
    """
    argv = helper_argv(path, broker=False, namespace=request.namespace)
    if sudo:
        return [sudo_path(), "-n", *argv], _SUDO_ENV
    return argv, None


def check_namespace(namespace: str | None, request: Request) -> None:
    """Refuse, before anything is sent, a request for another namespace than
    the broker's (``namespace``): a broker can never leave the one it entered."""
    if request.namespace != namespace:
        raise ValueError(
            f"this broker serves namespace {namespace!r}, not {request.namespace!r}: "
            f"use get_broker(path, {request.namespace!r})"
        )
