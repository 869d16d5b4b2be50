"""File capabilities: the ``security.capability`` xattr, its text form, FILE_CAPS.

Pure encode/decode plus two small I/O functions (read the xattr, apply a set
with ``setcap``). The text form is the one ``setcap``/``getcap`` use, limited
to what an installer needs: ``cap_a,cap_b+p`` and ``cap_a,cap_b=ep``.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CAP_NAMES",
    "FileCaps",
    "apply_file_caps",
    "cap_mask",
    "cap_names",
    "decode_xattr",
    "encode_xattr",
    "packaged_file_caps",
    "parse_caps",
    "read_file_caps",
]

XATTR = "security.capability"

# Index = capability number (linux/capability.h).
CAP_NAMES: tuple[str, ...] = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
    "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
    "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
    "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
    "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
    "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override",
    "cap_mac_admin", "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read",
    "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)  # fmt: skip

_REV1 = 0x01000000
_REV2 = 0x02000000
_REV3 = 0x03000000
_REV_MASK = 0xFF000000
_FLAG_EFFECTIVE = 0x000001


@dataclass(frozen=True)
class FileCaps:
    """A file capability set: permitted and inheritable masks, effective flag."""

    permitted: int
    inheritable: int = 0
    effective: bool = False
    rootid: int | None = None

    @property
    def text(self) -> str:
        """The set in getcap's notation, e.g. ``cap_net_bind_service,cap_net_raw=p``."""
        parts = []
        if self.permitted:
            flags = (
                ("e" if self.effective else "")
                + ("i" if self.inheritable == self.permitted else "")
                + "p"
            )
            parts.append(f"{','.join(cap_names(self.permitted))}={''.join(sorted(flags))}")
        if self.inheritable and self.inheritable != self.permitted:
            parts.append(f"{','.join(cap_names(self.inheritable))}=i")
        return " ".join(parts)

    def same_set(self, other: FileCaps) -> bool:
        """True when both grant the same capabilities (ignores rootid)."""
        return (self.permitted, self.inheritable, self.effective) == (
            other.permitted,
            other.inheritable,
            other.effective,
        )


def cap_names(mask: int) -> list[str]:
    """Names of the capabilities set in ``mask``, lowest number first."""
    names = []
    for bit in range(64):
        if mask & (1 << bit):
            names.append(CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"cap_{bit}")
    return names


def cap_mask(names: str | list[str] | tuple[str, ...]) -> int:
    """Mask of a comma list (or sequence) of capability names.

    Raises ValueError naming an unknown capability.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    mask = 0
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if not name.startswith("cap_"):
            name = "cap_" + name
        if name not in CAP_NAMES:
            raise ValueError(f"unknown capability {raw!r}")
        mask |= 1 << CAP_NAMES.index(name)
    return mask


_CLAUSE = re.compile(r"^([a-z_,0-9]+)([=+])([eip]*)$")


def parse_caps(text: str) -> FileCaps:
    """Parse setcap notation (``cap_a,cap_b+p``, ``cap_a=ep``; clauses by spaces).

    Raises ValueError on anything else, so a typo never becomes an empty set.
    """
    permitted = inheritable = 0
    effective_mask = 0
    clauses = text.split()
    if not clauses:
        raise ValueError("empty capability set")
    for clause in clauses:
        match = _CLAUSE.match(clause.lower())
        if match is None:
            raise ValueError(f"cannot parse capability clause {clause!r}")
        mask = cap_mask(match.group(1))
        flags = match.group(3)
        if match.group(2) == "=":
            permitted &= ~mask
            inheritable &= ~mask
            effective_mask &= ~mask
        if "p" in flags:
            permitted |= mask
        if "i" in flags:
            inheritable |= mask
        if "e" in flags:
            effective_mask |= mask
    if effective_mask and effective_mask != permitted | inheritable:
        # A file has one effective bit for all; a partial set cannot be stored.
        raise ValueError(f"effective flag must cover every capability in {text!r}")
    return FileCaps(permitted=permitted, inheritable=inheritable, effective=bool(effective_mask))


def decode_xattr(data: bytes) -> FileCaps:
    """Decode a ``security.capability`` value (vfs_cap_data revision 1, 2 or 3).

    Raises ValueError on a value of the wrong size or revision.
    """
    if len(data) < 4:
        raise ValueError("capability xattr too short")
    (magic,) = struct.unpack_from("<I", data, 0)
    revision = magic & _REV_MASK
    effective = bool(magic & _FLAG_EFFECTIVE)
    if revision == _REV1 and len(data) == 12:
        permitted, inheritable = struct.unpack_from("<II", data, 4)
        return FileCaps(permitted, inheritable, effective)
    if revision in (_REV2, _REV3) and len(data) in (20, 24):
        p0, i0, p1, i1 = struct.unpack_from("<IIII", data, 4)
        rootid = struct.unpack_from("<I", data, 20)[0] if len(data) == 24 else None
        return FileCaps(p0 | (p1 << 32), i0 | (i1 << 32), effective, rootid)
    raise ValueError(f"unsupported capability xattr (revision {revision >> 24}, {len(data)} bytes)")


def encode_xattr(caps: FileCaps) -> bytes:
    """Encode as vfs_cap_data revision 2 (what setcap writes for rootid 0)."""
    magic = _REV2 | (_FLAG_EFFECTIVE if caps.effective else 0)
    return struct.pack(
        "<IIIII",
        magic,
        caps.permitted & 0xFFFFFFFF,
        caps.inheritable & 0xFFFFFFFF,
        caps.permitted >> 32,
        caps.inheritable >> 32,
    )


def read_file_caps(target: int | Path | str) -> FileCaps | None:
    """The capability set of a file (path, not followed if a link; or descriptor).

    None when it has none. Raises OSError for anything but "no such
    attribute" (and ValueError for a value the kernel would not accept).
    """
    try:
        if isinstance(target, int):
            data = os.getxattr(target, XATTR)
        else:
            data = os.getxattr(target, XATTR, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
    return decode_xattr(data)


def apply_file_caps(target: int | Path | str, caps: FileCaps) -> None:
    """Give ``target`` (an open descriptor, or a path) exactly ``caps``.

    Writes the same ``security.capability`` value ``setcap`` writes (revision
    2). Callers installing privileged files pass their own descriptor, so no
    other process can swap the file between writing and capability setting.
    Raises OSError when the kernel refuses (e.g. no extended attributes).
    """
    if isinstance(target, int):
        os.setxattr(target, XATTR, encode_xattr(caps))
    else:
        os.setxattr(target, XATTR, encode_xattr(caps), follow_symlinks=False)


_MAKE_VAR = re.compile(r"^\s*FILE_CAPS\s*[:?]?=\s*(.+?)\s*$")


def packaged_file_caps(helper: Path) -> FileCaps:
    """The capability set the helper is built for, read from its one source.

    That source is ``FILE_CAPS`` in ``helper/Makefile``; a built package that
    has no Makefile carries it as ``gprocket-helper.caps`` beside the binary.
    Raises FileNotFoundError when neither exists, ValueError when unparsable.
    """
    beside = helper.with_name(helper.name + ".caps")
    if beside.is_file():
        return parse_caps(beside.read_text().strip())
    makefile = helper.parent.parent.parent / "helper" / "Makefile"
    if makefile.is_file():
        for line in makefile.read_text().splitlines():
            match = _MAKE_VAR.match(line)
            if match:
                value = match.group(1).strip().strip("\"'")
                return parse_caps(value)
        raise ValueError(f"{makefile} has no FILE_CAPS variable")
    raise FileNotFoundError(
        errno.ENOENT,
        f"cannot tell which capabilities the helper needs: neither {beside} "
        f"nor {makefile} exists (rebuild with `make -C helper`)",
    )
