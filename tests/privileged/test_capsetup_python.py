"""capsetup python: a venv interpreter copy with permitted-only capabilities."""

from __future__ import annotations

import grp
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
        "from gprocket._ladder.caps import read_sets\n"
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


def test_a_venv_others_can_write_is_refused(
    venv_and_prefix: tuple[Path, Path], unpriv_user: priv.User
) -> None:
    venv, prefix = venv_and_prefix
    site = next((venv / "lib").glob("python3*/site-packages"))
    os.chown(site, unpriv_user.uid, unpriv_user.gid)
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 1
    assert f"{site} is owned by uid {unpriv_user.uid}, not root" in done.stderr
    assert not (venv / "bin" / "python-caps").exists()
    assert not prefix.exists()


NOBODY = 65534


def _tree(root: Path) -> list[tuple[str, int, int, int]]:
    return sorted((str(p), p.lstat().st_uid, p.lstat().st_mode, p.lstat().st_size)
                  for p in [root, *root.rglob("*")])  # fmt: skip


def test_attack_a_user_venv_whose_python_is_any_program_is_refused(
    venv_and_prefix: tuple[Path, Path],
) -> None:
    # Issue 12, finding 6: a venv owned by uid 65534 whose bin/python is an
    # arbitrary program was copied root-owned with cap_net_raw permitted.
    root = venv_and_prefix[0].parent
    venv = root / "nobody-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    program = venv / "bin" / "python"
    program.write_text("#!/bin/sh\nexec /bin/sh -i\n")
    program.chmod(0o755)
    for path in (venv, venv / "bin", venv / "pyvenv.cfg", program):
        os.chown(path, NOBODY, NOBODY)
    prefix = root / "prefix"
    before = _tree(root)
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert "refusing to give capabilities" in done.stderr
    assert f"{venv} is owned by uid {NOBODY}, not root" in done.stderr
    assert _tree(root) == before  # nothing written: no copy, no prefix, no manifest


def test_a_root_owned_venv_pointing_at_another_program_is_refused(
    venv_and_prefix: tuple[Path, Path],
) -> None:
    venv, prefix = venv_and_prefix
    interpreter = venv / "bin" / "python"
    interpreter.unlink()
    interpreter.symlink_to("/bin/dash")
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 1
    assert "which is not the Python in the venv's home" in done.stderr
    assert not (venv / "bin" / "python-caps").exists()


def test_the_copy_is_for_the_gprocket_group_only(venv_and_prefix: tuple[Path, Path]) -> None:
    venv, prefix = venv_and_prefix
    done = capsetup("python", "--venv", str(venv), "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    st = (venv / "bin" / "python-caps").stat()
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o7777) == (
        0, "gprocket", 0o750)
    assert "(root:gprocket 0750)" in done.stdout
