"""capsetup sudoers: a drop-in checked by visudo, atomic, and really used by sudo -n."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

from capsetup import SetupError
from capsetup._layout import Layout
from capsetup.sudoers import place_sudoers, render_sudoers

pytestmark = pytest.mark.privileged


capsetup = priv.run_capsetup




@pytest.fixture
def prefix(unpriv_user: priv.User) -> Iterator[Path]:
    """An installed helper (caps mode) in a fresh prefix; removed with its drop-in."""
    path = priv.install_root() / f"cs-{secrets.token_hex(5)}"
    done = capsetup("install", "--prefix", str(path))
    assert done.returncode == 0, done.stderr
    try:
        yield path
    finally:
        capsetup("remove", "--purge", "--prefix", str(path))
        shutil.rmtree(path, ignore_errors=True)
        Layout(path).sudoers_file().unlink(missing_ok=True)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A root-owned directory to try drop-ins in without touching /etc."""
    path = priv.install_root() / f"sudoers-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_drop_in_passes_visudo_and_sudo_rung_serves(
    prefix: Path, other_user: priv.User, netns: priv.Netns
) -> None:
    dropin = Layout(prefix).sudoers_file()
    done = capsetup("sudoers", "--user", other_user.name, "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote sudoers drop-in {dropin}")
    st = os.stat(dropin)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o440)
    whole = subprocess.run(["visudo", "-c"], capture_output=True, text=True, check=False)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert capsetup("sudoers", "--user", other_user.name, "--prefix", str(prefix)).stdout == (
        "nothing to change\n"
    )
    helper = prefix / "libexec" / "gprocket" / "gprocket-helper"
    # other_user is outside the group: the broker rung cannot run the helper,
    # so the sudo rung must be what serves.
    code = (
        "import json, gprocket\n"
        f"s = gprocket.open(53, protocol='udp', family='inet6', ip='::1', helper={str(helper)!r})\n"
        "print(json.dumps(s.rung))\n"
    )
    assert priv.run_json(other_user, code, netns=netns) == "sudo"
    status = capsetup("status", "--json", "--prefix", str(prefix))
    assert f'"path": "{dropin}"' in status.stdout and '"valid": true' in status.stdout
    removed = capsetup("remove", "--prefix", str(prefix))
    assert f"removed sudoers drop-in {dropin}" in removed.stdout
    assert not dropin.exists()


def test_the_drop_in_turns_off_io_logging_for_the_helper_only() -> None:
    text = render_sudoers(Path("/usr/local/libexec/gprocket/gprocket-helper"), group="gprocket")
    helper = "/usr/local/libexec/gprocket/gprocket-helper"
    assert f"Defaults!{helper} !log_input\n" in text
    assert (f'%gprocket ALL=(root) NOPASSWD: {helper} "", {helper} --broker, '
            f"{helper} ^--netns [A-Za-z0-9_][A-Za-z0-9._-]*$\n") in text


def test_a_broken_drop_in_is_never_installed(scratch_dir: Path) -> None:
    target = scratch_dir / "gprocket"
    good = render_sudoers(Path("/usr/local/libexec/gprocket/gprocket-helper"), user="root")
    assert place_sudoers(target, good) is True
    with pytest.raises(SetupError, match="visudo rejects the drop-in, nothing installed"):
        place_sudoers(target, good + "this is not sudoers syntax ((\n")
    assert target.read_text() == good  # the old, valid file is untouched
    assert sorted(p.name for p in scratch_dir.iterdir()) == ["gprocket"]  # no temp left


def test_names_sudoers_could_misread_are_refused(prefix: Path) -> None:
    for name in ("a b", "ALL,root", "%wheel", "x:y"):
        with pytest.raises(SetupError, match="refusing sudoers subject"):
            render_sudoers(Path("/usr/local/libexec/gprocket/gprocket-helper"), user=name)
    done = capsetup("sudoers", "--user", "no-such-user-xyz", "--prefix", str(prefix))
    assert done.returncode == 1
    assert "no such user 'no-such-user-xyz'" in done.stderr
    assert not Layout(prefix).sudoers_file().exists()
