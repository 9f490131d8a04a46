#!/usr/bin/env bash
# The demo: `make demo` / `make demo-stop` call this.
#
#   scripts/demo.sh start   migrate, start a worker (queues default and llm) and the ASGI
#                           server in the background, create the superuser admin/admin,
#                           insert the sample workflows (ingest and research_brief)
#   scripts/demo.sh stop    stop worker, server, Redis and the private PostgreSQL (by pid)
#   scripts/demo.sh manage ARGS...
#                           example_project/manage.py ARGS with the running demo's
#                           settings (DATABASE_URL, REDIS_URL: .run/demo.env), whatever
#                           ports it runs on; e.g. `scripts/demo.sh manage baton list`
#
# PostgreSQL: the private server from scripts/services.sh, unless DATABASE_URL is set.
# Redis (for live updates from the worker to the browser) is started when installed.
# Pid files and logs: .run/worker.{pid,log} and .run/server.{pid,log}.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"
SERVICES="$REPO_ROOT/scripts/services.sh"
VENV="${VENV:-.venv}"
PY="$REPO_ROOT/$VENV/bin/python"
RUN_DIR="$REPO_ROOT/.run"
PORT="${BATON_DEMO_PORT:-8765}"
MANAGE=("$PY" "$REPO_ROOT/example_project/manage.py")
WORKER_PID="$RUN_DIR/worker.pid"
WORKER_LOG="$RUN_DIR/worker.log"
SERVER_PID="$RUN_DIR/server.pid"
SERVER_LOG="$RUN_DIR/server.log"
DEMO_ENV="$RUN_DIR/demo.env"

log() { printf '[demo] %s\n' "$*"; }

# stop_pidfile FILE MATCH LABEL: TERM the process named in FILE if its command line still
# contains MATCH (the pid was not reused), wait up to 10 s, then KILL.
stop_pidfile() {
    local file="$1" what="$2" label="$3" pid i
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && grep -qa "$what" "/proc/$pid/cmdline" 2>/dev/null; then
        log "stopping $label (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

# start_bg PIDFILE LOGFILE CMD...: run CMD detached (own session), its pid in PIDFILE.
start_bg() {
    local pidfile="$1" logfile="$2"
    shift 2
    # The child writes its own pid, then execs: the pid file names the real process.
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" </dev/null >"$logfile" 2>&1 &
    local i
    for i in $(seq 1 50); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.1
    done
    return 1
}

alive_or_die() {
    local pidfile="$1" logfile="$2" what="$3"
    if ! kill -0 "$(cat "$pidfile" 2>/dev/null || echo 0)" 2>/dev/null; then
        log "$what exited at startup; last lines of $logfile:"
        tail -n 30 "$logfile" >&2 || true
        exit 1
    fi
}

demo_stop_procs() {
    stop_pidfile "$SERVER_PID" uvicorn "ASGI server"
    stop_pidfile "$WORKER_PID" "baton" "worker"
}

start() {
    mkdir -p "$RUN_DIR"
    demo_stop_procs   # idempotent: a second `make demo` replaces the previous worker/server

    if [[ -z "${DATABASE_URL:-}" ]]; then
        bash "$SERVICES" pg-start
        DATABASE_URL="$(bash "$SERVICES" pg-url)"
    fi
    export DATABASE_URL
    if [[ -z "${REDIS_URL:-}" ]] && command -v redis-server >/dev/null 2>&1; then
        bash "$SERVICES" redis-start && REDIS_URL="$(bash "$SERVICES" redis-url)" && export REDIS_URL
    fi
    export DJANGO_SETTINGS_MODULE=example_project.settings
    export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
    # What `scripts/demo.sh manage` (and the banner's hints) need to reach this demo.
    {
        printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
        if [[ -n "${REDIS_URL:-}" ]]; then printf 'export REDIS_URL=%q\n' "$REDIS_URL"; fi
        printf 'export BATON_DEMO_PORT=%q\n' "$PORT"
    } >"$DEMO_ENV"

    log "migrating $DATABASE_URL"
    "${MANAGE[@]}" migrate --no-input -v 0

    if ! "${MANAGE[@]}" shell -c "
import sys
from django.contrib.auth import get_user_model
sys.exit(0 if get_user_model().objects.filter(username='admin').exists() else 3)
" >/dev/null 2>&1; then
        log "creating superuser admin/admin"
        DJANGO_SUPERUSER_PASSWORD=admin "${MANAGE[@]}" createsuperuser --no-input \
            --username admin --email admin@example.com >/dev/null
    fi

    log "starting worker on queues default,llm (log: .run/worker.log)"
    # The worker log shows every job start and end. LLM steps (the research brief's model
    # calls) run on the "llm" queue; the sweep and the plain steps on "default".
    PROCRASTINATE_LOG_LEVEL="${PROCRASTINATE_LOG_LEVEL:-INFO}" \
        start_bg "$WORKER_PID" "$WORKER_LOG" "${MANAGE[@]}" baton worker --concurrency 4 \
        --queues default,llm
    log "starting ASGI server on 127.0.0.1:$PORT (log: .run/server.log)"
    start_bg "$SERVER_PID" "$SERVER_LOG" "$PY" -m uvicorn example_project.asgi:application \
        --host 127.0.0.1 --port "$PORT" --app-dir "$REPO_ROOT"

    local i up=0
    for i in $(seq 1 100); do
        if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/admin/login/', timeout=1)" 2>/dev/null; then
            up=1
            break
        fi
        kill -0 "$(cat "$SERVER_PID")" 2>/dev/null || break
        sleep 0.2
    done
    alive_or_die "$WORKER_PID" "$WORKER_LOG" "worker"
    alive_or_die "$SERVER_PID" "$SERVER_LOG" "ASGI server"
    if [[ $up != 1 ]]; then
        log "ASGI server does not answer on http://127.0.0.1:$PORT/; see .run/server.log"
        exit 1
    fi

    "${MANAGE[@]}" demo_workflow
    # Three models in parallel through a fake provider (no network, no API key), priced by
    # genai-prices; gemini-1.5-flash is rate limited once, to show a snooze.
    "${MANAGE[@]}" research_brief --rate-limit gemini-1.5-flash
    # A retry and a snooze; a discard that cancels its dependents (retry it after 45 s);
    # a 500-step fan-out.
    "${MANAGE[@]}" demo_showcase --width 500 --down-for 45

    local manage="bash scripts/demo.sh manage"
    cat <<MSG

  baton demo is running (PostgreSQL: $DATABASE_URL${REDIS_URL:+, Redis: $REDIS_URL}).
    Admin:      http://127.0.0.1:$PORT/admin/   (login: admin / admin)
    Live page:  http://127.0.0.1:$PORT/baton/
    Logs:       .run/worker.log (the worker's banner: its queues and steps), .run/server.log
  The workflows, newest first:   $manage baton list
  One of them, and why it waits: $manage baton show <id prefix> --follow
  Insert another ingest:         $manage demo_workflow
  A research brief:              $manage research_brief [--budget 0.001]
  Retries, a failure, a fan-out: $manage demo_showcase   (then retry showcase-failure
                                 after 45 s: the admin's action, or $manage baton retry <id>)
  Stop everything:               make demo-stop

MSG
}

manage() {
    if [[ ! -f "$DEMO_ENV" ]]; then
        echo "no demo is running (no $DEMO_ENV): run \`make demo\` first" >&2
        exit 1
    fi
    # shellcheck disable=SC1090
    source "$DEMO_ENV"
    export DJANGO_SETTINGS_MODULE=example_project.settings
    export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
    exec "${MANAGE[@]}" "$@"
}

stop() {
    demo_stop_procs
    rm -f "$DEMO_ENV"
    bash "$SERVICES" redis-stop || true
    if [[ -z "${DATABASE_URL:-}" ]]; then
        bash "$SERVICES" pg-stop
    fi
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    manage) shift; manage "$@" ;;
    *) echo "usage: $0 {start|stop|manage ARGS...}" >&2; exit 2 ;;
esac
