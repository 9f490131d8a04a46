#!/usr/bin/env bash
# Run the test suite: `make test` calls this.
#
# Unless DATABASE_URL is set, starts the private PostgreSQL (and Redis, when installed) from
# scripts/services.sh, exports DATABASE_URL (and REDIS_URL), runs pytest, and stops again
# only what it started itself, even when pytest fails. Exits with pytest's exit code;
# exit code 5 ("no tests collected") is reported as a failure.
#
#   VENV=.venv  PYTEST_ARGS="-x -k graph"  scripts/run-tests.sh
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT" || exit 1
SERVICES="$REPO_ROOT/scripts/services.sh"
VENV="${VENV:-.venv}"

started_pg=0
started_redis=0

cleanup() {
    if [[ $started_redis == 1 ]]; then bash "$SERVICES" redis-stop || true; fi
    if [[ $started_pg == 1 ]]; then bash "$SERVICES" pg-stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "${DATABASE_URL:-}" ]]; then
    if ! bash "$SERVICES" pg-status 2>/dev/null; then
        started_pg=1
        BATON_PG_FAST="${BATON_PG_FAST:-1}" bash "$SERVICES" pg-start || exit 1
    else
        bash "$SERVICES" pg-start || exit 1
    fi
    DATABASE_URL="$(bash "$SERVICES" pg-url)"
    export DATABASE_URL
    if [[ -z "${REDIS_URL:-}" ]] && command -v redis-server >/dev/null 2>&1; then
        if ! bash "$SERVICES" redis-status 2>/dev/null; then
            started_redis=1
        fi
        if bash "$SERVICES" redis-start; then
            REDIS_URL="$(bash "$SERVICES" redis-url)"
            export REDIS_URL
        fi
    fi
fi

echo "[run-tests] DATABASE_URL=$DATABASE_URL REDIS_URL=${REDIS_URL:-<unset>} python=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])') django=$("$VENV/bin/python" -c 'import django; print(django.__version__)')"

# shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
"$VENV/bin/python" -m pytest ${PYTEST_ARGS:-}
rc=$?
if [[ $rc == 5 ]]; then
    echo "[run-tests] pytest collected no tests (exit code 5): treating as a failure" >&2
fi
exit $rc
