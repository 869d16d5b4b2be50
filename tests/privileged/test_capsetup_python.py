"""capsetup python: a venv interpreter copy with permitted-only capabilities."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


capsetup = priv.run_capsetup


@pytest.fixture
def venv_and_prefix(unpriv_user: priv.User) -> Iterator[tuple[Path, Path]]:
    """A fresh root-owned venv (made by the venv's own base interpreter) and a prefix."""
    priv.install_root()
    root = priv.INSTALL_ROOT / f"cs-py-{secrets.token_hex(4)}"
    root.mkdir(mode=0o755)
    venv = root / "venv"
    base = os.path.realpath(priv.VENV_PYTHON)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    try:
        yield venv, root / "prefix"
    finally:
        capsetup("remove", "--prefix", str(root / "prefix"))
        shutil.rmtree(root)


def _site_packages() -> str:
    venv_lib = Path(priv.VENV_PYTHON).parent.parent / "lib"
    return str(next(venv_lib.glob("python3*/site-packages")))


def test_copy_has_permitted_only_caps_and_serves_the_capabilities_rung(
    venv_and_prefix: tuple[Path, Path], unpriv_user: priv.User, netns: priv.Netns
) -> None:
    venv, prefix = venv_and_prefix
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    copy = venv / "bin" / "python-caps"
    assert f"copied {os.path.realpath(venv / 'bin' / 'python')} to {copy}" in done.stdout
    assert "WARNING" in done.stderr and "never +e" in done.stderr
    getcap = subprocess.run(["getcap", str(copy)], capture_output=True, text=True, check=True)
    assert getcap.stdout.split()[1] == "cap_net_bind_service,cap_net_raw=p"
    again = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert again.stdout == "nothing to change\n"
    # The copy runs as a venv interpreter; the suite's packages come by PYTHONPATH.
    code = (
        "import json, gprocket, sys\n"
        "from gprocket._caps import read_sets\n"
        "sets = read_sets()\n"
        "s = gprocket.open(53, protocol='udp', family='inet6', ip='::1')\n"
        "print(json.dumps([s.rung, sets.effective, sets.permitted != 0, sys.prefix]))\n"
    )
    env = {"PYTHONPATH": f"{priv.python_path()}:{_site_packages()}",
           "GPROCKET_STRATEGIES": "plain,capabilities"}  # fmt: skip
    rung, effective, permitted, sys_prefix = priv.run_json(
        unpriv_user, code, python=str(copy), netns=netns, env=env
    )
    assert (rung, effective, permitted, sys_prefix) == ("capabilities", 0, True, str(venv))
    status = capsetup("status", "--json", "--prefix", str(prefix))
    assert f'"path": "{copy}"' in status.stdout
    assert '"caps": "cap_net_bind_service,cap_net_raw=p"' in status.stdout
    removed = capsetup("remove", "--prefix", str(prefix))
    assert f"removed interpreter copy {copy}" in removed.stdout
    assert not copy.exists()


def test_only_network_capabilities_are_offered(venv_and_prefix: tuple[Path, Path]) -> None:
    venv, prefix = venv_and_prefix
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix),
                    "--caps", "cap_sys_admin")  # fmt: skip
    assert done.returncode == 1
    assert "not cap_sys_admin" in done.stderr
    assert not (venv / "bin" / "python-caps").exists()
    not_a_venv = capsetup("python", "--venv", str(prefix.parent), "--prefix", str(prefix))
    assert not_a_venv.returncode == 1 and "not a virtual environment" in not_a_venv.stderr


def test_a_venv_others_can_write_is_named_in_a_warning(
    venv_and_prefix: tuple[Path, Path], unpriv_user: priv.User
) -> None:
    venv, prefix = venv_and_prefix
    site = next((venv / "lib").glob("python3*/site-packages"))
    os.chown(site, unpriv_user.uid, unpriv_user.gid)
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    assert (
        f"warning: {site} is owned by uid {unpriv_user.uid}, not root: that user can run "
        "code with these capabilities"
    ) in done.stderr
