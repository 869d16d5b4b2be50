"""``capsetup sudoers``: a drop-in that lets a user or group run the helper via sudo.

The text is checked with ``visudo -cf`` on a temporary file in the drop-in
directory, and only then renamed into place, so sudo never sees a broken
file (a broken drop-in would lock everybody out of sudo).

sudo 1.9 passes a stdin that is not a terminal straight through even with
Debian's ``Defaults use_pty``, so the helper's socketpair channel survives
it; I/O logging (``log_input``) replaces stdin with a pipe, so the drop-in
turns it off for the helper alone.
"""

from __future__ import annotations

import grp
import pwd
import re
import subprocess
from dataclasses import replace
from pathlib import Path

from capsetup._fs import atomic_write
from capsetup._layout import SUDOERS_DIR, Layout, Manifest, SetupError, require_root

__all__ = ["install_sudoers", "render_sudoers", "validate_sudoers"]

# Names sudo reads literally: no spaces, commas, colons, quotes, or '%'.
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")
# A sudoers regular expression (sudo >= 1.9.10) for the arguments of a namespaced one-shot.
NETNS_ARGS = "^--netns [A-Za-z0-9_][A-Za-z0-9._-]*$"


def render_sudoers(helper: Path, *, user: str | None = None, group: str | None = None) -> str:
    """The drop-in text granting ``user`` or ``group`` the helper as root, no password.

    Only the invocations the library makes are allowed: no arguments
    (one-shot), ``--broker``, and ``--netns NAME`` (a one-shot in a namespace;
    sudo's regular expression admits names as the helper does, which checks
    them again). Raises SetupError for names or a path that
    sudoers syntax could misread.
    """
    if (user is None) == (group is None):
        raise SetupError("give exactly one of --user or --group")
    name = user if user is not None else group
    if name is None or not _SAFE_NAME.match(name):
        raise SetupError(f"refusing sudoers subject {name!r}: not a plain user or group name")
    if not _SAFE_PATH.match(str(helper)):
        raise SetupError(f"refusing helper path {str(helper)!r}: sudoers would misread it")
    subject = name if user is not None else f"%{name}"
    return (
        "# gprocket helper via sudo, written by capsetup; `capsetup remove` deletes it.\n"
        "# I/O logging would replace the helper's stdin (its channel) with a pipe.\n"
        f"Defaults!{helper} !log_input\n"
        f'{subject} ALL=(root) NOPASSWD: {helper} "", {helper} --broker, '
        f"{helper} {NETNS_ARGS}\n"
    )


def validate_sudoers(path: Path) -> str | None:
    """Run ``visudo -cf`` on ``path``; None when it parses, else visudo's words."""
    done = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode == 0:
        return None
    return (done.stdout + done.stderr).strip() or f"visudo exited {done.returncode}"


def place_sudoers(path: Path, text: str) -> bool:
    """Validate ``text`` and put it at ``path`` atomically (root 0440).

    Returns False when ``path`` already holds exactly ``text``. Raises
    SetupError, leaving ``path`` untouched, when visudo rejects the text.
    """
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    def accepted(tmp: Path) -> None:
        error = validate_sudoers(tmp)
        if error is not None:
            raise SetupError(f"visudo rejects the drop-in, nothing installed: {error}")

    atomic_write(path, text.encode(), mode=0o440, check=accepted)
    return True


def install_sudoers(
    prefix: str | Path | None = None,
    *,
    user: str | None = None,
    group: str | None = None,
    sudoers_dir: Path = SUDOERS_DIR,
) -> list[str]:
    """Write the drop-in for the helper under ``prefix``; return what changed.

    Raises SetupError when the helper is not installed, the user or group
    does not exist, or visudo rejects the result (nothing is then written).
    """
    require_root()
    layout = Layout.of(prefix)
    if not layout.helper.is_file():
        raise SetupError(f"no helper at {layout.helper}: run `capsetup install` first")
    try:
        if user is not None:
            pwd.getpwnam(user)
        if group is not None:
            grp.getgrnam(group)
    except KeyError:
        raise SetupError(f"no such {'user' if user else 'group'} {user or group!r}") from None
    if not sudoers_dir.is_dir():
        raise SetupError(f"{sudoers_dir} does not exist: is sudo installed?")
    path = layout.sudoers_file(sudoers_dir)
    changes = []
    if place_sudoers(path, render_sudoers(layout.helper, user=user, group=group)):
        changes.append(f"wrote sudoers drop-in {path} for {user or '%' + str(group)} (root 0440)")
    manifest = Manifest.load(layout)
    if str(path) not in manifest.sudoers:
        replace(manifest, sudoers=(*manifest.sudoers, str(path))).save(layout)
    return changes
