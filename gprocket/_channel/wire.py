"""The helper protocol (helper/PROTOCOL.md), encoded and decoded without I/O.

Pure functions over frozen dataclasses: nothing here touches a socket or a
process, so this is what the Python side fuzzes. ``decode_reply`` validates
every field and raises ProtocolError (a HelperError) for anything the
protocol does not allow.
"""

from __future__ import annotations

import enum
import errno as _errno
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from .._errors import HelperError
from .._spec import DeviceRequest, Request, SocketRequest, TunRequest

__all__ = [
    "FLAG_DUALSTACK",
    "FLAG_FREEBIND",
    "FLAG_REUSEADDR",
    "FLAG_REUSEPORT",
    "REPLY_SIZE",
    "REQUEST_SIZE",
    "VERSION",
    "Op",
    "ProtocolError",
    "Reply",
    "Stage",
    "WireRequest",
    "decode_reply",
    "decode_request",
    "encode_hello",
    "encode_reply",
    "encode_request",
    "encode_wire",
    "to_wire",
]

VERSION = 1
REQUEST_MAGIC = b"GPRQ"
REPLY_MAGIC = b"GPRP"
REQUEST_SIZE = 192
REPLY_SIZE = 96

FLAG_DUALSTACK = 1 << 0
FLAG_REUSEADDR = 1 << 1
FLAG_REUSEPORT = 1 << 2
FLAG_FREEBIND = 1 << 3
_ALL_FLAGS = FLAG_DUALSTACK | FLAG_REUSEADDR | FLAG_REUSEPORT | FLAG_FREEBIND

TUN_PERSIST = 1 << 0
TUN_UP = 1 << 1
TUN_ATTACH = 1 << 2

# magic version size id op flags family type protocol port reserved0 address
# scope_id backlog ifname netns device tun_flags mtu tun_options tun_addr4
# tun_addr6 tun_prefix4 tun_prefix6 reserved1
_REQUEST = struct.Struct("<4sHHIHHiiiHH16sIi16s32s32sIII4s16sBB22s")
# magic version size id error stage ifname detail
_REPLY = struct.Struct("<4sHHIII16s60s")
if (_REQUEST.size, _REPLY.size) != (REQUEST_SIZE, REPLY_SIZE):
    raise ImportError("the protocol structs do not match PROTOCOL.md sizes")


class Op(enum.IntEnum):
    """Request operations."""

    SOCKET = 1
    TUN = 2
    DEVICE = 3
    HELLO = 4


class Stage(enum.IntEnum):
    """Where in the helper a request failed."""

    NONE = 0
    PARSE = 1
    POLICY = 2
    OPEN = 3
    BIND = 4
    CONFIGURE = 5
    NAMESPACE = 6
    INTERNAL = 7


_STAGES = {stage.value: stage for stage in Stage}
_IFNAME = re.compile(rb"[\x21-\x7e]*")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


class ProtocolError(HelperError):
    """A message that breaks helper/PROTOCOL.md."""


@dataclass(frozen=True)
class WireRequest:
    """Every field of a request message, as numbers and bytes."""

    id: int
    op: int
    flags: int = 0
    family: int = 0
    type: int = 0
    protocol: int = 0
    port: int = 0
    address: bytes = bytes(16)
    scope_id: int = 0
    backlog: int = 0
    ifname: bytes = b""
    netns: bytes = b""
    device: bytes = b""
    tun_flags: int = 0
    mtu: int = 0
    tun_options: int = 0
    tun_addr4: bytes = bytes(4)
    tun_addr6: bytes = bytes(16)
    tun_prefix4: int = 0
    tun_prefix6: int = 0


@dataclass(frozen=True)
class Reply:
    """A decoded, validated reply."""

    id: int
    error: int
    stage: Stage
    ifname: str
    detail: str

    @property
    def ok(self) -> bool:
        """True when the helper served the request."""
        return self.error == 0

    @property
    def error_name(self) -> str:
        """The errno spelled by name (EPERM), or its number if unknown."""
        return _errno.errorcode.get(self.error, str(self.error))


def _name(value: str | None) -> bytes:
    return b"" if value is None else value.encode("ascii")


def to_wire(request: Request, request_id: int) -> WireRequest:
    """The message fields for a validated request."""
    if isinstance(request, SocketRequest):
        flags = 0
        if request.dualstack:
            flags |= FLAG_DUALSTACK
        if request.reuseaddr:
            flags |= FLAG_REUSEADDR
        if request.reuseport:
            flags |= FLAG_REUSEPORT
        address = bytes(16) if request.ip is None else request.ip.packed.ljust(16, b"\0")
        return WireRequest(
            id=request_id,
            op=Op.SOCKET,
            flags=flags,
            family=request.family,
            type=request.type,
            protocol=request.protocol,
            port=request.port,
            address=address,
            scope_id=request.scope_id,
            backlog=request.backlog or 0,
            ifname=_name(request.interface),
            netns=_name(request.namespace),
        )
    if isinstance(request, TunRequest):
        options = (TUN_PERSIST if request.persist else 0) | (TUN_UP if request.up else 0)
        if request.attach:
            options |= TUN_ATTACH
        return WireRequest(
            id=request_id,
            op=Op.TUN,
            ifname=_name(request.name),
            netns=_name(request.namespace),
            tun_flags=request.flags,
            mtu=request.mtu,
            tun_options=options,
            tun_addr4=bytes(4) if request.addr4 is None else request.addr4.ip.packed,
            tun_addr6=bytes(16) if request.addr6 is None else request.addr6.ip.packed,
            tun_prefix4=0 if request.addr4 is None else request.addr4.network.prefixlen,
            tun_prefix6=0 if request.addr6 is None else request.addr6.network.prefixlen,
        )
    if isinstance(request, DeviceRequest):
        return WireRequest(id=request_id, op=Op.DEVICE, device=_name(request.name))
    raise TypeError(
        "request must be a SocketRequest, TunRequest or DeviceRequest, "
        f"not {type(request).__name__}"
    )


def encode_wire(msg: WireRequest) -> bytes:
    """Pack message fields into the 192-byte request (no validation)."""
    return _REQUEST.pack(
        REQUEST_MAGIC,
        VERSION,
        REQUEST_SIZE,
        msg.id,
        msg.op,
        msg.flags,
        msg.family,
        msg.type,
        msg.protocol,
        msg.port,
        0,
        msg.address,
        msg.scope_id,
        msg.backlog,
        msg.ifname,
        msg.netns,
        msg.device,
        msg.tun_flags,
        msg.mtu,
        msg.tun_options,
        msg.tun_addr4,
        msg.tun_addr6,
        msg.tun_prefix4,
        msg.tun_prefix6,
        bytes(22),
    )


def encode_request(request: Request, request_id: int) -> bytes:
    """The 192-byte request message for a validated request."""
    if not 0 <= request_id <= 0xFFFFFFFF:
        raise ValueError(f"request id {request_id} is out of range 0..4294967295")
    # Requests are frozen, so a broker serving the same request many times
    # (reconnects, per-target sockets) packs it once and keeps the message,
    # split around the id, on the request object itself (as _spec keeps its
    # hash): one dict lookup per request, no hashing of the fields.
    try:
        head, tail = request.__dict__["_gprocket_wire"]
    except (KeyError, AttributeError):
        template = encode_wire(to_wire(request, 0))
        head, tail = template[:8], template[12:]
        request.__dict__["_gprocket_wire"] = (head, tail)
    message: bytes = head + _ID.pack(request_id) + tail
    return message


_ID = struct.Struct("<I")


def encode_hello(request_id: int) -> bytes:
    """A HELLO request: the helper answers with its mode and the caller's uid."""
    return encode_wire(WireRequest(id=request_id, op=Op.HELLO))


def _padded(field: str, raw: bytes) -> bytes:
    """The bytes before the first NUL; everything after it must be NUL."""
    head, _, tail = raw.partition(b"\0")
    if tail.strip(b"\0"):
        raise ProtocolError(f"field {field} has bytes after its terminating NUL")
    return head


def decode_reply(data: bytes) -> Reply:
    """Parse and validate a reply message; raises ProtocolError if malformed."""
    # A broker sends the same success reply over and over, id aside: the
    # checks of a tail already seen are not repeated.
    seen = _OK_TAILS.get(data[12:]) if len(data) == REPLY_SIZE and data[:8] == _HEAD else None
    if seen is not None:
        # The fields of a validated reply, copied into a new instance: what
        # the frozen dataclass's __init__ does, in one step instead of one
        # object.__setattr__ per field.
        reply = _new_reply(Reply)
        fields = reply.__dict__
        fields["id"] = _ID.unpack_from(data, 8)[0]
        fields.update(seen)
        return reply
    reply = _decode_reply(data)
    if reply.ok and len(_OK_TAILS) < 64:
        _OK_TAILS[data[12:]] = {
            "error": reply.error, "stage": reply.stage, "ifname": reply.ifname,
            "detail": reply.detail,
        }
    return reply


_HEAD = REPLY_MAGIC + struct.pack("<HH", VERSION, REPLY_SIZE)
_OK_TAILS: dict[bytes, dict[str, object]] = {}
_new_reply = object.__new__


def _decode_reply(data: bytes) -> Reply:
    if len(data) != REPLY_SIZE:
        raise ProtocolError(f"reply is {len(data)} bytes, expected {REPLY_SIZE}")
    magic, version, size, rid, error, stage, ifname, detail = _REPLY.unpack(data)
    if magic != REPLY_MAGIC:
        raise ProtocolError(f"reply magic is {magic!r}, expected {REPLY_MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"reply version is {version}, this client speaks {VERSION}")
    if size != REPLY_SIZE:
        raise ProtocolError(f"reply size field is {size}, expected {REPLY_SIZE}")
    if error >= 4096:
        raise ProtocolError(f"reply errno {error} is out of range")
    stage_value = _STAGES.get(stage)
    if stage_value is None:
        raise ProtocolError(f"reply stage {stage} is unknown")
    if (error == 0) != (stage_value is Stage.NONE):
        raise ProtocolError(f"reply errno {error} does not match stage {stage_value.name}")
    name = _padded("reply ifname", ifname)
    text = _padded("reply detail", detail)
    if len(name) > 15 or not _IFNAME.fullmatch(name):
        raise ProtocolError(f"reply ifname {name!r} is not an interface name")
    if not _PRINTABLE.fullmatch(text):
        raise ProtocolError("reply detail is not printable ASCII")
    return Reply(rid, error, stage_value, name.decode("ascii"), text.decode("ascii"))


def encode_reply(reply: Reply) -> bytes:
    """The 96-byte reply message (the helper's side; used by tests)."""
    return _REPLY.pack(
        REPLY_MAGIC,
        VERSION,
        REPLY_SIZE,
        reply.id,
        reply.error,
        reply.stage,
        reply.ifname.encode("ascii"),
        reply.detail.encode("ascii")[:59],
    )


def decode_request(data: bytes) -> WireRequest:
    """Parse a request message, checking the header, sizes and reserved bytes.

    The helper's C parser is the authority on what is allowed; this mirror
    exists so the encoder can be round-trip tested and fuzzed.
    """
    if len(data) != REQUEST_SIZE:
        raise ProtocolError(f"request is {len(data)} bytes, expected {REQUEST_SIZE}")
    fields = _REQUEST.unpack(data)
    magic, version, size, rid, op, flags = fields[:6]
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"request magic is {magic!r}")
    if version != VERSION:
        raise ProtocolError(f"request version is {version}")
    if size != REQUEST_SIZE:
        raise ProtocolError(f"request size field is {size}")
    if op not in tuple(Op):
        raise ProtocolError(f"request op {op} is unknown")
    if flags & ~_ALL_FLAGS:
        raise ProtocolError(f"request flags {flags:#x} has unknown bits")
    if fields[10] != 0 or fields[24] != bytes(22):
        raise ProtocolError("request reserved bytes are not zero")
    return WireRequest(
        id=rid,
        op=op,
        flags=flags,
        family=fields[6],
        type=fields[7],
        protocol=fields[8],
        port=fields[9],
        address=fields[11],
        scope_id=fields[12],
        backlog=fields[13],
        ifname=_padded("ifname", fields[14]),
        netns=_padded("netns", fields[15]),
        device=_padded("device", fields[16]),
        tun_flags=fields[17],
        mtu=fields[18],
        tun_options=fields[19],
        tun_addr4=fields[20],
        tun_addr6=fields[21],
        tun_prefix4=fields[22],
        tun_prefix6=fields[23],
    )


def address_of(msg: WireRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The bind address a SOCKET message carries, or None for the wildcard."""
    if msg.address == bytes(16):
        return None
    if msg.family == socket.AF_INET:
        return ipaddress.IPv4Address(msg.address[:4])
    return ipaddress.IPv6Address(msg.address)
