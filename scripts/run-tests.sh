#!/usr/bin/env bash
# Run the test suite: `make test` calls this.
#
# Unless DATABASE_URL is set, starts the private PostgreSQL (and Redis, when installed) from
# scripts/services.sh, exports DATABASE_URL (and REDIS_URL), runs pytest, and stops again
# only what it started itself, even when pytest fails.
#
# Two pytest runs: baton's suite (tests/, settings tests.settings) with PYTEST_ARGS, then
# the example project's tests (example_project/tests, settings example_project.settings).
# The second run gets none of PYTEST_ARGS except --junitxml, rewritten to a sibling file
# (junit.xml -> junit-example.xml); BATON_EXAMPLE_TESTS=0 skips it. Exits non-zero when
# either run fails (the first failing run's exit code); exit code 5 ("no tests collected")
# is reported as a failure.
#
#   VENV=.venv  PYTEST_ARGS="-x -k graph"  BATON_EXAMPLE_TESTS=0  scripts/run-tests.sh
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
    # tests/worker/test_crash.py restarts the test database's server in the middle of a workflow.
    if [[ -z "${BATON_TEST_PG_RESTART:-}" ]]; then
        BATON_TEST_PG_RESTART="bash $(printf '%q' "$SERVICES") pg-restart"
        export BATON_TEST_PG_RESTART
    fi
    # tests/worker/test_outage.py stops it for a while (the seconds are appended).
    if [[ -z "${BATON_TEST_PG_OUTAGE:-}" ]]; then
        BATON_TEST_PG_OUTAGE="bash $(printf '%q' "$SERVICES") pg-outage"
        export BATON_TEST_PG_OUTAGE
    fi
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

report_rc() {  # report_rc LABEL RC
    if [[ $2 == 5 ]]; then
        echo "[run-tests] $1: pytest collected no tests (exit code 5): treating as a failure" >&2
    elif [[ $2 != 0 ]]; then
        echo "[run-tests] $1: pytest failed (exit code $2)" >&2
    fi
}

# shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
"$VENV/bin/python" -m pytest ${PYTEST_ARGS:-}
rc=$?
report_rc "baton suite" "$rc"

if [[ "${BATON_EXAMPLE_TESTS:-1}" != 0 ]]; then
    # Only --junitxml is carried over (as a file of its own): selections such as -k or
    # test paths name baton's suite, not the example project's.
    example_args=()
    read -r -a user_args <<<"${PYTEST_ARGS:-}"
    for ((i = 0; i < ${#user_args[@]}; i++)); do
        arg="${user_args[i]}"
        junit=""
        if [[ $arg == --junitxml=* || $arg == --junit-xml=* ]]; then
            junit="${arg#*=}"
        elif [[ ($arg == --junitxml || $arg == --junit-xml) && $((i + 1)) -lt ${#user_args[@]} ]]; then
            i=$((i + 1))
            junit="${user_args[i]}"
        fi
        if [[ -n $junit ]]; then
            if [[ $junit == *.xml ]]; then
                example_args+=("--junitxml=${junit%.xml}-example.xml")
            else
                example_args+=("--junitxml=${junit}-example")
            fi
        fi
    done
    echo "[run-tests] example project: example_project/tests with example_project.settings"
    "$VENV/bin/python" -m pytest example_project/tests -p no:cacheprovider \
        --ds=example_project.settings -o testpaths=example_project/tests \
        ${example_args[@]+"${example_args[@]}"}
    example_rc=$?
    report_rc "example project" "$example_rc"
    if [[ $rc == 0 ]]; then
        rc=$example_rc
    fi
fi
exit $rc
