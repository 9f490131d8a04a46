#!/usr/bin/env bash
# A newcomer's first hour, as a test: `make newcomer` (and CI) run this.
#
# Builds a wheel (unless WHEEL=path/to.whl is given), makes a clean virtualenv with it,
# creates a brand-new project with `django-admin startproject` in a temp dir, and follows
# docs/getting-started.md: its settings block is appended to settings.py, `startapp
# ingest`, its file blocks become ingest/tasks.py and ingest/workflows.py (extracted by
# scripts/docs_blocks.py: when the guide changes, this test changes with it), `check`,
# `migrate`, a `baton worker`, its `run` blocks in `manage.py shell`, a wait for the
# workflow to complete, then the admin answers (runserver: the login page, and the
# workflow list for a logged-in superuser).
#
# PostgreSQL: DATABASE_URL's server (default: the private one of scripts/services.sh,
# started if needed), in a database of its own, dropped at the end. No network: the
# clean virtualenv gets the wheel with --no-deps and the dependencies from $VENV through
# a .pth line (BATON_NEWCOMER_ONLINE=1 installs them from the package index instead).
# Everything it starts is stopped by pid; the temp dir is removed unless KEEP=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"
VENV="${VENV:-.venv}"
PY="$REPO_ROOT/$VENV/bin/python"
GUIDE="$REPO_ROOT/docs/getting-started.md"
BLOCKS=("$PY" "$REPO_ROOT/scripts/docs_blocks.py" "$GUIDE")
WORK="$(mktemp -d /tmp/baton-newcomer-XXXXXX)"
DB="baton_newcomer_$$"
PIDS=()
started_pg=0
START=$SECONDS

log() { printf '[newcomer %3ss] %s\n' "$((SECONDS - START))" "$*"; }

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    if [[ -n "${PGHOST:-}" ]]; then
        psql -X -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres \
            -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
    fi
    if [[ $started_pg == 1 ]]; then bash "$REPO_ROOT/scripts/services.sh" pg-stop; fi
    if [[ $rc != 0 ]]; then
        log "FAILED (exit $rc); files in $WORK"
        for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "--- $f"; tail -n 30 "$f"; }; done
    elif [[ "${KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- PostgreSQL
if [[ -z "${DATABASE_URL:-}" ]]; then
    bash "$REPO_ROOT/scripts/services.sh" pg-status 2>/dev/null || started_pg=1
    bash "$REPO_ROOT/scripts/services.sh" pg-start
    DATABASE_URL="$(bash "$REPO_ROOT/scripts/services.sh" pg-url)"
fi
# The guide reads libpq's variables: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE.
eval "$("$PY" - "$DATABASE_URL" <<'PY'
import shlex, sys
from urllib.parse import unquote, urlsplit
url = urlsplit(sys.argv[1])
for key, value in (("PGHOST", url.hostname or "127.0.0.1"), ("PGPORT", str(url.port or 5432)),
                   ("PGUSER", unquote(url.username or "postgres")),
                   ("PGPASSWORD", unquote(url.password or ""))):
    print(f"export {key}={shlex.quote(value)}")
PY
)"
export PGDATABASE="$DB"
psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres \
    -c "CREATE DATABASE $DB" >/dev/null
log "database $DB on $PGHOST:$PGPORT"

# ---------------------------------------------------------------- 1. install
if [[ -z "${WHEEL:-}" ]]; then
    log "building a wheel"
    # sdist, then the wheel from the unpacked sdist: never stale files of build/.
    "$PY" -m build --no-isolation --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1
    WHEEL="$(ls "$WORK"/dist/baton_workflows-*.whl)"
fi
log "clean virtualenv with $(basename "$WHEEL")"
"$PY" -m venv --without-pip "$WORK/venv"
NPY="$WORK/venv/bin/python"
if [[ "${BATON_NEWCOMER_ONLINE:-0}" == 1 ]]; then
    "$PY" -m pip --python "$NPY" install --quiet "$WHEEL"
else
    "$PY" -m pip --python "$NPY" install --quiet --no-deps --no-index "$WHEEL"
    "$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
        >"$("$NPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/zz_deps.pth"
fi
cd "$WORK"   # not the checkout: `import baton` must find the wheel's copy
"$NPY" -c 'import baton, sys; assert baton.__file__.startswith(sys.prefix), baton.__file__'

# ---------------------------------------------------------------- 2. configure
"$NPY" -m django startproject mysite
cd mysite
{ echo; "${BLOCKS[@]}" settings 1; } >>mysite/settings.py
MANAGE=("$NPY" manage.py)
"${MANAGE[@]}" check --fail-level WARNING

# ---------------------------------------------------------------- 3. and 4. steps
"${MANAGE[@]}" startapp ingest
{ echo; "${BLOCKS[@]}" settings 2; } >>mysite/settings.py
"${BLOCKS[@]}" file . >/dev/null
"${MANAGE[@]}" check --fail-level WARNING
"${MANAGE[@]}" migrate --no-input -v 0
log "project ready: $(ls ingest | tr '\n' ' ')"

# ---------------------------------------------------------------- 5. worker
setsid "${MANAGE[@]}" baton worker >"$WORK/worker.log" 2>&1 </dev/null &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "steps:" "$WORK/worker.log" && break; sleep 0.1; done
grep -q "3 baton step(s)" "$WORK/worker.log" || { cat "$WORK/worker.log"; exit 1; }
log "worker alive: $(head -n1 "$WORK/worker.log")"

# ---------------------------------------------------------------- insert, wait, observe
"${MANAGE[@]}" shell -c "
import time
from baton.models import Workflow
$("${BLOCKS[@]}" run 1)
deadline = time.monotonic() + 60
while not Workflow.objects.get(pk=workflow.pk).is_finished:
    assert time.monotonic() < deadline, 'workflow did not finish in 60 s'
    time.sleep(0.1)
$("${BLOCKS[@]}" run 2)
$("${BLOCKS[@]}" run 3)
assert workflow.state == 'completed', workflow.state
" | tee "$WORK/shell.log"
grep -q "{'total': 190}" "$WORK/shell.log"
"${MANAGE[@]}" baton list | tee "$WORK/list.log"
grep -q "completed  6/6" "$WORK/list.log"

# ---------------------------------------------------------------- the admin answers
PORT="$("$NPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DJANGO_SUPERUSER_PASSWORD=newcomer "${MANAGE[@]}" createsuperuser --no-input \
    --username newcomer --email newcomer@example.com
setsid "${MANAGE[@]}" runserver --noreload "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 </dev/null &
PIDS+=($!)
"$NPY" - "$PORT" <<'PY'
import http.cookiejar, re, sys, time, urllib.parse, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
for _ in range(100):
    try:
        page = opener.open(f"{base}/admin/login/", timeout=2).read().decode()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the admin did not answer")
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "newcomer",
                               "password": "newcomer", "next": "/admin/baton/workflow/"})
page = opener.open(urllib.request.Request(f"{base}/admin/login/?next=/admin/baton/workflow/",
                                          data=data.encode(), headers={"Referer": base}),
                   timeout=10).read().decode()
assert "ingest" in page and "completed" in page.lower(), page[:2000]
print("admin: the workflow list shows the ingest workflow, completed")
PY
log "ok: Getting started works as written"
