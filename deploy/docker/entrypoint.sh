#!/bin/sh
# Container entrypoint: optionally wait for a file (WATCHER_WAIT_FOR, e.g. the devnet's
# network config written by the devnet service), then exec `watcher` with the arguments,
# so the daemon is PID 1's direct replacement and receives SIGTERM itself.
set -eu
if [ -n "${WATCHER_WAIT_FOR:-}" ]; then
    waited=0
    limit="${WATCHER_WAIT_SECONDS:-120}"
    until [ -s "$WATCHER_WAIT_FOR" ]; do
        if [ "$waited" -ge "$limit" ]; then
            echo "watcher-entrypoint: $WATCHER_WAIT_FOR did not appear within ${limit}s" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
fi
exec watcher "$@"
