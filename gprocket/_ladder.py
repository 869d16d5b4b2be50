"""The privilege ladder: strategies tried in order, each failure recorded.

Every strategy is an object with a ``name`` and one method,
``acquire(request) -> int``. It raises RungUnavailable when it can never
apply here, RungRefused (or PolicyDenied, or a permission OSError) when it
was tried and refused; the chain records an Attempt and moves on. Any other
kernel error (EADDRINUSE, EADDRNOTAVAIL, ENODEV, ...) would be the same on
every rung, so it stops the ladder as an OSError with its errno. A
HelperError (the helper misbehaved) also stops it: that is a fault to fix,
not a missing privilege.

Namespaced requests (``namespace="lab"``): the helper enters
/run/netns/NAME itself, once at start (``--netns NAME``; one broker per
namespace). In-process, only a caller holding CAP_SYS_ADMIN (root) can do
it, and does it on a fresh native thread (a one-thread gevent ThreadPool)
that calls setns(2), opens the descriptor and returns to its own namespace
before exiting: the namespace switch is per thread, so the hub thread and
its greenlets never leave their namespace. The capabilities rung does not
enter namespaces (CAP_SYS_ADMIN is far more than the request needs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from gevent.threadpool import ThreadPool

from ._broker import get_broker
from ._caps import (
    CAP_NET_ADMIN,
    CAP_NET_BIND_SERVICE,
    CAP_NET_RAW,
    CAP_SYS_ADMIN,
    MissingCapability,
    cap_name,
    effective_among,
    raised,
    read_sets,
)
from ._environ import trusted_getenv
from ._errors import Attempt, PolicyDenied, PrivilegeError, RungRefused, RungUnavailable
from ._helper import INSTALL_FIX, PACKAGED, check_runnable, locate, one_shot, sudo_path
from ._kernel import PERMISSION_ERRNOS, needed_caps, open_request
from ._spec import Request, SocketRequest

__all__ = [
    "DEFAULT_ORDER",
    "BrokerStrategy",
    "CapabilitiesStrategy",
    "HelperStrategy",
    "PlainStrategy",
    "Strategy",
    "SudoStrategy",
    "Tally",
    "resolve",
    "run",
]

DEFAULT_ORDER = ("inherited", "plain", "capabilities", "broker", "sudo")
NETWORK_CAPS = (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_NET_RAW)
KNOWN = ("inherited", "plain", "capabilities", "broker", "helper", "sudo")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@runtime_checkable
class Strategy(Protocol):
    """One rung: ``acquire`` returns a descriptor or raises why it could not."""

    name: str

    def acquire(self, request: Request) -> int: ...


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def thread_in_namespace(namespace: str) -> Iterator[None]:
    """Run this thread inside /run/netns/NAMESPACE for the block, then back.

    Needs CAP_SYS_ADMIN. The switch is per thread: use it on a thread of
    your own (``in_namespace``), or around a block that never yields to
    other greenlets (tests/support/lab.py). Sockets made inside stay there.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise OSError(
                err.errno, f"no network namespace named {namespace!r} under /run/netns"
            ) from err
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def _enter_and_run(namespace: str, work: Callable[[], T]) -> T:
    done: list[T] = []
    try:
        with thread_in_namespace(namespace):
            done.append(work())
    except BaseException:
        # work() gave a descriptor but the way home failed: nobody will receive it
        if done and isinstance(done[0], int):
            os.close(done[0])
        raise
    return done[0]


def in_namespace(namespace: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a fresh native thread inside /run/netns/NAMESPACE."""
    pool = ThreadPool(1)
    try:
        result: T = pool.apply(_enter_and_run, (namespace, work))
        return result
    finally:
        pool.kill()


def _refused(err: OSError) -> RungRefused:
    return RungRefused(f"the kernel refused: {err.strerror}", err.errno)


class PlainStrategy:
    """Just try: root, a lowered ip_unprivileged_port_start, ping_group_range.

    For a process that is not root but holds the needed capability in its
    effective set (ambient capabilities), the capability is what serves the
    request, so this rung steps aside for the capabilities rung.
    """

    name = "plain"
    # Runs the namespaced open on a fresh native thread; gprocket.aio swaps
    # in its own, which does not need a gevent hub.
    in_namespace = staticmethod(in_namespace)

    def acquire(self, request: Request) -> int:
        """Open in this process with the privilege it already has in force."""
        # Most unprivileged processes hold no network capability at all: one
        # capget(2) settles that before needed_caps reads any sysctl.
        if os.geteuid() != 0 and effective_among(NETWORK_CAPS):
            held = effective_among(needed_caps(request))
            if held:
                raise RungUnavailable(
                    f"{cap_name(held[0])} is effective: the capabilities rung serves this"
                )
        if request.namespace is not None:
            if not read_sets().has_effective(CAP_SYS_ADMIN):
                raise RungUnavailable(
                    f"entering namespace {request.namespace!r} needs CAP_SYS_ADMIN"
                )
            try:
                return self.in_namespace(request.namespace, lambda: open_request(request))
            except OSError as err:
                if err.errno in PERMISSION_ERRNOS:
                    raise _refused(err) from err
                raise
        try:
            return open_request(request)
        except OSError as err:
            if err.errno in PERMISSION_ERRNOS:
                raise _refused(err) from err
            raise


class CapabilitiesStrategy:
    """Raise the one needed capability from the permitted set around the call."""

    name = "capabilities"

    def acquire(self, request: Request) -> int:
        """Open with exactly the needed capabilities effective, then lower them."""
        if request.namespace is not None:
            raise RungUnavailable("namespaced requests go through the helper (or root)")
        caps = needed_caps(request)
        if not caps:
            if (
                isinstance(request, SocketRequest)
                and request.type == 2
                and request.protocol in (1, 58)
            ):
                raise RungUnavailable(
                    "ping sockets depend on net.ipv4.ping_group_range, not a capability"
                )
            raise RungUnavailable("no capability would change the kernel's answer")
        try:
            with raised(caps):
                return open_request(request)
        except MissingCapability as err:
            names = ",".join(cap_name(cap).lower() for cap in err.missing)
            raise RungUnavailable(
                str(err),
                f"run with AmbientCapabilities={cap_name(err.missing[0])} or "
                f"'setcap {names}+p' on the interpreter",
            ) from None
        except OSError as err:
            if err.errno in PERMISSION_ERRNOS:
                raise _refused(err) from err
            raise


class BrokerStrategy:
    """The persistent helper shared by the whole process."""

    name = "broker"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Ask this process's broker (started on first use)."""
        return get_broker(locate(self.helper), request.namespace).request(request)


class HelperStrategy:
    """One helper process per descriptor (procket's model)."""

    name = "helper"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Start the helper once for this request."""
        path = locate(self.helper)
        check_runnable(path)
        return one_shot(path, request)


class SudoStrategy:
    """The helper through ``sudo -n``: never prompts, fails fast without a rule."""

    name = "sudo"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Run the helper as root through sudo for this one request."""
        sudo_path()
        try:
            path = locate(self.helper)
        except RungUnavailable:
            if not PACKAGED.exists():
                raise
            path = str(PACKAGED)
        return one_shot(path, request, sudo=True)


class _Missing:
    """A known strategy whose module is not installed."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def acquire(self, request: Request) -> int:
        raise RungUnavailable(self.reason)


def _inherited() -> Strategy | None:
    try:
        # Lazy: the inherited rung is optional and costs nothing unless named.
        from ._inherited import InheritedStrategy  # noqa: PLC0415
    except ImportError:
        return None
    strategy: Strategy = InheritedStrategy()
    return strategy


StrategySpec = str | Strategy


def _names(spec: str | Sequence[StrategySpec] | None) -> tuple[tuple[StrategySpec, ...], bool]:
    if spec is None:
        env = trusted_getenv("GPROCKET_STRATEGIES")
        if env is None:
            return DEFAULT_ORDER, True
        spec = env.strip()
    if isinstance(spec, str):
        parts = [part.strip() for part in spec.split(",")]
        if spec.strip() and not all(parts):
            raise ValueError(f"strategies {spec!r} has an empty name")
        spec = [part for part in parts if part]
    if not spec:
        raise ValueError("strategies is empty: name at least one of " + ", ".join(KNOWN))
    return tuple(spec), False


def resolve(
    strategies: str | Sequence[StrategySpec] | None = None,
    helper: str | os.PathLike[str] | None = None,
) -> list[Strategy]:
    """The strategy objects for ``strategies`` (names, objects, or a comma list).

    None means GPROCKET_STRATEGIES (ignored in a privileged process: see
    _environ), else the default order. Raises
    ValueError for an unknown name.
    """
    specs, default = _names(strategies)
    chain: list[Strategy] = []
    for spec in specs:
        if not isinstance(spec, str):
            if not isinstance(spec, Strategy):
                raise TypeError(
                    "a strategy must be a name or have name and acquire(), "
                    f"not {type(spec).__name__}"
                )
            chain.append(spec)
            continue
        name = spec.lower()
        if name == "inherited":
            inherited = _inherited()
            if inherited is not None:
                chain.append(inherited)
            elif not default:
                chain.append(
                    _Missing("inherited", "systemd socket activation support is not installed")
                )
        elif name == "plain":
            chain.append(PlainStrategy())
        elif name == "capabilities":
            chain.append(CapabilitiesStrategy())
        elif name == "broker":
            chain.append(BrokerStrategy(helper))
        elif name == "helper":
            chain.append(HelperStrategy(helper))
        elif name == "sudo":
            chain.append(SudoStrategy(helper))
        else:
            raise ValueError(f"unknown strategy {spec!r}: use one of {', '.join(KNOWN)}")
    return chain


POLICY_FIX = (
    "ask the administrator for a policy entry (docs/POLICY.md); check it with: capsetup status"
)


def _priority(rung: str, fix: str) -> int:
    """Which fix the error names: the most specific to what is installed wins.

    A policy refusal, then what stops an installed helper (group
    membership, no_new_privs), then installing it, then the alternatives
    (capabilities, a sudoers rule).
    """
    if fix == POLICY_FIX:
        return 0
    if rung in ("broker", "helper") and fix != INSTALL_FIX:
        return 1
    if fix == INSTALL_FIX:
        return 2
    return 3


def _best_fix(fixes: list[tuple[int, str]]) -> str:
    return min(fixes, key=lambda item: item[0])[1] if fixes else INSTALL_FIX


class Tally:
    """What a walk of the ladder learnt: each failed attempt and the fixes named.

    Shared by this (gevent) walk and gprocket.aio's, so both explain a
    failure the same way.
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.fixes: list[tuple[int, str]] = []

    def failed(self, rung: str, err: BaseException) -> bool:
        """Record ``err`` from rung ``rung``; False when it must stop the walk instead."""
        if isinstance(err, (RungUnavailable, RungRefused)):
            code = err.errno if isinstance(err, RungRefused) else None
            self.attempts.append(Attempt(rung, err.reason, code))
            if err.fix:
                self.fixes.append((_priority(rung, err.fix), err.fix))
        elif isinstance(err, PolicyDenied):
            reason = err.detail if err.detail.startswith("policy") else f"policy: {err.detail}"
            self.attempts.append(Attempt(rung, reason, err.errno))
            self.fixes.append((0, POLICY_FIX))
        elif isinstance(err, OSError) and err.errno in PERMISSION_ERRNOS:
            self.attempts.append(Attempt(rung, str(err.strerror), err.errno))
        else:
            return False
        return True

    def error(self, request: Request) -> PrivilegeError:
        """The PrivilegeError listing every attempt, with the most specific fix."""
        return PrivilegeError(request.describe(), tuple(self.attempts), _best_fix(self.fixes))


def run(
    request: Request,
    strategies: str | Sequence[StrategySpec] | None = None,
    helper: str | os.PathLike[str] | None = None,
) -> tuple[int, str, tuple[Attempt, ...]]:
    """Walk the ladder; returns (descriptor, rung name, failed attempts before it).

    Raises PrivilegeError listing every attempt and the fix when no rung
    could serve, OSError for a kernel error no rung would change, and
    HelperError when the helper misbehaved.
    """
    tally = Tally()
    for strategy in resolve(strategies, helper):
        try:
            fd = strategy.acquire(request)
        except (RungUnavailable, RungRefused, PolicyDenied, OSError) as err:
            if not tally.failed(strategy.name, err):
                raise
        else:
            return fd, strategy.name, tuple(tally.attempts)
    raise tally.error(request)
