"""The capabilities rung: raise the one needed capability from the permitted set.

The capability sets themselves (capget/capset around one call) are ``caps``;
the open is the plain rung's, in this process.
"""

from __future__ import annotations

from .._errors import RungUnavailable
from .._spec import Request, SocketRequest
from .caps import MissingCapability, cap_name, raised
from .plain import PERMISSION_ERRNOS, needed_caps, open_request, refused

__all__ = ["CapabilitiesStrategy"]


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
                raise refused(err) from err
            raise
