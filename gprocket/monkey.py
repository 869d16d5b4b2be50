"""Privileged binds and raw sockets for unmodified programs, like authbind.

``gprocket.monkey.patch()`` changes two things on the standard library's
socket class and on gevent's (so it composes with ``gevent.monkey.patch_all()``
whichever runs first):

- ``bind()``: when the kernel refuses with EACCES a port below
  ``net.ipv4.ip_unprivileged_port_start``, a socket bound the same way (same
  family, type, protocol, address and the options that must precede bind:
  SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY, SO_BINDTODEVICE) comes from the
  privilege ladder and is ``dup2``-ed over the program's descriptor. The
  program keeps its socket object, its descriptor number, its blocking mode
  and the options it set.
- socket creation: when ``socket(AF_INET/AF_INET6, SOCK_RAW, ...)`` or
  ``socket(AF_PACKET, ...)`` fails with EPERM, the object is built on a
  descriptor from the ladder instead.

Everything else, including every bind the kernel allows, runs the original
code untouched. Patching is opt-in, inspectable (:func:`is_patched`,
:func:`get_original`) and undone by :func:`unpatch`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import errno
import fcntl
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gevent.monkey
import gevent.socket

from ._api import acquire_in_thread
from ._environ import trusted_getenv
from ._errors import PrivilegeError
from ._ladder import DEFAULT_ORDER
from ._socket import disown
from ._spec import SocketRequest
from .servers import needs_privilege

__all__ = ["get_original", "is_patched", "patch", "patched_names", "unpatch"]

_IFNAMSIZ = 16
_TYPE_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
# Set inside our own ladder call, so the ladder's own binds and sockets
# (the plain rung tries exactly what failed) see the original behaviour.
_inside_ladder: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gprocket_monkey_inside_ladder", default=False)
_lock = threading.Lock()
_MISSING = object()
# qualified name -> (class, attribute, what the class itself held before).
_saved: dict[str, tuple[type, str, Any]] = {}

# Options a program may set before bind() that the ladder's socket would not
# have: copied after the dup2 when they differ. (level, option, halve) —
# the kernel doubles buffer sizes on set and reports the doubled value.
_COPIED_OPTIONS: tuple[tuple[int, int, bool], ...] = (
    (socket.SOL_SOCKET, socket.SO_BROADCAST, False),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, False),
    (socket.SOL_SOCKET, socket.SO_OOBINLINE, False),
    (socket.SOL_SOCKET, socket.SO_RCVBUF, True),
    (socket.SOL_SOCKET, socket.SO_SNDBUF, True),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, False),
    (socket.IPPROTO_IP, socket.IP_TOS, False),
    (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, False),
)


def _stdlib_socket_class() -> type:
    """The standard library's socket class, even after gevent replaced it."""
    cls: type = gevent.monkey.get_original("socket", "socket")
    return cls


def _targets() -> dict[str, tuple[type, str]]:
    stdlib = _stdlib_socket_class()
    gsock: type = gevent.socket.socket
    return {
        "socket.socket.bind": (stdlib, "bind"),
        "socket.socket.__init__": (stdlib, "__init__"),
        "gevent.socket.socket.bind": (gsock, "bind"),
        "gevent.socket.socket.__init__": (gsock, "__init__"),
    }


def patched_names() -> tuple[str, ...]:
    """The qualified names :func:`patch` replaces."""
    return tuple(_targets())


def is_patched() -> bool:
    """True while gprocket's patches are in place."""
    with _lock:
        return bool(_saved)


def get_original(name: str) -> Callable[..., Any]:
    """The original of a patched callable, patched or not.

    `name` is one of :func:`patched_names` (``"socket.socket.bind"``, ...);
    ``"bind"`` and ``"__init__"`` are short for the standard library's.
    Raises ValueError for any other name.
    """
    qualified = f"socket.socket.{name}" if name in ("bind", "__init__") else name
    targets = _targets()
    if qualified not in targets:
        raise ValueError(f"{name!r} is not patched by gprocket: use one of "
                         f"{', '.join(targets)}")
    with _lock:
        saved = _saved.get(qualified)
    if saved is not None:
        cls, attr, own = saved
        if own is not _MISSING:
            result: Callable[..., Any] = own
            return result
        return _inherited_attr(cls, attr)
    cls, attr = targets[qualified]
    current: Callable[..., Any] = getattr(cls, attr)
    return current


def _inherited_attr(cls: type, attr: str) -> Callable[..., Any]:
    for base in cls.__mro__[1:]:
        if attr in base.__dict__:
            found: Callable[..., Any] = base.__dict__[attr]
            return found
    raise AttributeError(attr)


def patch() -> None:
    """Install the patches (idempotent). Undo with :func:`unpatch`."""
    with _lock:
        if _saved:
            return
        for qualified, (cls, attr) in _targets().items():
            own = cls.__dict__.get(attr, _MISSING)
            original: Callable[..., Any] = own if own is not _MISSING \
                else _inherited_attr(cls, attr)
            wrapper = _make_bind(original) if attr == "bind" else _make_init(original)
            _saved[qualified] = (cls, attr, own)
            setattr(cls, attr, wrapper)


def unpatch() -> None:
    """Put back exactly what :func:`patch` replaced (idempotent)."""
    with _lock:
        for cls, attr, own in _saved.values():
            if own is _MISSING:
                delattr(cls, attr)
            else:
                setattr(cls, attr, own)
        _saved.clear()


@contextlib.contextmanager
def _ladder_call() -> Iterator[None]:
    token = _inside_ladder.set(True)
    try:
        yield
    finally:
        _inside_ladder.reset(token)


def _strategies() -> tuple[str, ...] | None:
    """The ladder for patched calls: the default with a one-shot helper for the broker.

    A patched program makes a few privileged calls (at start, usually), from
    any native thread, and knows nothing of a broker: a persistent helper
    child would outlive its use, and the broker's reader greenlet lives in
    the hub of the thread that started it, so another native thread waiting
    on it would never be answered. A one-shot helper per call has neither
    problem. GPROCKET_STRATEGIES, when set (and honoured: see _environ), is
    used as given.
    """
    if trusted_getenv("GPROCKET_STRATEGIES") is not None:
        return None
    return tuple("helper" if name == "broker" else name for name in DEFAULT_ORDER)


def _acquire_fd(request: SocketRequest, denied: PermissionError) -> int:
    """The descriptor from the ladder; its failure is raised from the original denial."""
    try:
        with _ladder_call():
            # Programs call from any native thread: leave none with a stray hub.
            return acquire_in_thread(request, strategies=_strategies()).fd
    except PrivilegeError as failure:
        raise failure from denied


def _acquire_bind_fd(request: SocketRequest, denied: PermissionError) -> int:
    """The bound descriptor; a datagram socket refused its reuse flags is bound without them.

    The helper sets SO_REUSEADDR/SO_REUSEPORT on a datagram socket only under
    a ``reuse`` grant (docs/POLICY.md: with them it would take the datagrams
    of another user's socket on the port). A program that set them, as
    gevent's DatagramServer does, still gets its port, alone on it.
    """
    try:
        return _acquire_fd(request, denied)
    except PrivilegeError:
        shared = request.reuseaddr or request.reuseport
        if not shared or request.type in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
            raise
    return _acquire_fd(dataclasses.replace(request, reuseaddr=False, reuseport=False), denied)


def _make_bind(original: Callable[..., Any]) -> Callable[..., Any]:
    def bind(self: Any, address: Any) -> Any:
        if _inside_ladder.get():
            return original(self, address)
        try:
            return original(self, address)
        except PermissionError as err:
            if err.errno != errno.EACCES:
                raise
            request = _bind_request(self, address)
            if request is None:
                raise
            fd = _acquire_bind_fd(request, err)
            _replace_descriptor(self, fd)
            return None

    bind.__doc__ = "socket.bind, getting privileged ports through gprocket's ladder."
    bind.__wrapped__ = original  # type: ignore[attr-defined]
    return bind


def _make_init(original: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, family: int = -1, type: int = -1,
                 proto: int = -1, fileno: Any = None) -> None:
        if _inside_ladder.get():
            original(self, family, type, proto, fileno)
            return
        try:
            original(self, family, type, proto, fileno)
        except PermissionError as err:
            request = _create_request(err, family, type, proto, fileno)
            if request is None:
                raise
            fd = _acquire_fd(request, err)
            try:
                original(self, family, type & ~_TYPE_FLAGS, proto, fd)
            except BaseException:
                disown(self, fd)
                os.close(fd)
                raise
            if type & socket.SOCK_NONBLOCK:
                self.setblocking(False)

    __init__.__doc__ = "socket.__init__, getting raw and packet sockets through the ladder."
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def _create_request(err: PermissionError, family: int, type_: int, proto: int,
                    fileno: Any) -> SocketRequest | None:
    """The request for a raw/packet socket the kernel refused, else None."""
    if err.errno != errno.EPERM or fileno is not None:
        return None
    base = type_ & ~_TYPE_FLAGS
    try:
        if family == socket.AF_PACKET:
            # socket(2) takes the ethertype in network order; requests in host order.
            return SocketRequest(0, family=socket.AF_PACKET, type=base,
                                 protocol=socket.ntohs(max(proto, 0)))
        if family in (socket.AF_INET, socket.AF_INET6) and base == socket.SOCK_RAW:
            return SocketRequest(0, family=family, type=base, protocol=max(proto, 0))
    except (ValueError, TypeError):
        pass  # a combination gprocket does not serve: the kernel's error stands
    return None


def _option(sock: Any, level: int, option: int) -> int:
    value: int = sock.getsockopt(level, option)
    return value


def _bind_request(sock: Any, address: Any) -> SocketRequest | None:
    """The request that reproduces `sock` bound to `address`, or None.

    None means the ladder has nothing to offer: not an IP socket, not a
    privileged port, or an address we cannot read.
    """
    family = int(sock.family)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host, port = address[0], address[1]
    if not isinstance(port, int) or not needs_privilege(port):
        return None
    sock_type = int(sock.type) & ~_TYPE_FLAGS
    device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, _IFNAMSIZ)
    is_v6 = family == socket.AF_INET6
    ip = _numeric_host(host, port, family, sock_type)
    # IPV6_V6ONLY left at 0 means dual-stack only where the kernel keeps it
    # so: on the wildcard and v4-mapped addresses. bind() to any other IPv6
    # address turns it on, so the request must ask for what the kernel gives.
    mapped = is_v6 and ip is not None and ipaddress.IPv6Address(ip).ipv4_mapped is not None
    v6only = is_v6 and bool(_option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    if v6only and mapped:
        return None  # the kernel binds no v4-mapped address IPv6-only (EINVAL)
    dual = is_v6 and not v6only and (ip is None or mapped)
    try:
        return SocketRequest(
            port, family=family, type=sock_type,
            protocol=_option(sock, socket.SOL_SOCKET, socket.SO_PROTOCOL),
            ip=ip,
            scope_id=int(address[3]) if is_v6 and len(address) >= 4 else 0,
            interface=device.split(b"\0", 1)[0].decode() or None,
            # Bound, not listening: the program calls listen() itself.
            backlog=0 if sock_type in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET) else None,
            reuseaddr=bool(_option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR)),
            reuseport=bool(_option(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT)),
            dualstack=dual,
        )
    except (ValueError, TypeError):
        return None  # a protocol gprocket does not serve (MPTCP, ...): EACCES stands


def _numeric_host(host: Any, port: int, family: int, sock_type: int) -> str | None:
    """The numeric address bind() would use for `host`; None for the wildcard."""
    if isinstance(host, bytes):
        host = host.decode("idna")
    if host in ("", None):
        return None
    if host == "<broadcast>":
        return "255.255.255.255" if family == socket.AF_INET else None
    infos = socket.getaddrinfo(host, port, family, sock_type, 0,
                               socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    numeric = str(infos[0][4][0]).split("%", 1)[0]
    return None if ipaddress.ip_address(numeric).is_unspecified else numeric


def _replace_descriptor(sock: Any, fd: int) -> None:
    """dup2 `fd` over `sock`'s descriptor, keeping what the program set on it.

    `fd` is closed on every path, exactly once (the socket keeps the copy).
    """
    try:
        target = sock.fileno()
        flags = fcntl.fcntl(target, fcntl.F_GETFL)
        inheritable = os.get_inheritable(target)
        family = int(sock.family)
        kept: list[tuple[int, int, int, bool]] = []
        for level, option, halve in _COPIED_OPTIONS:
            if (level == socket.IPPROTO_IP and family != socket.AF_INET) or \
                    (level == socket.IPPROTO_IPV6 and family != socket.AF_INET6):
                continue
            try:
                kept.append((level, option, _option(sock, level, option), halve))
            except OSError:
                continue  # not meaningful for this socket type (TCP_NODELAY on UDP)
        # Atomically closes the program's unbound socket and puts the bound
        # one at the same number, so its object (and gevent's watchers,
        # keyed by number and not yet started before bind) stay valid.
        os.dup2(fd, target, inheritable=inheritable)
    finally:
        os.close(fd)
    fcntl.fcntl(target, fcntl.F_SETFL, flags)
    for level, option, value, halve in kept:
        if _option(sock, level, option) != value:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value // 2 if halve else value)
