#!/usr/bin/env bash
# gprocket's main job, from a fresh Debian machine as root: set everything up,
# install the helper with file capabilities, then run one gevent process as an
# unprivileged user that binds a low port, pings over raw ICMP and ICMPv6 (granted
# by the demo's policy; a default install pings through ping sockets instead) and
# captures frames, inside a network namespace made for the demo.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GPROCKET_VENV:-/opt/gprocket/venv}
prefix=/opt/gprocket/demo
user=gprocket-demo
ns=gprocket-demo-$$

"$here/scripts/setup.sh" >/dev/null
getent group gprocket >/dev/null || groupadd --system gprocket
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin -G gprocket "$user"

# The demo shows the raw path: its namespace keeps ping sockets closed, so the
# host's net.ipv4.ping_group_range is left alone (--no-ping-group) and the
# policy grants raw ICMP/ICMPv6 and frame capture explicitly. Such rules give
# much (a raw socket sends any IP packet from any source): capsetup status
# prints what each one gives.
"$venv/bin/capsetup" install --prefix "$prefix" --group gprocket --no-ping-group >/dev/null
policy="$prefix/libexec/gprocket/policy"
cat > "$policy.new" <<'RULES'
# gprocket demo: the defaults, plus raw ICMP and frame capture for the group
allow * bind any 1-1023
allow * raw icmp,icmpv6
allow group:gprocket packet
RULES
chmod 0644 "$policy.new" && mv "$policy.new" "$policy"
"$venv/bin/capsetup" status --prefix "$prefix" | grep '^warning:' || true

cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -q -w net.ipv4.ping_group_range="1 0"

# Not exec: the trap must still remove the namespace afterwards.
ip netns exec "$ns" setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=-all -- \
    env -i PATH=/usr/bin:/bin GPROCKET_HELPER="$prefix/libexec/gprocket/gprocket-helper" \
    "$venv/bin/gprocket" demo
