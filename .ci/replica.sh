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

replica_start() {
    local bin waited=0
    bin="$(replica_bin)"
    if replica_check; then
        if [ "$REPLICA_APPLY_DELAY" != "0" ] || replica_caught_up 20 2>/dev/null; then
            printf 'replica: answering on 127.0.0.1:%s\n' "$REPLICA_PORT"
            return 0
        fi
        printf 'replica: answering but not streaming from the primary; starting it again\n' >&2
        as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    replica_allow_replication || return 1
    if [ ! -f "$REPLICA_DIR/standby.signal" ] || [ ! -f "$REPLICA_DIR/PG_VERSION" ]; then
        replica_clone || return 1
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/server.log" -w -t "$REPLICA_WAIT" \
        start >/dev/null; then
        # A standby that fell too far behind (its WAL gone from the primary) or a damaged copy: clone again.
        printf 'replica: start failed; cloning the primary again (log: %s)\n' "$REPLICA_DIR/server.log" >&2
        as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
        replica_clone || return 1
        as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/server.log" -w -t "$REPLICA_WAIT" \
            start >/dev/null || return 1
    fi
    while [ "$waited" -lt "$REPLICA_WAIT" ]; do
        if replica_check; then
            if [ "$REPLICA_APPLY_DELAY" = "0" ] && ! replica_caught_up 20 2>/dev/null; then
                # A standby stopped for a while starts, but cannot stream once the primary has recycled
                # the WAL it needs ("requested WAL segment has already been removed"): clone again.
                printf 'replica: not streaming from the primary; cloning it again (log: %s)\n' \
                    "$REPLICA_DIR/server.log" >&2
                as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
                replica_clone || return 1
                as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/server.log" -w -t "$REPLICA_WAIT" \
                    start >/dev/null || return 1
                replica_caught_up 60 || return 1
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
