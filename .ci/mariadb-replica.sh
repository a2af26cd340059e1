#!/usr/bin/env bash
# A self-contained MariaDB primary (127.0.0.1:3307, binary log, GTID) and its replica (127.0.0.1:3308,
# read_only, MASTER_USE_GTID=slave_pos), for the MariaDB replica tests. The local MariaDB (3306) runs
# without a binary log and is never touched: this pair has its own data directories under /tmp.
#
#   bash .ci/mariadb-replica.sh start           create the pair when needed (mariadb-install-db), start both
#   bash .ci/mariadb-replica.sh stop            stop the servers this script started (data kept)
#   bash .ci/mariadb-replica.sh stop-replica    stop the replica server only (start brings it back)
#   bash .ci/mariadb-replica.sh status          exit 0 when both answer and the replica's threads run
#   bash .ci/mariadb-replica.sh delay SECONDS   CHANGE MASTER TO MASTER_DELAY (whole seconds) on the replica
#   bash .ci/mariadb-replica.sh caught-up [S]   wait up to S seconds (default 30) until the replica applied
#                                               the primary's @@gtid_binlog_pos
#   bash .ci/mariadb-replica.sh destroy         stop both and remove their data directories
#   bash .ci/mariadb-replica.sh url             print the replica URL the tests take
#                                               (PONYKIT_TEST_MARIADB_REPLICA; the primary is on 3307)
#
# .ci/run sources this file for its functions (mreplica_*). Both servers run as the mysql OS user (root
# when there is none) with --no-defaults: nothing of /etc/mysql applies. Users: root with an empty
# password from 127.0.0.1 (mariadb-install-db --auth-root-authentication-method=normal), as the local
# test server has it. The database `test` is created on the primary and replicated.
#
# Overridable: PONYKIT_MARIADB_REPLICA_DIR (prefix of the data directories, default /tmp/ponykit-mariadb:
# -primary and -replica are appended), PONYKIT_MARIADB_PRIMARY_PORT (3307), PONYKIT_MARIADB_REPLICA_PORT
# (3308), PONYKIT_MARIADB_REPLICA_WAIT (seconds to wait for start-up, default 60).

MREPLICA_BASE="${PONYKIT_MARIADB_REPLICA_DIR:-/tmp/ponykit-mariadb}"
MREPLICA_PRIMARY_DIR="$MREPLICA_BASE-primary"
MREPLICA_REPLICA_DIR="$MREPLICA_BASE-replica"
MREPLICA_PRIMARY_PORT="${PONYKIT_MARIADB_PRIMARY_PORT:-3307}"
MREPLICA_REPLICA_PORT="${PONYKIT_MARIADB_REPLICA_PORT:-3308}"
MREPLICA_WAIT="${PONYKIT_MARIADB_REPLICA_WAIT:-60}"

mreplica_url() { printf 'mysql://root@127.0.0.1:%s/test' "$MREPLICA_REPLICA_PORT"; }
mreplica_primary_url() { printf 'mysql://root@127.0.0.1:%s/test' "$MREPLICA_PRIMARY_PORT"; }

mreplica_user() {  # the OS user the servers run as
    if id mysql >/dev/null 2>&1; then printf 'mysql'; else printf 'root'; fi
}

mreplica_sql() {  # mreplica_sql PORT SQL: the output (tab-separated, no headers), nothing when it does not answer
    mariadb --no-defaults -h 127.0.0.1 -P "$1" -u root --connect-timeout=3 -N -B -e "$2" 2>/dev/null
}

mreplica_answers() {  # mreplica_answers PORT: 0 when a server answers there
    [ "$(mreplica_sql "$1" 'SELECT 1')" = "1" ]
}

mreplica_slave_field() {  # mreplica_slave_field NAME: one column of SHOW SLAVE STATUS on the replica
    mariadb --no-defaults -h 127.0.0.1 -P "$MREPLICA_REPLICA_PORT" -u root --connect-timeout=3 -E \
        -e 'SHOW SLAVE STATUS' 2>/dev/null | awk -v name="$1" -F': ' '$1 ~ "^ *" name "$" { print $2 }'
}

mreplica_check() {  # 0 when both answer and the replica's IO and SQL threads run
    mreplica_answers "$MREPLICA_PRIMARY_PORT" || return 1
    [ "$(mreplica_slave_field Slave_SQL_Running)" = "Yes" ] && [ "$(mreplica_slave_field Slave_IO_Running)" = "Yes" ]
}

mreplica_init() {  # mreplica_init DIR: a fresh data directory
    local dir="$1" user
    user="$(mreplica_user)"
    rm -rf "$dir"
    install -d -m 0750 "$dir"
    chown "$user" "$dir"
    printf 'mariadb-replica: mariadb-install-db into %s\n' "$dir"
    mariadb-install-db --no-defaults --user="$user" --datadir="$dir" --auth-root-authentication-method=normal \
        --skip-test-db >"$dir.install.log" 2>&1 || {
        printf 'mariadb-replica: mariadb-install-db failed (log: %s.install.log)\n' "$dir" >&2
        return 1
    }
}

mreplica_launch() {  # mreplica_launch DIR PORT OPTIONS...: start mariadbd in the background unless it runs
    local dir="$1" port="$2" waited=0
    shift 2
    if mreplica_answers "$port"; then
        return 0
    fi
    if [ -f "$dir/mariadbd.pid" ] && kill -0 "$(cat "$dir/mariadbd.pid")" 2>/dev/null; then
        : # started by us and still starting up: wait for it below
    else
        rm -f "$dir/mariadbd.pid"
        start-stop-daemon --start --background --pidfile "$dir/mariadbd.pid" --exec /usr/sbin/mariadbd -- \
            --no-defaults --user="$(mreplica_user)" --datadir="$dir" --port="$port" --bind-address=127.0.0.1 \
            --socket="$dir/mariadbd.sock" --pid-file="$dir/mariadbd.pid" --log-error="$dir/error.log" \
            --skip-name-resolve --innodb-buffer-pool-size=32M --max-connections=300 \
            --gtid-strict-mode=1 --character-set-server=utf8mb4 --collation-server=utf8mb4_bin "$@" || return 1
    fi
    while [ "$waited" -lt $((MREPLICA_WAIT * 10)) ]; do
        mreplica_answers "$port" && return 0
        sleep 0.1
        waited=$((waited + 1))
    done
    printf 'mariadb-replica: nothing answers on 127.0.0.1:%s after %ss (log: %s/error.log)\n' "$port" \
        "$MREPLICA_WAIT" "$dir" >&2
    return 1
}

mreplica_start_primary() {
    [ -d "$MREPLICA_PRIMARY_DIR/mysql" ] || mreplica_init "$MREPLICA_PRIMARY_DIR" || return 1
    mreplica_launch "$MREPLICA_PRIMARY_DIR" "$MREPLICA_PRIMARY_PORT" --server-id=1 \
        --log-bin="$MREPLICA_PRIMARY_DIR/binlog" --binlog-format=ROW || return 1
    mreplica_sql "$MREPLICA_PRIMARY_PORT" 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
}

mreplica_start_replica() {
    local fresh=0
    if [ ! -d "$MREPLICA_REPLICA_DIR/mysql" ]; then
        mreplica_init "$MREPLICA_REPLICA_DIR" || return 1
        fresh=1
    fi
    mreplica_launch "$MREPLICA_REPLICA_DIR" "$MREPLICA_REPLICA_PORT" --server-id=2 --read-only=1 \
        --relay-log="$MREPLICA_REPLICA_DIR/relay" || return 1
    if [ "$fresh" -eq 1 ] || [ -z "$(mreplica_slave_field Master_Host)" ]; then
        # Both data directories are fresh installs (not in any binary log): the replica applies the
        # primary's whole binary log from the start, which creates `test` there too.
        mreplica_sql "$MREPLICA_REPLICA_PORT" "SET GLOBAL gtid_slave_pos = ''; CHANGE MASTER TO
            MASTER_HOST = '127.0.0.1', MASTER_PORT = $MREPLICA_PRIMARY_PORT, MASTER_USER = 'root',
            MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1; START SLAVE" >/dev/null
    else
        mreplica_sql "$MREPLICA_REPLICA_PORT" 'START SLAVE' >/dev/null  # a no-op (a warning) when running
    fi
}

mreplica_start() {
    local waited=0
    if mreplica_check; then
        printf 'mariadb-replica: answering on 127.0.0.1:%s (primary) and :%s (replica)\n' \
            "$MREPLICA_PRIMARY_PORT" "$MREPLICA_REPLICA_PORT"
        return 0
    fi
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        printf 'mariadb-replica: mariadbd is not installed\n' >&2
        return 1
    fi
    mreplica_start_primary || return 1
    mreplica_start_replica || return 1
    while [ "$waited" -lt $((MREPLICA_WAIT * 10)) ]; do
        if mreplica_check && mreplica_caught_up 1 2>/dev/null; then
            printf 'mariadb-replica: started, primary 127.0.0.1:%s (%s), replica 127.0.0.1:%s (%s)\n' \
                "$MREPLICA_PRIMARY_PORT" "$MREPLICA_PRIMARY_DIR" "$MREPLICA_REPLICA_PORT" "$MREPLICA_REPLICA_DIR"
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    printf 'mariadb-replica: the replica does not replicate after %ss (Last_IO_Error: %s; Last_SQL_Error: %s)\n' \
        "$MREPLICA_WAIT" "$(mreplica_slave_field Last_IO_Error)" "$(mreplica_slave_field Last_SQL_Error)" >&2
    return 1
}

mreplica_stop_one() {  # mreplica_stop_one DIR: only the server whose pid file is in DIR (one we started)
    local dir="$1" pid waited=0
    [ -f "$dir/mariadbd.pid" ] || return 0
    pid="$(cat "$dir/mariadbd.pid")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "/usr/sbin/mariadbd" ]; then
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((MREPLICA_WAIT * 10)) ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    rm -f "$dir/mariadbd.pid"
}

mreplica_stop() {  # the replica first: its IO thread would otherwise keep retrying the primary
    mreplica_stop_one "$MREPLICA_REPLICA_DIR"
    mreplica_stop_one "$MREPLICA_PRIMARY_DIR"
}

mreplica_delay() {  # mreplica_delay SECONDS: the replica applies each transaction SECONDS after its commit
    case "${1:-}" in
        '' | *[!0-9]*)
            printf 'mariadb-replica: delay takes whole seconds (MariaDB MASTER_DELAY), not %s\n' "${1:-nothing}" >&2
            return 2
            ;;
    esac
    mreplica_sql "$MREPLICA_REPLICA_PORT" "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = $1; START SLAVE" >/dev/null \
        && [ "$(mreplica_slave_field SQL_Delay)" = "$1" ]
}

mreplica_caught_up() {  # mreplica_caught_up [SECONDS]: the replica applied the primary's binary log so far
    local limit="${1:-30}" target
    target="$(mreplica_sql "$MREPLICA_PRIMARY_PORT" 'SELECT @@gtid_binlog_pos')" || return 1
    [ -n "$target" ] || return 0  # nothing written yet
    if [ "$(mreplica_sql "$MREPLICA_REPLICA_PORT" "SELECT MASTER_GTID_WAIT('$target', $limit)")" = "0" ]; then
        return 0
    fi
    printf 'mariadb-replica: not caught up with %s after %ss\n' "$target" "$limit" >&2
    return 1
}

mreplica_destroy() {
    mreplica_stop
    rm -rf "$MREPLICA_PRIMARY_DIR" "$MREPLICA_REPLICA_DIR" "$MREPLICA_PRIMARY_DIR.install.log" \
        "$MREPLICA_REPLICA_DIR.install.log"
}

mreplica_main() {
    case "${1:-}" in
        start) mreplica_start ;;
        stop) mreplica_stop ;;
        stop-replica) mreplica_stop_one "$MREPLICA_REPLICA_DIR" ;;
        status) mreplica_check ;;
        delay) mreplica_delay "${2:-}" ;;
        caught-up) mreplica_caught_up "${2:-30}" ;;
        destroy) mreplica_destroy ;;
        url) mreplica_url && printf '\n' ;;
        primary-url) mreplica_primary_url && printf '\n' ;;
        *)
            printf 'usage: %s start|stop|stop-replica|status|delay SECONDS|caught-up [SECONDS]|destroy|url|primary-url\n' "$0" >&2
            return 2
            ;;
    esac
}

# Sourcing this file (from .ci/run) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    mreplica_main "$@"
fi
