"""gprocket.packet.pcap: files tcpdump, tshark and scapy read, and files they write."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import pytest

from gprocket.packet import pcap

FRAMES = [bytes(range(60)), b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + b"payload" * 40,
          bytes(1514)]


def _write(path: Path, nanosecond: bool = False, snaplen: int = 65535) -> None:
    with pcap.PcapWriter(path, snaplen=snaplen, nanosecond=nanosecond) as out:
        for i, frame in enumerate(FRAMES):
            out.write(frame, 1_700_000_000 + i, 123456789 if nanosecond else 123456)


@pytest.mark.parametrize("nanosecond", [False, True])
def test_round_trip(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    _write(path, nanosecond)
    header, records = pcap.read_pcap(path)
    assert header == pcap.PcapHeader(1, 65535, nanosecond, (2, 4), "<")
    assert [r.data for r in records] == FRAMES
    assert records[1].sec == 1_700_000_001
    assert records[0].timestamp == pytest.approx(1_700_000_000.123456789 if nanosecond
                                                 else 1_700_000_000.123456)


def test_snaplen_cuts_frames_and_keeps_original_length(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    _write(path, snaplen=64)
    _, records = pcap.read_pcap(path)
    assert [len(r.data) for r in records] == [60, 64, 64]
    assert [r.orig_len for r in records] == [len(f) for f in FRAMES]
    assert [r.truncated for r in records] == [False, True, True]


def test_tcpdump_reads_our_file(tmp_path: Path) -> None:
    path = tmp_path / "ours.pcap"
    _write(path, nanosecond=True)
    out = subprocess.run(["tcpdump", "-nn", "-e", "-tt", "--time-stamp-precision=nano", "-r",
                          str(path)], check=True,
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if not line.startswith("\t")]
    assert len(lines) == 3
    assert "ethertype Unknown (0x88b5)" in lines[1]
    assert f"length {len(FRAMES[1])}" in lines[1]
    assert lines[0].startswith("1700000000.123456789 ")


def test_tshark_and_scapy_read_our_file(tmp_path: Path) -> None:
    path = tmp_path / "ours.pcap"
    _write(path)
    fields = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len",
                             "-e", "frame.time_epoch"], check=True, capture_output=True,
                            text=True).stdout.splitlines()
    assert [int(line.split()[0]) for line in fields] == [len(f) for f in FRAMES]
    assert float(fields[2].split()[1]) == pytest.approx(1_700_000_002.123456)
    from scapy.utils import rdpcap
    assert [bytes(p) for p in rdpcap(str(path))] == FRAMES


def test_we_read_files_tcpdump_and_scapy_write(tmp_path: Path) -> None:
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    scapy_file = tmp_path / "scapy.pcap"
    wrpcap(str(scapy_file), [Ether(f) for f in FRAMES])
    _, records = pcap.read_pcap(scapy_file)
    assert [r.data for r in records] == FRAMES
    # tcpdump re-writes a file in its own (nanosecond) format.
    rewritten = tmp_path / "tcpdump.pcap"
    subprocess.run(["tcpdump", "-r", str(scapy_file), "--time-stamp-precision=nano", "-w",
                    str(rewritten)], check=True, capture_output=True)
    header, records = pcap.read_pcap(rewritten)
    assert header.nanosecond
    assert [r.data for r in records] == FRAMES


def test_big_endian_file(tmp_path: Path) -> None:
    raw = struct.pack(">IHHiIII", pcap.MAGIC_USEC, 2, 4, 0, 0, 96, 1)
    raw += struct.pack(">IIII", 5, 6, 4, 70) + b"abcd"
    header, records = pcap.read_pcap(raw)
    assert (header.byteorder, header.snaplen) == (">", 96)
    assert records == [pcap.PcapRecord(5, 6, 70, b"abcd")]


def test_format_errors() -> None:
    with pytest.raises(pcap.PcapFormatError, match="pcapng"):
        pcap.read_pcap(b"\x0a\x0d\x0d\x0a" + b"\0" * 20)
    with pytest.raises(pcap.PcapFormatError, match="shorter"):
        pcap.read_pcap(b"\xd4\xc3")
    good = io.BytesIO()
    with pcap.PcapWriter(good) as out:
        out.write(b"x" * 10, 1, 0)
    raw = good.getvalue()
    with pytest.raises(pcap.PcapFormatError, match="data cut short"):
        pcap.read_pcap(raw[:-3])
    with pytest.raises(pcap.PcapFormatError, match="header cut short"):
        pcap.read_pcap(raw + b"\0" * 5)
    with pytest.raises(ValueError, match="fraction"):
        pcap.PcapWriter(io.BytesIO()).write(b"x", 1, 1_000_000)
    with pytest.raises(ValueError, match="snaplen"):
        pcap.PcapWriter(io.BytesIO(), snaplen=0)


def test_write_records_and_now_stamp(tmp_path: Path) -> None:
    path = tmp_path / "records.pcap"
    with pcap.PcapWriter(path) as out:
        out.write_records(struct.pack("=IIII", 9, 10, 3, 3) + b"abc", 1)
        out.write(b"now")
        assert out.count == 2
    _, records = pcap.read_pcap(path)
    assert records[0] == pcap.PcapRecord(9, 10, 3, b"abc")
    assert records[1].sec > 1_700_000_000
