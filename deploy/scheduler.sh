#!/bin/sh
# The `scheduler` service of docker-compose.yml: the daily lifecycle job, run every hour.
#
# `recvault lifecycle run` decides by itself which school years are due (the last school day
# at VAULT_SHRED_HOUR, local time), so running it hourly is harmless, and an hour missed to a
# restart or an outage is caught up by the next run. A run interrupted half-way is resumed by
# the next one: every step of a shred is idempotent. Only one run works at a time (a database
# lock): one started while another still runs, here or on another host, does nothing.
#
#   scheduler.sh           run now, then every SCHEDULER_INTERVAL_SECONDS (default 3600)
#   scheduler.sh --once    one run; exits with the job's status
#   scheduler.sh --check   the healthcheck: succeeds while the last successful run is recent
#
# The time of the last successful run is kept in SCHEDULER_STATE_FILE
# (default /tmp/recvault-scheduler.last-success).

interval="${SCHEDULER_INTERVAL_SECONDS:-3600}"
state_file="${SCHEDULER_STATE_FILE:-/tmp/recvault-scheduler.last-success}"
# Two missed runs (and ten minutes of slack for a long one) make the service unhealthy.
max_age=$((interval * 2 + 600))

run_once() {
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    recvault lifecycle run
    status=$?
    if [ "$status" -eq 0 ]; then
        echo "$started" >"$state_file"
    else
        echo "scheduler: the lifecycle job started at $started failed with status $status" >&2
    fi
    return "$status"
}

check() {
    if [ ! -f "$state_file" ]; then
        echo "no successful lifecycle run yet"
        return 1
    fi
    age=$(($(date +%s) - $(stat -c %Y "$state_file")))
    if [ "$age" -gt "$max_age" ]; then
        echo "the last successful lifecycle run was ${age} s ago"
        return 1
    fi
    echo "last successful lifecycle run: $(cat "$state_file")"
}

case "${1:-}" in
    --once)
        run_once
        exit $?
        ;;
    --check)
        check
        exit $?
        ;;
    "") ;;
    *)
        echo "usage: $0 [--once | --check]" >&2
        exit 2
        ;;
esac

# A stop request waits for a running job (the shell defers the trap until it ends), so a
# shred is not cut short needlessly; compose gives the service a long stop grace period.
sleeper=""
trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT
while :; do
    run_once
    sleep "$interval" &
    sleeper=$!
    wait "$sleeper"
    sleeper=""
done
