#!/usr/bin/env bash
# Install Debian's prometheus package (promtool + the server) if either is missing.
# The tests start their own server on a free port; the package's service must not start
# (no systemd here, and a stray server would hold port 9090), so policy-rc.d denies it
# for the duration of the install when the machine has none.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    exit 0
fi
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null && command -v prometheus >/dev/null
