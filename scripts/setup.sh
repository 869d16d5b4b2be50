#!/usr/bin/env bash
# Prepare a fresh Debian machine for gprocket, as root: system packages, the
# virtual environment other users can run, the helper build and the package.
# Idempotent: a second run only rebuilds and reinstalls the package.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GPROCKET_VENV:-/opt/gprocket/venv}
# Debian's interpreter: the default python3 may live under /root (mode 0700),
# where the unprivileged test users could not run it.
python=${GPROCKET_BASE_PYTHON:-/usr/bin/python3}

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (it installs packages, users and setuid/capability helpers)" >&2
    exit 2
fi

packages=(
    build-essential make gcc libcap-dev libcap2-bin libpcap-dev
    python3 python3-venv python3-dev
    sudo iproute2 iputils-ping procps util-linux passwd kmod strace
    tcpdump tshark netsniff-ng fping dnsutils curl socat systemd
    clang llvm libclang-rt-14-dev
)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    install -d -m 0755 "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements-dev.txt"

make -s -C "$here/helper"
# A real (non-editable) install: the checkout may sit under /root, which other
# users cannot read, while the venv's site-packages is readable by everyone.
# setuptools copies into build/lib.* and never deletes there: a module moved
# out of the package would still be installed from a stale copy.
rm -rf "$here"/build/lib.*
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --force-reinstall "$here" >/dev/null
# Only the venv (and its parent, to reach it): a recursive chmod of the parent
# would also reach what is installed beside it, e.g. the tests' group-only
# helpers under /opt/gprocket/t (0750 would become 0755).
chmod a+rx "$(dirname "$venv")"
chmod -R a+rX "$venv"

# Check up front what every privileged test relies on.
if ! setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        "$venv/bin/python" -c "import gprocket, gevent, prctl" 2>/tmp/gprocket-setup-check; then
    echo "setup: an unprivileged user cannot import gprocket from $venv:" >&2
    cat /tmp/gprocket-setup-check >&2
    exit 1
fi
echo "setup: ready ($venv, helper built, package installed)"
