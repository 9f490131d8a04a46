#!/usr/bin/env bash
# Does the newest Procrastinate 3.x on the package index still match what baton borrows
# from its internals (baton/execution/upstream.py)? Reports; never fails the build.
#
# Installs the newest 3.x (without dependencies) into a throwaway folder that shadows the
# venv's pinned copy on PYTHONPATH, then runs the contract test and a short smoke (real
# workers) against it, and says which items to re-audit. Needs DATABASE_URL.
#
#   VENV=.venv-py312 DATABASE_URL=postgres://... bash scripts/procrastinate-drift.sh
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT" || exit 0
VENV="${VENV:-.venv-py312}"
TARGET="${BATON_DRIFT_DIR:-$REPO_ROOT/.run/procrastinate-newest}"
LOG="$TARGET.log"
# Another requirement (e.g. 'procrastinate==3.9.0') rehearses the report on a known drift.
REQUIREMENT="${BATON_DRIFT_REQUIREMENT:-procrastinate>=3,<4}"
SMOKE=(tests/worker/test_job_finish.py tests/integration/test_release.py)

say() { echo "==> Procrastinate drift: $*"; }

audited="$(sed -n 's/^AUDITED_VERSION = "\(.*\)"$/\1/p' baton/execution/upstream.py)"
pinned="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("procrastinate"))')"
rm -rf "$TARGET"
if ! "$VENV/bin/python" -m pip install --quiet --no-deps --target "$TARGET" \
    "$REQUIREMENT" >"$LOG" 2>&1; then
    say "could not install the newest 3.x from the index (see $LOG): not checked"
    exit 0
fi
newest="$(PYTHONPATH="$TARGET" "$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("procrastinate"))')"
say "newest of $REQUIREMENT on the index: $newest; audited: $audited; installed in $VENV: $pinned"

# The contract test first (no database), then the smoke; both against the newest.
PYTHONPATH="$TARGET" timeout --kill-after=10 120 "$VENV/bin/python" -m pytest \
    -p no:cacheprovider -q -o addopts=--strict-markers -rf \
    tests/unit/test_upstream_contract.py "${SMOKE[@]}" >>"$LOG" 2>&1
rc=$?
failed="$(sed -n 's/^FAILED \(.*\)$/\1/p' "$LOG" | sed 's/ - .*$//')"
items="$(sed -n 's/.*test_borrowed_item_is_as_audited\[\([^]]*\)\].*/\1/p' <<<"$failed")"

if [[ $rc == 0 && $newest == "$audited" ]]; then
    say "newest $newest = audited: nothing to do"
elif [[ $rc == 0 ]]; then
    say "newest $newest differs from the audited $audited, and the contract test and the" \
        "smoke pass on it: run the whole suite on it, then widen pyproject's bound and set" \
        "AUDITED_VERSION in baton/execution/upstream.py"
else
    say "DRIFT: newest $newest (audited $audited) fails (pytest exit code $rc; log $LOG)"
    if [[ -n $items ]]; then
        echo "    re-audit these items of baton/execution/upstream.py (AUDITED):"
        sed 's/^/      /' <<<"$items"
        echo "    what the contract test says about them:"
        sed -n 's/^E  *\(AssertionError\|Failed\): \(Procrastinate .*\)$/      \2/p' "$LOG"
    fi
    others="$(grep -v test_borrowed_item_is_as_audited <<<"$failed" || true)"
    if [[ -n $others ]]; then
        echo "    failing tests:"
        sed 's/^/      /' <<<"$others"
    fi
    echo "    (reported, not failed: pyproject pins procrastinate to the audited range)"
fi
exit 0
