#!/usr/bin/env bash
# A real streaming replica of the local PostgreSQL (127.0.0.1:5432) on 127.0.0.1:5433, for the replica
# tests (ponykit's bounded pool and read-replica routing).
#
#   bash .ci/replica.sh start          clone the primary (pg_basebackup -R) when needed, start the standby
#   bash .ci/replica.sh stop           stop the standby this script manages (data kept)
#   bash .ci/replica.sh status         exit 0 when the standby answers and is in recovery
#   bash .ci/replica.sh delay MS       set recovery_min_apply_delay (milliseconds) and reload
#   bash .ci/replica.sh caught-up [S]  wait up to S seconds (default 30) until it replayed the primary's WAL
#   bash .ci/replica.sh destroy        stop it and remove its data directory
#   bash .ci/replica.sh url            print the URL the tests take (PONYKIT_TEST_REPLICA)
#
# .ci/run sources this file for its functions (replica_*). The standby runs as the postgres OS user from
# a data directory under /tmp; nothing of the primary is changed except, when the primary refuses
# replication connections from 127.0.0.1, one "host replication all 127.0.0.1/32 trust" line in its
# pg_hba.conf (the same trust the test database already has) and a configuration reload.
#
# Overridable: PONYKIT_REPLICA_DIR (data directory), PONYKIT_REPLICA_PORT (5433),
# PONYKIT_REPLICA_PRIMARY_PORT (5432), PONYKIT_REPLICA_APPLY_DELAY (milliseconds, default 0),
# PONYKIT_REPLICA_WAIT (seconds to wait for start-up, default 60).

REPLICA_DIR="${PONYKIT_REPLICA_DIR:-/tmp/ponykit-replica}"
REPLICA_PORT="${PONYKIT_REPLICA_PORT:-5433}"
REPLICA_PRIMARY_PORT="${PONYKIT_REPLICA_PRIMARY_PORT:-5432}"
REPLICA_APPLY_DELAY="${PONYKIT_REPLICA_APPLY_DELAY:-0}"
REPLICA_WAIT="${PONYKIT_REPLICA_WAIT:-60}"

replica_url() { printf 'postgresql://postgres@127.0.0.1:%s/test' "$REPLICA_PORT"; }

replica_bin() {  # the server binaries of the primary's major version (pg_ctl, pg_basebackup)
    local dir
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [ -z "$dir" ] || [ ! -x "$dir/pg_ctl" ]; then
        dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    fi
    printf '%s' "$dir"
}

as_postgres() {  # run a command as the postgres OS user (the standby's files belong to it)
    # From / : the postgres user may not be allowed into the caller's working directory.
    if [ "$(id -un)" = "postgres" ]; then
        (cd / && "$@")
    else
        (cd / && runuser -u postgres -- "$@")
    fi
}

replica_sql() {  # replica_sql PORT SQL: one value, or nothing when the server does not answer
    psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtq -c "$2" 2>/dev/null
}

replica_check() {  # 0 when something answers on the replica port and it is a standby in recovery
    [ "$(replica_sql "$REPLICA_PORT" 'SELECT pg_is_in_recovery()')" = "t" ]
}

replica_allow_replication() {  # the primary must accept replication connections from 127.0.0.1
    local hba
    if psql "host=127.0.0.1 port=$REPLICA_PRIMARY_PORT user=postgres replication=true" -XAtq \
        -c 'IDENTIFY_SYSTEM' >/dev/null 2>&1; then
        return 0
    fi
    hba="$(replica_sql "$REPLICA_PRIMARY_PORT" 'SHOW hba_file')"
    if [ -z "$hba" ] || [ ! -w "$hba" ]; then
        printf 'replica: the primary refuses replication connections and its pg_hba.conf (%s) cannot be edited\n' \
            "${hba:-unknown}" >&2
        return 1
    fi
    printf 'replica: allowing replication connections from 127.0.0.1 in %s\n' "$hba"
    printf '\n# ponykit CI: the test replica (.ci/replica.sh)\nhost replication all 127.0.0.1/32 trust\n' >>"$hba"
    replica_sql "$REPLICA_PRIMARY_PORT" 'SELECT pg_reload_conf()' >/dev/null
    sleep 1
}

replica_write_config() {  # the standby's own postgresql.conf (Debian keeps the primary's outside its data)
    local setting value
    {
        printf "# written by .ci/replica.sh\n"
        printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" \
            "$REPLICA_PORT" "$REPLICA_DIR"
        printf "hot_standby = on\nhot_standby_feedback = on\nshared_buffers = 32MB\n"
        printf "wal_receiver_status_interval = 1s\nmax_standby_streaming_delay = 5s\n"
        # A hot standby refuses to start with fewer of these than the primary has.
        for setting in max_connections max_worker_processes max_wal_senders max_prepared_transactions \
            max_locks_per_transaction; do
            value="$(replica_sql "$REPLICA_PRIMARY_PORT" "SHOW $setting")"
            [ -n "$value" ] && printf '%s = %s\n' "$setting" "$value"
        done
        printf "recovery_min_apply_delay = '%sms'\n" "$REPLICA_APPLY_DELAY"
    } >"$REPLICA_DIR/postgresql.conf"
    # Local test access only, as the primary's test database has it.
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$REPLICA_DIR/pg_hba.conf"
    : >"$REPLICA_DIR/pg_ident.conf"
    chown postgres:postgres "$REPLICA_DIR/postgresql.conf" "$REPLICA_DIR/pg_hba.conf" "$REPLICA_DIR/pg_ident.conf" 2>/dev/null || true
}

replica_clone() {  # a fresh base backup of the primary, configured as a standby (-R)
    local bin
    bin="$(replica_bin)"
    rm -rf "$REPLICA_DIR"
    install -d -m 0700 -o postgres -g postgres "$REPLICA_DIR"
    printf 'replica: pg_basebackup of 127.0.0.1:%s into %s\n' "$REPLICA_PRIMARY_PORT" "$REPLICA_DIR"
    as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$REPLICA_PRIMARY_PORT" -U postgres -D "$REPLICA_DIR" \
        -R -X stream -c fast || return 1
    replica_write_config
}

replica_launch() {  # start the standby of our data directory and wait until it accepts connections
    as_postgres "$(replica_bin)/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/server.log" -w -t "$REPLICA_WAIT" \
        start >/dev/null
}

replica_ours() {  # 0 when the server answering on the replica port runs from our data directory
    local dir
    dir="$(replica_sql "$REPLICA_PORT" 'SHOW data_directory')"
    [ -n "$dir" ] || return 1
    [ "$dir" = "$REPLICA_DIR" ] || [ "$(readlink -f "$dir")" = "$(readlink -f "$REPLICA_DIR")" ]
}

replica_not_ours() {  # the message when another server holds the port: we neither stop nor clone it
    printf 'replica: the server on 127.0.0.1:%s runs from %s, not %s; leaving it alone (stop it, or set PONYKIT_REPLICA_PORT)\n' \
        "$REPLICA_PORT" "$(replica_sql "$REPLICA_PORT" 'SHOW data_directory')" "$REPLICA_DIR" >&2
}

replica_reclone() {  # our standby cannot stream: stop it, clone the primary afresh, start the copy
    printf 'replica: not streaming from the primary; cloning it again (log: %s)\n' "$REPLICA_DIR/server.log" >&2
    as_postgres "$(replica_bin)/pg_ctl" -D "$REPLICA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    replica_clone || return 1
    replica_launch
}

# replica_streaming [SECONDS]: 0 when the standby's WAL receiver streams from the primary, 1 when it does
# not within SECONDS (default 15), 2 when the primary does not answer (nothing known). Judged by what the
# standby received, not by what it replayed: a replay delay (PONYKIT_REPLICA_APPLY_DELAY, replica.sh delay,
# kept by ALTER SYSTEM) or a paused replay is a healthy standby. A standby whose WAL the primary recycled
# ("requested WAL segment has already been removed") reconnects every few seconds and may show 'streaming'
# for a moment, but never receives up to the primary's position; so both are required, twice in a row.
replica_streaming() {
    local limit="${1:-15}" target polls=0 seen=0
    target="$(replica_sql "$REPLICA_PRIMARY_PORT" 'SELECT pg_current_wal_flush_lsn()')"
    [ -n "$target" ] || return 2
    while [ "$polls" -lt $((limit * 2)) ]; do
        if [ "$(replica_sql "$REPLICA_PORT" "SELECT status = 'streaming' AND pg_last_wal_receive_lsn() >= \
            '$target'::pg_lsn FROM pg_stat_wal_receiver")" = "t" ]; then
            seen=$((seen + 1))
            [ "$seen" -ge 2 ] && return 0
        else
            seen=0
        fi
        sleep 0.5
        polls=$((polls + 1))
    done
    printf 'replica: not streaming from the primary (up to %s) after %ss\n' "$target" "$limit" >&2
    return 1
}

replica_start() {
    local waited=0 cloned=0 streaming
    if replica_check; then
        replica_streaming 15
        streaming=$?
        if [ "$streaming" = 2 ]; then  # nothing known: a running standby is left as it is
            printf 'replica: answering on 127.0.0.1:%s (the primary does not answer: streaming not checked)\n' \
                "$REPLICA_PORT"
            return 0
        elif [ "$streaming" = 0 ]; then
            printf 'replica: answering on 127.0.0.1:%s\n' "$REPLICA_PORT"
            return 0
        fi
        # Stopped while its WAL was recycled, say: only ours is stopped and cloned again, never another's.
        if ! replica_ours; then
            replica_not_ours
            return 1
        fi
        replica_allow_replication || return 1
        replica_reclone || return 1
        cloned=1
    elif [ -n "$(replica_sql "$REPLICA_PORT" 'SELECT 1')" ]; then
        # A server that is no standby (ours promoted, or another one): ours is stopped and cloned again.
        if ! replica_ours; then
            replica_not_ours
            return 1
        fi
        printf 'replica: answering but not a standby; cloning the primary again\n' >&2
        replica_stop || return 1
        rm -f "$REPLICA_DIR/standby.signal"  # so that it is cloned below
    fi
    if [ "$cloned" = 0 ]; then
        replica_allow_replication || return 1
        if [ ! -f "$REPLICA_DIR/standby.signal" ] || [ ! -f "$REPLICA_DIR/PG_VERSION" ]; then
            replica_clone || return 1
            cloned=1
        fi
        if ! replica_launch; then
            # A damaged copy: clone again.
            printf 'replica: start failed; cloning the primary again (log: %s)\n' "$REPLICA_DIR/server.log" >&2
            as_postgres "$(replica_bin)/pg_ctl" -D "$REPLICA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
            replica_clone || return 1
            cloned=1
            replica_launch || return 1
        fi
    fi
    while [ "$waited" -lt "$REPLICA_WAIT" ]; do
        if replica_check; then
            replica_streaming 15
            streaming=$?
            if [ "$streaming" = 1 ]; then
                # A standby stopped for a while starts, but cannot stream once the primary has recycled
                # the WAL it needs: clone again (a fresh copy that cannot stream would not do better).
                [ "$cloned" = 0 ] || return 1
                replica_reclone || return 1
                cloned=1
                replica_streaming 15 || return 1
            fi
            printf 'replica: started on 127.0.0.1:%s (%s)\n' "$REPLICA_PORT" "$REPLICA_DIR"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    printf 'replica: no standby answers on 127.0.0.1:%s after %ss (log: %s)\n' "$REPLICA_PORT" "$REPLICA_WAIT" \
        "$REPLICA_DIR/server.log" >&2
    return 1
}

replica_stop() {  # only the standby of our data directory, never another server on the port
    if [ -f "$REPLICA_DIR/postmaster.pid" ]; then
        as_postgres "$(replica_bin)/pg_ctl" -D "$REPLICA_DIR" -m fast -w -t "$REPLICA_WAIT" stop >/dev/null
    fi
}

replica_delay() {  # replica_delay MS: ALTER SYSTEM on the running standby (kept across restarts)
    case "${1:-}" in
        '' | *[!0-9]*)
            printf 'replica: delay takes a whole number of milliseconds, not %s\n' "${1:-nothing}" >&2
            return 2
            ;;
    esac
    replica_sql "$REPLICA_PORT" "ALTER SYSTEM SET recovery_min_apply_delay = '${1}ms'" >/dev/null || return 1
    [ "$(replica_sql "$REPLICA_PORT" 'SELECT pg_reload_conf()')" = "t" ]
}

replica_caught_up() {  # replica_caught_up [SECONDS]: the standby replayed what the primary wrote so far
    local limit="${1:-30}" target waited=0
    target="$(replica_sql "$REPLICA_PRIMARY_PORT" 'SELECT pg_current_wal_lsn()')"
    [ -n "$target" ] || return 1
    while [ "$waited" -lt $((limit * 10)) ]; do
        if [ "$(replica_sql "$REPLICA_PORT" \
            "SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn")" = "t" ]; then
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    printf 'replica: not caught up with %s after %ss\n' "$target" "$limit" >&2
    return 1
}

replica_destroy() {
    replica_stop
    rm -rf "$REPLICA_DIR"
}

replica_main() {
    case "${1:-}" in
        start) replica_start ;;
        stop) replica_stop ;;
        status) replica_check ;;
        delay) replica_delay "${2:-}" ;;
        caught-up) replica_caught_up "${2:-30}" ;;
        destroy) replica_destroy ;;
        url) replica_url && printf '\n' ;;
        *)
            printf 'usage: %s start|stop|status|delay MS|caught-up [SECONDS]|destroy|url\n' "$0" >&2
            return 2
            ;;
    esac
}

# Sourcing this file (from .ci/run) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    replica_main "$@"
fi
