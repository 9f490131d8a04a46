#!/usr/bin/env bash
# Private PostgreSQL and Redis servers for baton's tests and demo.
#
#   scripts/services.sh pg-start | pg-stop | pg-restart | pg-outage SECONDS | pg-status | pg-url | pg-dir
#   scripts/services.sh redis-start | redis-stop | redis-status | redis-url
#
# PostgreSQL
#   * Data dir: <repo>/.pgdata (git-ignored). initdb runs once, with `-U postgres --auth=trust`.
#   * Listens on 127.0.0.1:$BATON_PG_PORT (default 54329) only; the unix socket lives in the
#     data dir (or in /tmp/baton-pg-sock-<hash> when that path would be too long for a socket).
#   * max_connections=200. BATON_PG_FAST=1 also turns off fsync, synchronous_commit and
#     full_page_writes: fine for throw-away test data, never for data you care about.
#   * initdb/postgres refuse to run as root. As root, the server runs as the unprivileged
#     system user `baton-pg` (created with useradd when missing) through runuser. When that
#     user cannot reach <repo> (e.g. the repo sits under a 0700 home directory), the data dir
#     is /tmp/baton-pg-<hash of the repo path> instead; `pg-dir` prints the one in use.
#     As a normal user, everything runs as that user.
#   * Started and stopped by pid (pg_ctl uses the data dir's postmaster.pid).
#   * pg-restart: `pg_ctl restart -m fast` of a running server (every connection is cut),
#     waiting until it answers again; the crash tests use it (BATON_TEST_PG_RESTART).
#   * BATON_PG_BIN overrides where initdb/pg_ctl/postgres are looked up.
#
# Redis
#   * redis-server on 127.0.0.1:$BATON_REDIS_PORT (default 56379), no persistence,
#     pid file and log in <repo>/.run/. Skipped with a message when redis-server is missing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN_DIR="$REPO_ROOT/.run"
PG_PORT="${BATON_PG_PORT:-54329}"
PG_OS_USER="${BATON_PG_OS_USER:-baton-pg}"
REDIS_PORT="${BATON_REDIS_PORT:-56379}"
REPO_HASH="$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

# ---------------------------------------------------------------- PostgreSQL helpers

pg_bindir() {
    if [[ -n "${BATON_PG_BIN:-}" ]]; then
        echo "$BATON_PG_BIN"
        return
    fi
    local d
    # Highest installed Debian-style version first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [[ -x "$d/initdb" ]]; then
            echo "$d"
            return
        fi
    done
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir
        return
    fi
    die "PostgreSQL server binaries (initdb, pg_ctl) not found; install PostgreSQL 15 or set BATON_PG_BIN"
}

psql_bin() {
    local bin
    bin="$(pg_bindir)"
    if [[ -x "$bin/psql" ]]; then echo "$bin/psql"; return; fi
    command -v psql || die "psql not found"
}

ensure_pg_user() {
    is_root || return 0
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$PG_OS_USER" 2>/dev/null \
            || id -u "$PG_OS_USER" >/dev/null 2>&1 \
            || die "could not create system user $PG_OS_USER"
    fi
}

# Run a command as the server's OS user (root -> baton-pg), from a directory it can read.
as_pg() {
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_datadir() {
    if [[ -n "${BATON_PG_DATA:-}" ]]; then
        echo "$BATON_PG_DATA"
        return
    fi
    local in_repo="$REPO_ROOT/.pgdata"
    if ! is_root; then
        echo "$in_repo"
        return
    fi
    ensure_pg_user
    # Can baton-pg traverse every directory down to the repo?
    if runuser -u "$PG_OS_USER" -- test -x "$REPO_ROOT" 2>/dev/null; then
        echo "$in_repo"
    else
        echo "/tmp/baton-pg-$REPO_HASH"
    fi
}

pg_sockdir() {
    local data="$1"
    # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN".
    if (( ${#data} <= 85 )); then
        echo "$data"
    else
        echo "/tmp/baton-pg-sock-$REPO_HASH"
    fi
}

pg_ctl_() { as_pg "$(pg_bindir)/pg_ctl" "$@"; }

pg_running() {
    local data="$1"
    [[ -f "$data/PG_VERSION" ]] || return 1
    pg_ctl_ -D "$data" status >/dev/null 2>&1
}

pg_initdb() {
    local data="$1"
    if [[ -f "$data/PG_VERSION" ]]; then
        return 0
    fi
    log "initialising PostgreSQL data dir $data"
    mkdir -p "$data"
    if is_root; then
        chown "$PG_OS_USER:" "$data"
    fi
    chmod 0700 "$data"
    if ! as_pg "$(pg_bindir)/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$RUN_DIR/initdb.log" 2>&1 \
       && ! as_pg "$(pg_bindir)/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale >"$RUN_DIR/initdb.log" 2>&1; then
        cat "$RUN_DIR/initdb.log" >&2
        die "initdb failed"
    fi
    # Our settings live in baton.conf, rewritten at every start (port, fast mode may change).
    as_pg sh -c "printf '\n# baton: settings written by scripts/services.sh\ninclude_if_exists = '\''baton.conf'\''\n' >> '$data/postgresql.conf'"
}

pg_write_conf() {
    local data="$1" sock="$2"
    local fast=""
    if [[ "${BATON_PG_FAST:-0}" == 1 ]]; then
        # Throw-away test data only: a crash can corrupt the cluster.
        fast=$'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
    fi
    as_pg sh -c "cat > '$data/baton.conf'" <<EOF
# Written by scripts/services.sh on every pg-start; edit that script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
log_min_duration_statement = -1
${fast}
EOF
}

pg_psql() {
    "$(psql_bin)" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

pg_wait_ready() {
    local i
    for i in $(seq 1 100); do
        if pg_psql -d postgres -tAc 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

pg_start() {
    mkdir -p "$RUN_DIR"
    ensure_pg_user
    local data sock logfile
    data="$(pg_datadir)"
    sock="$(pg_sockdir "$data")"
    logfile="$data/postgres.log"
    pg_initdb "$data"
    if pg_running "$data"; then
        pg_wait_ready || die "PostgreSQL in $data is running but not answering on 127.0.0.1:$PG_PORT (another port?); run pg-stop then pg-start"
    else
        if [[ "$sock" != "$data" ]]; then
            mkdir -p "$sock"
            if is_root; then chown "$PG_OS_USER:" "$sock"; fi
            chmod 0700 "$sock"
        fi
        pg_write_conf "$data" "$sock"
        if ! pg_ctl_ -D "$data" -l "$logfile" -w -t 60 start >/dev/null 2>&1; then
            log "PostgreSQL failed to start; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            die "pg_ctl start failed (is port $PG_PORT already in use? set BATON_PG_PORT)"
        fi
        pg_wait_ready || die "PostgreSQL started but does not answer on 127.0.0.1:$PG_PORT"
    fi
    if [[ "$(pg_psql -d postgres -tAc "select 1 from pg_database where datname = 'baton'")" != 1 ]]; then
        pg_psql -d postgres -c 'create database baton' >/dev/null 2>&1 \
            || [[ "$(pg_psql -d postgres -tAc "select 1 from pg_database where datname = 'baton'")" == 1 ]] \
            || die "could not create database baton"
    fi
}

pg_stop() {
    local data
    data="$(pg_datadir)"
    if pg_running "$data"; then
        pg_ctl_ -D "$data" -m fast -w -t 60 stop >/dev/null
    fi
}

pg_restart() {
    local data
    data="$(pg_datadir)"
    pg_running "$data" || die "PostgreSQL in $data is not running; run pg-start"
    if ! pg_ctl_ -D "$data" -l "$data/postgres.log" -m fast -w -t 60 restart >/dev/null 2>&1; then
        tail -n 20 "$data/postgres.log" >&2 || true
        die "pg_ctl restart failed"
    fi
    pg_wait_ready || die "PostgreSQL restarted but does not answer on 127.0.0.1:$PG_PORT"
}

# An outage: the server stopped (every connection cut) for SECONDS, then started again,
# waiting until it answers; tests/worker/test_outage.py uses it (BATON_TEST_PG_OUTAGE).
pg_outage() {
    local data seconds="${1:?usage: pg-outage SECONDS}"
    data="$(pg_datadir)"
    pg_running "$data" || die "PostgreSQL in $data is not running; run pg-start"
    pg_ctl_ -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || die "pg_ctl stop failed"
    sleep "$seconds"
    if ! pg_ctl_ -D "$data" -l "$data/postgres.log" -w -t 60 start >/dev/null 2>&1; then
        tail -n 20 "$data/postgres.log" >&2 || true
        die "pg_ctl start failed after the outage"
    fi
    pg_wait_ready || die "PostgreSQL started but does not answer on 127.0.0.1:$PG_PORT"
}

pg_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/baton"; }

# ---------------------------------------------------------------- Redis helpers

REDIS_PIDFILE="$RUN_DIR/redis.pid"

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

redis_pid() { [[ -f "$REDIS_PIDFILE" ]] && cat "$REDIS_PIDFILE" || true; }

redis_running() {
    local pid
    pid="$(redis_pid)"
    pid_alive "$pid" && grep -qa redis "/proc/$pid/cmdline" 2>/dev/null
}

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null
    fi
}

redis_start() {
    if ! command -v redis-server >/dev/null 2>&1; then
        log "redis-server is not installed; skipping Redis (tests that need it will skip)"
        return 0
    fi
    mkdir -p "$RUN_DIR"
    if ! redis_running; then
        rm -f "$REDIS_PIDFILE"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
            --daemonize yes --pidfile "$REDIS_PIDFILE" --dir "$RUN_DIR" \
            --logfile "$RUN_DIR/redis.log" --save '' --appendonly no >/dev/null
    fi
    local i
    for i in $(seq 1 50); do
        if redis_ping; then return 0; fi
        sleep 0.1
    done
    tail -n 20 "$RUN_DIR/redis.log" >&2 || true
    die "redis-server did not answer on 127.0.0.1:$REDIS_PORT"
}

redis_stop() {
    local pid i
    if ! redis_running; then
        rm -f "$REDIS_PIDFILE"
        return 0
    fi
    pid="$(redis_pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        pid_alive "$pid" || { rm -f "$REDIS_PIDFILE"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$REDIS_PIDFILE"
}

redis_url() { echo "redis://127.0.0.1:$REDIS_PORT/0"; }

# ---------------------------------------------------------------- main

cmd="${1:-}"
case "$cmd" in
    pg-start) pg_start ;;
    pg-stop) pg_stop ;;
    pg-restart) pg_restart ;;
    pg-outage) pg_outage "${2:-}" ;;
    pg-status) pg_running "$(pg_datadir)" ;;
    pg-url) pg_url ;;
    pg-dir) pg_datadir ;;
    redis-start) redis_start ;;
    redis-stop) redis_stop ;;
    redis-status) command -v redis-server >/dev/null 2>&1 && redis_running ;;
    redis-url) redis_url ;;
    *)
        echo "usage: $0 {pg-start|pg-stop|pg-restart|pg-status|pg-url|pg-dir|redis-start|redis-stop|redis-status|redis-url}" >&2
        exit 2
        ;;
esac
