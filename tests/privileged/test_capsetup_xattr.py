"""The security.capability encoding (gprocket.admin.filecaps) read back by getcap
(root writes it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gprocket.admin.filecaps import encode_xattr, parse_caps


def test_getcap_reads_what_we_encode(tmp_path: Path) -> None:
    if shutil.which("getcap") is None or os.geteuid() != 0:
        pytest.skip("writing security.capability needs root and libcap2-bin")
    target = tmp_path / "f"
    target.write_bytes(b"")
    os.setxattr(target, "security.capability", encode_xattr(parse_caps("cap_net_raw,cap_setgid+p")))
    out = subprocess.run(["getcap", str(target)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "cap_setgid,cap_net_raw=p"
