"""``capsetup systemd``: unit files for a gprocket program that runs without root.

Two ways, both printed: the service holds only the capabilities it names
in its ambient set (the capabilities rung raises them around one syscall),
and a .socket unit opens the listeners so the program inherits them (the
inherited rung) and needs no privilege at all for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from capsetup._layout import SetupError
from gprocket.admin.filecaps import CAP_NAMES, cap_mask, cap_names

__all__ = ["Listen", "parse_listen", "render_units"]

_UNIT_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Listen:
    """One socket the .socket unit opens: ``53/udp``, ``80/tcp``, ``[::1]:53/udp``."""

    address: str  # "" = every address
    port: int
    protocol: str  # tcp | udp

    @property
    def directive(self) -> str:
        """ListenStream= or ListenDatagram= line."""
        key = "ListenStream" if self.protocol == "tcp" else "ListenDatagram"
        where = f"{self.address}:{self.port}" if self.address else str(self.port)
        return f"{key}={where}"


def parse_listen(text: str) -> Listen:
    """Parse ``[ADDRESS:]PORT/tcp|udp``. Raises SetupError naming the mistake."""
    where, sep, proto = text.rpartition("/")
    if not sep or proto not in ("tcp", "udp"):
        raise SetupError(f"--listen {text!r}: want [ADDRESS:]PORT/tcp or /udp")
    address, colon, port = where.rpartition(":")
    if not colon:
        address, port = "", where
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SetupError(f"--listen {text!r}: port must be 1..65535")
    if address and not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+)$", address):
        raise SetupError(f"--listen {text!r}: address must be IPv4 or [IPv6]")
    return Listen(address, int(port), proto)


def render_units(
    name: str,
    *,
    user: str,
    exec_start: str,
    caps: str = "cap_net_bind_service,cap_net_raw",
    listen: tuple[Listen, ...] = (),
) -> str:
    """Text of NAME.service (and NAME.socket when ``listen`` is given).

    Raises SetupError for a unit name, user or capability list that systemd
    would misread.
    """
    if not _UNIT_NAME.match(name):
        raise SetupError(f"unit name {name!r}: letters, digits, '_', '.', '@', '-' only")
    if not _USER.match(user) or user == "root":
        raise SetupError(f"User={user!r}: want an unprivileged account name")
    if not exec_start.startswith("/") or "\n" in exec_start:
        raise SetupError("--exec must be one line starting with an absolute path")
    try:
        mask = cap_mask(caps) if caps else 0
    except ValueError as err:
        raise SetupError(f"--caps: {err}; known: {', '.join(CAP_NAMES)}") from err
    cap_line = " ".join(c.upper() for c in cap_names(mask))
    lines = [
        f"# /etc/systemd/system/{name}.service",
        "[Unit]",
        f"Description={name} (gprocket program, no root)",
    ]
    if listen:
        lines.append(f"Requires={name}.socket")
    lines += [
        "",
        "[Service]",
        f"User={user}",
        f"ExecStart={exec_start}",
        "# The capabilities rung raises these around one syscall and lowers them again.",
        f"AmbientCapabilities={cap_line}",
        f"CapabilityBoundingSet={cap_line}",
        "# Ambient capabilities survive NoNewPrivileges; the setuid/file-capability",
        "# helper and sudo do not, which is the point: the unit grants all there is.",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    if listen:
        lines += [
            "",
            f"# /etc/systemd/system/{name}.socket",
            "# systemd binds these as root and passes them in (LISTEN_FDS): the",
            "# inherited rung serves them and the service needs no capability for them.",
            "[Socket]",
            *(item.directive for item in listen),
            "",
            "[Install]",
            "WantedBy=sockets.target",
        ]
    return "\n".join(lines) + "\n"
